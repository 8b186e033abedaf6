"""ComfyUI KSampler names -> our schedules, so ComfyUI workflows can run.

A ComfyUI KSampler names a ``sampler_name`` (the step rule) and a ``scheduler`` (how SIGMAS are spaced). Every
sampler of ComfyUI's list runs its own step rule here (:mod:`schedulers.kdiffusion`) over SIGMAS built with
ComfyUI's own scheduler formulas, which is what ComfyUI does (``ddim`` included: ComfyUI runs it as Euler).

``denoise`` follows ComfyUI: ``steps`` steps over the tail of a ``steps / denoise`` schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from . import registry

if TYPE_CHECKING:  # torch and the schedule builders load when a schedule is built, not when names are read
    import torch

    from .schedule import Schedule

__all__ = ["COMFY_SAMPLERS", "COMFY_SCHEDULERS", "ComfyPlan", "build_comfy_schedule", "resolve"]

#: ComfyUI's KSampler sampler names, in its order (comfy.samplers.KSampler.SAMPLERS)
COMFY_SAMPLERS = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)

#: sampler_name -> k-diffusion rule (schedulers.kdiffusion.RULES). ComfyUI's "_gpu" variants only move the
#: Brownian noise to the GPU; our SDE rules draw Gaussian noise from the run's generator on the latents' device
#: anyway. ComfyUI itself runs "ddim" as Euler.
_RULES = {name: name for name in registry.STEP_RULES} | {
    "dpmpp_sde_gpu": "dpmpp_sde",
    "dpmpp_2m_sde_gpu": "dpmpp_2m_sde",
    "dpmpp_2m_sde_heun_gpu": "dpmpp_2m_sde_heun",
    "dpmpp_3m_sde_gpu": "dpmpp_3m_sde",
    "ddim": "euler",
}

#: samplers whose KSampler schedule is built one step longer with the next-to-last level dropped (ComfyUI's
#: DISCARD_PENULTIMATE_SIGMA_SAMPLERS: the second-order rules end with a long first-order step otherwise)
DISCARD_PENULTIMATE = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})

#: ComfyUI's scheduler names (their SIGMAS formulas are in schedulers.sigmas)
COMFY_SCHEDULERS = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta",
                    "linear_quadratic", "kl_optimal")

@dataclass(frozen=True)
class ComfyPlan:
    """How a (sampler_name, scheduler) pair runs here: step rule ``name`` over
    ``comfy_names.ksampler_sigmas(sampler_name, scheduler, ...)`` (exactly ComfyUI's sigmas)."""

    sampler_name: str
    scheduler: str
    name: str
    runner: Literal["kdiffusion"] = "kdiffusion"


def resolve(sampler_name: str, scheduler: str) -> ComfyPlan:
    """The plan for a ComfyUI KSampler's ``sampler_name`` and ``scheduler``; ValueError if unsupported."""
    if scheduler not in COMFY_SCHEDULERS:
        raise ValueError(
            f"unsupported ComfyUI scheduler {scheduler!r}; supported: {', '.join(COMFY_SCHEDULERS)}"
        )
    if sampler_name in _RULES:
        return ComfyPlan(sampler_name, scheduler, _RULES[sampler_name])
    raise ValueError(f"unsupported ComfyUI sampler {sampler_name!r}; supported: {', '.join(COMFY_SAMPLERS)}")


def ksampler_sigmas(sampler_name: str | None, scheduler: str, steps: int, scheduler_config: Mapping[str, Any], *,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The full schedule a KSampler with ``sampler_name`` runs: the scheduler's SIGMAS, built one step longer
    with the next-to-last level dropped for the samplers in ``DISCARD_PENULTIMATE``."""
    import torch

    from . import sigmas as sigmas_mod

    if sampler_name not in DISCARD_PENULTIMATE:
        return sigmas_mod.comfy_scheduler_sigmas(scheduler, steps, scheduler_config, device=device)
    s = sigmas_mod.comfy_scheduler_sigmas(scheduler, steps + 1, scheduler_config, device=device)
    return torch.cat([s[:-2], s[-1:]])


def denoised_sigmas(scheduler: str, steps: int, denoise: float, scheduler_config: Mapping[str, Any], *,
                    device: torch.device | str | None = None, full_from: float = 1.0,
                    sampler_name: str | None = None) -> tuple[torch.Tensor, int]:
    """ComfyUI's denoise rule: ``steps`` steps over the tail of an ``int(steps / denoise)``-step schedule, and
    the total it cut from. ComfyUI's KSampler counts a denoise above 0.9999 as full (``full_from=0.9999``),
    BasicScheduler only 1.0."""
    if denoise > full_from or denoise >= 1.0:
        return ksampler_sigmas(sampler_name, scheduler, steps, scheduler_config, device=device), steps
    total = int(steps / denoise)
    full = ksampler_sigmas(sampler_name, scheduler, total, scheduler_config, device=device)
    return full[-(steps + 1):], total


def build_comfy_schedule(
    sampler_name: str,
    scheduler: str,
    scheduler_config: Mapping[str, Any],
    steps: int,
    denoise: float = 1.0,
    *,
    device: torch.device | str | None = "cpu",
) -> Schedule:
    """The Schedule a ComfyUI KSampler with these settings describes, for a model with this scheduler
    config. Sample it with ``sampling.sample`` (and the seed's noise from ``sampling.make_noise``)."""
    from .schedule import schedule_from_sigmas

    plan = resolve(sampler_name, scheduler)
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}")
    sig, total = denoised_sigmas(scheduler, steps, denoise, scheduler_config, device=device,
                                 full_from=0.9999, sampler_name=sampler_name)
    schedule = schedule_from_sigmas(sig, plan.name, scheduler_config, runner="kdiffusion", device=device)
    return replace(schedule, denoise=denoise, total_steps=total)
