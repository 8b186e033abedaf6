"""UpscaleModelLoader + ImageUpscaleWithModel on tiny random ESRGAN / Real-ESRGAN networks (RRDB in both key
layouts, and the compact one) saved as safetensors: the output is scale x the input, both layouts of the same
weights give the same image, tiling equals the whole-image run where one tile covers the image (and stays
close with many tiles), and pickle files, other networks and oversized outputs are refused naming the input."""

from __future__ import annotations

import shutil

import pytest
import torch
from nodes_support import *  # noqa: F403
from nodes_support import make_executor
from safetensors.torch import save_file
from sampling_support import ROOT

from nodes import images
from nodes.stand_ins.upscale_files import compact, original_layout, rrdb
from nodes.upscale_models import upscale_image, upscale_tiled

NETWORKS = {"RealESRGAN_tiny_x4.safetensors": (rrdb, 4), "RealESRGAN_tiny_x2.safetensors": (
    lambda: rrdb(upsamples=2, unshuffle=2, seed=1), 2), "realesr_compact_x4.safetensors": (compact, 4)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("upscale_models")
    folder = root / "upscale_models"
    folder.mkdir()
    for name, (make, _) in NETWORKS.items():
        save_file(make().state_dict(), folder / name)
    save_file(original_layout(rrdb().state_dict()), folder / "ESRGAN_tiny_x4.safetensors")
    save_file({"conv.weight": torch.zeros(4, 3, 3, 3)}, folder / "not_esrgan.safetensors")
    (folder / "4x_pickled.pth").write_bytes(b"not loaded")
    return root


@pytest.fixture(scope="module")
def executor(tmp_path_factory, models, services):
    ex = make_executor(tmp_path_factory.mktemp("upscale_run"), services=services, models=[models])
    shutil.copy(ROOT / "tests" / "data" / "red_circle.png", ex.paths.input / "red_circle.png")
    images.set_input_folder(ex.paths.input)
    yield ex
    images.set_input_folder(None)


def graph(model_name: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "red_circle.png"}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": model_name}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


def run(executor, doc):
    res = executor.run(doc)
    assert res.status == "success", res.error and res.error.get("exception_message")
    return res.values["1"][0], res.values["3"][0], res.values["2"][0]


@pytest.mark.parametrize("name", list(NETWORKS))
def test_output_is_scale_times_the_input(executor, name):
    make, scale = NETWORKS[name]
    image, out, model = run(executor, graph(name))
    assert model.scale == scale
    b, h, w, c = image.shape
    assert out.shape == (b, h * scale, w * scale, c)
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1 and out.std() > 0.01
    # the loaded network is the saved one: the same weights run directly give the same pixels
    net = make()
    with torch.inference_mode():
        direct = net(image.movedim(-1, 1)).clamp(0, 1).movedim(1, -1)
    assert (out - direct).abs().max().item() == 0.0


def test_both_key_layouts_load_the_same_network(executor):
    _, basicsr, _ = run(executor, graph("RealESRGAN_tiny_x4.safetensors"))
    _, original, model = run(executor, graph("ESRGAN_tiny_x4.safetensors"))
    assert model.architecture == "ESRGAN"
    assert (basicsr - original).abs().max().item() == 0.0


def test_tiling_equals_whole_image_where_one_tile_covers_it():
    net = rrdb()
    image = torch.rand(2, 3, 40, 48)
    with torch.inference_mode():
        whole = net(image)
        covered = upscale_tiled(net, image, 4, tile=48, overlap=8)
        tiled = upscale_tiled(net, image, 4, tile=24, overlap=8)
    assert (covered - whole).abs().max().item() == 0.0
    assert tiled.shape == whole.shape
    # many tiles: seams blended across the overlap, the picture stays the same
    assert (tiled - whole).abs().mean().item() < 0.02 * whole.abs().mean().item() + 1e-3


def test_output_size_is_bounded(executor, monkeypatch):
    from graph_runtime.limits import LIMITS

    image, _, model = run(executor, graph("RealESRGAN_tiny_x4.safetensors"))
    monkeypatch.setattr(LIMITS, "max_upscale_pixels", image.shape[1] * image.shape[2] * 16 - 1)
    from graph_runtime import NodeError

    with pytest.raises(NodeError, match=r"^image: .*max_upscale_pixels"):
        upscale_image(model, image)


@pytest.mark.parametrize(("name", "says"), [
    ("4x_pickled.pth", "only .safetensors are loaded"),
    ("not_esrgan.safetensors", "is not an upscale model read here"),
])
def test_bad_files_are_refused_naming_model_name(executor, name, says):
    res = executor.run(graph(name))
    assert res.status == "error"
    message = res.error["exception_message"]
    assert message.startswith("model_name") and says in message, message


def test_comfyui_workflow_upscales_the_decoded_image(executor):
    """A ComfyUI API-format graph: txt2img on the embedded model, then the decoded image through the model."""
    doc = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-shapes-sd"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0], "seed": 3, "steps": 3, "cfg": 6.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "10": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "RealESRGAN_tiny_x4.safetensors"}},
        "11": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["10", 0], "image": ["8", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "upscaled"}},
    }
    res = executor.run(doc)
    assert res.status == "success", res.error and res.error.get("exception_message")
    decoded, upscaled, model = res.values["8"][0], res.values["11"][0], res.values["10"][0]
    assert decoded.shape == (1, 64, 64, 3) and upscaled.shape == (1, 256, 256, 3)
    assert (upscaled - upscale_image(model, decoded)).abs().max().item() == 0.0
    assert list((executor.paths.output).glob("upscaled_*.png"))
