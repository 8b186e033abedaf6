import pytest
import torch
from tiny_sd import LATENT_SHAPE, shared_tiny_sd, single_thread

from schedulers import comfy_names as C
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
    assert (plan.runner, plan.name, plan.scheduler) == ("kdiffusion", "euler", "karras")
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


def test_unsupported_names_are_refused():
    with pytest.raises(ValueError, match="unsupported ComfyUI sampler 'nonesuch'"):
        C.resolve("nonesuch", "normal")
    with pytest.raises(ValueError, match="unsupported ComfyUI scheduler 'cosine'"):
        C.resolve("euler", "cosine")


# ComfyUI's comfy.samplers.KSampler.SAMPLERS and SCHEDULERS (its sampler_names module), in its order
COMFY_KSAMPLER_SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"]
COMFY_KSAMPLER_SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta",
                             "linear_quadratic", "kl_optimal"]


def test_every_comfy_name_runs_its_own_method():
    """No sampler runs as a different method: each is its own step rule (the _gpu variants differ in ComfyUI
    only in where the Brownian noise is drawn; ComfyUI itself runs ddim as Euler)."""
    from schedulers import kdiffusion

    assert list(C.COMFY_SAMPLERS) == COMFY_KSAMPLER_SAMPLERS
    assert list(C.COMFY_SCHEDULERS) == COMFY_KSAMPLER_SCHEDULERS
    for name in C.COMFY_SAMPLERS:
        plan = C.resolve(name, "normal")
        expected = "euler" if name == "ddim" else name.removesuffix("_gpu")
        assert plan.runner == "kdiffusion" and plan.name == expected and plan.name in kdiffusion.RULES, name


def test_second_order_samplers_drop_the_penultimate_sigma():
    """ComfyUI builds dpm_2's and dpm_2_ancestral's KSampler schedule one step longer and drops the level before
    the final 0."""
    longer = S.comfy_scheduler_sigmas("karras", 7, CONFIG)
    sch = C.build_comfy_schedule("dpm_2", "karras", CONFIG, 6)
    assert torch.equal(sch.sigmas, torch.cat([longer[:-2], longer[-1:]])) and sch.steps == 6
    assert torch.equal(C.build_comfy_schedule("heun", "karras", CONFIG, 6).sigmas,
                       S.comfy_scheduler_sigmas("karras", 6, CONFIG))


def test_every_supported_pair_builds():
    built = 0
    for sampler in C.COMFY_SAMPLERS:
        for scheduler in C.COMFY_SCHEDULERS:
            sch = C.build_comfy_schedule(sampler, scheduler, CONFIG, 6)
            S.validate(sch.sigmas)
            assert sch.runner == "kdiffusion"
            built += 1
    assert built == 44 * 9


@pytest.mark.parametrize(
    "sampler, scheduler", [("dpmpp_2m_sde_gpu", "karras"), ("uni_pc_bh2", "sgm_uniform"), ("sa_solver", "beta")]
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
