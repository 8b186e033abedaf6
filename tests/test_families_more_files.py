"""More of the single files users keep, loaded as ComfyUI loads them: SD3 all-in-one checkpoints
(checkpoints/, with and without T5) through CheckpointLoaderSimple and LoadModel; SD1.x / SD2.x / SDXL UNets
alone in the original layout (diffusion_models/) through UNETLoader. Each file is written from a tiny
diffusers model; it loads back to the folder's tensors and gives the folder's picture."""

import pytest
import torch
from nodes_support import *  # noqa: F403
from single_files import save, sd3_checkpoint
from test_families_parity import graph, run
from tiny_families import CLIP_G_DIM, build_sd3, executor_over, shared_family

from nodes.checkpoint import UNET_PREFIX, unet_to_ldm
from nodes.models import REPO_MODELS

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning",
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder: a tiny SD3 diffusers folder (CLIP-L's projection the identity, as SD3 files imply;
    CLIP-G wider than CLIP-L, as diffusers tells them apart by width) and its all-in-one checkpoints in
    checkpoints/."""
    root = tmp_path_factory.mktemp("more_files")
    pipe = build_sd3(root / "src", clip_g_dim=CLIP_G_DIM)
    with torch.no_grad():
        pipe.text_encoder.text_projection.weight.copy_(torch.eye(pipe.text_encoder.text_projection.weight.shape[0]))
    pipe.save_pretrained(root / "models" / "tiny-sd3-eye")
    save(sd3_checkpoint(pipe), root / "models" / "checkpoints" / "tiny-sd3-aio.safetensors")
    save(sd3_checkpoint(pipe, with_t5=False), root / "models" / "checkpoints" / "tiny-sd3-aio-no-t5.safetensors")
    return root / "models"


def unet_alone(unet, prefixed: bool = False) -> dict[str, torch.Tensor]:
    """A diffusers UNet in the original layout, as a UNet-alone file keeps it (usually without the
    checkpoint's ``model.diffusion_model.`` prefix)."""
    state = unet_to_ldm(unet.state_dict(), dict(unet.config))
    return state if prefixed else {k.removeprefix(UNET_PREFIX): v for k, v in state.items()}


@pytest.fixture(scope="module")
def unets(tmp_path_factory, models):
    """UNet-alone files in diffusion_models/: the embedded SD1.x model's, the tiny SD2.x 768-v's (prefixed
    names) and the tiny SDXL's (stored in fp16, as shared); returns (file, reference UNet, family) by name."""
    from diffusers import UNet2DConditionModel

    sd1 = UNet2DConditionModel.from_pretrained(str(REPO_MODELS / "tiny-shapes-sd"), subfolder="unet")
    sd2, sdxl = (shared_family(n, tmp_path_factory).pipe.unet for n in ("sd2v", "sdxl"))
    out = {"sd1": ("tiny-sd1-unet.safetensors", sd1, "sd1", None),
           "sd2": ("tiny-sd2v-unet.safetensors", sd2, "sd2", None),
           "sdxl": ("tiny-sdxl-unet.safetensors", sdxl, "sdxl", torch.float16)}
    for name, (file, unet, _, dtype) in out.items():
        save(unet_alone(unet, prefixed=name == "sd2"), models / "diffusion_models" / file, dtype)
    return out


@pytest.fixture(scope="module")
def executor(tmp_path_factory, models, unets, services):
    folders = [models, *(shared_family(n, tmp_path_factory).models for n in ("sd2v", "sdxl", "sd3"))]
    with executor_over(folders, tmp_path_factory.mktemp("more_files_run"), services) as ex:
        yield ex


def load(services, path, **kw):
    from nodes.model_store import ModelStore
    from nodes.part_files import config_folders

    return services.get(ModelStore).load(path, device=torch.device("cpu"), dtype=torch.float32,
                                         config_folders=config_folders(), **kw)


def same_tensors(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sd3_checkpoint_loads_back_to_the_folders_tensors(executor, models, services):
    folder = load(services, models / "tiny-sd3-eye")
    for name, slots in (("tiny-sd3-aio", {"clip_l", "clip_g", "t5"}), ("tiny-sd3-aio-no-t5", {"clip_l", "clip_g"})):
        ckpt = load(services, models / "checkpoints" / f"{name}.safetensors")
        assert ckpt.model.family.name == "sd3" and set(ckpt.clip.encoders) == slots
        assert same_tensors(ckpt.model.network, folder.model.network)
        assert same_tensors(ckpt.vae.vae, folder.vae.vae)
        for slot in slots:
            assert same_tensors(ckpt.clip.encoders[slot].model, folder.clip.encoders[slot].model), slot
        assert ckpt.model.scheduler_config["shift"] == 3.0
        assert (ckpt.vae.scaling_factor, ckpt.vae.shift_factor) == (1.5305, 0.0609)


@pytest.mark.parametrize("loader", ["CheckpointLoaderSimple", "LoadModel"])
def test_sd3_checkpoint_gives_the_folders_picture(executor, loader):
    ref = run(executor, graph("tiny-sd3-eye", "flow_euler", 5))
    doc = graph("tiny-sd3-eye", "flow_euler", 5)
    name = "checkpoints/tiny-sd3-aio.safetensors"
    doc["1"] = ({"class_type": loader, "inputs": {"ckpt_name": name}} if loader == "CheckpointLoaderSimple"
                else {"class_type": loader, "inputs": {"model_name": name, "device": "cpu", "dtype": "fp32"}})
    ours = run(executor, doc)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0


def test_sd3_checkpoint_without_t5_differs_from_the_one_with_it(executor):
    """Without T5 the pipeline's zeros stand in for its tokens: another picture from the same MMDiT."""
    doc = graph("tiny-sd3-eye", "flow_euler", 5)
    doc["1"] = {"class_type": "CheckpointLoaderSimple",
                "inputs": {"ckpt_name": "checkpoints/tiny-sd3-aio-no-t5.safetensors"}}
    without = run(executor, doc)
    doc["1"]["inputs"]["ckpt_name"] = "checkpoints/tiny-sd3-aio.safetensors"
    assert (without - run(executor, doc)).abs().max().item() > 0.01


def test_unets_alone_load_back_to_their_tensors(executor, unets, services):
    from nodes.part_files import find_part

    for name, (file, ref, family, dtype) in unets.items():
        loaded = load(services, find_part("network", file, "unet_name"), kind="network").model
        assert loaded.family.name == family, name
        ours, theirs = loaded.network.state_dict(), ref.state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k].to(dtype or torch.float32).float()) for k in ours), name


def test_unet_alone_through_unetloader_gives_the_folders_picture(executor, models, unets):
    """UNETLoader's SDXL UNet (written in fp32 here for exactness) with the folder's CLIP and VAE."""
    save(unet_alone(unets["sdxl"][1]), models / "diffusion_models" / "tiny-sdxl-unet32.safetensors")
    doc = graph("tiny-sdxl", "euler", 4)
    ref = run(executor, doc)
    doc["9"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny-sdxl-unet32.safetensors",
                                                      "weight_dtype": "default"}}
    for node in ("4", "5", "6"):
        doc[node]["inputs"]["model"] = ["9", 0]
    ours = run(executor, doc)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0


@pytest.mark.parametrize(("name", "family"), [("tiny-sdxl_vae.safetensors", "sdxl"), ("xlVAE_c0.safetensors", "sdxl"),
                                              ("vae-ft-mse-840000.safetensors", "sd1")])
def test_a_4_channel_vae_alone_takes_the_scale_its_name_says(tmp_path, name, family):
    """The same 4-channel weights in vae/ are an SD1.x or an SDXL VAE by name only: the scale follows."""
    import json

    from tiny_families import _vae

    from nodes.checkpoint import VAE_PREFIX, vae_to_ldm
    from nodes.part_files import load_part

    scales = {"sd1": ("StableDiffusionPipeline", 0.18215), "sdxl": ("StableDiffusionXLPipeline", 0.13025)}
    vae = _vae()
    folders = []
    for fam, (pipeline, scale) in scales.items():
        folder = tmp_path / f"config-{fam}"
        (folder / "vae").mkdir(parents=True)
        (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
        (folder / "vae" / "config.json").write_text(json.dumps(
            {**vae.config, "_class_name": "AutoencoderKL", "scaling_factor": scale}))
        folders.append(folder)
    state = {k.removeprefix(VAE_PREFIX): v for k, v in vae_to_ldm(vae.state_dict(), dict(vae.config)).items()}
    path = save(state, tmp_path / "vae" / name)
    for order in (folders, folders[::-1]):
        loaded = load_part("vae", path, torch.device("cpu"), torch.float32, name, order).vae
        assert loaded.scaling_factor == scales[family][1]
        assert same_tensors(loaded.vae, vae)


def sd3_prompts(doc: dict, empty_padding: str = "none", **texts) -> dict:
    doc["2"] = {"class_type": "CLIPTextEncodeSD3", "inputs": {"clip": ["1", 1], "empty_padding": empty_padding,
                                                               **{"clip_l": "", "clip_g": "", "t5xxl": "", **texts}}}
    return doc


def test_clip_text_encode_sd3_gives_each_encoder_its_prompt(executor, tmp_path_factory):
    """CLIPTextEncodeSD3's clip_l / clip_g / t5xxl are StableDiffusion3Pipeline's prompt / prompt_2 /
    prompt_3: the same picture."""
    from test_families_parity import CFG, STEPS, swap
    from tiny_sd import single_thread

    fam = shared_family("sd3", tmp_path_factory)
    texts = {"clip_l": "a red circle", "clip_g": "on a blue square", "t5xxl": "a red circle on a blue square"}
    ours = run(executor, sd3_prompts(graph("tiny-sd3", "flow_euler", 7), **texts))
    swap(fam, "flow_euler")
    with single_thread():
        ref = fam.pipe(prompt=texts["clip_l"], prompt_2=texts["clip_g"], prompt_3=texts["t5xxl"], negative_prompt="",
                       num_inference_steps=STEPS, guidance_scale=CFG, height=64, width=64,
                       generator=torch.Generator("cpu").manual_seed(7), output_type="pt").images.permute(0, 2, 3, 1)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0


def test_clip_text_encode_sd3_empty_padding(executor, tmp_path_factory, services):
    """empty_padding none leaves out the empty prompts' tokens; empty_prompt encodes them."""
    from nodes.conditioning import encode

    clip = load(services, shared_family("sd3", tmp_path_factory).folder).clip
    no_t5 = encode(clip, "", texts={"clip_l": "a cat", "clip_g": "a cat", "t5": ""}, empty_padding="none")
    full = encode(clip, "", texts={"clip_l": "a cat", "clip_g": "a cat", "t5": ""}, empty_padding="empty_prompt")
    t5_only = encode(clip, "", texts={"clip_l": "", "clip_g": "", "t5": "a cat"}, empty_padding="none")
    nothing = encode(clip, "", texts={"clip_l": "", "clip_g": "", "t5": ""}, empty_padding="none")
    assert no_t5.embeds.shape[1] == 77 and full.embeds.shape[1] == 77 + 256
    assert torch.equal(no_t5.embeds, full.embeds[:, :77, :no_t5.embeds.shape[-1]])
    assert t5_only.embeds.shape[1] == 256 and not t5_only.pooled.any()
    assert nothing.embeds.shape[1] == 77 and not nothing.embeds.any() and not nothing.pooled.any()
    doc = sd3_prompts(graph("tiny-sd3", "flow_euler", 7), t5xxl="a cat")  # T5 alone, negative too
    doc["3"] = {**doc["2"], "inputs": {**doc["2"]["inputs"], "t5xxl": "blurry"}}
    assert run(executor, doc).std() > 0.005


def test_files_in_the_wrong_loader_get_named_errors(executor, models, unets):
    """A LoRA-sized file as a checkpoint, a UNet alone as a checkpoint, a VAE as a diffusion model: the error
    names the file, what it looks like and the loader that takes it."""
    from tiny_sd import single_thread

    lora = {f"lora_unet_down_blocks_0_attentions_0_proj_in.{part}": torch.zeros(shape)
            for part, shape in (("lora_down.weight", (4, 32)), ("lora_up.weight", (32, 4)), ("alpha", ()))}
    save(lora, models / "checkpoints" / "tiny-lora.safetensors")
    save(unet_alone(unets["sdxl"][1]), models / "checkpoints" / "tiny-unet-alone.safetensors")
    save({"decoder.conv_in.weight": torch.zeros(16, 4, 3, 3), "encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)},
         models / "diffusion_models" / "a-vae.safetensors")
    cases = [("CheckpointLoaderSimple", "ckpt_name", "checkpoints/tiny-lora.safetensors",
              ("tiny-lora.safetensors", "a LoRA", "not an all-in-one checkpoint")),
             ("CheckpointLoaderSimple", "ckpt_name", "checkpoints/tiny-unet-alone.safetensors",
              ("tiny-unet-alone.safetensors", "SDXL UNet", "UNETLoader")),
             ("UNETLoader", "unet_name", "a-vae.safetensors", ("a-vae.safetensors", "a VAE (VAELoader)"))]
    for loader, field, name, words in cases:
        doc = graph("tiny-sdxl", "euler", 4)
        if loader == "UNETLoader":
            doc["9"] = {"class_type": loader, "inputs": {field: name, "weight_dtype": "default"}}
            for node in ("4", "5", "6"):
                doc[node]["inputs"]["model"] = ["9", 0]
        else:
            doc["1"] = {"class_type": loader, "inputs": {field: name}}
        with single_thread():
            res = executor.run(doc)
        assert res.status == "error", name
        assert all(w in str(res.error) for w in words), str(res.error)


@pytest.mark.parametrize("scheduler", ["euler", "ddim"])
def test_model_sampling_discrete_x0_is_the_pipelines_sample_prediction(executor, tmp_path_factory, scheduler):
    """ModelSamplingDiscrete's x0 (the network predicts the clean latents) is diffusers' prediction_type
    "sample": the picture of the pipeline whose scheduler says so."""
    from test_families_parity import CFG, PROMPT, STEPS, swap
    from tiny_sd import single_thread

    fam = shared_family("sd2v", tmp_path_factory)
    doc = graph("tiny-sd2v", scheduler, 11)
    doc["9"] = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["1", 0], "sampling": "x0", "zsnr": False}}
    for node in ("4", "5", "6"):
        doc[node]["inputs"]["model"] = ["9", 0]
    ours = run(executor, doc)
    swap(fam, scheduler)
    fam.pipe.scheduler = type(fam.pipe.scheduler).from_config(fam.pipe.scheduler.config, prediction_type="sample")
    with single_thread():
        ref = fam.pipe(PROMPT, negative_prompt="", num_inference_steps=STEPS, guidance_scale=CFG, height=64, width=64,
                       generator=torch.Generator("cpu").manual_seed(11), output_type="pt").images.permute(0, 2, 3, 1)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0


def test_sd2_checkpoint_equals_its_folder(executor, models, tmp_path_factory, services):
    """An SD2.x 768-v all-in-one checkpoint (OpenCLIP layout; a v_pred tensor says v-prediction, as ComfyUI
    reads it) through CheckpointLoaderSimple: the folder's tensors and picture."""
    from single_files import sd2_checkpoint

    fam = shared_family("sd2v", tmp_path_factory)
    save({**sd2_checkpoint(fam.pipe), "v_pred": torch.zeros(0)}, models / "checkpoints" / "tiny-sd2v.safetensors")
    ckpt = load(services, models / "checkpoints" / "tiny-sd2v.safetensors")
    folder = load(services, fam.folder)
    assert ckpt.model.family.name == "sd2" and ckpt.model.scheduler_config["prediction_type"] == "v_prediction"
    for a, b in ((ckpt.model.network, folder.model.network), (ckpt.vae.vae, folder.vae.vae),
                 (ckpt.clip.encoders["clip_l"].model, folder.clip.encoders["clip_l"].model)):
        assert same_tensors(a, b), type(a).__name__
    doc = graph("tiny-sd2v", "ddim", 3)
    ref = run(executor, doc)
    doc["1"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "checkpoints/tiny-sd2v.safetensors"}}
    assert ref.std() > 0.005
    assert (run(executor, doc) - ref).abs().max().item() == 0.0


@pytest.mark.parametrize(("spread", "expected"), [(0.2, "v_prediction"), (0.01, "epsilon")])
def test_sd2_prediction_type_from_the_late_norm_bias(tmp_path, spread, expected):
    from nodes.families.sd2 import V_PROBE, _prediction_type

    path = save({V_PROBE: torch.randn(320, generator=torch.Generator().manual_seed(0)) * spread},
                tmp_path / "probe.safetensors")
    assert _prediction_type(path, {V_PROBE: (320,)}) == expected
