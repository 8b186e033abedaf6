"""ComfyUI KSampler names -> our schedules, so ComfyUI workflows can run.

A ComfyUI KSampler names a ``sampler_name`` (the step rule) and a ``scheduler`` (how SIGMAS are spaced).
Samplers with a k-diffusion rule here (all of ComfyUI's list but sa_solver and the refused ones) run that rule
over SIGMAS built with ComfyUI's own scheduler formulas, which is what ComfyUI does (``ddim`` included: ComfyUI
runs it as Euler). sa_solver runs diffusers' implementation of the same solver, with the spacing expressed
through its config flags; those sigmas follow diffusers' formulas and are close to, not equal to, ComfyUI's
(``ComfyPlan.exact`` says which). dpm_adaptive and sa_solver_pece are refused with a message.

``denoise`` follows ComfyUI for rule-based plans (``steps`` steps over the tail of a ``steps / denoise``
schedule) and the img2img pipeline for diffusers plans (``int(steps * denoise)`` steps).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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

#: sampler_name -> (registry name, config overrides): the same method as diffusers implements it, over
#: diffusers' sigma formulas (close to, not equal to, ComfyUI's)
_DIFFUSERS: dict[str, tuple[str, dict[str, Any]]] = {
    "sa_solver": ("sasolver", {}),
}

#: ComfyUI samplers not implemented here: refused with this reason rather than run as something else
_MISSING = {name: "is not implemented here" for name in ("dpm_adaptive", "sa_solver_pece")}

#: samplers whose KSampler schedule is built one step longer with the next-to-last level dropped (ComfyUI's
#: DISCARD_PENULTIMATE_SIGMA_SAMPLERS: the second-order rules end with a long first-order step otherwise)
DISCARD_PENULTIMATE = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})

#: ComfyUI's scheduler names (their SIGMAS formulas are in schedulers.sigmas)
COMFY_SCHEDULERS = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta",
                    "linear_quadratic", "kl_optimal")

#: ComfyUI scheduler -> (diffusers sigma spacing, timestep spacing) for diffusers plans. 'linspace' makes
#: diffusers' Karras / exponential span the full train range as ComfyUI's do.
_SPACINGS = {
    "normal": ("default", "linspace"),
    "karras": ("karras", "linspace"),
    "exponential": ("exponential", "linspace"),
    "beta": ("beta", "linspace"),
    "sgm_uniform": ("default", "trailing"),
    "simple": ("default", "trailing"),
    "ddim_uniform": ("default", "leading"),
}


@dataclass(frozen=True)
class ComfyPlan:
    """How a (sampler_name, scheduler) pair runs here.

    ``runner='kdiffusion'``: rule ``name`` over ``sigmas.comfy_scheduler_sigmas(scheduler, ...)`` (exact
    ComfyUI sigmas). ``runner='diffusers'``: registry ``name`` built with ``sigma_spacing``,
    ``timestep_spacing`` and ``overrides`` (approximate sigmas).
    """

    sampler_name: str
    scheduler: str
    runner: Literal["kdiffusion", "diffusers"]
    name: str
    sigma_spacing: str
    timestep_spacing: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    exact: bool = False


def resolve(sampler_name: str, scheduler: str) -> ComfyPlan:
    """The plan for a ComfyUI KSampler's ``sampler_name`` and ``scheduler``; ValueError if unsupported."""
    if scheduler not in COMFY_SCHEDULERS:
        raise ValueError(
            f"unsupported ComfyUI scheduler {scheduler!r}; supported: {', '.join(COMFY_SCHEDULERS)}"
        )
    if sampler_name in _RULES:
        return ComfyPlan(sampler_name, scheduler, "kdiffusion", _RULES[sampler_name], scheduler, exact=True)
    if sampler_name in _MISSING:
        usable = ", ".join(n for n in COMFY_SAMPLERS if n in _RULES)
        raise ValueError(f"ComfyUI sampler {sampler_name!r} {_MISSING[sampler_name]}; use one of: {usable}")
    if sampler_name in _DIFFUSERS:
        name, overrides = _DIFFUSERS[sampler_name]
        if scheduler not in _SPACINGS:
            raise ValueError(f"ComfyUI sampler {sampler_name!r} runs here as diffusers' {name!r}, which has no "
                             f"{scheduler} spacing; use one of {', '.join(_SPACINGS)} with it")
        sigma_spacing, timestep_spacing = _SPACINGS[scheduler]
        entry = registry.get(name)
        if sigma_spacing != "default" and sigma_spacing not in entry.sigma_spacings:
            raise ValueError(
                f"ComfyUI sampler {sampler_name!r} maps to {name!r} ({entry.class_name}), which has no "
                f"{sigma_spacing} spacing; use normal, simple, sgm_uniform or ddim_uniform with it"
            )
        if not entry.supports_timestep_spacing:
            timestep_spacing = None
        return ComfyPlan(
            sampler_name, scheduler, "diffusers", name, sigma_spacing, timestep_spacing, overrides
        )
    raise ValueError(f"unsupported ComfyUI sampler {sampler_name!r}; supported: {', '.join(COMFY_SAMPLERS)}")


def runs_over_sigmas(sampler_name: str) -> bool:
    """Whether ComfyUI sampler ``sampler_name`` runs here as a step rule over any SIGMAS (SamplerCustom)."""
    return sampler_name in _RULES


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
    from .model_sampling import is_flow_config
    from .schedule import build_schedule, schedule_from_sigmas

    plan = resolve(sampler_name, scheduler)
    if plan.runner == "diffusers":
        name, sigma_spacing, timestep_spacing = plan.name, plan.sigma_spacing, plan.timestep_spacing
        if is_flow_config(scheduler_config):  # the solver's flow-sigma form, over the model's own shift
            name, timestep_spacing = f"flow_{plan.name}", None
            if name not in registry.REGISTRY or sigma_spacing != "default":
                rules = ", ".join(n for n in COMFY_SAMPLERS if n in _RULES)
                raise ValueError(
                    f"ComfyUI sampler {sampler_name!r} with scheduler {scheduler!r} has no flow-matching form "
                    f"here; on this model use one of {rules} (any scheduler), or uni_pc with normal/simple"
                )
        return build_schedule(
            name,
            scheduler_config,
            steps,
            denoise=denoise,
            sigma_spacing=sigma_spacing,
            timestep_spacing=timestep_spacing,
            overrides=plan.overrides,
            device=device,
        )
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}")
    sig, total = denoised_sigmas(plan.sigma_spacing, steps, denoise, scheduler_config, device=device,
                                 full_from=0.9999, sampler_name=sampler_name)
    schedule = schedule_from_sigmas(sig, plan.name, scheduler_config, runner="kdiffusion", device=device)
    return replace(schedule, denoise=denoise, total_steps=total)
