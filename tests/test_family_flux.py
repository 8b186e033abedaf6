"""Flux.1 on the family seam, on tiny random-weight models (tests/tiny_flux.py): dev (guidance embedding,
resolution-dependent shift) and schnell, from a FluxPipeline folder and from ComfyUI's files.

* our graph (LoadModel -> TextEncode -> EmptyLatent -> Scheduler sized by the latent -> Sampler, cfg 1)
  equals FluxPipeline's image exactly (max abs difference 0), fp32 on the CPU, for three schedulers and two
  seeds, the guidance embedding set by FluxGuidance as the pipeline's guidance_scale; also batches, img2img
  (FluxImg2ImgPipeline) and CLIPTextEncodeFlux's two prompts (prompt_2);
* ComfyUI's graph (UNETLoader + DualCLIPLoader type flux + VAELoader + CLIPTextEncode + FluxGuidance +
  ModelSamplingFlux at the image size + KSampler euler/simple) and ComfyUI's official flux_schnell templates
  run the k-diffusion Euler rule over the same sigmas: equal to the pipeline within float rounding; ComfyUI's
  sigma tables (10000 for dev, the plain flow table for schnell);
* the single files (BFL or diffusers names; bf16 / fp16 / fp8 e4m3fn / scaled fp8) and all-in-one
  checkpoints load back to the pipeline's tensors and pictures;
* bad input is refused naming it: a diffusion model no shipped configuration fits, odd latent sides, another
  family's conditioning.
"""

import pytest
import torch
from nodes_support import *  # noqa: F403
from tiny_families import executor_over, shared_family
from tiny_flux import write_flux_parts
from tiny_sd import single_thread

from schedulers import registry

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning",
)

PROMPT = "a red circle on a blue square"
STEPS = 4


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    fams = {name: shared_family(name, tmp_path_factory) for name in ("flux-dev", "flux-schnell")}
    fam = fams["flux-dev"]
    fam.files = write_flux_parts(fam.pipe, fam.models)
    return fams


@pytest.fixture(scope="module")
def executor(tmp_path_factory, flux, services):
    with executor_over([f.models for f in flux.values()], tmp_path_factory.mktemp("flux"), services) as ex:
        yield ex


def graph(model: str, scheduler: str, seed: int, guidance: float | None = None, steps: int = STEPS) -> dict:
    doc = {
        "1": {"class_type": "LoadModel", "inputs": {"model_name": model, "device": "cpu", "dtype": "fp32"}},
        "2": {"class_type": "TextEncode", "inputs": {"text": PROMPT, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                      "model": ["1", 0]}},
        "5": {"class_type": "Scheduler", "inputs": {"model": ["1", 0], "scheduler": scheduler, "steps": steps,
                                                    "latent": ["4", 0]}},
        "6": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "latent": ["4", 0],
                                                  "schedule": ["5", 0], "seed": seed, "cfg": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
    if guidance is not None:
        doc["9"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["2", 0], "guidance": guidance}}
        doc["6"]["inputs"]["positive"] = ["9", 0]
    return doc


def run(executor, doc) -> torch.Tensor:
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", str(res.error)
    return res.values["7"][0]


def use_scheduler(fam, scheduler: str) -> None:
    """The pipeline's scheduler swapped the guide's way."""
    entry = registry.get(scheduler)
    with registry.quiet_diffusers():
        fam.pipe.scheduler = entry.cls.from_config(fam.config, **entry.config_overrides(fam.config))


def pipeline_image(fam, scheduler: str, seed: int, guidance: float = 3.5, steps: int = STEPS) -> torch.Tensor:
    use_scheduler(fam, scheduler)
    with single_thread():
        out = fam.pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, height=64, width=64,
                       generator=torch.Generator("cpu").manual_seed(seed), output_type="pt").images
    return out.permute(0, 2, 3, 1).float()


@pytest.mark.parametrize("scheduler", ["flow_euler", "flow_dpmpp_2m", "flow_unipc"])
@pytest.mark.parametrize("seed", [3, 1234])
def test_flux_dev_matches_flux_pipeline(executor, flux, scheduler, seed):
    ours = run(executor, graph("tiny-flux-dev", scheduler, seed, guidance=4.0))
    ref = pipeline_image(flux["flux-dev"], scheduler, seed, guidance=4.0)
    assert ours.shape == ref.shape == (1, 64, 64, 3)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0


def comfy_graph(files: dict, seed: int, sampler: str = "euler", scheduler: str = "simple",
                guidance: float = 3.5) -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": files["unet"], "weight_dtype": "default"}},
        "10": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": files["clip_l"], "clip_name2": files["t5"],
                                                          "type": "flux"}},
        "11": {"class_type": "VAELoader", "inputs": {"vae_name": files["vae"]}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["10", 0]}},
        "3": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["2", 0], "guidance": guidance}},
        "12": {"class_type": "ModelSamplingFlux", "inputs": {"model": ["1", 0], "max_shift": 1.15,
                                                             "base_shift": 0.5, "width": 64, "height": 64}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["12", 0], "seed": seed, "steps": STEPS, "cfg": 1.0,
                                                   "sampler_name": sampler, "scheduler": scheduler,
                                                   "positive": ["3", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["11", 0]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }


@pytest.mark.parametrize("seed", [3, 1234])
def test_comfyui_flux_graph_matches_flux_pipeline(executor, flux, seed):
    fam = flux["flux-dev"]
    ours = run(executor, comfy_graph(fam.files, seed, guidance=4.0))
    ref = pipeline_image(fam, "flow_euler", seed, guidance=4.0)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() < 1e-5


def test_flux_schnell_matches_flux_pipeline(executor, flux):
    """Schnell: no guidance embedding (FluxGuidance changes nothing), no resolution-dependent shift."""
    fam = flux["flux-schnell"]
    assert not fam.pipe.transformer.config.guidance_embeds
    ours = run(executor, graph("tiny-flux-schnell", "flow_euler", 5))
    ref = pipeline_image(fam, "flow_euler", 5)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0
    assert (run(executor, graph("tiny-flux-schnell", "flow_euler", 5, guidance=9.0)) - ours).abs().max() == 0.0


def test_the_shift_follows_the_image_size(executor):
    """Dev's mu comes from the latent the Scheduler is given (16 tokens here); without one the model's own
    fixed shift applies: max_shift (a 1024x1024 image, ComfyUI's default) or ModelSamplingFlux's size."""
    sized = run(executor, graph("tiny-flux-dev", "flow_euler", 3))
    doc = graph("tiny-flux-dev", "flow_euler", 3)
    del doc["5"]["inputs"]["latent"]
    unsized = run(executor, doc)
    assert (sized - unsized).abs().max() > 1e-3
    doc["12"] = {"class_type": "ModelSamplingFlux", "inputs": {"model": ["1", 0], "max_shift": 1.15,
                                                               "base_shift": 0.5, "width": 64, "height": 64}}
    doc["5"]["inputs"]["model"] = doc["6"]["inputs"]["model"] = ["12", 0]
    assert (run(executor, doc) - sized).abs().max().item() == 0.0
    doc["12"]["inputs"].update(width=1024, height=1024)
    assert (run(executor, doc) - unsized).abs().max().item() == 0.0


def test_a_scheduler_without_mu_gets_the_equal_fixed_shift(executor, flux):
    """FlowMatchHeun's set_timesteps takes no mu (FluxPipeline refuses it): it runs at the fixed shift
    exp(mu), which exp(mu) / (exp(mu) + 1/t - 1) equals."""
    import math

    from diffusers import FlowMatchHeunDiscreteScheduler

    doc = graph("tiny-flux-dev", "flow_heun", 3)
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", str(res.error)
    mu = 16 * (1.15 - 0.5) / (4096 - 256) + 0.5 - 256 * (1.15 - 0.5) / (4096 - 256)  # 16 image tokens
    ref = FlowMatchHeunDiscreteScheduler(shift=math.exp(mu))
    ref.set_timesteps(STEPS)
    assert torch.isfinite(res.values["7"][0]).all()
    assert torch.allclose(res.values["5"][2].cpu(), ref.timesteps.float(), atol=1e-3)


def test_guidance_defaults_to_3_5(executor):
    base = run(executor, graph("tiny-flux-dev", "flow_euler", 3))
    assert (run(executor, graph("tiny-flux-dev", "flow_euler", 3, guidance=3.5)) - base).abs().max() == 0.0
    assert (run(executor, graph("tiny-flux-dev", "flow_euler", 3, guidance=1.0)) - base).abs().max() > 1e-4


def test_split_files_load_back_to_the_same_tensors(flux, services):
    from nodes.model_store import ModelStore
    from nodes.part_files import config_folders, find_part

    fam = flux["flux-dev"]
    store = services.get(ModelStore)
    extra = [fam.models]

    def part(kind, name):
        return store.load(find_part(kind, name, "test", extra), device=torch.device("cpu"), dtype=torch.float32,
                          kind=kind, config_folders=config_folders(extra))

    net = part("network", fam.files["unet"]).model
    assert net.family.name == "flux" and net.latent_channels == 16
    pairs = [(net.network, fam.pipe.transformer), (part("vae", fam.files["vae"]).vae.vae, fam.pipe.vae),
             (part("text_encoder", fam.files["clip_l"]).encoder.model, fam.pipe.text_encoder),
             (part("text_encoder", fam.files["t5"]).encoder.model, fam.pipe.text_encoder_2)]
    for ours, ref in pairs:
        a, b = ours.state_dict(), ref.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), type(ref).__name__
    vae = part("vae", fam.files["vae"]).vae
    assert (vae.scaling_factor, vae.shift_factor) == (0.3611, 0.1159)


def split_graph(files: dict, seed: int = 9) -> dict:
    doc = graph("tiny-flux-dev", "flow_euler", seed)
    doc["1"] = {"class_type": "UNETLoader", "inputs": {"unet_name": files["unet"], "weight_dtype": "default"}}
    doc["10"] = {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": files["clip_l"], "clip_name2": files["t5"],
                                                            "type": "flux"}}
    doc["11"] = {"class_type": "VAELoader", "inputs": {"vae_name": files["vae"]}}
    doc["2"]["inputs"]["clip"] = ["10", 0]
    doc["7"]["inputs"]["vae"] = ["11", 0]
    return doc


def test_split_graph_equals_the_folder_graph(executor, flux):
    ours = run(executor, split_graph(flux["flux-dev"].files))
    ref = run(executor, graph("tiny-flux-dev", "flow_euler", 9))
    assert ours.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0


@pytest.mark.parametrize("storage", [torch.bfloat16, torch.float16, torch.float8_e4m3fn])
def test_files_stored_in_low_precision_compute_in_fp32(tmp_path, flux, storage):
    """bf16 / fp16 / fp8 e4m3fn files (ComfyUI's names under model.diffusion_model. too) load into fp32
    modules holding exactly the stored values, and sample."""
    from nodes.part_files import load_part

    fam = flux["flux-dev"]
    files = write_flux_parts(fam.pipe, tmp_path, prefix="low", dtype=storage, comfy_prefix=True)
    bundle = load_part("network", tmp_path / "diffusion_models" / files["unet"], torch.device("cpu"),
                       torch.float32, "n", [fam.folder]).model
    net = bundle.network
    assert next(net.parameters()).dtype == torch.float32
    a, b = net.state_dict(), fam.pipe.transformer.state_dict()
    assert all(torch.equal(a[k], b[k].to(storage).float()) for k in b)
    x = torch.randn(1, 16, 8, 8)
    inputs = {"encoder_hidden_states": torch.randn(1, 12, 32), "pooled_projections": torch.randn(1, 32),
              "guidance": torch.tensor([3.5])}
    with torch.no_grad():
        out = bundle.family.network(bundle)(x, torch.tensor(500.0), **inputs)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("per_row", [False, True])
def test_scaled_fp8_files_load_as_the_values_they_stand_for(tmp_path, flux, per_row):
    """ComfyUI's *_fp8_scaled files (fp8 weights with their scales: scale_weight per tensor, or the newer
    weight_scale per row): the diffusion model and T5 load as weight * scale, in fp32."""
    from single_files import save
    from tiny_flux import dequantized, flux_original, scaled_fp8

    from nodes.families.flux import bfl_to_diffusers
    from nodes.part_files import load_part

    fam = flux["flux-dev"]
    net_state = scaled_fp8(flux_original(fam.pipe.transformer), per_row)
    t5_state = scaled_fp8({k: v for k, v in fam.pipe.text_encoder_2.state_dict().items()
                           if k != "encoder.embed_tokens.weight"}, per_row)
    net_path = save(net_state, tmp_path / "diffusion_models" / "flux-fp8-scaled.safetensors")
    t5_path = save(t5_state, tmp_path / "text_encoders" / "t5xxl-fp8-scaled.safetensors")
    cpu = torch.device("cpu")
    net = load_part("network", net_path, cpu, torch.float32, "n", [fam.folder]).model.network
    t5 = load_part("text_encoder", t5_path, cpu, torch.float32, "t", [fam.folder]).encoder.model
    want_net = bfl_to_diffusers(dequantized(net_state), 32)
    want_t5 = dequantized(t5_state)
    assert set(net.state_dict()) == set(want_net)
    assert all(torch.equal(v, want_net[k]) for k, v in net.state_dict().items())
    assert all(torch.equal(v, want_t5[k]) for k, v in t5.state_dict().items() if k in want_t5)
    ref = fam.pipe.transformer.state_dict()["transformer_blocks.0.attn.to_q.weight"]
    assert (net.state_dict()["transformer_blocks.0.attn.to_q.weight"] - ref).abs().max() < 0.1 * ref.abs().max()


def test_a_file_in_diffusers_names_loads_too(tmp_path, flux):
    """Some Flux diffusion-model files keep diffusers' names (transformer_blocks, single_transformer_blocks)."""
    from single_files import save

    from nodes.part_files import load_part

    fam = flux["flux-dev"]
    path = save(fam.pipe.transformer.state_dict(), tmp_path / "diffusion_models" / "flux-diffusers.safetensors")
    bundle = load_part("network", path, torch.device("cpu"), torch.float32, "n", [fam.folder]).model
    a, b = bundle.network.state_dict(), fam.pipe.transformer.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert bundle.family.name == "flux"
    from nodes.checkpoint import checkpoint_shapes
    from nodes.families.recognise import describe

    assert describe(checkpoint_shapes(path)).startswith("a Flux transformer in diffusers' names")


def test_a_flux_model_no_config_fits_is_refused_naming_the_file(executor, flux, tmp_path):
    from diffusers import FluxTransformer2DModel
    from single_files import save
    from tiny_flux import flux_original, transformer_config

    fam = flux["flux-dev"]
    odd = FluxTransformer2DModel(**transformer_config(num_layers=2))
    save(flux_original(odd), fam.models / "diffusion_models" / "odd-flux.safetensors")
    doc = split_graph(fam.files)
    doc["1"]["inputs"]["unet_name"] = "odd-flux.safetensors"
    with single_thread():
        res = executor.run(doc)
    msg = str(res.error)
    assert res.status == "error" and "odd-flux.safetensors: a Flux diffusion model" in msg
    assert "no configuration fits" in msg and "2 double and 1 single blocks" in msg and "flux1-dev" in msg
    (fam.models / "diffusion_models" / "odd-flux.safetensors").unlink()


def test_all_in_one_checkpoint_equals_its_folder(executor, flux):
    """ComfyUI's all-in-one Flux checkpoint (checkpoints/, fp8-style names) through CheckpointLoaderSimple
    gives the folder's picture."""
    from single_files import save
    from tiny_flux import flux_checkpoint

    fam = flux["flux-dev"]
    save(flux_checkpoint(fam.pipe), fam.models / "checkpoints" / "tiny-flux-dev-aio.safetensors")
    doc = graph("tiny-flux-dev", "flow_euler", 4)
    ref = run(executor, doc)
    doc["1"] = {"class_type": "CheckpointLoaderSimple",
                "inputs": {"ckpt_name": "tiny-flux-dev-aio.safetensors"}}
    ours = run(executor, doc)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0


def test_a_conditioning_of_another_family_is_refused_naming_the_input(flux):
    """An SD3-shaped conditioning (CLIP states padded to T5's width, a 2-CLIP pooled embedding) on a Flux model
    is refused before the network runs."""
    from graph_runtime import NodeError
    from nodes.families import by_name
    from nodes.types import Conditioning, ModelBundle

    fam = flux["flux-dev"]
    family = by_name("flux")
    model = ModelBundle(fam.pipe.transformer, family, fam.config, torch.device("cpu"), torch.float32, "m", "memory")
    wrong = Conditioning(torch.zeros(1, 333, 32), "x", pooled=torch.zeros(1, 64))
    with pytest.raises(NodeError, match="negative: this Flux model takes T5 states of width 32 and CLIP-L's "
                                        "pooled output of 32; the conditioning has states of width 32 and a "
                                        "pooled embedding of 64"):
        family.network_inputs(model, wrong, (1, 16, 8, 8), "negative")
    with pytest.raises(NodeError, match="positive: .* has no pooled embedding"):
        family.network_inputs(model, Conditioning(torch.zeros(1, 77, 32), "x"), (1, 16, 8, 8), "positive")


def test_odd_latent_sides_are_refused(executor):
    doc = graph("tiny-flux-dev", "flow_euler", 3)
    doc["4"]["inputs"].update(width=72, height=64)
    with single_thread():
        res = executor.run(doc)
    assert res.status == "error" and "latent's sides must be even" in str(res.error)


PUBLISHED = {"flux1-dev": {"transformer": 11_901_408_320, "vae": 83_819_683, "text_encoder_2": 4_762_310_656},
             "flux1-schnell": {"transformer": 11_891_178_560, "vae": 83_819_683, "text_encoder_2": 4_762_310_656}}


@pytest.mark.parametrize("name", PUBLISHED)
def test_shipped_configs_build_the_published_models(name):
    from test_families_configs import build

    from nodes import families
    from nodes.models import CONFIGS_DIR

    folder = CONFIGS_DIR / name
    counts = {part: sum(p.numel() for p in build(folder, part).parameters()) for part in PUBLISHED[name]}
    assert counts == PUBLISHED[name]
    assert families.for_folder(folder).name == "flux"


def test_bfl_names_match_diffusers_conversion_at_full_size():
    """At Flux.1-dev's real size (diffusers' own converter assumes its widths) our BFL -> diffusers map and
    diffusers' give the same names and shapes, on the meta device (no memory)."""
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers
    from tiny_flux import flux_original

    from nodes.families.base import read_json
    from nodes.families.flux import bfl_to_diffusers
    from nodes.models import CONFIGS_DIR

    with torch.device("meta"):
        net = FluxTransformer2DModel.from_config(read_json(CONFIGS_DIR / "flux1-dev" / "transformer" / "config.json"))
    bfl = flux_original(net)
    ours = bfl_to_diffusers(bfl, 3072)
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert set(ours) == set(net.state_dict())


def test_gpu_check_flux_dry_run(capsys):
    """bench/gpu_check.py --family flux end to end on the tiny model on the CPU (the GPU run is the same code
    at Flux.1-dev's full size): the family's encode + run_sampler + decode equal FluxPipeline."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import gpu_check

    with single_thread():
        assert gpu_check.main(["--family", "flux", "--dry-run", "--steps", "2", "--repeats", "1",
                               "--schedulers", "euler"]) == 0
    out = capsys.readouterr().out
    assert "| flow_euler | 2 |" in out and "| 0 | True |" in out


def test_clip_text_encode_flux_gives_each_encoder_its_prompt(executor, flux):
    """CLIPTextEncodeFlux with one text equals TextEncode + FluxGuidance; with two texts it equals
    FluxPipeline's prompt (CLIP-L) and prompt_2 (T5)."""
    doc = graph("tiny-flux-dev", "flow_euler", 3, guidance=4.0)
    same = run(executor, doc)
    doc["9"] = {"class_type": "CLIPTextEncodeFlux", "inputs": {"clip": ["1", 1], "clip_l": PROMPT, "t5xxl": PROMPT,
                                                              "guidance": 4.0}}
    assert (run(executor, doc) - same).abs().max().item() == 0.0
    doc["9"]["inputs"]["t5xxl"] = "a green triangle"
    ours = run(executor, doc)
    fam = flux["flux-dev"]
    use_scheduler(fam, "flow_euler")
    with single_thread():
        ref = fam.pipe(PROMPT, prompt_2="a green triangle", num_inference_steps=STEPS, guidance_scale=4.0, height=64,
                       width=64, generator=torch.Generator("cpu").manual_seed(3), output_type="pt").images
    assert (ours - same).abs().max() > 1e-4
    assert (ours - ref.permute(0, 2, 3, 1)).abs().max().item() == 0.0


def test_comfyuis_flux_schnell_template_runs_on_the_tiny_checkpoint(executor, flux):
    """ComfyUI's official flux_schnell template (editor format: CheckpointLoaderSimple
    flux1-schnell-fp8.safetensors, EmptySD3LatentImage, KSampler euler/simple, 4 steps, cfg 1) runs as it is
    saved, only the image made 64x64 and the seed fixed, on the tiny schnell as that checkpoint; its picture is
    FluxPipeline's within the Euler rule's float rounding."""
    import json
    from pathlib import Path

    import comfyui_workflow_templates_json as pkg
    from nodes_support import make_registry
    from single_files import save
    from tiny_flux import flux_checkpoint

    from graph_runtime.ui_format import ui_to_api

    fam = flux["flux-schnell"]
    # CheckpointLoaderSimple names files relative to the models folder (checkpoints/ files as checkpoints/...)
    save(flux_checkpoint(fam.pipe), fam.models / "flux1-schnell-fp8.safetensors")
    doc = ui_to_api(json.loads((Path(pkg.__file__).parent / "templates" / "flux_schnell.json").read_text()),
                    make_registry())
    (latent,) = [n for n in doc.values() if n["class_type"] == "EmptySD3LatentImage"]
    latent["inputs"].update(width=64, height=64)
    (sampler,) = [n for n in doc.values() if n["class_type"] == "KSampler"]
    sampler["inputs"]["seed"] = 11
    assert (sampler["inputs"]["sampler_name"], sampler["inputs"]["scheduler"], sampler["inputs"]["cfg"]) == \
        ("euler", "simple", 1)
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", str(res.error)
    (decode,) = [k for k, n in doc.items() if n["class_type"] == "VAEDecode"]
    ours = res.values[decode][0]
    use_scheduler(fam, "flow_euler")
    with single_thread():
        ref = fam.pipe(sampler_prompt(doc, sampler), num_inference_steps=sampler["inputs"]["steps"], height=64,
                       width=64, generator=torch.Generator("cpu").manual_seed(11), output_type="pt").images
    assert (ours - ref.permute(0, 2, 3, 1)).abs().max().item() < 1e-5


def test_comfyuis_flux_schnell_split_files_template_runs(executor, flux):
    """ComfyUI's official flux_schnell_full_text_to_image template (UNETLoader flux1-schnell, DualCLIPLoader
    clip_l + t5xxl_fp16 type flux, VAELoader ae, CLIPTextEncodeFlux, ConditioningZeroOut as the unused
    negative, KSampler euler/simple cfg 1) runs as saved on the tiny schnell's files under those names, only the
    size and seed changed; its picture is FluxPipeline's (prompt and prompt_2 from the node) within 1e-5."""
    import json
    from pathlib import Path

    import comfyui_workflow_templates_json as pkg
    from nodes_support import make_registry

    from graph_runtime.ui_format import ui_to_api

    fam = flux["flux-schnell"]
    write_flux_parts(fam.pipe, fam.models, names={"unet": "flux1-schnell.safetensors", "clip_l": "clip_l.safetensors",
                                                  "t5": "t5xxl_fp16.safetensors", "vae": "ae.safetensors"})
    path = Path(pkg.__file__).parent / "templates" / "flux_schnell_full_text_to_image.json"
    doc = ui_to_api(json.loads(path.read_text()), make_registry())
    (latent,) = [n for n in doc.values() if n["class_type"] == "EmptySD3LatentImage"]
    latent["inputs"].update(width=64, height=64)
    (sampler,) = [n for n in doc.values() if n["class_type"] == "KSampler"]
    sampler["inputs"]["seed"] = 12
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", str(res.error)
    (decode,) = [k for k, n in doc.items() if n["class_type"] == "VAEDecode"]
    encode = doc[sampler["inputs"]["positive"][0]]
    assert encode["class_type"] == "CLIPTextEncodeFlux" and encode["inputs"]["t5xxl"]
    use_scheduler(fam, "flow_euler")
    with single_thread():
        ref = fam.pipe(encode["inputs"]["clip_l"], prompt_2=encode["inputs"]["t5xxl"], height=64, width=64,
                       num_inference_steps=sampler["inputs"]["steps"], generator=torch.Generator("cpu").manual_seed(12),
                       output_type="pt").images
    assert (res.values[decode][0] - ref.permute(0, 2, 3, 1)).abs().max().item() < 1e-5


def sampler_prompt(doc: dict, sampler: dict) -> str:
    """The text of the CLIPTextEncode that feeds the sampler's positive input."""
    return doc[sampler["inputs"]["positive"][0]]["inputs"]["text"]


def test_compare_schedulers_sizes_the_shift_by_its_latent(executor):
    """CompareSchedulers builds each schedule for its latent, so its Flux cell is the Sampler's picture."""
    doc = graph("tiny-flux-dev", "flow_euler", 3)
    ref = run(executor, doc)
    doc["6"] = {"class_type": "CompareSchedulers", "inputs": {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent": ["4", 0], "vae": ["1", 2],
        "schedulers": "flow_euler", "steps": str(STEPS), "seed": 3, "cfg": 1.0}}
    del doc["7"]
    doc["8"]["inputs"]["images"] = ["6", 0]
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", str(res.error)
    from PIL import Image, ImageDraw, ImageFont

    from nodes.compare import MIN_TILE

    grid = res.values["6"][0][0]  # the one tile: after the row label, below the column labels, scaled up
    label = registry.get("flow_euler").label
    x0 = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(label, font=ImageFont.load_default())) + 12 + 4
    scale = max(1, -(-MIN_TILE // 64))
    tile = grid[22:22 + 64 * scale:scale, x0:x0 + 64 * scale:scale]
    assert torch.equal((tile * 255).round(), (ref[0].clamp(0, 1) * 255).round())


def test_img2img_matches_flux_img2img_pipeline(executor, flux):
    """VAEEncode of a picture -> Scheduler denoise 0.6 (sized by that latent) -> Sampler equals
    FluxImg2ImgPipeline with strength 0.6 given the same encoded latents (the pipeline would otherwise draw a
    sample of the VAE posterior; VAEEncode takes its mode)."""
    from diffusers import FluxImg2ImgPipeline

    fam = flux["flux-dev"]
    doc = graph("tiny-flux-dev", "flow_euler", 3)
    picture = run(executor, doc)
    doc["20"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["7", 0], "vae": ["1", 2]}}
    doc["22"] = {"class_type": "Scheduler", "inputs": {**doc["5"]["inputs"], "denoise": 0.6, "latent": ["20", 0],
                                                       "steps": 5}}
    doc["23"] = {"class_type": "Sampler", "inputs": {**doc["6"]["inputs"], "latent": ["20", 0], "seed": 21,
                                                     "schedule": ["22", 0]}}
    doc["21"] = {"class_type": "VAEDecode", "inputs": {"samples": ["23", 0], "vae": ["1", 2]}}
    doc["8"]["inputs"]["images"] = ["21", 0]
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", str(res.error)
    ours = res.values["21"][0]
    pipe = FluxImg2ImgPipeline(**fam.pipe.components)
    pipe.set_progress_bar_config(disable=True)
    use_scheduler(fam, "flow_euler")
    pipe.scheduler = fam.pipe.scheduler
    with single_thread():
        ref = pipe(PROMPT, image=res.values["20"][0]["samples"], strength=0.6, num_inference_steps=5, height=64,
                   width=64, guidance_scale=3.5, generator=torch.Generator("cpu").manual_seed(21),
                   output_type="pt").images
    assert (ours - picture).abs().max() > 1e-3
    assert (ours - ref.permute(0, 2, 3, 1)).abs().max().item() == 0.0


def test_a_batch_matches_the_pipelines_images_per_prompt(executor, flux):
    """Two latents from one prompt: FluxPipeline's num_images_per_prompt=2 (one noise draw for the batch)."""
    doc = graph("tiny-flux-dev", "flow_euler", 8)
    doc["4"]["inputs"]["batch_size"] = 2
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", str(res.error)
    ours = res.values["7"][0]
    fam = flux["flux-dev"]
    use_scheduler(fam, "flow_euler")
    with single_thread():
        ref = fam.pipe(PROMPT, num_images_per_prompt=2, num_inference_steps=STEPS, height=64, width=64,
                       generator=torch.Generator("cpu").manual_seed(8), output_type="pt").images
    assert ours.shape == (2, 64, 64, 3) and (ours[0] - ours[1]).abs().max() > 1e-3
    assert (ours - ref.permute(0, 2, 3, 1)).abs().max().item() == 0.0


@pytest.mark.parametrize("steps", [4, 7])
def test_comfyuis_flux_sigmas_index_a_table_of_10000(flux, steps):
    """BasicScheduler simple on Flux dev: ComfyUI's Flux sampling indexes 10000 sigmas
    exp(mu) / (exp(mu) + 1/t - 1) at t = (10000 - int(i * 10000 / steps)) / 10000, mu 1.15 by default
    (1000 entries would differ at 7 steps)."""
    import math

    from nodes.custom_sampling import BasicScheduler
    from nodes.part_files import load_part

    fam = flux["flux-dev"]
    model = load_part("network", fam.models / "diffusion_models" / fam.files["unet"], torch.device("cpu"),
                      torch.float32, "n", [fam.folder]).model
    (sigmas,) = BasicScheduler().execute(BasicScheduler.Inputs(model=model, scheduler="simple", steps=steps,
                                                                denoise=1.0), None)
    t = torch.tensor([(10000 - int(i * 10000 / steps)) / 10000 for i in range(steps)])
    m = math.exp(1.15)
    want = torch.cat([m / (m + (1 / t - 1)), torch.zeros(1)])
    assert sigmas.shape == want.shape and torch.allclose(sigmas.float(), want, rtol=0, atol=1e-6)


def test_comfyuis_schnell_sigmas_are_the_plain_flow_table(flux):
    """Schnell in ComfyUI samples as a plain flow model (shift 1, 1000 sigmas): BasicScheduler simple at 7
    steps gives t = (1000 - int(i * 1000 / 7)) / 1000 itself."""
    from nodes.custom_sampling import BasicScheduler
    from nodes.families import by_name
    from nodes.types import ModelBundle

    fam = flux["flux-schnell"]
    family = by_name("flux")
    model = ModelBundle(fam.pipe.transformer, family, family.sampling_config(dict(fam.config)),
                        torch.device("cpu"), torch.float32, "schnell", "memory")
    (sigmas,) = BasicScheduler().execute(BasicScheduler.Inputs(model=model, scheduler="simple", steps=7,
                                                                denoise=1.0), None)
    want = torch.tensor([(1000 - int(i * 1000 / 7)) / 1000 for i in range(7)] + [0.0])
    assert torch.allclose(sigmas.float(), want, rtol=0, atol=1e-6)
