"""``graph-runtime stand-ins``: tiny random-weight files under the model names workflows load, of the family
and layout each loader reads, so the workflows run with GRAPH_RUNTIME_MODELS pointing at them. Our own
workflows, graphs of ComfyUI's part loaders, and ComfyUI's official SDXL and SD3.5 templates (the pinned
comfyui-workflow-templates-json) are given stand-ins and then run; names that cannot be placed are refused
with the workflow, node, input, file name and why."""

import json
from pathlib import Path

import pytest
from tiny_sd import single_thread

from graph_runtime.cli import main

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning",
)


def template(name: str) -> Path:
    """One of ComfyUI's official templates (the pinned dependency comfyui-workflow-templates-json)."""
    import comfyui_workflow_templates_json as pkg

    return Path(pkg.__file__).parent / "templates" / f"{name}.json"


def txt2img(loaders: dict, model, clip, vae, latent: str = "EmptyLatentImage", scheduler: str = "normal") -> dict:
    """ComfyUI's classic graph over the given loader nodes (ids "1".."9" are the rest of the graph)."""
    return {
        **loaders,
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": clip}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        "4": {"class_type": latent, "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": model, "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 1,
            "steps": 2, "cfg": 4.0, "sampler_name": "euler", "scheduler": scheduler, "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": vae}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "standin"}},
    }


GRAPHS = {
    # an SD1.5 checkpoint with a separate SD1 VAE
    "sd1.json": txt2img({"10": {"class_type": "CheckpointLoaderSimple",
                                "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
                         "11": {"class_type": "VAELoader",
                                "inputs": {"vae_name": "vae-ft-mse-840000-ema-pruned.safetensors"}}},
                        ["10", 0], ["10", 1], ["11", 0]),
    # SD3.5 as ComfyUI users keep its parts: the MMDiT, three text encoders and the VAE apart
    "sd3_parts.json": txt2img({"10": {"class_type": "UNETLoader",
                                      "inputs": {"unet_name": "sd3.5_medium.safetensors", "weight_dtype": "default"}},
                               "11": {"class_type": "TripleCLIPLoader", "inputs": {
                                   "clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors",
                                   "clip_name3": "t5xxl_fp16.safetensors"}},
                               "12": {"class_type": "VAELoader", "inputs": {"vae_name": "sd3_vae.safetensors"}}},
                              ["10", 0], ["11", 0], ["12", 0], latent="EmptySD3LatentImage", scheduler="sgm_uniform"),
    # an SDXL checkpoint whose CLIPs come from text_encoders/ (DualCLIPLoader type sdxl)
    "sdxl_parts.json": txt2img({"10": {"class_type": "CheckpointLoaderSimple",
                                       "inputs": {"ckpt_name": "juggernautXL_v9.safetensors"}},
                                "11": {"class_type": "DualCLIPLoader", "inputs": {
                                    "clip_name1": "clip_l_sdxl.safetensors", "clip_name2": "clip_g_sdxl.safetensors",
                                    "type": "sdxl"}}},
                               ["10", 0], ["11", 0], ["10", 2]),
    # LoadModel's names without a suffix are diffusers folders
    "folder.json": txt2img({"10": {"class_type": "LoadModel", "inputs": {"model_name": "my-sdxl-finetune"}}},
                           ["10", 0], ["10", 1], ["10", 2]),
    # an SD1.5 checkpoint through a LoRA (model and CLIP), its image through a 2x upscale model
    "sd1_lora_upscale.json": txt2img({"10": {"class_type": "CheckpointLoaderSimple",
                                             "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
                                      "12": {"class_type": "LoraLoader", "inputs": {
                                          "model": ["10", 0], "clip": ["10", 1], "lora_name": "sd15/detail.safetensors",
                                          "strength_model": 0.8, "strength_clip": 0.5}},
                                      "13": {"class_type": "UpscaleModelLoader",
                                             "inputs": {"model_name": "RealESRGAN_x2plus.safetensors"}},
                                      "14": {"class_type": "ImageUpscaleWithModel",
                                             "inputs": {"upscale_model": ["13", 0], "image": ["6", 0]}}},
                                     ["12", 0], ["12", 1], ["10", 2]),
    # an SDXL checkpoint through a model-only LoRA
    "sdxl_lora.json": txt2img({"10": {"class_type": "CheckpointLoaderSimple",
                                      "inputs": {"ckpt_name": "juggernautXL_v9.safetensors"}},
                               "12": {"class_type": "LoraLoaderModelOnly", "inputs": {
                                   "model": ["10", 0], "lora_name": "xl_style.safetensors", "strength_model": 1.0}}},
                              ["12", 0], ["10", 1], ["10", 2]),
    "sd2_folder.json": txt2img({"10": {"class_type": "LoadModel", "inputs": {"model_name": "stable-diffusion-2-1"}}},
                               ["10", 0], ["10", 1], ["10", 2]),
}
GRAPHS["sd1_lora_upscale.json"]["7"]["inputs"]["images"] = ["14", 0]
#: ComfyUI's official templates (editor format), shrunk to 64x64 and 2 steps by ``--set`` (node ids theirs)
TEMPLATES = {"image_sdxl_simple": ["13.width=64", "13.height=64", "12.steps=2"],
             "sd3.5_simple_example": ["53.width=64", "53.height=64", "3.steps=2"]}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One ``stand-ins`` run over every graph and both templates, into one models folder: (exit code, stdout,
    stderr, the models folder, the folder holding the graphs)."""
    import contextlib
    import io

    work = tmp_path_factory.mktemp("stand_ins")
    paths = []
    for name, doc in GRAPHS.items():
        (work / name).write_text(json.dumps(doc))
        paths.append(str(work / name))
    paths += [str(template(t)) for t in TEMPLATES]
    models = work / "models"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), single_thread():
        code = main(["stand-ins", *paths, "--models-dir", str(models)])
    return code, out.getvalue(), err.getvalue(), models, work


def run_with(models: Path, workflow: str, out: Path, monkeypatch, *sets: str) -> int:
    monkeypatch.setenv("GRAPH_RUNTIME_MODELS", str(models))
    args = ["run", workflow, "--output-dir", str(out), "--quiet"]
    for s in sets:
        args += ["--set", s]
    with single_thread():
        return main(args)


def test_the_command_names_each_file_it_writes(written):
    code, out, err, models, _ = written
    assert code == 0, err
    expected = {
        "checkpoints/v1-5-pruned-emaonly.safetensors": "Stable Diffusion 1.x all-in-one checkpoint",
        "vae/vae-ft-mse-840000-ema-pruned.safetensors": "Stable Diffusion 1.x VAE",
        "diffusion_models/sd3.5_medium.safetensors": "Stable Diffusion 3.x diffusion model",
        "text_encoders/clip_l.safetensors": "Stable Diffusion 3.x text encoder (clip_l)",
        "text_encoders/clip_g.safetensors": "Stable Diffusion 3.x text encoder (clip_g)",
        "text_encoders/t5xxl_fp16.safetensors": "Stable Diffusion 3.x text encoder (t5)",
        "vae/sd3_vae.safetensors": "Stable Diffusion 3.x VAE",
        "checkpoints/juggernautXL_v9.safetensors": "Stable Diffusion XL all-in-one checkpoint",
        "text_encoders/clip_l_sdxl.safetensors": "Stable Diffusion XL text encoder (clip_l)",
        "text_encoders/clip_g_sdxl.safetensors": "Stable Diffusion XL text encoder (clip_g)",
        "my-sdxl-finetune": "Stable Diffusion XL model",
        "stable-diffusion-2-1": "Stable Diffusion 2.x model",
        "checkpoints/sd_xl_base_1.0.safetensors": "Stable Diffusion XL all-in-one checkpoint",
        "checkpoints/sd3.5_large_fp8_scaled.safetensors": "Stable Diffusion 3.x all-in-one checkpoint",
        "loras/sd15/detail.safetensors": "Stable Diffusion 1.x LoRA",
        "loras/xl_style.safetensors": "Stable Diffusion XL LoRA",
        "upscale_models/RealESRGAN_x2plus.safetensors": "ESRGAN upscale model (2x)",
    }
    for name, what in expected.items():
        assert (models / name).exists(), name
        assert f"{models / name}: {what} (for " in out, (name, out)
    assert f"GRAPH_RUNTIME_MODELS={models}" in out
    # the tiny pipelines that configure the single files stay out of the model lists
    from nodes.models import list_models

    listed = list_models([models])
    assert "my-sdxl-finetune" in listed and not any(n.startswith(".stand-ins") for n in listed)


@pytest.mark.parametrize("name", list(GRAPHS))
def test_each_graph_runs_on_its_stand_ins(written, name, tmp_path, monkeypatch):
    code, _, err, models, work = written
    assert code == 0, err
    assert run_with(models, str(work / name), tmp_path, monkeypatch) == 0
    assert [p.suffix for p in tmp_path.iterdir()] == [".png"]
    if name == "sd1_lora_upscale.json":  # the 64x64 image through the 2x stand-in upscaler
        from PIL import Image

        with Image.open(next(tmp_path.iterdir())) as im:
            assert im.size == (128, 128)


def test_stand_in_loras_and_upscalers_fit_their_loaders(written):
    """Each LoRA names layers of its family's stand-in network (and text encoders); each upscale model has the
    scale its name says."""
    from safetensors import safe_open

    from nodes.stand_ins.upscale_files import scale_of_name
    from nodes.upscale_models import UpscaleModelStore

    _, _, _, models, _ = written
    with safe_open(str(models / "loras/sd15/detail.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("lora_unet_down_blocks_") for k in keys) and any(k.startswith("lora_te_") for k in keys)
    with safe_open(str(models / "loras/xl_style.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("lora_unet_input_blocks_") for k in keys), keys[:3]
    assert {k.split("_")[1] for k in keys if k.startswith("lora_te")} == {"te1", "te2"}
    model = UpscaleModelStore().load(models / "upscale_models/RealESRGAN_x2plus.safetensors", "x2", "cpu")
    assert model.scale == 2
    assert [scale_of_name(n) for n in ("4x-UltraSharp.pth", "RealESRGAN_x2plus.safetensors", "2xLexica.pth",
                                       "8x_NMKD-Superscale.pt", "BSRGAN.pth", "realesr-general-x4v3.pth")] == \
        [4, 2, 2, 8, 4, 4]


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_official_templates_run_on_their_stand_ins(written, name, tmp_path, monkeypatch):
    code, _, err, models, _ = written
    assert code == 0, err
    assert run_with(models, str(template(name)), tmp_path, monkeypatch, *TEMPLATES[name]) == 0
    assert [p.suffix for p in tmp_path.iterdir()] == [".png"]


def test_files_are_recognised_as_their_family(written):
    """Through the loaders' own recognition: the all-in-one checkpoints and the diffusion model load as the
    family they stand in for, each with the parts its loader gives."""
    import torch

    from nodes.model_store import ModelStore
    from nodes.part_files import config_folders

    *_, models, _ = written
    store, cpu = ModelStore(), torch.device("cpu")
    folders = config_folders([models])
    for name, family, encoders in (("checkpoints/v1-5-pruned-emaonly.safetensors", "sd1", {"clip_l"}),
                                   ("checkpoints/juggernautXL_v9.safetensors", "sdxl", {"clip_l", "clip_g"}),
                                   ("checkpoints/sd3.5_large_fp8_scaled.safetensors", "sd3", {"clip_l", "clip_g", "t5"}),
                                   ("my-sdxl-finetune", "sdxl", {"clip_l", "clip_g"}),
                                   ("stable-diffusion-2-1", "sd2", {"clip_l"})):
        loaded = store.load(models / name, device=cpu, dtype=torch.float32, config_folders=folders)
        assert loaded.model.family.name == family and loaded.clip.family.name == family, name
        assert set(loaded.clip.encoders) == encoders and loaded.vae is not None, name
    net = store.load(models / "diffusion_models" / "sd3.5_medium.safetensors", device=cpu, dtype=torch.float32,
                     kind="network", config_folders=folders)
    assert net.model.family.name == "sd3"


def test_every_file_loads_through_its_loader_as_its_family_and_part(written):
    """Each placed file, through the part loader its node uses: a diffusion model of its family, a text
    encoder of the kind its role is (CLIP-L narrower than CLIP-G, T5), a VAE with its family's latent
    channels; checkpoints and folders as their family with every part."""
    import torch

    from nodes import families
    from nodes.model_store import ModelStore
    from nodes.part_files import config_folders
    from nodes.stand_ins.placement import plan, read_workflow

    *_, models, work = written
    docs = {str(work / n): read_workflow(work / n) for n in GRAPHS} | {t: read_workflow(template(t)) for t in TEMPLATES}
    result = plan(docs)
    store, cpu, folders = ModelStore(), torch.device("cpu"), config_folders([models])
    widths = {}
    for p in result.placements.values():
        if p.part in ("lora", "upscale_model"):  # no models: test_stand_in_loras_and_upscalers_fit_their_loaders
            continue
        kind = {"diffusion_model": "network", "text_encoder": "text_encoder", "vae": "vae"}.get(p.part, "model")
        loaded = store.load(models / p.path, device=cpu, dtype=torch.float32, kind=kind, config_folders=folders)
        if kind in ("model", "network"):
            assert loaded.model.family.name == p.family, p.path
        if kind == "model":
            assert loaded.clip.family.name == p.family and loaded.vae is not None, p.path
        if kind == "vae":
            assert loaded.vae.vae.config.latent_channels == families.by_name(p.family).latent.channels, p.path
        if kind == "text_encoder":
            config = loaded.encoder.model.config
            assert (config.model_type == "t5") == (p.role == "t5"), p.path
            widths[(p.family, p.role)] = config.hidden_size if config.model_type != "t5" else config.d_model
    assert widths[("sdxl", "clip_l")] < widths[("sdxl", "clip_g")] and widths[("sd3", "clip_l")] < widths[("sd3", "clip_g")]


def test_an_sd3_checkpoint_loads_back_to_the_tensors_it_was_written_from(written, tmp_path):
    """ComfyUI's SD3 all-in-one layout (MMDiT, VAE and three text encoders) read by CheckpointLoaderSimple's
    loader gives exactly the tiny pipeline's weights."""
    import torch

    from nodes.model_store import ModelStore
    from nodes.part_files import config_folders
    from nodes.stand_ins.registry import FAMILIES

    *_, models, _ = written
    pipe = FAMILIES["sd3"].build(tmp_path)
    loaded = ModelStore().load(models / "checkpoints" / "sd3.5_large_fp8_scaled.safetensors", device=torch.device("cpu"),
                               dtype=torch.float32, config_folders=config_folders([models]))
    pairs = [(loaded.model.network, pipe.transformer), (loaded.vae.vae, pipe.vae),
             (loaded.clip.encoders["clip_l"].model, pipe.text_encoder),
             (loaded.clip.encoders["clip_g"].model, pipe.text_encoder_2),
             (loaded.clip.encoders["t5"].model, pipe.text_encoder_3)]
    for ours, ref in pairs:
        a, b = ours.state_dict(), ref.state_dict()
        assert a.keys() == b.keys(), type(ref).__name__
        assert all(torch.equal(a[k], b[k]) for k in a), type(ref).__name__


def test_our_workflows_need_no_stand_ins(tmp_path, capsys):
    """The project's workflows load the embedded model: nothing is written over it."""
    assert main(["stand-ins", *map(str, WORKFLOWS), "--models-dir", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    loading = [w for w in WORKFLOWS if '"tiny-shapes-sd"' in w.read_text()]
    assert len(loading) > 1 and out.count("tiny-shapes-sd: shipped with the runtime, no stand-in needed") == len(loading)
    assert not (tmp_path / "m").exists()


def test_the_command_loads_no_torch():
    """Reading workflows and planning (and the command's registration) stay light: torch loads only when
    stand-ins are built."""
    import subprocess
    import sys

    code = ("import sys; from nodes.stand_ins import cli, placement, registry, write; "
            "placement.plan({'w': {'1': {'class_type': 'CheckpointLoaderSimple', 'inputs': {'ckpt_name': 'sd_xl.safetensors'}}}}); "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def refused(tmp_path, capsys, *docs: dict) -> str:
    paths = []
    for i, doc in enumerate(docs):
        paths.append(tmp_path / f"w{i}.json")
        paths[-1].write_text(json.dumps(doc))
    assert main(["stand-ins", *map(str, paths), "--models-dir", str(tmp_path / "m")]) == 2
    assert not (tmp_path / "m").exists(), "nothing is written when a name cannot be placed"
    return capsys.readouterr().err


def test_a_family_without_stand_ins_is_named_with_node_input_and_file(tmp_path, capsys):
    err = refused(tmp_path, capsys, {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "hidream_i1_dev_bf16.safetensors",
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp8.safetensors", "type": "wan"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
    })
    w = tmp_path / "w0.json"
    assert f"{w}: node 1 (UNETLoader) input unet_name: 'hidream_i1_dev_bf16.safetensors': family hidream (from its " \
           "file name) has no stand-ins yet (families with stand-ins: sd1, sd2, sdxl, sd3, flux, z_image, qwen_image)" in err
    assert f"{w}: node 2 (CLIPLoader) input clip_name: 'umt5_xxl_fp8.safetensors': family wan (from its loader " \
           "type wan)" in err
    assert "node 3 (VAELoader) input vae_name: 'wan_2.1_vae.safetensors': family wan" in err
    assert err.startswith("error: 3 model name(s) cannot be given stand-ins; nothing written:")


def test_names_that_cannot_be_placed_say_why(tmp_path, capsys):
    ckpt = "CheckpointLoaderSimple"
    err = refused(tmp_path, capsys, {
        "1": {"class_type": ckpt, "inputs": {"ckpt_name": "v1-5-pruned.ckpt"}},
        "2": {"class_type": ckpt, "inputs": {"ckpt_name": "../outside_sd15.safetensors"}},
        "3": {"class_type": ckpt, "inputs": {"ckpt_name": ["9", 0]}},
        "4": {"class_type": "CLIPLoader", "inputs": {"clip_name": "qwen_2.5_vl_7b.safetensors",
                                                     "type": "stable_diffusion"}},
        "5": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "style.ckpt", "strength_model": 1}},
        "6": {"class_type": "TripleCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                           "clip_name2": "clip_g.safetensors",
                                                           "clip_name3": "t5xxl.safetensors"}},
        "7": {"class_type": "UNETLoader", "inputs": {"unet_name": "sdxl_unet.safetensors", "weight_dtype": "default"}},
    }, {
        "1": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                         "clip_name2": "clip_g.safetensors", "type": "sdxl"}},
    }, {
        "1": {"class_type": ckpt, "inputs": {"ckpt_name": "mystery.safetensors"}},
    })
    assert "node 1 (CheckpointLoaderSimple) input ckpt_name: 'v1-5-pruned.ckpt': only .safetensors files" in err
    assert "node 2 (CheckpointLoaderSimple) input ckpt_name: '../outside_sd15.safetensors': not a file name " \
           "inside the models folder" in err
    assert "node 3 (CheckpointLoaderSimple) input ckpt_name: ['9', 0]: the file name comes from a link" in err
    assert "node 4 (CLIPLoader) input clip_name: 'qwen_2.5_vl_7b.safetensors': a Stable Diffusion 1.x text " \
           "encoder, but the name says qwen (its text encoders: clip_l)" in err
    assert "node 5 (LoraLoaderModelOnly) input lora_name: 'style.ckpt': only .safetensors files" in err
    assert "node 7 (UNETLoader) input unet_name: 'sdxl_unet.safetensors': SDXL UNets are not read from single " \
           "files here yet" in err
    w0 = tmp_path / "w0.json"
    assert (f"w1.json: node 1 (DualCLIPLoader) input clip_name1: 'clip_l.safetensors': wanted here as a Stable "
            f"Diffusion XL text encoder (clip_l), but {w0}: node 6 (TripleCLIPLoader) input clip_name1 wants it as "
            "a Stable Diffusion 3.x text encoder (clip_l)") in err
    # a checkpoint that names no family, in a graph that makes no SD latent: nothing tells what it is
    assert "w2.json: node 1 (CheckpointLoaderSimple) input ckpt_name: 'mystery.safetensors': no family is told" in err


def test_a_family_can_share_another_familys_text_encoder_files(monkeypatch):
    """A family that declares its CLIP-L and T5 to be SD3's (as Flux's are) gets SD3's stand-ins under those
    names, so one models folder serves both families' workflows without a conflict."""
    from nodes.stand_ins import registry
    from nodes.stand_ins.placement import plan

    monkeypatch.setitem(registry.FAMILIES, "flux", registry.FamilyStandIns(
        "flux", "Flux", build=lambda workdir: None, roles_by_position={2: ("clip_l", "t5")},
        encoders_from={"clip_l": "sd3", "t5": "sd3"}))
    flux = {"1": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                             "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}}}
    sd3 = {"1": {"class_type": "TripleCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                              "clip_name2": "clip_g.safetensors",
                                                              "clip_name3": "t5xxl_fp16.safetensors"}}}
    result = plan({"flux.json": flux, "sd3.json": sd3})
    assert not result.refusals
    placed = {p.path: (p.family, p.role, [r.workflow for r in p.refs]) for p in result.placements.values()}
    assert placed == {"text_encoders/clip_l.safetensors": ("sd3", "clip_l", ["flux.json", "sd3.json"]),
                      "text_encoders/t5xxl_fp16.safetensors": ("sd3", "t5", ["flux.json", "sd3.json"]),
                      "text_encoders/clip_g.safetensors": ("sd3", "clip_g", ["sd3.json"])}


def test_an_unsupported_template_fails_with_its_node(tmp_path, capsys):
    """ComfyUI's SDXL base + refiner template: the refiner (its own family) has no stand-ins yet."""
    path = template("sdxl_simple_example")
    assert main(["stand-ins", str(path), "--models-dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: node 12 (CheckpointLoaderSimple) input ckpt_name: 'sd_xl_refiner_1.0.safetensors': family " \
           "sdxl_refiner (from its file name) has no stand-ins yet" in err
    assert err.count("\n  - ") == 1, err
    assert not (tmp_path / "m").exists()


def test_real_files_are_never_overwritten(tmp_path, capsys):
    models = tmp_path / "m"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "sd_xl_base_1.0.safetensors").write_bytes(b"my real model")
    assert main(["stand-ins", str(template("image_sdxl_simple")), "--models-dir", str(models)]) == 2
    assert "sd_xl_base_1.0.safetensors exists and is no stand-in; it is left as it is" in capsys.readouterr().err
    assert (models / "checkpoints" / "sd_xl_base_1.0.safetensors").read_bytes() == b"my real model"


def test_stand_ins_are_rewritten_in_place(written, capsys):
    """A second run over the same folder replaces its own stand-ins (their metadata says what they are)."""
    *_, models, work = written
    before = (models / "checkpoints" / "v1-5-pruned-emaonly.safetensors").stat().st_mtime_ns
    with single_thread():
        assert main(["stand-ins", str(work / "sd1.json"), "--models-dir", str(models)]) == 0, capsys.readouterr().err
    assert (models / "checkpoints" / "v1-5-pruned-emaonly.safetensors").stat().st_mtime_ns > before


def test_unreadable_workflows_are_named(tmp_path, capsys):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{")
    for name, why in (("list.json", "a workflow is a JSON object, got list"), ("broken.json", "cannot read")):
        assert main(["stand-ins", str(tmp_path / name), "--models-dir", str(tmp_path / "m")]) == 2
        assert f"error: {tmp_path / name}: {why}" in capsys.readouterr().err


def test_dry_run_says_what_it_would_write(tmp_path, capsys):
    assert main(["stand-ins", str(template("sd3.5_simple_example")), "--models-dir", str(tmp_path / "m"),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would write {tmp_path / 'm' / 'checkpoints' / 'sd3.5_large_fp8_scaled.safetensors'}: Stable Diffusion 3.x " \
           "all-in-one checkpoint" in out
    assert not (tmp_path / "m").exists()


def test_editor_files_are_read_inside_subgraphs():
    """Loaders inside a subgraph's definition are found (the subgraph's instance node only mirrors them);
    muted loaders are not."""
    from nodes.stand_ins.placement import references

    sub = "0b6c1d2e-0000-4000-8000-000000000001"
    doc = {"nodes": [{"id": 1, "type": sub, "mode": 0, "widgets_values": ["sd_xl_base_1.0.safetensors"]},
                     {"id": 2, "type": "VAELoader", "mode": 2, "widgets_values": ["muted.safetensors"]}],
           "links": [],
           "definitions": {"subgraphs": [{"id": sub, "nodes": [
               {"id": 7, "type": "CheckpointLoaderSimple", "mode": 0, "widgets_values": ["sd_xl_base_1.0.safetensors"]},
               {"id": 8, "type": "DualCLIPLoader", "mode": 0,
                "widgets_values": ["clip_l.safetensors", "clip_g.safetensors", "sdxl", "default"]}]}]}}
    refs = [(r.node_id, r.class_type, r.input, r.name, r.clip_type) for r in references(doc, "w")]
    assert refs == [("7", "CheckpointLoaderSimple", "ckpt_name", "sd_xl_base_1.0.safetensors", None),
                    ("8", "DualCLIPLoader", "clip_name1", "clip_l.safetensors", "sdxl"),
                    ("8", "DualCLIPLoader", "clip_name2", "clip_g.safetensors", "sdxl")]


#: ComfyUI's local templates (0.1.123) whose every model name gets a stand-in today
PLACEABLE = {"image_sdxl_simple", "sd3.5_simple_example", "sdxlturbo_example"}


def test_official_templates_placeable_today():
    from nodes.stand_ins.placement import plan, read_workflow

    folder = template("image_sdxl_simple").parent
    placeable = set()
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith(("api_", "index")):
            continue
        result = plan({path.stem: read_workflow(path)})
        if result.placements and not result.refusals:
            placeable.add(path.stem)
    assert placeable >= PLACEABLE, sorted(placeable)


def test_an_sd3_controlnet_loads_as_sd3_configured_from_its_hidden_folder(tmp_path, monkeypatch, capsys):
    """A ControlNet stand-in for the SD3 family: the loader configures the file from the hidden config folder
    beside it (not listed as a ControlNet itself) and reads it as an SD3 ControlNet of the stand-in's widths."""
    import torch

    from nodes.controlnet import load_controlnet
    from nodes.part_files import list_parts

    name = "sd3.5_large_controlnet_canny.safetensors"
    doc = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "sd3.5_large.safetensors",
                                                        "weight_dtype": "default"}},
           "2": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}}
    (tmp_path / "w.json").write_text(json.dumps(doc))
    models = tmp_path / "m"
    with single_thread():
        assert main(["stand-ins", str(tmp_path / "w.json"), "--models-dir", str(models)]) == 0
    assert f"{models / 'controlnet' / name}: Stable Diffusion 3.x ControlNet (for " in capsys.readouterr().out
    monkeypatch.setenv("GRAPH_RUNTIME_MODELS", str(models))
    assert list_parts("controlnet") == [name]
    net = load_controlnet(models / "controlnet" / name, torch.device("cpu"), torch.float32, name)
    assert net.family.name == "sd3" and type(net.network).__name__ == "SD3ControlNetModel"
