"""ComfyUI core node names: their input names, the classic API-format workflow, and KSampler / SamplerCustom /
KSamplerAdvanced agreeing with each other on the embedded model."""

import copy

import pytest
import torch
from nodes_support import *  # noqa: F403
from nodes_support import make_executor, make_registry
from sampling_support import workflow
from tiny_sd import single_thread

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning"
)

# ComfyUI's required inputs, in its order
COMFY_INPUTS = {
    "CheckpointLoaderSimple": ["ckpt_name"],
    "CLIPTextEncode": ["text", "clip"],
    "EmptyLatentImage": ["width", "height", "batch_size"],
    "KSampler": ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                 "latent_image", "denoise"],
    "KSamplerAdvanced": ["model", "add_noise", "noise_seed", "steps", "cfg", "sampler_name", "scheduler",
                         "positive", "negative", "latent_image", "start_at_step", "end_at_step",
                         "return_with_leftover_noise"],
    "VAEDecode": ["samples", "vae"],
    "VAEEncode": ["pixels", "vae"],
    "SaveImage": ["images", "filename_prefix"],
    "PreviewImage": ["images"],
    "LoadImage": ["image"],
    "BasicScheduler": ["model", "scheduler", "steps", "denoise"],
    "KarrasScheduler": ["steps", "sigma_max", "sigma_min", "rho"],
    "KSamplerSelect": ["sampler_name"],
    "SamplerCustom": ["model", "add_noise", "noise_seed", "cfg", "positive", "negative", "sampler", "sigmas",
                      "latent_image"],
}
COMFY_OUTPUTS = {
    "CheckpointLoaderSimple": ["MODEL", "CLIP", "VAE"], "KSampler": ["LATENT"], "BasicScheduler": ["SIGMAS"],
    "KarrasScheduler": ["SIGMAS"], "KSamplerSelect": ["SAMPLER"], "SamplerCustom": ["LATENT", "LATENT"],
}


def test_comfy_names_and_inputs(models_dir):
    info = make_registry().object_info()
    for name, inputs in COMFY_INPUTS.items():
        assert name in info, name
        assert info[name]["input_order"]["required"] == inputs, name
    for name, outputs in COMFY_OUTPUTS.items():
        assert info[name]["output"] == outputs, name
    assert info["SamplerCustom"]["output_name"] == ["output", "denoised_output"]


@pytest.fixture(scope="module")
def executor(tmp_path_factory, models_dir, services):
    with single_thread():
        yield make_executor(tmp_path_factory.mktemp("aliases"), services=services)


def run(executor, doc):
    with single_thread():
        res = executor.run(doc)
    return res


def comfy(steps=4, **ksampler):
    doc = copy.deepcopy(workflow("comfy_txt2img_api.json"))
    doc["3"]["inputs"].update(steps=steps, **ksampler)
    return doc


def test_comfy_api_workflow_runs(executor):
    res = run(executor, comfy())
    assert res.status == "success", res.error
    assert res.outputs["9"]["images"][0]["filename"].startswith("ComfyUI_")
    img = res.values["8"][0]
    assert img.shape == (1, 64, 64, 3) and img.std() > 0.01


@pytest.mark.parametrize("sampler_name, scheduler", [
    ("dpmpp_2m", "karras"), ("euler_ancestral", "normal"), ("dpmpp_sde", "karras"), ("uni_pc_bh2", "sgm_uniform"),
    ("ddim", "ddim_uniform"), ("dpm_2", "exponential"), ("lms", "simple"), ("heun", "beta"),
    ("res_multistep", "simple"), ("res_multistep_ancestral", "linear_quadratic"), ("dpmpp_3m_sde", "kl_optimal"),
    ("ipndm_v", "karras"), ("lcm", "sgm_uniform"), ("ddpm", "normal"), ("heunpp2", "karras"),
    ("dpmpp_2s_ancestral", "normal"), ("gradient_estimation", "beta"), ("dpmpp_2m_sde_heun_gpu", "karras"),
    ("uni_pc", "karras"), ("deis", "simple"), ("sa_solver", "normal"), ("seeds_2", "karras"), ("seeds_3", "normal"),
    ("er_sde", "simple"), ("exp_heun_2_x0", "karras"), ("exp_heun_2_x0_sde", "normal"), ("euler_cfg_pp", "normal"),
    ("euler_ancestral_cfg_pp", "karras"), ("dpmpp_2s_ancestral_cfg_pp", "normal"), ("dpmpp_2m_cfg_pp", "karras"),
    ("res_multistep_cfg_pp", "simple"), ("res_multistep_ancestral_cfg_pp", "simple"),
    ("gradient_estimation_cfg_pp", "normal"), ("dpm_fast", "karras"), ("sa_solver_pece", "karras"),
    ("dpm_adaptive", "karras"),
])
def test_ksampler_names(executor, sampler_name, scheduler):
    res = run(executor, comfy(steps=3, sampler_name=sampler_name, scheduler=scheduler))
    assert res.status == "success", res.error
    assert torch.isfinite(res.values["3"][0]["samples"]).all()


def test_cfg_pp_needs_a_negative(executor):
    doc = custom("euler_cfg_pp", "normal")
    doc["20"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}}
    doc["21"] = {"class_type": "BasicGuider", "inputs": {"model": ["4", 0], "conditioning": ["6", 0]}}
    doc["22"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["20", 0], "guider": ["21", 0], "sampler": ["11", 0], "sigmas": ["10", 0],
        "latent_image": ["5", 0]}}
    doc["14"]["inputs"]["samples"] = ["22", 0]
    res = run(executor, doc)
    assert res.status == "error" and res.error["node_type"] == "SamplerCustomAdvanced"
    assert "negative: the CFG++ sampler 'euler_cfg_pp' needs a negative" in res.error["exception_message"]


def test_non_finite_result_is_a_clear_error(executor, tmp_path):
    """A run that ends in NaN (here: NaN latents continued without noise) fails with a clear message instead of
    saving a black picture. (diffusers' UniPC bh1, ComfyUI's uni_pc, does this at few steps on early exports
    of the embedded model.)"""
    from nodes_support import context

    from graph_runtime import NodeError
    from nodes.aliases import KSamplerAdvanced

    res = run(executor, comfy(steps=2))
    model = res.values["4"][0]
    inputs = KSamplerAdvanced.Inputs(
        model=model, add_noise="disable", noise_seed=0, steps=2, cfg=6.0, sampler_name="euler", scheduler="normal",
        positive=res.values["6"][0], negative=res.values["7"][0],
        latent_image={"samples": torch.full((1, 4, 8, 8), float("nan"))}, start_at_step=0, end_at_step=2,
        return_with_leftover_noise="disable")
    with pytest.raises(NodeError, match="NaN"), single_thread():
        KSamplerAdvanced().execute(inputs, context(tmp_path))


def custom(sampler="euler", scheduler="normal", steps=4, seed=5, add_noise=True):
    doc = comfy(steps=steps, seed=seed, sampler_name=sampler, scheduler=scheduler)
    doc["10"] = {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": scheduler,
                                                            "steps": steps, "denoise": 1.0}}
    doc["11"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}}
    doc["12"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["4", 0], "add_noise": add_noise, "noise_seed": seed, "cfg": 6.0, "positive": ["6", 0],
        "negative": ["7", 0], "sampler": ["11", 0], "sigmas": ["10", 0], "latent_image": ["5", 0]}}
    doc["13"] = {"class_type": "PreviewImage", "inputs": {"images": ["14", 0]}}
    doc["14"] = {"class_type": "VAEDecode", "inputs": {"samples": ["12", 1], "vae": ["4", 2]}}
    return doc


@pytest.mark.parametrize("sampler, scheduler", [("euler", "normal"), ("dpmpp_2m", "karras"),
                                                ("euler_ancestral", "exponential")])
def test_sampler_custom_equals_ksampler(executor, sampler, scheduler):
    res = run(executor, custom(sampler, scheduler))
    assert res.status == "success", res.error
    a = res.values["3"][0]["samples"]
    out, denoised = res.values["12"]
    assert torch.equal(a, out["samples"])
    assert denoised["samples"].shape == a.shape
    assert res.outputs["13"]["images"][0]["type"] == "temp"


def test_ksampler_advanced_two_stages_equal_one_run(executor):
    doc = comfy(steps=6, seed=3, sampler_name="euler", scheduler="karras")
    common = {"model": ["4", 0], "noise_seed": 3, "steps": 6, "cfg": 6.0, "sampler_name": "euler",
              "scheduler": "karras", "positive": ["6", 0], "negative": ["7", 0]}
    doc["20"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "enable", "latent_image": ["5", 0], "start_at_step": 0, "end_at_step": 2,
        "return_with_leftover_noise": "enable"}}
    doc["21"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "disable", "latent_image": ["20", 0], "start_at_step": 2, "end_at_step": 10000,
        "return_with_leftover_noise": "disable"}}
    doc["22"] = {"class_type": "VAEDecode", "inputs": {"samples": ["21", 0], "vae": ["4", 2]}}
    doc["23"] = {"class_type": "PreviewImage", "inputs": {"images": ["22", 0]}}
    res = run(executor, doc)
    assert res.status == "success", res.error
    a, b = res.values["3"][0]["samples"], res.values["21"][0]["samples"]
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_karras_scheduler_alias(executor):
    doc = custom("euler", "karras")
    doc["10"] = {"class_type": "KarrasScheduler", "inputs": {"steps": 4, "sigma_max": 14.614642,
                                                             "sigma_min": 0.0291675, "rho": 7.0}}
    res = run(executor, doc)
    assert res.status == "success", res.error
    s = res.values["10"][0]
    assert len(s) == 5 and s[-1] == 0 and abs(float(s[0]) - 14.614642) < 1e-4
    doc["10"]["inputs"]["sigma_min"] = 20.0
    res = run(executor, doc)
    assert res.status == "error" and "sigma_min" in res.error["exception_message"]


def test_empty_latent_image_keeps_comfyuis_bounds(tmp_path):
    """ComfyUI's EmptyLatentImage takes sizes from 16 (step 8) and gives [batch, 4, h/8, w/8]; its inputs are
    its own, not EmptyLatent's (which starts at 64), and the pixel limit still holds."""
    from nodes_support import context

    from graph_runtime import NodeError
    from nodes.aliases import EmptyLatentImage, EmptySD3LatentImage

    out = EmptyLatentImage().execute(EmptyLatentImage.Inputs(width=16, height=24, batch_size=2), context(tmp_path))
    assert out[0]["samples"].shape == (2, 4, 3, 2)
    sd3 = EmptySD3LatentImage().execute(EmptySD3LatentImage.Inputs(width=32, height=32, batch_size=1),
                                        context(tmp_path))
    assert sd3[0]["samples"].shape == (1, 16, 4, 4)
    with pytest.raises(NodeError, match="max_latent_pixels"):
        EmptyLatentImage().execute(EmptyLatentImage.Inputs(width=16384, height=16384, batch_size=1),
                                   context(tmp_path))
    with pytest.raises(ValueError):
        EmptyLatentImage.Inputs(width=8, height=64, batch_size=1)


def test_checkpoint_names_are_relative_to_the_checkpoints_folder(tmp_path):
    """ComfyUI names a checkpoint by its name inside checkpoints/ (its templates say
    'v1-5-pruned-emaonly-fp16.safetensors'): listed and loaded that way, and the same file still loads under
    its path in the models folder."""
    import shutil

    from nodes.models import EMBEDDED_NAME, REPO_MODELS, find_model, list_checkpoints, list_models

    models = tmp_path / "models"
    shutil.copytree(REPO_MODELS / EMBEDDED_NAME, models / "checkpoints" / "my-model")
    assert "my-model" in list_checkpoints([models])
    assert "checkpoints/my-model" in list_models([models]) and "my-model" not in list_models([models])
    assert find_model("my-model", [models]) == find_model("checkpoints/my-model", [models])
    executor = make_executor(tmp_path, models=[models])
    doc = comfy(steps=2)
    doc["4"]["inputs"]["ckpt_name"] = "my-model"
    res = run(executor, doc)
    assert res.status == "success", res.error
    doc["4"]["inputs"]["ckpt_name"] = "checkpoints/my-model"  # LoadModel's name for it
    assert executor.validate(doc).ok
