"""Schedules: what a Scheduler node hands to the Sampler.

A ``Schedule`` describes a whole sampling run without holding a live diffusers scheduler (those keep
per-run state, so ``sampling.sample`` builds a fresh one from the recipe stored here each time). It runs
either *pipeline-style*, through the registered diffusers class, or as a *k-diffusion rule* over its SIGMAS.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from . import kdiffusion, registry
from . import sigmas as sigmas_mod
from .model_sampling import dynamic_mu, model_sampling

__all__ = ["Schedule", "build_schedule", "img2img_start", "schedule_from_sigmas"]

SigmaSpacing = Literal["default", "karras", "exponential", "beta"]


@dataclass(frozen=True, eq=False)
class Schedule:
    """One sampling run's schedule.

    ``timesteps`` are the model timesteps in call order (for Heun-like schedulers 2N-1 of them, PNDM N+1);
    ``sigmas`` is the ComfyUI SIGMAS form: the noise level at the start of each of the ``steps`` steps, then 0.
    Both are already cut for ``denoise``. ``runner`` is 'diffusers' (``scheduler_class`` driven like
    StableDiffusionPipeline with ``set_timesteps(**set_timesteps_kwargs)``) or 'kdiffusion' (``rule`` applied
    to ``sigmas``).
    """

    name: str
    config: dict[str, Any]
    overrides: dict[str, Any]
    steps: int
    denoise: float
    timesteps: torch.Tensor
    sigmas: torch.Tensor
    runner: Literal["diffusers", "kdiffusion"]
    scheduler_class: type | None = None
    rule: str | None = None
    #: how ``set_timesteps`` is called: num_inference_steps, or custom sigmas / timesteps
    set_timesteps_kwargs: dict[str, Any] = field(default_factory=dict)
    #: index into the full ``scheduler.timesteps`` where a denoise < 1 run starts (t_start * order)
    begin_index: int = 0
    #: steps of the full schedule before the denoise cut
    total_steps: int = 0
    #: eta: for diffusers classes passed to ``step`` where accepted (None = the pipeline's 0.0, i.e. DDIM and
    #: TCD deterministic); for the euler_ancestral / dpmpp_2m_sde rules the noise amount (None = 1.0)
    eta: float | None = None
    #: the run draws noise after the initial noise, so results depend on the generator
    stochastic: bool = False

    def make_scheduler(self, device: torch.device | str | None = None, seed: int | list[int] | None = None):
        """A fresh diffusers scheduler with ``set_timesteps`` applied on ``device``. ``seed`` feeds a scheduler
        that seeds its own noise (DPM++ SDE's noise_sampler_seed) unless the overrides already set it."""
        if self.runner != "diffusers":
            raise ValueError(
                f"schedule {self.name!r} runs the k-diffusion rule {self.rule!r}, not a diffusers class"
            )
        overrides = dict(self.overrides)
        key = registry.get(self.name).seed_config_key if self.name in registry.REGISTRY else None
        if key and overrides.get(key) is None and seed is not None:
            overrides[key] = seed
        with registry.quiet_diffusers():
            sched = self.scheduler_class.from_config(self.config, **overrides)
            sched.set_timesteps(**self.set_timesteps_kwargs, device=device)
        return sched


def img2img_start(steps: int, denoise: float, order: int = 1) -> tuple[int, int]:
    """``(t_start, steps_run)`` as StableDiffusionImg2ImgPipeline.get_timesteps computes them for
    ``strength = denoise``: the run skips the first ``t_start`` steps (``t_start * order`` timesteps)."""
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}")
    init_timestep = min(int(steps * denoise), steps)
    t_start = max(steps - init_timestep, 0)
    return t_start, steps - t_start


def build_schedule(
    name: str,
    scheduler_config: Mapping[str, Any],
    steps: int,
    denoise: float = 1.0,
    sigma_spacing: SigmaSpacing = "default",
    timestep_spacing: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    eta: float | None = None,
    device: torch.device | str | None = "cpu",
    pipeline_sigmas: Sequence[float] | None = None,
    sigmas_for_flow_solvers: bool = False,
) -> Schedule:
    """Schedule for registered scheduler ``name`` on a model whose scheduler config is ``scheduler_config``.

    ``pipeline_sigmas`` are the family pipeline's own sigmas (Flux's ``linspace(1, 1/steps, steps)``), given to
    a class whose ``set_timesteps`` takes sigmas unless its config uses its own flow sigmas, as the pipeline's
    ``retrieve_timesteps`` does; with ``sigmas_for_flow_solvers`` (ZImagePipeline, QwenImagePipeline) those
    get them too, as a float64 array (UniPC's flow path does arithmetic on them; a list fails there). A dynamic-shifting config passes its ``mu`` (:func:`dynamic_mu`) to classes
    that take it; the others get the equal fixed shift.

    ``sigma_spacing`` other than 'default' sets the class's own ``use_<spacing>_sigmas`` flag (diffusers'
    formulas); ``timestep_spacing`` ('leading', 'trailing', 'linspace') overrides the config's. ``overrides``
    go to ``from_config`` last. ``denoise < 1`` keeps the tail of the schedule as img2img does.
    """
    entry = registry.get(name)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not entry.fits(scheduler_config):
        raise ValueError(
            f"scheduler {name!r} ({entry.class_name}) does not fit this model: it is for "
            f"{'flow-matching' if entry.kind == 'flow' else 'DDPM-trained (epsilon / v)'} models; schedulers "
            f"that fit: {', '.join(registry.fitting_names(scheduler_config))}"
        )
    ov: dict[str, Any] = entry.config_overrides(scheduler_config)
    if sigma_spacing != "default":
        if sigma_spacing not in registry.SIGMA_FLAGS:
            raise ValueError(
                f"sigma_spacing must be one of default, {', '.join(registry.SIGMA_FLAGS)}; got {sigma_spacing!r}"
            )
        if sigma_spacing not in entry.sigma_spacings:
            have = [n for n, e in registry.REGISTRY.items() if sigma_spacing in _spacings(e)]
            raise ValueError(
                f"scheduler {name!r} ({entry.class_name}) has no {sigma_spacing} sigma spacing; schedulers that "
                f"have it: {', '.join(have)}. Or build SIGMAS with schedulers.sigmas and use schedule_from_sigmas."
            )
        ov[registry.SIGMA_FLAGS[sigma_spacing]] = True
    if timestep_spacing is not None:
        if not entry.supports_timestep_spacing:
            raise ValueError(f"scheduler {name!r} ({entry.class_name}) has no timestep_spacing setting")
        ov["timestep_spacing"] = timestep_spacing
    ov.update(overrides or {})
    set_kwargs: dict[str, Any] = {"num_inference_steps": steps}
    takes = inspect.signature(entry.cls.set_timesteps).parameters
    flow_solver = bool({**scheduler_config, **ov}.get("use_flow_sigmas"))
    if pipeline_sigmas is not None and "sigmas" in takes and (sigmas_for_flow_solvers or not flow_solver):
        if len(pipeline_sigmas) != steps:
            raise ValueError(f"pipeline_sigmas: {len(pipeline_sigmas)} sigmas for {steps} steps")
        values = [float(s) for s in pipeline_sigmas]
        set_kwargs = {"sigmas": np.asarray(values, dtype=np.float64) if flow_solver else values}
    mu = dynamic_mu(scheduler_config)
    if mu is not None:
        if "mu" in takes:
            set_kwargs["mu"] = mu
        else:  # exp(mu) / (exp(mu) + 1/t - 1) is the fixed shift exp(mu) (mu for the linear form)
            exponential = scheduler_config.get("time_shift_type", "exponential") == "exponential"
            ov.setdefault("shift", math.exp(mu) if exponential else mu)
    return _diffusers_schedule(entry, scheduler_config, ov, set_kwargs, steps, denoise, eta, device)


def schedule_from_sigmas(
    sigmas: torch.Tensor | Sequence[float],
    sampler: str,
    scheduler_config: Mapping[str, Any],
    *,
    runner: Literal["auto", "diffusers", "kdiffusion"] = "auto",
    overrides: Mapping[str, Any] | None = None,
    eta: float | None = None,
    device: torch.device | str | None = None,
) -> Schedule:
    """Schedule that runs exactly the given SIGMAS with ``sampler``.

    With ``runner='auto'`` a registered diffusers class that really takes ``set_timesteps(sigmas=...)``
    (Euler) is driven with them; otherwise the k-diffusion rule of that name is used (euler, euler_ancestral,
    heun, dpmpp_2m, dpmpp_2m_sde, lms). The SIGMAS must be valid except that the last value may be above 0
    (the high part of a split: sampling stops at that noise level).
    """
    s = sigmas if isinstance(sigmas, torch.Tensor) else torch.tensor(list(sigmas), dtype=torch.float32)
    sigmas_mod.validate(s, require_zero_end=False)
    if device is not None:
        s = s.to(device)
    entry = registry.REGISTRY.get(sampler)
    if runner in ("auto", "diffusers") and entry is not None and entry.accepts_sigmas and entry.fits(scheduler_config):
        ov = {**entry.overrides, **(overrides or {})}
        steps = len(s) - 1
        sch = _diffusers_schedule(
            entry, scheduler_config, ov, {"sigmas": s.tolist()}, steps, 1.0, eta, s.device
        )
        return replace(sch, sigmas=s.to(torch.float32))  # keeps a split's non-zero end as given
    if runner in ("auto", "kdiffusion") and sampler in kdiffusion.RULES:
        return Schedule(
            name=sampler,
            config=dict(scheduler_config),
            overrides=dict(overrides or {}),
            steps=len(s) - 1,
            denoise=1.0,
            timesteps=model_sampling(scheduler_config).timestep(s[:-1]),
            sigmas=s.to(torch.float32),
            runner="kdiffusion",
            rule=sampler,
            total_steps=len(s) - 1,
            eta=eta,
            stochastic=sampler in kdiffusion.STOCHASTIC_RULES and eta != 0,
        )
    takes = [n for n in registry.sigma_runners() if n in registry.REGISTRY and registry.REGISTRY[n].accepts_sigmas]
    raise ValueError(
        f"{sampler!r} cannot run custom sigmas with runner={runner!r}: diffusers classes that take sigmas: "
        f"{', '.join(takes) or 'none'}; k-diffusion rules: {', '.join(kdiffusion.RULES)}"
    )


def _spacings(entry: registry.SchedulerEntry) -> tuple[str, ...]:
    try:
        return entry.sigma_spacings
    except registry.MissingDependencyError:
        return ()


def _diffusers_schedule(
    entry: registry.SchedulerEntry,
    scheduler_config: Mapping[str, Any],
    overrides: dict[str, Any],
    set_kwargs: dict[str, Any],
    steps: int,
    denoise: float,
    eta: float | None,
    device: torch.device | str | None,
) -> Schedule:
    cls = entry.cls
    config = dict(scheduler_config)
    with registry.quiet_diffusers():
        sched = cls.from_config(config, **overrides)
        sched.set_timesteps(**set_kwargs, device=device)
    order = int(getattr(sched, "order", 1))
    full_sigmas = step_sigmas(sched, steps)
    t_start, steps_run = img2img_start(steps, denoise, order)
    if steps_run < 1:
        raise ValueError(f"denoise={denoise} with {steps} steps leaves no step to run")
    timesteps = sched.timesteps[t_start * order :]
    stochastic = entry.stochastic or (bool(eta) and entry.step_accepts("eta"))
    if entry.seed_config_key and overrides.get(entry.seed_config_key) is not None:
        stochastic = False  # seeded by its config, the generator plays no part
    return Schedule(
        name=entry.name,
        config=config,
        overrides=overrides,
        steps=steps_run,
        denoise=denoise,
        timesteps=timesteps,
        sigmas=full_sigmas[t_start:],
        runner="diffusers",
        scheduler_class=cls,
        set_timesteps_kwargs=set_kwargs,
        begin_index=t_start * order,
        total_steps=steps,
        eta=eta,
        stochastic=stochastic,
    )


def step_sigmas(sched: Any, steps: int) -> torch.Tensor:
    """ComfyUI-form SIGMAS of a diffusers scheduler after ``set_timesteps``: the sigma each step starts from,
    then 0. Uses the scheduler's own ``sigmas`` where it keeps them (so Karras & co. are exact), else derives
    them from ``alphas_cumprod`` at the step timesteps."""
    ts = sched.timesteps
    order = int(getattr(sched, "order", 1))
    own = getattr(sched, "sigmas", None)
    device = ts.device
    if isinstance(own, torch.Tensor) and own.ndim == 1:
        if order > 1:
            start = own[::order][:steps]
        elif len(own) == len(ts) + 1:
            start = own[:-1]
        else:
            start = None
        if start is not None and len(start) == steps:
            return sigmas_mod.append_zero(start.to(device, torch.float32))
    starts = ts[::order] if order > 1 else torch.unique_consecutive(ts)
    if len(starts) != steps:
        raise ValueError(f"{type(sched).__name__}: cannot map {len(ts)} timesteps onto {steps} steps")
    return sigmas_mod.sigmas_from_alphas(sched.alphas_cumprod, starts)
