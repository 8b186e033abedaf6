"""LoadModel, the model store and single-file checkpoints, on the embedded model."""

from __future__ import annotations

import json
import os

import pytest
import torch
from nodes_support import *  # noqa: F403  (fixtures)
from nodes_support import context, make_executor, make_registry

from graph_runtime import NodeError
from nodes.checkpoint import save_single_file
from nodes.conditioning import encode_truncated
from nodes.latents import decode
from nodes.model_store import ModelStore
from nodes.models import SD15_CONFIG, LoadModel, list_models
from nodes.types import ModelBundle, TextEncoderBundle, VAEBundle

CPU = torch.device("cpu")


def test_embedded_model_is_listed_first(models_dir):
    assert list_models()[0] == "tiny-shapes-sd"
    assert "configs" not in " ".join(list_models())  # config folders hold no weights


def test_load_model_through_a_workflow(models_dir, services, tmp_path):
    ex = make_executor(tmp_path, services=services)
    doc = {"1": {"class_type": "LoadModel", "inputs": {"model_name": "tiny-shapes-sd", "device": "cpu",
                                                        "dtype": "fp32"}}}
    result = ex.run(doc, targets=["1"])
    assert result.status == "success", result.error
    model, clip, vae = result.values["1"]
    assert isinstance(model, ModelBundle) and isinstance(clip, TextEncoderBundle) and isinstance(vae, VAEBundle)
    assert model.device == CPU and model.dtype == torch.float32 and model.prediction_type == "epsilon"
    assert model.scheduler_config["num_train_timesteps"] == 1000
    assert vae.scaling_factor == vae.vae.config.scaling_factor
    # a second run in a fresh executor sharing the services reuses the same loaded objects
    again = make_executor(tmp_path, services=services).run(doc, targets=["1"])
    assert again.values["1"][0].unet is model.unet


def test_load_model_node_directly(models_dir, services, tmp_path):
    ctx = context(tmp_path, services=services)
    node = LoadModel()
    model, clip, vae = node.execute(LoadModel.Inputs(model_name="tiny-shapes-sd", device="cpu", dtype="fp32"), ctx)
    assert model.unet.config.in_channels == 4 and model.name == "tiny-shapes-sd"
    assert clip.tokenizer.model_max_length == 77


def test_store_shares_and_keys_on_dtype(model_folder, services, loaded):
    store = services.get(ModelStore)
    same = store.load(model_folder, device=CPU, dtype=torch.float32)
    assert same is loaded and same.model.unet is loaded.model.unet
    other = store.load(model_folder, device=CPU, dtype=torch.bfloat16)
    assert other is not loaded and other.model.unet.dtype == torch.bfloat16
    assert other.model.unet is not loaded.model.unet
    assert store.unload(name=str(model_folder)) >= 2  # by path: both dtypes go
    assert len(store) == 0
    again = store.load(model_folder, device=CPU, dtype=torch.float32)
    assert again is not loaded


def test_pickle_files_are_refused(tmp_path):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(b"not really a pickle")
    with pytest.raises(NodeError, match="only .safetensors are loaded"):
        ModelStore().load(bad, device=CPU, dtype=torch.float32)
    folder = tmp_path / "pickled"
    for part in ("unet", "vae", "text_encoder"):
        (folder / part).mkdir(parents=True)
        (folder / part / "diffusion_pytorch_model.bin").write_bytes(b"x")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(NodeError, match="only .safetensors are loaded"):
        ModelStore().load(folder, device=CPU, dtype=torch.float32)


def test_single_file_matches_the_folder(model_folder, loaded, tmp_path, monkeypatch):
    save_single_file(model_folder, tmp_path / "tiny-single.safetensors")
    monkeypatch.setenv("GRAPH_RUNTIME_MODELS", os.pathsep.join([str(tmp_path), str(model_folder.parent)]))
    assert "tiny-single.safetensors" in list_models()
    ctx = context(tmp_path)
    model, clip, vae = LoadModel().execute(
        LoadModel.Inputs(model_name="tiny-single.safetensors", device="cpu", dtype="fp32"), ctx)
    assert model.source.endswith("tiny-single.safetensors")
    for a, b in ((loaded.model.unet, model.unet), (loaded.vae.vae, vae.vae),
                 (loaded.clip.text_encoder, clip.text_encoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # same outputs, bit for bit: text encoder, UNet, VAE decode
    e1, _ = encode_truncated(loaded.clip, "a red circle")
    e2, _ = encode_truncated(clip, "a red circle")
    assert torch.equal(e1, e2)
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(1, 4, 8, 8, generator=g)
    with torch.inference_mode():
        u1 = loaded.model.unet(lat, 500, encoder_hidden_states=e1).sample
        u2 = model.unet(lat, 500, encoder_hidden_states=e2).sample
    assert torch.equal(u1, u2)
    assert torch.equal(decode(loaded.vae, {"samples": lat}), decode(vae, {"samples": lat}))


def test_sd15_config_fits_the_sd1_layout():
    """The shipped SD1.5 configuration, run through the converter, gives SD1.5's well-known key names and
    counts, and diffusers' own single-file converter maps them back exactly (shapes only, no weights)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from nodes.checkpoint import _expected_shapes, unet_to_ldm, vae_to_ldm

    shapes = _expected_shapes(str(SD15_CONFIG), 0.0)
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")
    assert [sum(k.startswith(p) for k in shapes) for p in prefixes] == [686, 248, 196]
    assert shapes["model.diffusion_model.output_blocks.11.0.skip_connection.weight"] == (320, 640, 1, 1)
    assert shapes["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"] == (77, 768)
    with torch.device("meta"):
        ucfg = UNet2DConditionModel.load_config(str(SD15_CONFIG / "unet"))
        unet = UNet2DConditionModel.from_config(ucfg).state_dict()
        vcfg = AutoencoderKL.load_config(str(SD15_CONFIG / "vae"))
        vae = AutoencoderKL.from_config(vcfg).state_dict()
    back = convert_ldm_unet_checkpoint(unet_to_ldm(unet, ucfg), ucfg)
    assert back.keys() == unet.keys() and all(back[k].shape == unet[k].shape for k in unet)
    back = convert_ldm_vae_checkpoint(vae_to_ldm(vae, vcfg), vcfg)
    assert back.keys() == vae.keys() and all(back[k].shape == vae[k].shape for k in vae)


def test_unknown_single_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "other.safetensors"
    save_file({"some.weight": torch.zeros(2, 2)}, str(p))
    with pytest.raises(NodeError, match="not a Stable Diffusion 1.x checkpoint"):
        ModelStore().load(p, device=CPU, dtype=torch.float32, config_folders=[SD15_CONFIG])


def test_model_name_outside_the_models_folder(models_dir, tmp_path):
    with pytest.raises(NodeError, match="model_name"):
        LoadModel().execute(LoadModel.Inputs(model_name="../etc", device="cpu"), context(tmp_path))


def test_object_info_shapes():
    info = make_registry().object_info()
    lm = info["LoadModel"]
    assert lm["output"] == ["MODEL", "CLIP", "VAE"] and lm["category"] == "loaders"
    assert isinstance(lm["input"]["required"]["model_name"][0], list)
    te = info["TextEncode"]
    assert te["input"]["required"]["text"][0] == "STRING" and te["input"]["required"]["text"][1]["multiline"]
    assert te["input"]["required"]["clip"] == ["CLIP"] and te["output"] == ["CONDITIONING"]
    el = info["EmptyLatent"]["input"]["required"]
    assert el["width"][1] == {"default": 512, "min": 64, "max": 16384, "step": 8,
                              "tooltip": el["width"][1]["tooltip"]}
    assert info["EmptyLatent"]["output"] == ["LATENT"]
    assert info["VAEDecode"]["input"]["required"] == {"samples": ["LATENT"], "vae": ["VAE"]}
    assert info["VAEDecode"]["output"] == ["IMAGE"]
    assert info["VAEEncode"]["input"]["required"] == {"pixels": ["IMAGE"], "vae": ["VAE"]}
    si = info["SaveImage"]
    assert si["output_node"] and si["output"] == [] and si["input"]["hidden"] == {
        "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert si["input"]["required"]["filename_prefix"][1]["default"] == "graph-runtime"
    assert info["PreviewImage"]["output_node"]
    li = info["LoadImage"]
    assert li["output"] == ["IMAGE", "MASK"] and li["input"]["required"]["image"][1]["image_upload"] is True


def test_device_and_dtype_choice(monkeypatch):
    from nodes import device as dev

    assert dev.resolve_device("cpu") == CPU
    assert dev.resolve_dtype("auto", CPU) == torch.float32
    assert dev.resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert dev.resolve_dtype("bf16", CPU) == torch.bfloat16
    monkeypatch.setenv("GRAPH_RUNTIME_DTYPE", "bf16")
    assert dev.resolve_dtype("auto", CPU) == torch.bfloat16
    if not torch.cuda.is_available():
        assert dev.default_device() == CPU
        with pytest.raises(NodeError, match="CUDA is not available"):
            dev.resolve_device("cuda")


def test_load_model_lists_whole_models_only(tmp_path, monkeypatch):
    """Not the classifier beside the training code (models/shapes), not shipped configs, not the parts in
    ComfyUI's part folders (their own loaders list those)."""
    from nodes.models import list_models

    for sub in ("diffusion_models", "text_encoders", "vae", "loras"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / f"{sub}-part.safetensors").write_bytes(b"")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "whole.safetensors").write_bytes(b"")
    monkeypatch.setenv("GRAPH_RUNTIME_MODELS", str(tmp_path))
    names = list_models()
    assert names[0] == "tiny-shapes-sd" and "checkpoints/whole.safetensors" in names
    assert not [n for n in names if "classifier" in n or "part" in n or n.startswith(("configs", "tokenizers"))]
