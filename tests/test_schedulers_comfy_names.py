import pytest
import torch
from tiny_sd import LATENT_SHAPE, shared_tiny_sd, single_thread

from schedulers import comfy_names as C
from schedulers import registry
from schedulers import sigmas as S
from schedulers.guidance import CFGDenoiser
from schedulers.registry import SD15_SCHEDULER_CONFIG
from schedulers.sampling import make_noise, sample

# diffusers' schedulers hand torch tensors to numpy (thousands of numpy 2 deprecation notes per run)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:__array_wrap__:DeprecationWarning"
)

CONFIG = dict(SD15_SCHEDULER_CONFIG)


def test_rule_samplers_use_comfyuis_sigmas():
    plan = C.resolve("euler", "karras")
    assert (plan.runner, plan.name, plan.sigma_spacing, plan.exact) == ("kdiffusion", "euler", "karras", True)
    assert C.resolve("ddim", "ddim_uniform").name == "euler"  # ComfyUI runs its ddim sampler as Euler
    assert C.resolve("dpmpp_2m_sde_gpu", "exponential").name == "dpmpp_2m_sde"
    sch = C.build_comfy_schedule("euler", "karras", CONFIG, 20)
    assert sch.runner == "kdiffusion" and sch.steps == 20
    assert torch.equal(sch.sigmas, S.comfy_scheduler_sigmas("karras", 20, CONFIG))


def test_rule_samplers_follow_comfyuis_denoise():
    sch = C.build_comfy_schedule("dpmpp_2m", "normal", CONFIG, 10, denoise=0.5)
    assert sch.steps == 10 and sch.denoise == 0.5 and sch.total_steps == 20
    assert torch.equal(sch.sigmas, S.comfy_scheduler_sigmas("normal", 20, CONFIG)[-11:])
    # ComfyUI keeps ddim_uniform's extra steps at full denoise
    assert C.build_comfy_schedule("euler", "ddim_uniform", CONFIG, 12).steps == 13


def test_other_samplers_map_to_registered_schedulers():
    plan = C.resolve("uni_pc", "karras")
    assert (plan.runner, plan.name, plan.sigma_spacing, plan.timestep_spacing) == (
        "diffusers",
        "unipc",
        "karras",
        "linspace",
    )
    assert plan.overrides == {"solver_type": "bh1"} and not plan.exact
    sch = C.build_comfy_schedule("uni_pc", "karras", CONFIG, 10)
    assert sch.runner == "diffusers" and sch.overrides["use_karras_sigmas"] is True
    train = S.model_sigmas(CONFIG)
    # with linspace timesteps, diffusers' Karras spans ComfyUI's full range
    assert sch.sigmas[0].item() == pytest.approx(train[-1].item(), rel=1e-5)
    assert sch.sigmas[-2].item() == pytest.approx(train[0].item(), rel=1e-5)
    assert C.resolve("dpm_2", "simple").timestep_spacing == "trailing"
    assert C.resolve("dpmpp_sde", "normal").name == "dpmpp_sde"


def test_unsupported_names_are_refused():
    with pytest.raises(ValueError, match="unsupported ComfyUI sampler 'dpm_fast'; supported: euler"):
        C.resolve("dpm_fast", "normal")
    with pytest.raises(ValueError, match="unsupported ComfyUI scheduler 'cosine'"):
        C.resolve("euler", "cosine")
    with pytest.raises(ValueError, match="'lcm'.*no karras spacing"):
        C.resolve("lcm", "karras")


def plan_runner(sampler):
    return C.resolve(sampler, "normal").runner


def test_every_supported_pair_builds():
    built = 0
    for sampler in C.COMFY_SAMPLERS:
        for scheduler in C.COMFY_SCHEDULERS:
            try:
                plan = C.resolve(sampler, scheduler)
            except ValueError:
                assert (sampler in ("lcm", "ddpm") and scheduler in ("karras", "exponential", "beta")) or (
                    scheduler in ("linear_quadratic", "kl_optimal") and plan_runner(sampler) == "diffusers")
                continue
            if plan.runner == "diffusers" and registry.get(plan.name).order > 1 and scheduler != "normal":
                continue  # the order-2 classes rebuild 1000 train sigmas per instance; one spacing is enough
            sch = C.build_comfy_schedule(sampler, scheduler, CONFIG, 6)
            S.validate(sch.sigmas)
            built += 1
    assert built > 80


@pytest.mark.parametrize(
    "sampler, scheduler", [("dpmpp_2m_sde_gpu", "karras"), ("uni_pc_bh2", "sgm_uniform")]
)
def test_a_comfy_plan_samples(tmp_path_factory, sampler, scheduler):
    with single_thread():
        sd = shared_tiny_sd(tmp_path_factory)
        sch = C.build_comfy_schedule(sampler, scheduler, sd.config, 5, denoise=0.8)
        noise, generator = make_noise((1, *LATENT_SHAPE), 0)
        init = torch.zeros_like(noise)
        out = sample(
            CFGDenoiser(sd.pipe.unet, sd.positive, sd.negative, 6.0), noise, sch, generator, init_latents=init
        )
    assert torch.isfinite(out).all()
