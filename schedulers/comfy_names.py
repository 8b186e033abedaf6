"""ComfyUI KSampler names -> our schedules, so ComfyUI workflows can run.

A ComfyUI KSampler names a ``sampler_name`` (the step rule) and a ``scheduler`` (how SIGMAS are spaced).
Samplers with a k-diffusion rule here run that rule over SIGMAS built with ComfyUI's own scheduler
formulas, which is what ComfyUI does (``ddim`` included: ComfyUI runs it as Euler). The others map to the
closest registered diffusers scheduler, with the spacing expressed through its config flags; those sigmas
follow diffusers' formulas and are close to, not equal to, ComfyUI's (``ComfyPlan.exact`` says which).

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

#: sampler_name -> k-diffusion rule (ComfyUI's "_gpu" variants only move the Brownian noise to the GPU; our
#: SDE rule draws Gaussian noise from the run's generator on the latents' device anyway)
_RULES = {
    "euler": "euler",
    "euler_ancestral": "euler_ancestral",
    "heun": "heun",
    "dpmpp_2m": "dpmpp_2m",
    "dpmpp_2m_sde": "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu": "dpmpp_2m_sde",
    "lms": "lms",
    "ddim": "euler",
}

#: sampler_name -> (registry name, config overrides)
_DIFFUSERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpm_2": ("kdpm2", {}),
    "dpm_2_ancestral": ("kdpm2_ancestral", {}),
    "dpmpp_sde": ("dpmpp_sde", {}),
    "dpmpp_sde_gpu": ("dpmpp_sde", {}),
    "dpmpp_3m_sde": ("dpmpp_3m_sde", {}),
    "dpmpp_3m_sde_gpu": ("dpmpp_3m_sde", {}),
    "uni_pc": ("unipc", {"solver_type": "bh1"}),
    "uni_pc_bh2": ("unipc", {"solver_type": "bh2"}),
    "deis": ("deis", {}),
    "ddpm": ("ddpm", {}),
    "lcm": ("lcm", {}),
    "sa_solver": ("sasolver", {}),
}

COMFY_SAMPLERS = tuple(_RULES) + tuple(_DIFFUSERS)
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


def denoised_sigmas(scheduler: str, steps: int, denoise: float, scheduler_config: Mapping[str, Any], *,
                    device: torch.device | str | None = None, full_from: float = 1.0) -> tuple[torch.Tensor, int]:
    """ComfyUI's denoise rule: ``steps`` steps over the tail of an ``int(steps / denoise)``-step schedule, and
    the total it cut from. ComfyUI's KSampler counts a denoise above 0.9999 as full (``full_from=0.9999``),
    BasicScheduler only 1.0."""
    from . import sigmas as sigmas_mod

    if denoise > full_from or denoise >= 1.0:
        return sigmas_mod.comfy_scheduler_sigmas(scheduler, steps, scheduler_config, device=device), steps
    total = int(steps / denoise)
    return sigmas_mod.comfy_scheduler_sigmas(scheduler, total, scheduler_config, device=device)[-(steps + 1):], total


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
                rules = ", ".join(_RULES)
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
                                 full_from=0.9999)
    schedule = schedule_from_sigmas(sig, plan.name, scheduler_config, runner="kdiffusion", device=device)
    return replace(schedule, denoise=denoise, total_steps=total)
