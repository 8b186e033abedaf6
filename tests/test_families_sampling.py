"""Sampling details of the families beyond pixel parity: the k-diffusion step rules over v-prediction and
flow models (through their model sampling), ComfyUI's schedules over flow sigmas, the KSampler on every
family, and the nodes that change a model's sampling or its text encoder's layer."""

import os

import pytest
import torch
from nodes_support import *  # noqa: F403
from test_families_parity import PROMPT, graph, run
from tiny_families import executor_over, shared_family
from tiny_sd import single_thread

from schedulers import comfy_names, registry
from schedulers import sigmas as S
from schedulers.model_sampling import Discrete, Flow, model_sampling, time_shift

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning",
)
FAMILIES = ("sd2v", "sdxl", "sd3")


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    return {name: shared_family(name, tmp_path_factory) for name in FAMILIES}


@pytest.fixture(scope="module")
def executor(tmp_path_factory, families, services):
    with executor_over([f.models for f in families.values()], tmp_path_factory.mktemp("families_sampling"),
                       services) as ex:
        yield ex


def test_model_sampling_follows_the_config(families):
    assert isinstance(model_sampling(families["sd3"].config), Flow)
    v = model_sampling(families["sd2v"].config)
    assert isinstance(v, Discrete) and v.kind == "v_prediction"
    assert model_sampling(families["sdxl"].config).kind == "epsilon"
    flow = model_sampling(families["sd3"].config)
    assert flow.shift == 3.0 and flow.sigma_max == 1.0
    x, out = torch.randn(1, 16, 4, 4), torch.randn(1, 16, 4, 4)
    s = torch.tensor(0.7)
    # x = (1 - s) x0 + s n and v = n - x0  =>  x0 = x - s v
    x0 = flow.denoised(x, s, out)
    assert torch.allclose((1 - s) * x0 + s * (out + x0), x, atol=1e-6)
    # v-prediction: x0 = a x_t - b v with x_t = x / sqrt(s^2 + 1), a = 1 / sqrt(s^2 + 1), b = s a
    a = 1 / (s**2 + 1) ** 0.5
    assert torch.allclose(v.denoised(x, s, out), a * (x * a) - s * a * out, atol=1e-6)


def test_flow_sigmas_follow_comfyuis_formulas(families):
    config = families["sd3"].config
    table = S.model_sigmas(config)
    assert table.shape == (1000,) and table[-1] == 1.0
    assert torch.allclose(table[0], time_shift(torch.tensor(0.001), 3.0))
    normal = S.comfy_scheduler_sigmas("normal", 4, config)
    t = torch.linspace(1000, float(table[0]) * 1000, 4) / 1000
    assert torch.allclose(normal[:-1], 3 * t / (1 + 2 * t)) and normal[-1] == 0
    simple = S.comfy_scheduler_sigmas("simple", 4, config)
    assert torch.allclose(simple[:-1], table[[999, 749, 499, 249]])
    sgm = S.comfy_scheduler_sigmas("sgm_uniform", 4, config)
    assert len(sgm) == 5 and sgm[0] == 1.0 and sgm[3] > normal[3]
    for name in S.COMFY_SCHEDULERS:
        S.validate(S.comfy_scheduler_sigmas(name, 6, config))


def test_schedulers_say_which_models_they_fit(families):
    flow, discrete = families["sd3"].config, families["sdxl"].config
    assert set(registry.fitting_names(flow)) == {"flow_euler", "flow_heun", "flow_dpmpp_2m", "flow_unipc"}
    assert "euler" in registry.fitting_names(discrete) and "flow_euler" not in registry.fitting_names(discrete)
    # ComfyUI's samplers are step rules that run over any model's sigmas
    for sampler in ("dpmpp_sde", "sa_solver", "uni_pc"):
        assert comfy_names.build_comfy_schedule(sampler, "karras", flow, 4).runner == "kdiffusion"


def test_euler_rule_equals_flow_euler_on_sd3(executor):
    """The k-diffusion euler rule over the schedule's own sigmas through the flow model sampling takes the
    same steps as diffusers' FlowMatchEulerDiscreteScheduler."""
    doc = graph("tiny-sd3", "flow_euler", 5)
    ref = run(executor, doc)
    doc["6"]["inputs"].pop("schedule")
    doc["6"]["inputs"].update(sigmas=["5", 1], sampler="euler")
    ours = run(executor, doc)
    assert (ours - ref).abs().max().item() < 1e-4


def test_euler_rule_equals_diffusers_euler_on_v_prediction(families):
    """On the v-prediction model the k-diffusion euler rule (through k-diffusion's v denoiser) takes the
    steps of diffusers' EulerDiscreteScheduler, which handles v itself."""
    from schedulers.guidance import CFGDenoiser
    from schedulers.sampling import make_noise, sample
    from schedulers.schedule import build_schedule, schedule_from_sigmas

    fam = families["sd2v"]
    with torch.no_grad():
        pos, neg = fam.pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt="")
    # linspace: diffusers' Euler then starts from noise * sigma_max, as the k-diffusion rules do
    ref_schedule = build_schedule("euler", fam.config, 5, timestep_spacing="linspace")
    rule = schedule_from_sigmas(ref_schedule.sigmas, "euler", fam.config, runner="kdiffusion")
    out = []
    for schedule in (ref_schedule, rule):
        noise, gen = make_noise((1, 4, 8, 8), 5)
        with single_thread():
            out.append(sample(CFGDenoiser(fam.pipe.unet, pos, neg, 6.0), noise, schedule, gen))
    assert out[0].abs().max() > 0.1
    assert (out[0] - out[1]).abs().max().item() < 1e-4


def comfy_graph(model: str, sampler: str, scheduler: str, **extra) -> dict:
    doc = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": model}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 7, "steps": 4, "cfg": 5.0,
                                                   "sampler_name": sampler, "scheduler": scheduler,
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
    for node, inputs in extra.items():
        doc.update({node: inputs})
    return doc


@pytest.mark.parametrize(("family", "sampler", "scheduler"), [
    ("sd2v", "euler", "normal"), ("sd2v", "dpmpp_2m", "karras"), ("sdxl", "euler_ancestral", "normal"),
    ("sdxl", "deis", "normal"), ("sd3", "euler", "simple"), ("sd3", "dpmpp_2m", "sgm_uniform"),
    ("sd3", "heun", "normal"), ("sd3", "euler_ancestral", "beta"), ("sd3", "res_multistep", "simple"),
    ("sd3", "res_multistep_ancestral", "simple"), ("sd3", "dpmpp_sde", "kl_optimal"),
    ("sd3", "euler_ancestral_cfg_pp", "simple"), ("sdxl", "res_multistep_cfg_pp", "karras"),
    ("sd3", "sa_solver", "simple"), ("sd3", "uni_pc", "normal"),
])
def test_ksampler_runs_every_family(executor, family, sampler, scheduler):
    doc = comfy_graph(f"tiny-{family}", sampler, scheduler)
    doc["4"] = {"class_type": "EmptySD3LatentImage" if family == "sd3" else "EmptyLatentImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    img = run(executor, doc)
    assert img.shape == (1, 64, 64, 3) and torch.isfinite(img).all() and img.std() > 0.005


def test_model_sampling_sd3_changes_the_shift(executor):
    doc = comfy_graph("tiny-sd3", "euler", "simple")
    doc["4"]["class_type"] = "EmptySD3LatentImage"
    base = run(executor, doc)
    doc["9"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 1.0}}
    doc["5"]["inputs"]["model"] = ["9", 0]
    shifted = run(executor, doc)
    assert (base - shifted).abs().max() > 1e-3
    doc["9"]["inputs"]["shift"] = 3.0  # the model's own shift: the same picture
    assert (run(executor, doc) - base).abs().max().item() == 0.0


def test_model_sampling_nodes_refuse_the_wrong_kind_of_model(executor):
    doc = comfy_graph("tiny-sdxl", "euler", "normal")
    doc["9"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 2.0}}
    doc["5"]["inputs"]["model"] = ["9", 0]
    with single_thread():
        res = executor.run(doc)
    assert res.status == "error" and "not a flow-matching model" in str(res.error)


def test_model_sampling_discrete_v_prediction_is_what_the_config_says(executor):
    """Telling the v model it predicts v changes nothing; telling it eps changes the picture."""
    doc = comfy_graph("tiny-sd2v", "euler", "normal")
    base = run(executor, doc)
    doc["9"] = {"class_type": "ModelSamplingDiscrete",
                "inputs": {"model": ["1", 0], "sampling": "v_prediction", "zsnr": False}}
    doc["5"]["inputs"]["model"] = ["9", 0]
    assert (run(executor, doc) - base).abs().max().item() == 0.0
    doc["9"]["inputs"]["sampling"] = "eps"
    assert (run(executor, doc) - base).abs().max() > 1e-3


def test_clip_set_last_layer_matches_diffusers_clip_skip(executor, families):
    """SD2.x's CLIPSetLastLayer -2 is the pipeline's clip_skip=1: the penultimate layer's states through the
    final layer norm (given to the pipeline as prompt embeddings: its own clip_skip path reaches for a
    ``text_model`` attribute that this transformers version's CLIPTextModel no longer has)."""
    fam = families["sd2v"]
    doc = graph("tiny-sd2v", "ddim", 3)
    doc["9"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 1], "stop_at_clip_layer": -2}}
    for node in ("2", "3"):
        doc[node]["inputs"]["clip"] = ["9", 0]
    ours = run(executor, doc)
    with registry.quiet_diffusers():
        fam.pipe.scheduler = registry.get("ddim").cls.from_config(fam.config)
    def skip(text):
        ids = fam.pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True,
                                 return_tensors="pt").input_ids
        with torch.no_grad():
            hidden = fam.pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
            return fam.pipe.text_encoder.final_layer_norm(hidden)

    with single_thread():
        ref = fam.pipe(prompt_embeds=skip(PROMPT), negative_prompt_embeds=skip(""), num_inference_steps=4,
                       guidance_scale=6.0, height=64, width=64, generator=torch.Generator("cpu").manual_seed(3),
                       output_type="pt").images.permute(0, 2, 3, 1)
    assert (ours - ref).abs().max().item() == 0.0
    doc["9"]["inputs"]["stop_at_clip_layer"] = -24
    with single_thread():
        res = executor.run(doc)
    assert res.status == "error" and "stop_at_clip_layer" in str(res.error)


def test_clip_text_encode_sdxl_and_zero_out(executor, families):
    """CLIPTextEncodeSDXL with the image's own sizes and one prompt for both CLIPs equals TextEncode; a
    zeroed negative equals the pipeline's force_zeros_for_empty_prompt."""
    fam = families["sdxl"]
    doc = graph("tiny-sdxl", "euler", 11)
    base = run(executor, doc)
    doc["2"] = {"class_type": "CLIPTextEncodeSDXL", "inputs": {
        "clip": ["1", 1], "width": 64, "height": 64, "crop_w": 0, "crop_h": 0, "target_width": 64,
        "target_height": 64, "text_g": PROMPT, "text_l": PROMPT}}
    assert (run(executor, doc) - base).abs().max().item() == 0.0
    doc["2"]["inputs"]["width"] = 128
    assert (run(executor, doc) - base).abs().max() > 1e-4
    doc = graph("tiny-sdxl", "euler", 11)
    doc["3"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}}
    ours = run(executor, doc)
    with registry.quiet_diffusers():
        fam.pipe.scheduler = registry.get("euler").cls.from_config(fam.config)
    with single_thread():
        ref = fam.pipe(PROMPT, num_inference_steps=4, guidance_scale=6.0, height=64, width=64,
                       generator=torch.Generator("cpu").manual_seed(11), output_type="pt").images
    assert (ours - ref.permute(0, 2, 3, 1)).abs().max().item() == 0.0


def test_schedulers_command_says_which_fit_a_flow_model(families):
    import json
    import subprocess
    import sys

    env = {**os.environ, "GRAPH_RUNTIME_MODELS": str(families["sd3"].models), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "graph_runtime", "schedulers", "--model", "tiny-sd3", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)["schedulers"]}
    assert rows["flow_euler"]["fits"] and rows["flow_dpmpp_2m"]["fits"]
    assert not rows["euler"]["fits"] and not rows["dpmpp_2m"]["fits"]
    table = subprocess.run([sys.executable, "-m", "graph_runtime", "schedulers", "--model", "tiny-sd3"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert table.returncode == 0 and "FlowMatchEulerDiscreteScheduler" in table.stdout and " fits" in table.stdout
