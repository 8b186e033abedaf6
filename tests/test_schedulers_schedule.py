from types import SimpleNamespace

import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline

from schedulers import registry
from schedulers import sigmas as S
from schedulers.registry import SD15_SCHEDULER_CONFIG
from schedulers.schedule import build_schedule, img2img_start, schedule_from_sigmas

# diffusers' schedulers hand torch tensors to numpy (thousands of numpy 2 deprecation notes per run)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning"
)

CONFIG = dict(SD15_SCHEDULER_CONFIG)


@pytest.mark.parametrize("name", registry.fitting_names(registry.SD15_SCHEDULER_CONFIG))
def test_every_schedule_has_comfy_sigmas(name):
    steps = 6
    sch = build_schedule(name, CONFIG, steps)
    assert sch.runner == "diffusers" and sch.scheduler_class is registry.get(name).cls
    assert sch.steps == steps == sch.total_steps and sch.denoise == 1.0
    assert len(sch.sigmas) == steps + 1
    S.validate(sch.sigmas)
    fresh = sch.make_scheduler("cpu")
    assert torch.equal(fresh.timesteps, sch.timesteps)
    assert fresh is not sch.make_scheduler("cpu")  # a new instance every run: schedulers keep state
    calls = {
        "heun": 2 * steps - 1,
        "kdpm2": 2 * steps - 1,
        "kdpm2_ancestral": 2 * steps - 1,
        "pndm": steps + 1,
    }
    assert len(sch.timesteps) == calls.get(name, 2 * steps - 1 if name == "dpmpp_sde" else steps)


def test_comfy_sigmas_of_schedulers_with_and_without_own_sigmas():
    euler = build_schedule("euler", CONFIG, 5)
    with registry.quiet_diffusers():
        own = registry.get("euler").build(CONFIG)
    own.set_timesteps(5)
    assert torch.equal(euler.sigmas, own.sigmas)
    # DDIM keeps no sigmas: sqrt((1 - a) / a) at its timesteps, then 0
    ddim = build_schedule("ddim", CONFIG, 5)
    ac = own.alphas_cumprod[ddim.timesteps]
    torch.testing.assert_close(ddim.sigmas[:-1], ((1 - ac) / ac) ** 0.5)
    assert torch.allclose(ddim.sigmas, euler.sigmas)  # same leading timesteps 801, 601, ...
    # Heun visits every inner sigma twice; one value per step
    heun = build_schedule("heun", CONFIG, 5)
    assert torch.equal(heun.sigmas, euler.sigmas)


@pytest.mark.parametrize("name", ["euler", "heun", "pndm", "dpmpp_2m", "kdpm2", "ddim", "dpmpp_sde", "lcm"])
@pytest.mark.parametrize("steps, denoise", [(10, 0.75), (7, 0.3), (4, 0.99)])
def test_denoise_follows_img2img_pipeline(name, steps, denoise):
    sch = build_schedule(name, CONFIG, steps, denoise=denoise)
    with registry.quiet_diffusers():
        reference = registry.get(name).build(CONFIG)
        reference.set_timesteps(steps)
        fake_pipe = SimpleNamespace(scheduler=reference)
        timesteps, steps_run = StableDiffusionImg2ImgPipeline.get_timesteps(fake_pipe, steps, denoise, "cpu")
    assert torch.equal(sch.timesteps, timesteps)
    assert sch.steps == steps_run == len(sch.sigmas) - 1
    if hasattr(reference, "set_begin_index"):
        assert sch.begin_index == reference.begin_index
    full = build_schedule(name, CONFIG, steps)
    assert torch.equal(sch.sigmas, full.sigmas[-(steps_run + 1) :])


def test_img2img_start():
    assert img2img_start(10, 0.5) == (5, 5)
    assert img2img_start(10, 0.5, order=2) == (5, 5)
    assert img2img_start(7, 0.3) == (5, 2)
    with pytest.raises(ValueError, match="denoise must be in"):
        img2img_start(10, 0.0)
    with pytest.raises(ValueError, match="leaves no step"):
        build_schedule("euler", CONFIG, 4, denoise=0.1)


def test_sigma_spacing_uses_the_classes_own_flags():
    sch = build_schedule("dpmpp_2m", CONFIG, 8, sigma_spacing="karras")
    assert sch.overrides["use_karras_sigmas"] is True
    with registry.quiet_diffusers():
        ref = registry.get("dpmpp_2m").build(CONFIG, use_karras_sigmas=True)
    ref.set_timesteps(8)
    assert torch.equal(sch.timesteps, ref.timesteps)
    assert torch.equal(sch.sigmas, ref.sigmas)


def test_unsupported_spacing_is_refused_with_alternatives():
    with pytest.raises(ValueError, match="'euler_ancestral'.*no karras sigma spacing.*euler, heun"):
        build_schedule("euler_ancestral", CONFIG, 8, sigma_spacing="karras")
    with pytest.raises(ValueError, match="sigma_spacing must be one of"):
        build_schedule("euler", CONFIG, 8, sigma_spacing="cosine")
    with pytest.raises(ValueError, match="no timestep_spacing setting"):
        build_schedule("dpm_singlestep", CONFIG, 8, timestep_spacing="trailing")
    with pytest.raises(ValueError, match="steps must be a positive int"):
        build_schedule("euler", CONFIG, 0)


def test_timestep_spacing_and_overrides():
    sch = build_schedule("ddim", CONFIG, 4, timestep_spacing="trailing", overrides={"clip_sample": True})
    assert sch.timesteps.tolist() == [999, 749, 499, 249]
    assert sch.overrides == {"timestep_spacing": "trailing", "clip_sample": True}
    assert sch.make_scheduler().config.clip_sample is True


def test_custom_sigmas_drive_a_class_that_accepts_them():
    sig = S.karras(6, 0.03, 14.6)
    sch = schedule_from_sigmas(sig, "euler", CONFIG)
    assert sch.runner == "diffusers" and sch.set_timesteps_kwargs == {"sigmas": sig.tolist()}
    assert torch.equal(sch.sigmas, sig) and sch.steps == 6
    # timesteps found from the sigmas by log-sigma interpolation
    assert sch.timesteps[0].item() == pytest.approx(999, abs=1.0)


def test_custom_sigmas_fall_back_to_a_kdiffusion_rule():
    sig = S.exponential(6, 0.03, 14.6)
    sch = schedule_from_sigmas(sig, "euler_ancestral", CONFIG)
    assert sch.runner == "kdiffusion" and sch.rule == "euler_ancestral" and sch.stochastic
    assert torch.equal(sch.sigmas, sig) and len(sch.timesteps) == 6
    forced = schedule_from_sigmas(sig, "euler", CONFIG, runner="kdiffusion")
    assert forced.runner == "kdiffusion" and not forced.stochastic
    with pytest.raises(ValueError, match="ddim.*cannot run custom sigmas.*euler.*dpmpp_2m"):
        schedule_from_sigmas(sig, "ddim", CONFIG)
    with pytest.raises(ValueError, match="must be non-increasing"):
        schedule_from_sigmas([1.0, 2.0, 0.0], "euler", CONFIG)
    high, _ = S.split(sig, 3)  # may stop above 0
    assert schedule_from_sigmas(high, "dpmpp_2m", CONFIG).steps == 3
