"""ControlNet: ControlNetLoader (controlnet/ folder: diffusers folders and single files), ControlNetApplyAdvanced
against diffusers' StableDiffusionControlNetPipeline pixel for pixel (a random ControlNet made from the embedded
model's UNet), strength and start / end against the arithmetic, chained ControlNets, the old ControlNetApply,
an SDXL ControlNet on the tiny SDXL model and the family check."""

from __future__ import annotations

import shutil

import pytest
import torch
from nodes_support import *  # noqa: F403  (fixtures)
from nodes_support import ROOT, context
from PIL import Image
from safetensors.torch import save_file
from single_files import controlnet_original
from tiny_families import executor_over, shared_family
from tiny_sd import single_thread

from graph_runtime import NodeError
from nodes import images
from nodes.conditioning import encode as encode_text
from nodes.controlnet import ControlNetApplyAdvanced, ControlNetBundle, ControlNetLoader, hint_of
from schedulers import registry
from schedulers.model_sampling import model_sampling

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning",
)

PROMPT, STEPS, CFG, SEED = "a red circle on a blue square", 4, 6.0, 11


def random_controlnet(unet, channels=(8, 16, 16, 32), seed=0):
    """A ControlNet made from ``unet`` (diffusers' from_unet) with its zero-initialised convolutions drawn at
    random, so the hint and the residuals matter."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
    for module in [net.controlnet_cond_embedding.conv_out, *net.controlnet_down_blocks, net.controlnet_mid_block]:
        torch.nn.init.normal_(module.weight, std=0.05)
        torch.nn.init.normal_(module.bias, std=0.05)
    return net.eval()


@pytest.fixture(scope="module")
def cn_models(tmp_path_factory, loaded):
    """A models folder with controlnet/tiny-cn (a diffusers folder), controlnet/tiny-cn.safetensors (the
    same weights as one file, diffusers' names) and tiny-cn-original.safetensors (the original layout)."""
    models = tmp_path_factory.mktemp("cn_models")
    net = random_controlnet(loaded.model.network)
    net.save_pretrained(models / "controlnet" / "tiny-cn", safe_serialization=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, models / "controlnet" / "tiny-cn.safetensors")
    save_file(controlnet_original(net), models / "controlnet" / "tiny-cn-original.safetensors")
    (models / "controlnet" / "broken.safetensors").write_bytes(b"not a safetensors file")
    half = dict(list(net.state_dict().items())[::2])
    save_file({k: v.contiguous() for k, v in half.items()}, models / "controlnet" / "partial.safetensors")
    return models


@pytest.fixture(scope="module")
def executor(cn_models, tmp_path_factory, services):
    with executor_over([cn_models], tmp_path_factory.mktemp("cn"), services) as ex:
        hint = hint_picture()
        Image.fromarray((hint[0].numpy() * 255).round().astype("uint8")).save(ex.paths.input / "hint.png")
        images.set_input_folder(ex.paths.input)
        yield ex
        images.set_input_folder(None)


def hint_picture() -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    ring = ((x**2 + y**2).sqrt() - 0.5).abs() < 0.1
    return torch.stack([ring.float(), (x > 0).float(), (y > 0).float()], dim=-1).unsqueeze(0)


def graph(strength=1.0, start=0.0, end=1.0, *, apply="advanced", sampler=None, second=None) -> dict:
    doc = {
        "1": {"class_type": "LoadModel", "inputs": {"model_name": "tiny-shapes-sd", "device": "cpu", "dtype": "fp32"}},
        "2": {"class_type": "TextEncode", "inputs": {"text": PROMPT, "clip": ["1", 1]}},
        "3": {"class_type": "TextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "Scheduler", "inputs": {"model": ["1", 0], "scheduler": "euler", "steps": STEPS}},
        "8": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "tiny-cn"}},
        "9": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
        "10": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["8", 0], "image": ["9", 0],
            "strength": strength, "start_percent": start, "end_percent": end}},
        "6": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "positive": ["10", 0], "negative": ["10", 1],
                                                  "latent": ["4", 0], "schedule": ["5", 0], "seed": SEED,
                                                  "cfg": CFG}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
    if apply == "old":
        doc["10"] = {"class_type": "ControlNetApply", "inputs": {"conditioning": ["2", 0], "control_net": ["8", 0],
                                                                 "image": ["9", 0], "strength": strength}}
        doc["6"]["inputs"].update(positive=["10", 0], negative=["3", 0])
    if second is not None:  # a second ControlNet after the first
        doc["12"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": second}}
        doc["13"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["10", 0], "negative": ["10", 1], "control_net": ["12", 0], "image": ["9", 0],
            "strength": 0.5, "start_percent": 0.0, "end_percent": 1.0}}
        doc["6"]["inputs"].update(positive=["13", 0], negative=["13", 1])
    if sampler is not None:
        doc["6"] = {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": SEED, "steps": 6, "cfg": CFG, "sampler_name": sampler, "scheduler": "normal",
            "positive": doc["6"]["inputs"]["positive"], "negative": doc["6"]["inputs"]["negative"],
            "latent_image": ["4", 0], "denoise": 1.0}}
    return doc


def run(executor, doc) -> torch.Tensor:
    with single_thread():
        res = executor.run(doc)
    assert res.status == "success", res.error
    return res.values["7"][0]


def loaded_controlnet(executor, services, name="tiny-cn") -> ControlNetBundle:
    from graph_runtime import ExecutionContext

    ctx = ExecutionContext.standalone(paths=executor.paths, services=services)
    (net,) = ControlNetLoader().execute(ControlNetLoader.Inputs(control_net_name=name), ctx)
    return net


def test_matches_the_controlnet_pipeline(executor, loaded, services):
    from diffusers import StableDiffusionControlNetPipeline

    ours = run(executor, graph())
    net = loaded_controlnet(executor, services)
    assert isinstance(net, ControlNetBundle) and net.family.name == "sd1" and net.hint_factor == 8
    m = loaded.model
    pipe = StableDiffusionControlNetPipeline(
        vae=loaded.vae.vae, text_encoder=loaded.clip.text_encoder, tokenizer=loaded.clip.tokenizer, unet=m.network,
        controlnet=net.network, scheduler=registry.get("euler").cls.from_config(m.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    with single_thread():
        ref = pipe(PROMPT, negative_prompt="", image=Image.open(executor.paths.input / "hint.png").convert("RGB"),
                   num_inference_steps=STEPS, guidance_scale=CFG, height=64, width=64,
                   generator=torch.Generator("cpu").manual_seed(SEED), output_type="pt").images
    ref = ref.permute(0, 2, 3, 1).float()
    plain = run(executor, {k: v for k, v in graph().items() if k not in ("8", "9", "10")} | {
        "6": {**graph()["6"], "inputs": {**graph()["6"]["inputs"], "positive": ["2", 0], "negative": ["3", 0]}}})
    assert ours.shape == ref.shape == (1, 64, 64, 3)
    assert (ours - plain).abs().max() > 0.01  # the ControlNet matters
    assert (ours - ref).abs().max().item() == 0.0


def test_old_apply_lends_the_controlnet_to_the_negative(executor):
    assert torch.equal(run(executor, graph(apply="old")), run(executor, graph()))


def test_strength_and_range_arithmetic(executor, loaded, services):
    net = loaded_controlnet(executor, services)
    m = loaded.model
    pos = encode_text(loaded.clip, PROMPT)
    ctx = context(executor.paths.base)
    ms = model_sampling(m.scheduler_config)

    def bound(strength, start=0.0, end=1.0, cond=pos):
        (p, _) = ControlNetApplyAdvanced().execute(ControlNetApplyAdvanced.Inputs(
            positive=cond, negative=cond, control_net=net, image=hint_picture(), strength=strength,
            start_percent=start, end_percent=end), ctx)
        return p, p.control.bind(m, 1)

    x, inputs = torch.randn(1, 4, 8, 8), {"encoder_hidden_states": pos.embeds}
    t = torch.tensor(500.0)
    with torch.inference_mode():
        full = bound(1.0)[1](x, t, inputs)
        half = bound(0.5)[1](x, t, inputs)
        assert all(torch.equal(h, f * 0.5) for h, f in zip(half["down_block_additional_residuals"],
                                                            full["down_block_additional_residuals"], strict=True))
        assert torch.equal(half["mid_block_additional_residual"], full["mid_block_additional_residual"] * 0.5)
        # active from the timestep at 25 % of the noise range down to the one at 75 %
        _, ranged = bound(1.0, 0.25, 0.75)
        high, low = ms.percent_timestep(0.25), ms.percent_timestep(0.75)
        assert (high, low) == (pytest.approx(749.25), pytest.approx(249.75))
        assert ranged(x, torch.tensor(760.0), inputs) is None and ranged(x, torch.tensor(240.0), inputs) is None
        assert torch.equal(ranged(x, t, inputs)["mid_block_additional_residual"],
                           full["mid_block_additional_residual"])
        # a second ControlNet adds its residuals to the first's
        first, _ = bound(1.0)
        (chained, _) = ControlNetApplyAdvanced().execute(ControlNetApplyAdvanced.Inputs(
            positive=first, negative=first, control_net=net, image=hint_picture(), strength=0.5,
            start_percent=0.0, end_percent=1.0), ctx)
        both = chained.control.bind(m, 1)(x, t, inputs)
        assert chained.control.previous is first.control
        assert torch.allclose(both["mid_block_additional_residual"], full["mid_block_additional_residual"] * 1.5,
                              atol=1e-5)
    assert ControlNetApplyAdvanced().execute(ControlNetApplyAdvanced.Inputs(
        positive=pos, negative=pos, control_net=net, image=hint_picture(), strength=0.0), ctx)[0] is pos


def test_range_counts_controlnet_calls(executor, services, loaded):
    """In a KSampler run the ControlNet runs at exactly the steps whose timestep lies in the range."""
    from schedulers import comfy_names

    net = loaded_controlnet(executor, services)
    calls = []
    hook = net.network.register_forward_hook(lambda mod, args, out: calls.append(1))
    try:
        run(executor, graph(start=0.3, end=0.8, sampler="euler"))
    finally:
        hook.remove()
    config = loaded.model.scheduler_config
    sigmas = comfy_names.denoised_sigmas("normal", 6, 1.0, config)[0]
    ms = model_sampling(config)
    high, low = ms.percent_timestep(0.3), ms.percent_timestep(0.8)
    want = sum(low <= t <= high for t in ms.timestep(sigmas[:-1]).tolist())
    assert 0 < want < 6 and len(calls) == want


def test_loader_lists_and_reads_single_files(executor, services):
    names = ControlNetLoader.Inputs.model_fields["control_net_name"].json_schema_extra["choices"]()
    assert {"tiny-cn", "tiny-cn.safetensors", "broken.safetensors"} <= set(names)
    folder = loaded_controlnet(executor, services).network.state_dict()
    for name in ("tiny-cn.safetensors", "tiny-cn-original.safetensors"):
        single = loaded_controlnet(executor, services, name).network.state_dict()
        assert single.keys() == folder.keys() and all(torch.equal(single[k], folder[k]) for k in folder), name
    with pytest.raises(NodeError, match=r"control_net_name: partial.safetensors is no ControlNet that a known "
                                        r"configuration fits; tried tiny-cn \(\d+ missing.*controlnet-sd15"):
        loaded_controlnet(executor, services, "partial.safetensors")
    with pytest.raises(NodeError, match="cannot read broken.safetensors"):
        loaded_controlnet(executor, services, "broken.safetensors")
    with pytest.raises(NodeError, match="control_net_name: 'nope' not found in the controlnet/ folder"):
        loaded_controlnet(executor, services, "nope")


def test_shipped_configs_are_sd15_and_sdxl():
    from nodes.controlnet import CONFIGS, family_of
    from nodes.families.base import read_json

    assert family_of(read_json(CONFIGS / "controlnet-sd15" / "config.json"), "x").name == "sd1"
    assert family_of(read_json(CONFIGS / "controlnet-sdxl" / "config.json"), "x").name == "sdxl"
    assert (ROOT / "models" / "configs" / "controlnet-sd15" / "config.json").is_file()


def test_sdxl_controlnet_matches_its_pipeline_and_the_family_check(tmp_path_factory, services, loaded):
    from diffusers import StableDiffusionXLControlNetPipeline

    fam = shared_family("sdxl", tmp_path_factory)
    models = tmp_path_factory.mktemp("cn_sdxl")
    random_controlnet(fam.pipe.unet, channels=(8, 8, 16, 16)).save_pretrained(models / "controlnet" / "xl-cn")
    shutil.copy(ROOT / "tests" / "data" / "red_circle.png", models / "hint.png")
    doc = {
        "1": {"class_type": "LoadModel", "inputs": {"model_name": "tiny-sdxl", "device": "cpu", "dtype": "fp32"}},
        "2": {"class_type": "TextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
        "3": {"class_type": "TextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 1, "model": ["1", 0]}},
        "5": {"class_type": "Scheduler", "inputs": {"model": ["1", 0], "scheduler": "euler", "steps": 3}},
        "8": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "xl-cn"}},
        "9": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
        "10": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["8", 0], "image": ["9", 0],
            "strength": 0.8, "start_percent": 0.0, "end_percent": 1.0}},
        "6": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "positive": ["10", 0], "negative": ["10", 1],
                                                  "latent": ["4", 0], "schedule": ["5", 0], "seed": 2, "cfg": 4.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
    with executor_over([fam.models, models], tmp_path_factory.mktemp("cn-xl"), services) as ex:
        shutil.copy(models / "hint.png", ex.paths.input / "hint.png")
        images.set_input_folder(ex.paths.input)
        try:
            res = ex.run(doc)
            assert res.status == "success", res.error
            out = res.values["7"][0]
            net = loaded_controlnet(ex, services, "xl-cn")
            assert net.family.name == "sdxl"
            parts = {k: v for k, v in fam.pipe.components.items() if k != "scheduler"}
            pipe = StableDiffusionXLControlNetPipeline(
                **parts, controlnet=net.network, scheduler=registry.get("euler").cls.from_config(fam.config))
            pipe.set_progress_bar_config(disable=True)
            with single_thread():
                ref = pipe("a red circle", negative_prompt="", image=Image.open(models / "hint.png").convert("RGB"),
                           num_inference_steps=3, guidance_scale=4.0, height=64, width=64,
                           controlnet_conditioning_scale=0.8, generator=torch.Generator("cpu").manual_seed(2),
                           output_type="pt").images
            assert out.shape == (1, 64, 64, 3) and ref.std() > 0.005
            assert (out - ref.permute(0, 2, 3, 1).float()).abs().max().item() == 0.0
            wrong = dict(doc)
            wrong["1"] = {"class_type": "LoadModel", "inputs": {"model_name": "tiny-shapes-sd", "device": "cpu",
                                                                 "dtype": "fp32"}}
            wrong["4"] = {"class_type": "EmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
            res = ex.run(wrong)
            assert res.status == "error"
            assert "control_net: xl-cn is a Stable Diffusion XL ControlNet" in str(res.error)
        finally:
            images.set_input_folder(None)


def test_hint_resize_is_comfyuis():
    from nodes.controlnet import upscale_centre

    hint = hint_of(hint_picture()[:, :, :48])  # 48 wide, 64 high -> 32 x 32: the centre 48 x 48, then nearest
    out = upscale_centre(hint, 32, 32)
    want = torch.nn.functional.interpolate(hint[:, :, 8:56, :], size=(32, 32), mode="nearest-exact")
    assert out.shape == (1, 3, 32, 32) and torch.equal(out, want)
    with pytest.raises(NodeError, match="image: expected an IMAGE"):
        hint_of(torch.zeros(3, 4))


def test_sd3_controlnet_matches_its_pipeline(tmp_path_factory, services):
    """An SD3 ControlNet (hint VAE-encoded) against StableDiffusion3ControlNetPipeline. The pipeline samples
    the hint's latents where the runtime takes their mean (as ComfyUI does), so its VAE copy has a variance
    of exp(-30); it also encodes the hint once per CFG half where the runtime encodes it once. The images
    agree to 5e-5 (measured; 4.7e-5 with the sampling replaced by the mean)."""
    import copy

    from diffusers import SD3ControlNetModel, StableDiffusion3ControlNetPipeline

    fam = shared_family("sd3", tmp_path_factory)
    torch.manual_seed(0)
    net = SD3ControlNetModel(sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=1,
                             attention_head_dim=8, num_attention_heads=4, joint_attention_dim=64,
                             caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=16,
                             extra_conditioning_channels=0)
    for module in [net.pos_embed_input.proj, *net.controlnet_blocks]:
        torch.nn.init.normal_(module.weight, std=0.05)
        torch.nn.init.normal_(module.bias, std=0.05)
    models = tmp_path_factory.mktemp("cn_sd3")
    net.save_pretrained(models / "controlnet" / "sd3-cn")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, models / "controlnet" / "sd3-cn.safetensors")
    doc = {
        "1": {"class_type": "LoadModel", "inputs": {"model_name": "tiny-sd3", "device": "cpu", "dtype": "fp32"}},
        "2": {"class_type": "TextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
        "3": {"class_type": "TextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 1, "model": ["1", 0]}},
        "5": {"class_type": "Scheduler", "inputs": {"model": ["1", 0], "scheduler": "flow_euler", "steps": 3}},
        "8": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "sd3-cn"}},
        "9": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
        "10": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["8", 0], "image": ["9", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0, "vae": ["1", 2]}},
        "6": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "positive": ["10", 0], "negative": ["10", 1],
                                                  "latent": ["4", 0], "schedule": ["5", 0], "seed": 4, "cfg": 4.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
    with executor_over([fam.models, models], tmp_path_factory.mktemp("cn-sd3"), services) as ex:
        shutil.copy(ROOT / "tests" / "data" / "red_circle.png", ex.paths.input / "hint.png")
        images.set_input_folder(ex.paths.input)
        try:
            res = ex.run(doc)
            assert res.status == "success", res.error
            no_vae = {**doc, "10": {**doc["10"], "inputs": {k: v for k, v in doc["10"]["inputs"].items()
                                                            if k != "vae"}}}
            res_no_vae = ex.run(no_vae)
            ours = res.values["7"][0]
            old = ex.run({**doc, "10": {**doc["10"], "class_type": "ControlNetApplySD3"}})
            assert old.status == "success" and torch.equal(old.values["7"][0], ours)
            cn = loaded_controlnet(ex, services, "sd3-cn")
            single = loaded_controlnet(ex, services, "sd3-cn.safetensors").network.state_dict()
            assert all(torch.equal(v, single[k]) for k, v in cn.network.state_dict().items())
        finally:
            images.set_input_folder(None)
    assert res_no_vae.status == "error" and "vae: sd3-cn (Stable Diffusion 3.x) reads its hint as latents" in \
        str(res_no_vae.error)
    assert cn.family.name == "sd3" and cn.latent_hint
    vae = copy.deepcopy(fam.pipe.vae)
    with torch.no_grad():  # the log-variance half of the encoder's output: -1000, clamped to -30
        vae.encoder.conv_out.weight[16:] = 0
        vae.encoder.conv_out.bias[16:] = -1000
    parts = {k: v for k, v in fam.pipe.components.items() if k not in ("scheduler", "vae")}
    pipe = StableDiffusion3ControlNetPipeline(**parts, vae=vae, controlnet=cn.network,
                                              scheduler=registry.get("flow_euler").cls.from_config(fam.config))
    pipe.set_progress_bar_config(disable=True)
    with single_thread():
        ref = pipe("a red circle", negative_prompt="", control_image=Image.open(ROOT / "tests" / "data" /
                                                                               "red_circle.png").convert("RGB"),
                   num_inference_steps=3, guidance_scale=4.0, height=64, width=64,
                   generator=torch.Generator("cpu").manual_seed(4), output_type="pt").images
    ref = ref.permute(0, 2, 3, 1).float()
    from diffusers import StableDiffusion3Pipeline

    plain = StableDiffusion3Pipeline(**parts, vae=vae, scheduler=pipe.scheduler)  # without the ControlNet
    plain.set_progress_bar_config(disable=True)
    with single_thread():
        free = plain("a red circle", negative_prompt="", num_inference_steps=3, guidance_scale=4.0, height=64,
                     width=64, generator=torch.Generator("cpu").manual_seed(4), output_type="pt").images
    assert (ref - free.permute(0, 2, 3, 1)).abs().max() > 0.01
    assert ours.shape == ref.shape == (1, 64, 64, 3) and (ours - ref).abs().max().item() < 1e-4


def test_hint_follows_the_evaluated_latents(executor, loaded, services):
    """The hint is fitted to the latents a ControlNet sees (an area's crop too) times its downscale, and a
    batch of hints goes image by image to the latent batch, for every entry evaluated with it."""
    from nodes.controlnet import ControlApplication, upscale_centre

    net = loaded_controlnet(executor, services)
    hints = torch.rand(2, 3, 64, 64)
    bound = ControlApplication(net, hints, 1.0).bind(loaded.model, 2)
    crop = bound._hint(bound.steps[0][0], torch.zeros(4, 4, 4, 6))  # two entries x two latents, a 4x6 area
    assert crop.shape == (4, 3, 32, 48)
    want = upscale_centre(hints, 32, 48)
    assert torch.equal(crop, torch.cat([want, want]))
    single = ControlApplication(net, hints[:1], 1.0).bind(loaded.model, 2)
    one = single._hint(single.steps[0][0], torch.zeros(2, 4, 8, 8))
    assert one.shape == (2, 3, 64, 64) and torch.equal(one[1], hints[0])


def test_sd2_controlnet_matches_its_pipeline(tmp_path_factory, services):
    """An SD2.x ControlNet on the tiny 768-v (v-prediction) model: recognised as SD2.x from its config (linear
    attention projections, as SD2 UNets have), and its image equals StableDiffusionControlNetPipeline's."""
    from diffusers import StableDiffusionControlNetPipeline

    fam = shared_family("sd2v", tmp_path_factory)
    models = tmp_path_factory.mktemp("cn_sd2")
    random_controlnet(fam.pipe.unet, channels=(8, 8, 16, 16)).save_pretrained(models / "controlnet" / "sd2-cn")
    doc = graph()
    doc["1"]["inputs"]["model_name"] = "tiny-sd2v"
    doc["5"]["inputs"]["scheduler"] = "ddim"
    doc["8"]["inputs"]["control_net_name"] = "sd2-cn"
    with executor_over([fam.models, models], tmp_path_factory.mktemp("cn-sd2"), services) as ex:
        Image.fromarray((hint_picture()[0].numpy() * 255).round().astype("uint8")).save(ex.paths.input / "hint.png")
        images.set_input_folder(ex.paths.input)
        try:
            ours = run(ex, doc)
            net = loaded_controlnet(ex, services, "sd2-cn")
            hint = Image.open(ex.paths.input / "hint.png").convert("RGB")
        finally:
            images.set_input_folder(None)
    assert net.family.name == "sd2"
    parts = {k: v for k, v in fam.pipe.components.items() if k != "scheduler"}
    pipe = StableDiffusionControlNetPipeline(**parts, controlnet=net.network,
                                             scheduler=registry.get("ddim").cls.from_config(fam.config))
    pipe.set_progress_bar_config(disable=True)
    with single_thread():
        ref = pipe(PROMPT, negative_prompt="", image=hint, num_inference_steps=STEPS, guidance_scale=CFG, height=64,
                   width=64, generator=torch.Generator("cpu").manual_seed(SEED), output_type="pt").images
    assert (ours - ref.permute(0, 2, 3, 1).float()).abs().max().item() == 0.0
