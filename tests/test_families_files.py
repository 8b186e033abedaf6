"""Models kept as ComfyUI users keep them: SD3's diffusion model, three text encoders and VAE as single files
in diffusion_models/, text_encoders/ and vae/, loaded with UNETLoader, TripleCLIPLoader / DualCLIPLoader and
VAELoader. The files are written from the tiny SD3 pipeline's weights; they load back to identical tensors
and the split graph's image equals the one from the model's diffusers folder (itself equal to
StableDiffusion3Pipeline's, see test_families_parity)."""

import os

import pytest
import torch
from nodes_support import *  # noqa: F403
from single_files import write_sd3_parts
from test_families_parity import graph, run
from tiny_families import executor_over, shared_family
from tiny_sd import single_thread

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning",
)


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    fam = shared_family("sd3", tmp_path_factory)
    fam.files = write_sd3_parts(fam.pipe, fam.models)
    return fam


@pytest.fixture(scope="module")
def executor(tmp_path_factory, sd3, services):
    with executor_over([sd3.models], tmp_path_factory.mktemp("families_files"), services) as ex:
        yield ex


def split_graph(files: dict, clip_loader: str = "TripleCLIPLoader") -> dict:
    doc = graph("tiny-sd3", "flow_euler", 9)
    doc["1"] = {"class_type": "UNETLoader", "inputs": {"unet_name": files["unet"], "weight_dtype": "default"}}
    if clip_loader == "TripleCLIPLoader":
        clip = {"class_type": "TripleCLIPLoader", "inputs": {
            "clip_name1": files["clip_l"], "clip_name2": files["clip_g"], "clip_name3": files["t5"]}}
    else:
        clip = {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": files["clip_l"], "clip_name2": files["clip_g"], "type": "sd3"}}
    doc["10"] = clip
    doc["11"] = {"class_type": "VAELoader", "inputs": {"vae_name": files["vae"]}}
    for node in ("2", "3"):
        doc[node]["inputs"]["clip"] = ["10", 0]
    doc["7"]["inputs"]["vae"] = ["11", 0]
    return doc


def test_loaders_list_comfyui_folders(executor, sd3):
    from nodes.part_files import list_parts

    assert sd3.files["unet"] in list_parts("network")
    assert {sd3.files[k] for k in ("clip_l", "clip_g", "t5")} <= set(list_parts("text_encoder"))
    assert list_parts("vae") == [sd3.files["vae"]]


def test_split_files_load_back_to_the_same_tensors(executor, sd3, services):
    from nodes.model_store import ModelStore
    from nodes.part_files import config_folders, find_part

    store = services.get(ModelStore)
    cpu = torch.device("cpu")

    def part(kind, name):
        return store.load(find_part(kind, name, "test"), device=cpu, dtype=torch.float32, kind=kind,
                          config_folders=config_folders())

    pairs = [(part("network", sd3.files["unet"]).model.network, sd3.pipe.transformer),
             (part("vae", sd3.files["vae"]).vae.vae, sd3.pipe.vae),
             (part("text_encoder", sd3.files["clip_l"]).encoder.model, sd3.pipe.text_encoder),
             (part("text_encoder", sd3.files["clip_g"]).encoder.model, sd3.pipe.text_encoder_2),
             (part("text_encoder", sd3.files["t5"]).encoder.model, sd3.pipe.text_encoder_3)]
    for ours, ref in pairs:
        a, b = ours.state_dict(), ref.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), type(ref).__name__


def test_split_graph_equals_the_folder_graph(executor, sd3):
    ours = run(executor, split_graph(sd3.files))
    ref = run(executor, graph("tiny-sd3", "flow_euler", 9))
    assert ours.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0


def test_dual_clip_without_t5_equals_the_pipeline_without_t5(executor, sd3):
    """SD3 without T5 (DualCLIPLoader clip_l + clip_g): the pipeline's zeros stand in for T5's tokens."""
    ours = run(executor, split_graph(sd3.files, "DualCLIPLoader"))
    fam = sd3
    from schedulers import registry

    pipe = type(fam.pipe)(**{**fam.pipe.components, "text_encoder_3": None, "tokenizer_3": None})
    pipe.set_progress_bar_config(disable=True)
    with registry.quiet_diffusers():
        pipe.scheduler = registry.get("flow_euler").cls.from_config(fam.config)
    with single_thread():
        ref = pipe("a red circle on a blue square", negative_prompt="", num_inference_steps=4, guidance_scale=6.0,
                   height=64, width=64, generator=torch.Generator("cpu").manual_seed(9),
                   output_type="pt").images.permute(0, 2, 3, 1)
    assert (ours - ref).abs().max().item() == 0.0


def test_wrong_files_get_named_errors(executor, sd3):
    from graph_runtime.validation import WorkflowValidationError

    doc = split_graph(sd3.files)
    doc["1"]["inputs"]["unet_name"] = "../text_encoders/" + sd3.files["t5"]
    with pytest.raises(WorkflowValidationError, match="unet_name"):
        executor.run(doc)
    doc = split_graph(sd3.files)
    (sd3.models / "diffusion_models" / "not-a-model.safetensors").write_bytes(
        (sd3.models / "text_encoders" / sd3.files["t5"]).read_bytes())
    doc["1"]["inputs"]["unet_name"] = "not-a-model.safetensors"
    with single_thread():
        res = executor.run(doc)
    msg = str(res.error)
    assert res.status == "error" and "T5 text encoder" in msg and "no configuration fits" in msg
    doc = split_graph(sd3.files)
    doc["10"]["inputs"]["clip_name3"] = sd3.files["clip_g"]
    with single_thread():
        res = executor.run(doc)
    assert res.status == "error" and "sd3 CLIP takes clip_l, clip_g, t5" in str(res.error)
    os.remove(sd3.models / "diffusion_models" / "not-a-model.safetensors")


@pytest.mark.parametrize("storage", [torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_files_stored_in_low_precision_compute_in_the_loaders_dtype(tmp_path, sd3, storage):
    """fp16 / bf16 / fp8 e4m3fn files (as users download them) load into fp32 modules holding exactly the
    stored values, and run."""
    from nodes.part_files import load_part

    files = write_sd3_parts(sd3.pipe, tmp_path, prefix="low", dtype=storage)
    cpu = torch.device("cpu")
    net = load_part("network", tmp_path / "diffusion_models" / files["unet"], cpu, torch.float32, "n",
                    [sd3.folder]).model.network
    enc = load_part("text_encoder", tmp_path / "text_encoders" / files["t5"], cpu, torch.float32, "t",
                    [sd3.folder]).encoder.model
    for ours, ref in ((net, sd3.pipe.transformer), (enc, sd3.pipe.text_encoder_3)):
        assert next(ours.parameters()).dtype == torch.float32
        a, b = ours.state_dict(), ref.state_dict()
        assert all(torch.equal(a[k], b[k].to(storage).float()) for k in b), type(ref).__name__
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        out = net(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=torch.randn(1, 10, 64),
                  pooled_projections=torch.randn(1, 64)).sample
    assert torch.isfinite(out).all()


@pytest.fixture(scope="module")
def sdxl_executor(tmp_path_factory, services):
    from single_files import save, sdxl_checkpoint

    fam = shared_family("sdxl", tmp_path_factory)
    save(sdxl_checkpoint(fam.pipe), fam.models / "checkpoints" / "tiny-sdxl-base.safetensors")
    with executor_over([fam.models], tmp_path_factory.mktemp("sdxl_files"), services) as ex:
        yield ex


def test_sdxl_all_in_one_checkpoint_equals_its_folder(sdxl_executor):
    """An SDXL checkpoint in the original layout (checkpoints/, as SDXL models are shared) through
    CheckpointLoaderSimple gives the folder's picture."""
    doc = graph("tiny-sdxl", "euler", 4)
    ref = run(sdxl_executor, doc)
    doc["1"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "checkpoints/tiny-sdxl-base.safetensors"}}
    ours = run(sdxl_executor, doc)
    assert ref.std() > 0.005
    assert (ours - ref).abs().max().item() == 0.0
