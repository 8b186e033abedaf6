"""ComfyUI's custom-sampling node set: NOISE, GUIDER, SamplerCustomAdvanced and the schedulers beside them,
checked against KSampler / SamplerCustom on the embedded model and against hand-worked guidance arithmetic."""

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

# ComfyUI's inputs (required, then optional) and outputs, in its order
COMFY_NODES = {
    "RandomNoise": (["noise_seed"], [], ["NOISE"]),
    "DisableNoise": ([], [], ["NOISE"]),
    "BasicGuider": (["model", "conditioning"], [], ["GUIDER"]),
    "CFGGuider": (["model", "positive", "negative", "cfg"], [], ["GUIDER"]),
    "DualCFGGuider": (["model", "cond1", "cond2", "negative", "cfg_conds", "cfg_cond2_negative"], ["style"],
                      ["GUIDER"]),
    "SamplerCustomAdvanced": (["noise", "guider", "sampler", "sigmas", "latent_image"], [], ["LATENT", "LATENT"]),
    "ManualSigmas": (["sigmas"], [], ["SIGMAS"]),
    "SetFirstSigma": (["sigmas", "sigma"], [], ["SIGMAS"]),
    "SplitSigmas": (["sigmas", "step"], [], ["SIGMAS", "SIGMAS"]),
    "SplitSigmasDenoise": (["sigmas", "denoise"], [], ["SIGMAS", "SIGMAS"]),
    "FlipSigmas": (["sigmas"], [], ["SIGMAS"]),
    "AlignYourStepsScheduler": (["model_type", "steps", "denoise"], [], ["SIGMAS"]),
    "SDTurboScheduler": (["model", "steps", "denoise"], [], ["SIGMAS"]),
}


def test_comfy_names_inputs_and_outputs(models_dir):
    info = make_registry().object_info()
    for name, (required, optional, outputs) in COMFY_NODES.items():
        assert info[name]["input_order"]["required"] == required, name
        assert info[name]["input_order"].get("optional", []) == optional, name
        assert info[name]["output"] == outputs, name
    assert info["SamplerCustomAdvanced"]["output_name"] == ["output", "denoised_output"]
    assert info["SplitSigmasDenoise"]["output_name"] == ["high_sigmas", "low_sigmas"]
    assert info["DualCFGGuider"]["input"]["optional"]["style"][0] == ["regular", "nested"]
    assert info["AlignYourStepsScheduler"]["input"]["required"]["model_type"][0] == ["SD1", "SDXL", "SVD"]
    assert info["ManualSigmas"]["input"]["required"]["sigmas"][1]["default"] == "1, 0.5"
    assert info["SDTurboScheduler"]["input"]["required"]["steps"][1]["max"] == 10


@pytest.fixture(scope="module")
def executor(tmp_path_factory, models_dir, services):
    with single_thread():
        yield make_executor(tmp_path_factory.mktemp("custom_sampling"), services=services)


def run(executor, doc):
    with single_thread():
        return executor.run(doc)


def graph(sampler="euler", scheduler="normal", steps=4, seed=5, cfg=6.0):
    """KSampler (3), SamplerCustom (12) and SamplerCustomAdvanced + CFGGuider + RandomNoise (22), same settings."""
    doc = copy.deepcopy(workflow("comfy_txt2img_api.json"))
    doc["3"]["inputs"].update(steps=steps, seed=seed, cfg=cfg, sampler_name=sampler, scheduler=scheduler)
    doc["10"] = {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": scheduler,
                                                            "steps": steps, "denoise": 1.0}}
    doc["11"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}}
    doc["12"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["4", 0], "add_noise": True, "noise_seed": seed, "cfg": cfg, "positive": ["6", 0],
        "negative": ["7", 0], "sampler": ["11", 0], "sigmas": ["10", 0], "latent_image": ["5", 0]}}
    doc["20"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}}
    doc["21"] = {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0],
                                                       "negative": ["7", 0], "cfg": cfg}}
    doc["22"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["20", 0], "guider": ["21", 0], "sampler": ["11", 0], "sigmas": ["10", 0],
        "latent_image": ["5", 0]}}
    doc["23"] = {"class_type": "VAEDecode", "inputs": {"samples": ["22", 0], "vae": ["4", 2]}}
    doc["24"] = {"class_type": "PreviewImage", "inputs": {"images": ["23", 0]}}
    doc["25"] = {"class_type": "VAEDecode", "inputs": {"samples": ["12", 1], "vae": ["4", 2]}}
    doc["26"] = {"class_type": "PreviewImage", "inputs": {"images": ["25", 0]}}
    doc["27"] = {"class_type": "VAEDecode", "inputs": {"samples": ["22", 1], "vae": ["4", 2]}}
    doc["28"] = {"class_type": "PreviewImage", "inputs": {"images": ["27", 0]}}
    return doc


@pytest.mark.parametrize("sampler, scheduler", [("euler", "normal"), ("euler_ancestral", "karras"),
                                                ("dpmpp_2m", "simple")])
def test_sampler_custom_advanced_equals_sampler_custom_and_ksampler(executor, sampler, scheduler):
    res = run(executor, graph(sampler, scheduler))
    assert res.status == "success", res.error
    k = res.values["3"][0]["samples"]
    custom, custom_denoised = res.values["12"]
    adv, adv_denoised = res.values["22"]
    assert torch.equal(adv["samples"], custom["samples"])
    assert torch.equal(adv["samples"], k)
    assert torch.equal(adv_denoised["samples"], custom_denoised["samples"])
    images = res.values["23"][0], res.values["8"][0]
    assert torch.equal(*images)


def test_basic_guider_is_cfg_one(executor):
    doc = graph(cfg=1.0)
    doc["21"] = {"class_type": "BasicGuider", "inputs": {"model": ["4", 0], "conditioning": ["6", 0]}}
    res = run(executor, doc)
    assert res.status == "success", res.error
    assert torch.equal(res.values["22"][0]["samples"], res.values["12"][0]["samples"])
    assert torch.equal(res.values["22"][0]["samples"], res.values["3"][0]["samples"])


def test_disable_noise_continues_a_split_run(executor):
    """RandomNoise over the high part of SplitSigmas, then DisableNoise over the low part, equals one run."""
    doc = graph("euler", "karras", steps=6, seed=9)
    doc["30"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["10", 0], "step": 2}}
    doc["22"]["inputs"]["sigmas"] = ["30", 0]
    doc["31"] = {"class_type": "DisableNoise", "inputs": {}}
    doc["32"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["31", 0], "guider": ["21", 0], "sampler": ["11", 0], "sigmas": ["30", 1],
        "latent_image": ["22", 0]}}
    doc["23"]["inputs"]["samples"] = ["32", 0]
    res = run(executor, doc)
    assert res.status == "success", res.error
    one, two = res.values["3"][0]["samples"], res.values["32"][0]["samples"]
    torch.testing.assert_close(two, one, atol=1e-5, rtol=0)


@pytest.mark.parametrize("style", ["regular", "nested"])
def test_dual_cfg_with_cond2_as_negative_is_cfg(executor, style):
    """With cond2 = the negative prompt and cfg_cond2_negative = 1 both styles reduce to plain CFG with
    cfg_conds: regular exactly (the same two-prompt batch), nested up to float rounding."""
    doc = graph(cfg=6.0)
    doc["21"] = {"class_type": "DualCFGGuider", "inputs": {
        "model": ["4", 0], "cond1": ["6", 0], "cond2": ["7", 0], "negative": ["7", 0], "cfg_conds": 6.0,
        "cfg_cond2_negative": 1.0, "style": style}}
    res = run(executor, doc)
    assert res.status == "success", res.error
    dual, cfg = res.values["22"][0]["samples"], res.values["12"][0]["samples"]
    if style == "regular":
        assert torch.equal(dual, cfg)
    else:
        torch.testing.assert_close(dual, cfg, atol=1e-4, rtol=1e-4)


def toy_network(x, t, return_dict=False, encoder_hidden_states=None):
    """A prediction that depends on the input, the timestep and the conditioning row by row."""
    return (x * 0.5 + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1) + t * 0.001,)


def test_dual_cfg_arithmetic():
    from schedulers.dual_cfg import DualCFGDenoiser

    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500.0)
    inputs = {r: {"encoder_hidden_states": torch.full((2, 5, 8), v)} for r, v in
              (("positive", 3.0), ("middle", 1.0), ("negative", -2.0))}

    def pred(role):
        return toy_network(x, t, encoder_hidden_states=inputs[role]["encoder_hidden_states"])[0]

    pos, mid, neg = pred("positive"), pred("middle"), pred("negative")
    regular = DualCFGDenoiser(toy_network, inputs["positive"], inputs["middle"], inputs["negative"], 4.0, 2.5)
    torch.testing.assert_close(regular(x, t), neg + 2.5 * (mid - neg) + 4.0 * (pos - mid))
    nested = DualCFGDenoiser(toy_network, inputs["positive"], inputs["middle"], inputs["negative"], 4.0, 2.5,
                             "nested")
    torch.testing.assert_close(nested(x, t), neg + 2.5 * (mid + 4.0 * (pos - mid) - neg))
    # ComfyUI's shortcut: cfg2 = 1 runs no negative pass, cfg1 = cfg2 = 1 only the positive one
    assert DualCFGDenoiser(toy_network, inputs["positive"], inputs["middle"], inputs["negative"], 4.0,
                           1.0).roles == ("middle", "positive")
    only = DualCFGDenoiser(toy_network, inputs["positive"], inputs["middle"], inputs["negative"], 1.0, 1.0)
    assert only.roles == ("positive",)
    torch.testing.assert_close(only(x, t), pos)
    with pytest.raises(ValueError, match="style"):
        DualCFGDenoiser(toy_network, inputs["positive"], inputs["middle"], inputs["negative"], 1.0, 1.0, "other")


def test_random_noise_is_comfyuis_noise():
    """ComfyUI's noise for a seed: one standard-normal draw of the latent's shape from a CPU generator seeded
    with it -- the noise every sampler node here starts from."""
    from nodes.custom_sampling import NoiseSource
    from schedulers.sampling import make_noise

    latent = torch.zeros(2, 4, 8, 8)
    expected = torch.randn(2, 4, 8, 8, generator=torch.manual_seed(1234))  # ComfyUI's prepare_noise
    assert torch.equal(NoiseSource(1234).generate(latent), expected)
    assert torch.equal(make_noise((2, 4, 8, 8), 1234, generator_device="cpu")[0], expected)
    assert not NoiseSource(1234, enabled=False).generate(latent).any()


def test_wrong_values_are_named(executor, tmp_path):
    from nodes_support import context

    from graph_runtime import NodeError
    from graph_runtime.validation import WorkflowValidationError
    from nodes.custom_sampling import NoiseSource, SamplerCustomAdvanced

    doc = graph()
    doc["22"]["inputs"]["guider"] = ["20", 0]  # a NOISE where the GUIDER goes
    with pytest.raises(WorkflowValidationError, match="'guider'.*NOISE"):
        run(executor, doc)
    inputs = SamplerCustomAdvanced.Inputs(noise=NoiseSource(1), guider="cfg 8", sampler=None, sigmas=None,
                                          latent_image={"samples": torch.zeros(1, 4, 8, 8)})
    with pytest.raises(NodeError, match="guider: expected GUIDER"):
        SamplerCustomAdvanced().execute(inputs, context(tmp_path))
    doc = graph()
    doc["30"] = {"class_type": "ManualSigmas", "inputs": {"sigmas": "14, 3, 7, 0"}}
    doc["22"]["inputs"]["sigmas"] = ["30", 0]
    res = run(executor, doc)
    assert res.status == "error" and res.error["node_id"] == "30"
    assert "non-increasing" in res.error["exception_message"]
