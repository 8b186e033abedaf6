"""Z-Image (Turbo and base) on the family seam, on a tiny random-weight ZImagePipeline (tests/tiny_zimage.py):

* the diffusers folder through LoadModel -> TextEncode -> Scheduler -> Sampler equals ZImagePipeline pixel
  for pixel (fp32, CPU), two schedulers, two seeds, with guidance and at Turbo's cfg 1;
* ComfyUI's files (z_image_turbo_bf16 / qwen_3_4b / ae, written from the same weights) load back to the same
  tensors, also stored as bf16 / fp16 / fp8, and ComfyUI's graph (UNETLoader + CLIPLoader lumina2 +
  VAELoader + CLIPTextEncode + ModelSamplingAuraFlow + EmptySD3LatentImage) gives the same picture;
* the editor's built-in default graph (a Z-Image Turbo workflow with res_multistep, as
  comfyui-frontend-package 1.58.1 embeds it) validates and runs as saved on stand-ins under its file names;
* the shipped configs build the published models, and wrong inputs get named errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas
from nodes_support import *  # noqa: F403
from test_families_parity import graph, run
from tiny_families import executor_over
from tiny_sd import single_thread
from tiny_zimage import shared_zimage, write_zimage_parts

from schedulers import registry

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning",
)
PROMPT = "a red circle on a blue square"
STEPS = 4
DEFAULT_GRAPH = Path(__file__).parent / "data" / "zimage_turbo_default.ui.json"


@pytest.fixture(scope="module")
def zimage(tmp_path_factory):
    return shared_zimage(tmp_path_factory)


@pytest.fixture(scope="module")
def executor(tmp_path_factory, zimage, services):
    with executor_over([zimage.models], tmp_path_factory.mktemp("zimage"), services) as ex:
        yield ex


def pipeline_image(fam, scheduler: str, seed: int, cfg: float, steps: int = STEPS) -> torch.Tensor:
    """ZImagePipeline's picture with the scheduler swapped the guide's way (its guidance_scale is cfg - 1).
    Its own sigmas go in as an array: UniPC cannot take the list the pipeline makes of them by default."""
    entry = registry.get(scheduler)
    with registry.quiet_diffusers():
        fam.pipe.scheduler = entry.cls.from_config(fam.config, **entry.config_overrides(fam.config))
    sigmas = np.asarray(get_default_z_image_sigmas(steps))
    with single_thread():
        out = fam.pipe(PROMPT, negative_prompt="", num_inference_steps=steps, sigmas=sigmas, guidance_scale=cfg - 1,
                       height=64, width=64, generator=torch.Generator("cpu").manual_seed(seed),
                       output_type="pt").images
    return out.permute(0, 2, 3, 1).float()


def zimage_graph(scheduler: str, seed: int, cfg: float) -> dict:
    doc = graph("tiny-zimage", scheduler, seed, cfg=cfg)
    doc["2"]["inputs"]["text"] = PROMPT
    return doc


def comfy_graph(files: dict, seed: int, cfg: float, ksampler: dict | None = None) -> dict:
    """ComfyUI's Z-Image graph over the single files; our Scheduler + Sampler unless ``ksampler`` inputs."""
    doc = zimage_graph("flow_euler", seed, cfg)
    doc["1"] = {"class_type": "UNETLoader", "inputs": {"unet_name": files["unet"], "weight_dtype": "default"}}
    doc["10"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": files["qwen3"], "type": "lumina2"}}
    doc["11"] = {"class_type": "VAELoader", "inputs": {"vae_name": files["vae"]}}
    doc["12"] = {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["1", 0], "shift": 3.0}}
    doc["2"] = {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["10", 0]}}
    doc["3"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["10", 0]}}
    doc["4"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    doc["5"]["inputs"]["model"] = ["12", 0]
    doc["6"]["inputs"]["model"] = ["12", 0]
    doc["7"]["inputs"]["vae"] = ["11", 0]
    if ksampler is not None:
        del doc["5"]
        doc["6"] = {"class_type": "KSampler", "inputs": {
            "model": ["12", 0], "seed": seed, "steps": STEPS, "cfg": cfg, "positive": ["2", 0],
            "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0, **ksampler}}
    return doc


# ---- the diffusers folder ------------------------------------------------------------------------------

@pytest.mark.parametrize("scheduler", ["flow_euler", "flow_unipc"])
@pytest.mark.parametrize("seed", [3, 1234])
def test_zimage_matches_its_pipeline(executor, zimage, scheduler, seed):
    ours = run(executor, zimage_graph(scheduler, seed, cfg=5.0))
    ref = pipeline_image(zimage, scheduler, seed, cfg=5.0)
    assert ours.shape == ref.shape == (1, 64, 64, 3)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0


def test_turbo_without_guidance_matches_the_pipeline(executor, zimage):
    """Turbo's setting: cfg 1 here is the pipeline's guidance_scale 0 (one pass, no negative)."""
    ours = run(executor, zimage_graph("flow_euler", 8, cfg=1.0))
    ref = pipeline_image(zimage, "flow_euler", 8, cfg=1.0)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0
    assert (ours - run(executor, zimage_graph("flow_euler", 8, cfg=5.0))).abs().max() > 1e-3


def test_a_latent_batch_matches_images_per_prompt(executor, zimage):
    """Two latents for one prompt (the pipeline's num_images_per_prompt=2), with guidance."""
    doc = zimage_graph("flow_euler", 21, cfg=5.0)
    doc["4"]["inputs"]["batch_size"] = 2
    ours = run(executor, doc)
    with registry.quiet_diffusers():
        zimage.pipe.scheduler = registry.get("flow_euler").cls.from_config(zimage.config)
    with single_thread():
        ref = zimage.pipe(PROMPT, negative_prompt="", num_inference_steps=STEPS, guidance_scale=4.0, height=64,
                          width=64, num_images_per_prompt=2, generator=torch.Generator("cpu").manual_seed(21),
                          output_type="pt").images.permute(0, 2, 3, 1)
    assert ours.shape == ref.shape == (2, 64, 64, 3)
    assert (ours[0] - ours[1]).abs().max() > 1e-3
    assert (ours - ref).abs().max().item() == 0.0


def test_folder_is_recognised(zimage):
    from nodes import families

    assert families.for_folder(zimage.folder).name == "z_image"


# ---- ComfyUI's files -----------------------------------------------------------------------------------

def _part(services, kind: str, name: str):
    from nodes.model_store import ModelStore
    from nodes.part_files import config_folders, find_part

    return services.get(ModelStore).load(find_part(kind, name, "test"), device=torch.device("cpu"),
                                         dtype=torch.float32, kind=kind, config_folders=config_folders())


def test_comfyui_files_load_back_to_the_same_tensors(executor, zimage, services):
    pairs = [(_part(services, "network", zimage.files["unet"]).model.network, zimage.pipe.transformer),
             (_part(services, "text_encoder", zimage.files["qwen3"]).encoder.model, zimage.pipe.text_encoder),
             (_part(services, "vae", zimage.files["vae"]).vae.vae, zimage.pipe.vae)]
    for ours, ref in pairs:
        a, b = ours.state_dict(), ref.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), type(ref).__name__
        ab, bb = dict(ours.named_buffers()), dict(ref.named_buffers())  # rotary frequencies are rebuilt
        assert ab.keys() == bb.keys() and all(torch.equal(ab[k], bb[k]) for k in ab), type(ref).__name__


def test_comfyui_graph_equals_the_pipeline(executor, zimage):
    """UNETLoader + CLIPLoader (lumina2) + VAELoader + CLIPTextEncode + ModelSamplingAuraFlow (shift 3, the
    model's own) + EmptySD3LatentImage, with the pipeline's schedule: the pipeline's picture."""
    ours = run(executor, comfy_graph(zimage.files, 3, cfg=5.0))
    ref = pipeline_image(zimage, "flow_euler", 3, cfg=5.0)
    assert (ours - ref).abs().max().item() == 0.0


def test_ksampler_euler_simple_follows_the_pipeline(executor, zimage):
    """ComfyUI's KSampler (euler / simple: the pipeline's sigma spacing over the model's shift). Its Euler
    step goes through the denoised estimate, as ComfyUI's does, so it agrees to rounding, not bit for bit."""
    for cfg in (1.0, 5.0):
        ours = run(executor, comfy_graph(zimage.files, 9, cfg, ksampler={"sampler_name": "euler",
                                                                         "scheduler": "simple"}))
        ref = pipeline_image(zimage, "flow_euler", 9, cfg)
        assert ref.std() > 0.005
        assert (ours - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("storage", [torch.bfloat16, torch.float16, torch.float8_e4m3fn])
def test_files_stored_in_low_precision_compute_in_fp32(tmp_path, zimage, storage):
    """bf16 / fp16 / fp8 e4m3fn files (z_image_turbo_bf16 as users download it) load into fp32 modules that
    hold exactly the stored values."""
    from nodes.part_files import load_part

    files = write_zimage_parts(zimage.pipe, tmp_path, dtype=storage)
    cpu = torch.device("cpu")
    net = load_part("network", tmp_path / "diffusion_models" / files["unet"], cpu, torch.float32, "n",
                    [zimage.folder]).model.network
    enc = load_part("text_encoder", tmp_path / "text_encoders" / files["qwen3"], cpu, torch.float32, "t",
                    [zimage.folder]).encoder.model
    for ours, ref in ((net, zimage.pipe.transformer), (enc, zimage.pipe.text_encoder)):
        assert next(ours.parameters()).dtype == torch.float32
        a, b = ours.state_dict(), ref.state_dict()
        assert all(torch.equal(a[k], b[k].to(storage).float()) for k in b), type(ref).__name__


def test_shipped_configs_build_the_published_models():
    """models/configs/z-image-turbo: Z-Image's S3-DiT (6.15B), Qwen3-4B and the Flux VAE, counted on the
    meta device; single files of the real models are configured by it (base and Turbo share the shapes)."""
    from test_families_configs import build

    from nodes import families
    from nodes.models import CONFIGS_DIR

    folder = CONFIGS_DIR / "z-image-turbo"
    counts = {part: sum(p.numel() for p in build(folder, part).parameters())
              for part in ("transformer", "text_encoder", "vae")}
    assert counts == {"transformer": 6_154_908_736, "text_encoder": 4_022_468_096, "vae": 83_819_683}
    assert families.for_folder(folder).name == "z_image"


def test_real_sized_files_choose_the_shipped_configs_by_shape(zimage):
    """The tensor shapes of the published files (the real transformer, Qwen3-4B as Qwen3ForCausalLM, the
    Flux VAE, built on the meta device and named as ComfyUI's files name them) pick models/configs/z-image-turbo;
    the tiny model's config is refused with the reason."""
    from test_families_configs import build
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from nodes import families
    from nodes.families.base import read_json
    from nodes.models import CONFIGS_DIR
    from nodes.part_files import _config_fits, _text_encoder_kind
    from nodes.stand_ins.layouts import z_image_original

    folder = CONFIGS_DIR / "z-image-turbo"
    family = families.by_name("z_image")
    net = {k: tuple(v.shape) for k, v in z_image_original(build(folder, "transformer")).items()}
    assert family.network_file_mismatch(net, read_json(folder / "transformer" / "config.json")) == ""
    assert family.network_file_mismatch(net, dict(zimage.pipe.transformer.config)) == \
        "30 blocks in layers.*, the config has 2"
    with torch.device("meta"):
        lm = Qwen3ForCausalLM(Qwen3Config.from_pretrained(str(folder / "text_encoder")))
    text = {k: tuple(v.shape) for k, v in lm.state_dict().items()}
    assert "lm_head.weight" in text and _text_encoder_kind(text) == "qwen3"
    assert _config_fits("qwen3", text, read_json(folder / "text_encoder" / "config.json"))
    assert not _config_fits("qwen3", text, zimage.pipe.text_encoder.config.to_dict())


def test_prefixed_and_full_causal_lm_files_load_too(tmp_path, zimage):
    """The diffusion model under ``model.diffusion_model.`` and the text encoder with its (tied) output head,
    as some repackagings keep them, load to the same tensors."""
    from single_files import save

    from nodes.part_files import load_part
    from nodes.stand_ins.layouts import qwen3_causal_lm, z_image_original

    save({f"model.diffusion_model.{k}": v for k, v in z_image_original(zimage.pipe.transformer).items()},
         tmp_path / "net.safetensors")
    text = qwen3_causal_lm(zimage.pipe.text_encoder)
    save({**text, "lm_head.weight": text["model.embed_tokens.weight"].clone()}, tmp_path / "qwen3.safetensors")
    cpu = torch.device("cpu")
    net = load_part("network", tmp_path / "net.safetensors", cpu, torch.float32, "n", [zimage.folder]).model.network
    enc = load_part("text_encoder", tmp_path / "qwen3.safetensors", cpu, torch.float32, "t",
                    [zimage.folder]).encoder.model
    for ours, ref in ((net, zimage.pipe.transformer), (enc, zimage.pipe.text_encoder)):
        a, b = ours.state_dict(), ref.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), type(ref).__name__


def test_shipped_qwen3_tokenizer_renders_the_chat_template():
    from transformers import AutoTokenizer

    from nodes.families.zimage import CHAT_TEMPLATE
    from nodes.part_files import QWEN3_TOKENIZER

    tok = AutoTokenizer.from_pretrained(str(QWEN3_TOKENIZER))
    text = tok.apply_chat_template([{"role": "user", "content": "a cat"}], tokenize=False,
                                   add_generation_prompt=True, enable_thinking=True)
    assert text == CHAT_TEMPLATE.format("a cat")
    assert tok(text).input_ids == [151644, 872, 198, 64, 8251, 151645, 198, 151644, 77091, 198]
    assert (len(tok), tok.pad_token_id, tok.convert_tokens_to_ids("<think>")) == (151669, 151643, 151667)


# ---- wrong inputs -------------------------------------------------------------------------------------

def test_a_t5_file_where_qwen3_is_expected_is_named(executor, zimage):
    from single_files import save
    from transformers import T5Config, T5EncoderModel

    t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4))
    save({k: v for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"},
         zimage.models / "text_encoders" / "t5xxl_fp16.safetensors")
    doc = comfy_graph(zimage.files, 1, cfg=1.0)
    doc["10"]["inputs"]["clip_name"] = "t5xxl_fp16.safetensors"
    with single_thread():
        res = executor.run(doc)
    msg = str(res.error)
    assert res.status == "error"
    assert "clip_name: t5xxl_fp16.safetensors is a T5 text encoder; a lumina2 CLIP (Z-Image) takes qwen3" in msg
    doc["10"]["inputs"]["clip_name"] = "../diffusion_models/" + zimage.files["unet"]
    from graph_runtime.validation import WorkflowValidationError

    with pytest.raises(WorkflowValidationError, match="clip_name"):
        executor.run(doc)


def test_a_diffusion_model_given_as_text_encoder_is_named(executor, zimage):
    shutil.copy(zimage.models / "diffusion_models" / zimage.files["unet"],
                zimage.models / "text_encoders" / "not-a-text-encoder.safetensors")
    doc = comfy_graph(zimage.files, 1, cfg=1.0)
    doc["10"]["inputs"]["clip_name"] = "not-a-text-encoder.safetensors"
    with single_thread():
        res = executor.run(doc)
    assert res.status == "error" and "a Z-Image S3-DiT diffusion model" in str(res.error), res.error


def test_a_prompt_over_the_text_window_is_truncated_with_a_warning(executor, zimage, services):
    """Beyond 512 tokens (chat template included) the pipeline drops the rest: so do we, and say so."""
    from nodes.conditioning import encode
    from nodes.model_store import ModelStore

    warnings = []

    class Ctx:
        def warn(self, message):
            warnings.append(message)

    long = " ".join(["red"] * 600)
    model = services.get(ModelStore).load(zimage.folder, device=torch.device("cpu"), dtype=torch.float32)
    with single_thread():
        cond = encode(model.clip, long, Ctx())
        ref = zimage.pipe.encode_prompt(long, "cpu", do_classifier_free_guidance=False)[0][0]
    assert cond.embeds.shape[1] == 512 and cond.extra["dropped_tokens"] > 0
    assert torch.equal(cond.embeds[0], ref)
    assert len(warnings) == 1 and "512 tokens" in warnings[0] and "dropped" in warnings[0]


# ---- the editor's default graph ------------------------------------------------------------------------

def test_the_editors_default_graph_validates_and_runs(executor, zimage):
    """The frontend's built-in default workflow (Z-Image Turbo: UNETLoader, CLIPLoader lumina2, VAELoader,
    ModelSamplingAuraFlow 3, EmptySD3LatentImage 1024x1024, KSampler 8 steps cfg 1 res_multistep / simple,
    SaveImage), exactly as the editor sends it, over tiny stand-ins under its file names."""
    from graph_runtime.ui_format import ui_to_api

    ui = json.loads(DEFAULT_GRAPH.read_text())
    assert all(n["type"] in executor.registry for n in ui["nodes"])
    api = ui_to_api(ui, executor.registry)
    assert {api[k]["inputs"].get(w) for k, w in (("66", "unet_name"), ("62", "clip_name"), ("63", "vae_name"))} \
        == set(zimage.files.values())
    assert api["70"]["inputs"]["sampler_name"] == "res_multistep"
    check = executor.validate(api)
    assert check.ok, check.messages()
    with single_thread():
        res = executor.run(api)
    assert res.status == "success", res.error
    image = res.values["65"][0]
    assert image.shape == (1, 1024, 1024, 3) and torch.isfinite(image).all() and image.std() > 0.005
    assert res.outputs["9"]["images"][0]["filename"].startswith("ComfyUI")  # SaveImage's prefix


def test_model_sampling_aura_flow_sets_the_shift(executor, zimage):
    """ModelSamplingAuraFlow 3.0 is the model's own shift (the same picture as without it); 1.0 changes it."""
    base = run(executor, zimage_graph("flow_euler", 5, cfg=1.0))
    doc = comfy_graph(zimage.files, 5, cfg=1.0)
    assert (run(executor, doc) - base).abs().max().item() == 0.0
    doc["12"]["inputs"]["shift"] = 1.0
    assert (run(executor, doc) - base).abs().max() > 1e-3


def test_model_sampling_aura_flow_refuses_networks_of_the_other_convention(zimage):
    """An SD3-style network takes sigma x 1000: ComfyUI's node would feed it sigma, so it is refused."""
    from graph_runtime import NodeError
    from nodes import families
    from nodes.model_patches import ModelSamplingAuraFlow
    from nodes.types import ModelBundle

    node = ModelSamplingAuraFlow()
    for family, config, message in (
            ("sd3", {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}, "use ModelSamplingSD3"),
            ("sdxl", {"_class_name": "EulerDiscreteScheduler"}, "not a flow-matching model")):
        model = ModelBundle(network=zimage.pipe.transformer, family=families.by_name(family), scheduler_config=config,
                            device=torch.device("cpu"), dtype=torch.float32, name="m", source="m")
        with pytest.raises(NodeError, match=message):
            node.execute(ModelSamplingAuraFlow.Inputs(model=model, shift=3.0), None)
    fields = ModelSamplingAuraFlow.Inputs.model_fields["shift"]
    assert fields.default == 1.73


def test_the_default_graph_gets_stand_ins_and_runs_on_them(tmp_path, services, capsys):
    """``graph-runtime stand-ins`` on the editor's default graph writes Z-Image stand-ins under its three file
    names (ae.safetensors, a name Flux shares, goes to the workflow's family), and the graph runs on them."""
    from graph_runtime.cli import main
    from graph_runtime.ui_format import ui_to_api

    models = tmp_path / "models"
    assert main(["stand-ins", str(DEFAULT_GRAPH), "--models-dir", str(models)]) == 0, capsys.readouterr().err
    for folder, name in (("diffusion_models", "z_image_turbo_bf16.safetensors"),
                         ("text_encoders", "qwen_3_4b.safetensors"), ("vae", "ae.safetensors")):
        assert (models / folder / name).is_file()
    with executor_over([models], tmp_path / "work", services) as ex:
        api = ui_to_api(json.loads(DEFAULT_GRAPH.read_text()), ex.registry)
        with single_thread():
            res = ex.run(api)
    assert res.status == "success", res.error
    image = res.values["65"][0]
    assert image.shape == (1, 1024, 1024, 3) and torch.isfinite(image).all() and image.std() > 0.005


def test_gpu_check_z_image_dry_run(capsys):
    """bench/gpu_check.py --family z_image end to end on the tiny model on the CPU (the GPU run is the same code
    at Z-Image Turbo's full size): the family's encode + run_sampler + decode equal ZImagePipeline at cfg 1."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import gpu_check

    with single_thread():
        assert gpu_check.main(["--family", "z_image", "--dry-run", "--steps", "2", "--repeats", "1",
                               "--schedulers", "euler,unipc"]) == 0
    out = capsys.readouterr().out
    assert "Z-Image Turbo" in out
    assert "| flow_euler | 2 |" in out and "| flow_unipc | 2 |" in out and out.count("| 0 | True |") == 2
