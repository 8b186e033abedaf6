"""Qwen-Image on the family seam, from a diffusers folder (tests/tiny_qwen_image.py): LoadModel -> TextEncode
-> Scheduler -> Sampler -> VAEDecode equals QwenImagePipeline pixel for pixel (fp32, CPU) with true
classifier-free guidance and without, two schedulers, two seeds; the packed-latent network and the 3-D VAE
work through the same nodes as every family."""

import pytest
import torch
from nodes_support import *  # noqa: F403
from test_families_parity import graph, run
from tiny_families import executor_over
from tiny_qwen_image import shared_qwen_image
from tiny_sd import single_thread

from nodes.stand_ins.layouts import qwen25_vl_original, wan_vae_layout
from schedulers import registry

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning",
)
PROMPT = "a red circle on a blue square"
STEPS = 4


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return shared_qwen_image(tmp_path_factory)


@pytest.fixture(scope="module")
def executor(tmp_path_factory, qwen, services):
    with executor_over([qwen.models], tmp_path_factory.mktemp("qwen_image"), services) as ex:
        yield ex


def pipeline_image(fam, scheduler: str, seed: int, cfg: float) -> torch.Tensor:
    entry = registry.get(scheduler)
    with registry.quiet_diffusers():
        fam.pipe.scheduler = entry.cls.from_config(fam.config, **entry.config_overrides(fam.config))
    with single_thread():
        out = fam.pipe(PROMPT, negative_prompt="" if cfg > 1 else None, true_cfg_scale=cfg,
                       num_inference_steps=STEPS, height=64, width=64,
                       generator=torch.Generator("cpu").manual_seed(seed), output_type="pt").images
    return out.permute(0, 2, 3, 1).float()


def qwen_graph(scheduler: str, seed: int, cfg: float) -> dict:
    doc = graph("tiny-qwen-image", scheduler, seed, cfg=cfg)
    doc["2"]["inputs"]["text"] = PROMPT
    return doc


@pytest.mark.parametrize("scheduler", ["flow_euler", "flow_unipc"])
@pytest.mark.parametrize("seed", [3, 1234])
def test_qwen_image_matches_its_pipeline(executor, qwen, scheduler, seed):
    ours = run(executor, qwen_graph(scheduler, seed, cfg=4.0))
    ref = pipeline_image(qwen, scheduler, seed, cfg=4.0)
    assert ours.shape == ref.shape == (1, 64, 64, 3)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0


def test_without_guidance_matches_the_pipeline(executor, qwen):
    ours = run(executor, qwen_graph("flow_euler", 8, cfg=1.0))
    ref = pipeline_image(qwen, "flow_euler", 8, cfg=1.0)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0
    assert (ours - run(executor, qwen_graph("flow_euler", 8, cfg=4.0))).abs().max() > 1e-3


def test_folder_is_recognised_and_its_latents_are_unpacked(executor, qwen, services):
    from nodes import families
    from nodes.model_store import ModelStore

    assert families.for_folder(qwen.folder).name == "qwen_image"
    loaded = services.get(ModelStore).load(qwen.folder, device=torch.device("cpu"), dtype=torch.float32)
    assert loaded.model.latent_channels == 16 and loaded.vae.downscale == 8


def test_vae_encode_and_decode_go_through_the_latent_mean_and_std(executor, qwen, services):
    """VAEEncode gives (z - mean) / std of the 3-D VAE's one-frame latent and VAEDecode undoes it: the
    round trip equals the bare VAE's own (to rounding)."""
    from nodes.latents import decode, encode
    from nodes.model_store import ModelStore

    vae = services.get(ModelStore).load(qwen.folder, device=torch.device("cpu"), dtype=torch.float32).vae
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    with single_thread():
        latent = encode(vae, image)
        ours = decode(vae, {"samples": latent})
        with torch.no_grad():
            x = image.permute(0, 3, 1, 2).unsqueeze(2) * 2 - 1
            z = qwen.pipe.vae.encode(x).latent_dist.mode()
            ref = (qwen.pipe.vae.decode(z).sample[:, :, 0] / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    mean = torch.tensor(qwen.pipe.vae.config.latents_mean).view(1, 16, 1, 1)
    std = torch.tensor(qwen.pipe.vae.config.latents_std).view(1, 16, 1, 1)
    assert latent.shape == (1, 16, 8, 8)
    assert torch.allclose(latent, (z[:, :, 0] - mean) / std, atol=1e-5)
    assert (ours - ref).abs().max().item() < 1e-4


def test_resolution_dependent_shift_follows_the_latent_or_model_sampling_aura_flow(executor, qwen):
    """The released model's scheduler shifts by image size: a Scheduler given the latent equals
    QwenImagePipeline on that config; ModelSamplingAuraFlow (a fixed shift, ComfyUI's way) replaces it."""
    import json
    import shutil

    folder = qwen.models / "tiny-qwen-image-dynamic"
    cfg = {**qwen.config, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 0.9,
           "base_image_seq_len": 256, "max_image_seq_len": 8192, "shift_terminal": 0.02}
    if not folder.exists():
        shutil.copytree(qwen.folder, folder)
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg))
    doc = graph("tiny-qwen-image-dynamic", "flow_euler", 5, cfg=4.0)
    doc["2"]["inputs"]["text"] = PROMPT
    doc["5"]["inputs"]["latent"] = ["4", 0]
    ours = run(executor, doc)
    with registry.quiet_diffusers():
        qwen.pipe.scheduler = registry.get("flow_euler").cls.from_config(cfg)
    with single_thread():
        ref = qwen.pipe(PROMPT, negative_prompt="", true_cfg_scale=4.0, num_inference_steps=STEPS, height=64,
                        width=64, generator=torch.Generator("cpu").manual_seed(5), output_type="pt").images
    assert (ours - ref.permute(0, 2, 3, 1)).abs().max().item() == 0.0
    doc["9"] = {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["1", 0], "shift": 3.0}}
    doc["5"]["inputs"]["model"] = doc["6"]["inputs"]["model"] = ["9", 0]
    fixed = run(executor, doc)
    assert (fixed - run(executor, qwen_graph("flow_euler", 5, cfg=4.0))).abs().max().item() == 0.0


def test_diffusion_model_alone_loads_and_gives_the_folders_picture(executor, qwen, services):
    """The MMDiT as ComfyUI keeps it (diffusion_models/, diffusers' own names) through UNETLoader, the
    text encoder and VAE from the folder: the same tensors and the same picture."""
    from single_files import save

    from nodes.model_store import ModelStore
    from nodes.part_files import config_folders, find_part

    save(qwen.pipe.transformer.state_dict(), qwen.models / "diffusion_models" / "qwen_image_bf16.safetensors")
    net = services.get(ModelStore).load(find_part("network", "qwen_image_bf16.safetensors", "t"),
                                        device=torch.device("cpu"), dtype=torch.float32, kind="network",
                                        config_folders=config_folders()).model.network
    a, b = net.state_dict(), qwen.pipe.transformer.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    doc = qwen_graph("flow_euler", 4, cfg=4.0)
    ref = run(executor, doc)
    doc["10"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "qwen_image_bf16.safetensors",
                                                        "weight_dtype": "default"}}
    for node in ("4", "5", "6"):
        doc[node]["inputs"]["model"] = ["10", 0]
    assert ref.std() > 0.005
    assert (run(executor, doc) - ref).abs().max().item() == 0.0


def test_shipped_configs_build_the_published_model_and_fit_its_file():
    """models/configs/qwen-image: the 20.43B MMDiT (counted on the meta device), whose tensor shapes pick it."""
    from test_families_configs import build

    from nodes import families
    from nodes.families.base import read_json
    from nodes.models import CONFIGS_DIR

    folder = CONFIGS_DIR / "qwen-image"
    net = build(folder, "transformer")
    assert sum(p.numel() for p in net.parameters()) == 20_430_401_088
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    family = families.for_folder(folder)
    assert family.name == "qwen_image"
    assert family.network_file_mismatch(shapes, read_json(folder / "transformer" / "config.json")) == ""


def test_comfyui_files_give_the_folders_picture(executor, qwen, services):
    """ComfyUI's split files: the MMDiT (UNETLoader), Qwen2.5-VL under its original names (CLIPLoader type
    qwen_image) and the VAE in Wan 2.1's layout (VAELoader): the folder's picture; the text encoder's and
    the VAE's tensors (and buffers) identical."""
    from single_files import save

    from nodes.model_store import ModelStore
    from nodes.part_files import config_folders, find_part

    save(qwen.pipe.transformer.state_dict(), qwen.models / "diffusion_models" / "qwen_image_bf16.safetensors")
    save(qwen25_vl_original(qwen.pipe.text_encoder.state_dict()), qwen.models / "text_encoders" / "qwen_2.5_vl_7b.safetensors")
    save(wan_vae_layout(qwen.pipe.vae.state_dict()), qwen.models / "vae" / "qwen_image_vae.safetensors")
    vae = services.get(ModelStore).load(find_part("vae", "qwen_image_vae.safetensors", "t"), device=torch.device("cpu"),
                                        dtype=torch.float32, kind="vae", config_folders=config_folders()).vae
    a, b = vae.vae.inner.state_dict(), qwen.pipe.vae.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (vae.scaling_factor, vae.shift_factor, vae.downscale) == (1.0, 0.0, 8)
    enc = services.get(ModelStore).load(find_part("text_encoder", "qwen_2.5_vl_7b.safetensors", "t"),
                                        device=torch.device("cpu"), dtype=torch.float32, kind="text_encoder",
                                        config_folders=config_folders()).encoder.model
    for ours, ref in ((enc.state_dict(), qwen.pipe.text_encoder.state_dict()),
                      (dict(enc.named_buffers()), dict(qwen.pipe.text_encoder.named_buffers()))):
        assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)
    doc = qwen_graph("flow_euler", 6, cfg=4.0)
    ref = run(executor, doc)
    doc["10"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "qwen_image_bf16.safetensors",
                                                        "weight_dtype": "default"}}
    doc["11"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": "qwen_2.5_vl_7b.safetensors",
                                                        "type": "qwen_image"}}
    for node in ("4", "5", "6"):
        doc[node]["inputs"]["model"] = ["10", 0]
    for node in ("2", "3"):
        doc[node] = {"class_type": "CLIPTextEncode", "inputs": {"text": doc[node]["inputs"]["text"],
                                                                "clip": ["11", 0]}}
    doc["12"] = {"class_type": "VAELoader", "inputs": {"vae_name": "qwen_image_vae.safetensors"}}
    doc["7"]["inputs"]["vae"] = ["12", 0]
    assert (run(executor, doc) - ref).abs().max().item() == 0.0
    doc["11"]["inputs"]["type"] = "lumina2"
    with single_thread():
        res = executor.run(doc)
    assert res.status == "error" and "is a Qwen2.5-VL text encoder; a lumina2 CLIP (Z-Image) takes qwen3" in \
        str(res.error)


def test_shipped_text_encoder_config_is_qwen25_vl_7b():
    """8,292,166,656 parameters (meta device), and its shapes under the original names pick it."""
    from test_families_configs import build

    from nodes.families.base import read_json
    from nodes.models import CONFIGS_DIR
    from nodes.part_files import _config_fits, _text_encoder_kind

    folder = CONFIGS_DIR / "qwen-image" / "text_encoder"
    model = build(folder.parent, "text_encoder")
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656
    shapes = {k: tuple(v.shape) for k, v in qwen25_vl_original(model.state_dict()).items()}
    assert _text_encoder_kind(shapes) == "qwen25vl" and _config_fits("qwen25vl", shapes, read_json(folder / "config.json"))


def test_a_scaled_fp8_text_encoder_file_loads_as_weight_times_scale(qwen):
    """ComfyUI's qwen_2.5_vl_7b_fp8_scaled layout (fp8 weights, each with a scale_weight) through transformers'
    own loading: each weight is its fp8 value times its scale, in fp32."""
    from nodes.part_files import load_part
    from nodes.stand_ins.layouts import save

    state = qwen25_vl_original(qwen.pipe.text_encoder.state_dict())
    scaled = {}
    for k, v in state.items():
        if v.ndim == 2 and k.endswith(".weight") and "embed_tokens" not in k and k != "lm_head.weight":
            scaled[k] = (v / 2).to(torch.float8_e4m3fn)
            scaled[k[: -len("weight")] + "scale_weight"] = torch.tensor(2.0)
        else:
            scaled[k] = v
    scaled["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    path = save(scaled, qwen.models / "text_encoders" / "qwen_2.5_vl_7b_fp8_scaled.safetensors")
    enc = load_part("text_encoder", path, torch.device("cpu"), torch.float32, "t", [qwen.folder]).encoder.model
    ours, ref = qwen25_vl_original(enc.state_dict()), state
    assert ours.keys() == ref.keys()
    for k, v in ref.items():
        want = scaled[k].float() * 2 if scaled[k].dtype == torch.float8_e4m3fn else v
        assert torch.equal(ours[k], want), k


def test_comfyuis_qwen_image_graph_follows_the_pipeline(executor, qwen):
    """ComfyUI's Qwen-Image workflow over the split files: UNETLoader, CLIPLoader qwen_image, VAELoader,
    ModelSamplingAuraFlow, EmptySD3LatentImage and KSampler euler / simple (the pipeline's sigma spacing over
    the same shift): the pipeline's picture to rounding (k-diffusion's Euler goes through the denoised
    estimate, as ComfyUI's does)."""
    from single_files import save

    files = {"unet": "qwen_image_bf16.safetensors", "clip": "qwen_2.5_vl_7b.safetensors",
             "vae": "qwen_image_vae.safetensors"}
    save(qwen.pipe.transformer.state_dict(), qwen.models / "diffusion_models" / files["unet"])
    save(qwen25_vl_original(qwen.pipe.text_encoder.state_dict()), qwen.models / "text_encoders" / files["clip"])
    save(wan_vae_layout(qwen.pipe.vae.state_dict()), qwen.models / "vae" / files["vae"])
    doc = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": files["unet"], "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": files["clip"], "type": "qwen_image"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": files["vae"]}},
        "4": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["1", 0], "shift": 3.0}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["2", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "8": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "9": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 12, "steps": STEPS, "cfg": 2.5, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["5", 0], "negative": ["6", 0], "latent_image": ["8", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["3", 0]}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
    ours = run(executor, doc)
    ref = pipeline_image(qwen, "flow_euler", 12, cfg=2.5)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() < 1e-4


def test_stand_ins_for_comfyuis_qwen_image_names_run(tmp_path, services, capsys):
    """``graph-runtime stand-ins`` on a ComfyUI Qwen-Image workflow (the template's file names, fp8 ones
    included: a stand-in holds plain weights) writes Qwen-Image stand-ins, and the workflow runs on them."""
    import json

    from graph_runtime.cli import main

    names = {"unet": "qwen_image_fp8_e4m3fn.safetensors", "clip": "qwen_2.5_vl_7b_fp8_scaled.safetensors",
             "vae": "qwen_image_vae.safetensors"}
    doc = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": names["unet"], "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": names["clip"], "type": "qwen_image"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": names["vae"]}},
        "4": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["1", 0], "shift": 3.1}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["2", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "8": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "9": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 1, "steps": 3, "cfg": 2.5, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["5", 0], "negative": ["6", 0], "latent_image": ["8", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["3", 0]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "qwen"}},
    }
    path = tmp_path / "qwen_image.json"
    path.write_text(json.dumps(doc))
    models = tmp_path / "models"
    assert main(["stand-ins", str(path), "--models-dir", str(models)]) == 0, capsys.readouterr().err
    with executor_over([models], tmp_path / "work", services) as ex, single_thread():
        res = ex.run(doc)
    assert res.status == "success", res.error
    image = res.values["7"][0]
    assert image.shape == (1, 128, 128, 3) and torch.isfinite(image).all() and image.std() > 0.005
