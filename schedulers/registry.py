"""Scheduler registry: short names -> diffusers scheduler classes plus what each one can do.

Every name is built the way diffusers' scheduler guide swaps schedulers on a pipeline:
``Class.from_config(model_scheduler_config, **overrides)``, so the model's beta schedule, prediction type
and timestep spacing carry over. All entries were checked to run an SD-style epsilon model and to match
``StableDiffusionPipeline`` exactly (see tests/test_schedulers_parity.py).

Flow-matching models (SD3, ...) bring a FlowMatch scheduler config; the ``flow_*`` entries fit them (the
multistep solvers through their flow-sigma settings, with the model's shift), the others fit DDPM-trained
models (``fits`` tells which). Left out on purpose: EDMEuler / EDMDPMSolverMultistep /
CosineDPMSolverMultistep (they feed the UNet EDM noise levels instead of train timesteps), the inverse and
parallel variants, IPNDM and model-specific schedulers.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import Any

__all__ = [
    "SD15_SCHEDULER_CONFIG",
    "MissingDependencyError",
    "SchedulerEntry",
    "REGISTRY",
    "compatible_names",
    "fitting_names",
    "get",
    "names",
]

#: Stable Diffusion 1.5's scheduler_config.json (PNDM). A sane default where a model brings no config.
SD15_SCHEDULER_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
        "_class_name": "PNDMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "clip_sample": False,
        "trained_betas": None,
        "timestep_spacing": "leading",
    }
)

SIGMA_FLAGS = {
    "karras": "use_karras_sigmas",
    "exponential": "use_exponential_sigmas",
    "beta": "use_beta_sigmas",
}


class MissingDependencyError(ImportError):
    """A scheduler needs an optional Python package that is not installed."""


@dataclass(frozen=True)
class SchedulerEntry:
    """One registered scheduler. Capabilities are read from the diffusers class itself (signatures and
    config parameters), so they follow the installed diffusers version."""

    name: str
    label: str
    class_name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: draws noise while sampling, so a run needs a generator (or, for DPM++ SDE, a noise seed)
    stochastic: bool = False
    #: optional package diffusers needs for this class (diffusers hands out a placeholder without it)
    requires: str | None = None
    #: config key that seeds the scheduler's own noise source instead of the step generator
    seed_config_key: str | None = None
    #: "discrete" (DDPM-trained epsilon / v models) or "flow" (flow-matching models)
    kind: str = "discrete"
    #: ``set_timesteps(sigmas=...)`` really follows given sigmas (declared so that node declarations need not
    #: build diffusers classes; tests/test_schedulers_registry.py checks it against a probe of the class)
    custom_sigmas: bool = False

    def config_overrides(self, scheduler_config: Mapping[str, Any]) -> dict[str, Any]:
        """The overrides for ``from_config`` on a model with ``scheduler_config``: the entry's own, and for a
        multistep solver on a flow model its flow-sigma settings with the model's shift."""
        from .model_sampling import FLOW_CLASSES

        out = dict(self.overrides)
        if self.kind == "flow" and self.class_name not in FLOW_CLASSES:
            shift = scheduler_config.get("shift", scheduler_config.get("flow_shift", 1.0))
            out |= {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": float(shift)}
        return out

    def fits(self, scheduler_config: Mapping[str, Any]) -> bool:
        """Whether this scheduler runs a model with ``scheduler_config`` (flow entries on flow models)."""
        from .model_sampling import is_flow_config

        return (self.kind == "flow") == is_flow_config(scheduler_config)

    @property
    def cls(self) -> type:
        """The diffusers class; raises MissingDependencyError if diffusers only has a placeholder."""
        return load_class(self.class_name, self.requires, self.name)

    def build(self, scheduler_config: Mapping[str, Any], **overrides: Any):
        """A fresh scheduler: ``cls.from_config(config, **entry overrides, **overrides)``."""
        return self.cls.from_config(dict(scheduler_config), **{**self.config_overrides(scheduler_config),
                                                               **overrides})

    @property
    def accepts_sigmas(self) -> bool:
        """``set_timesteps(sigmas=...)`` works for an SD epsilon config (signature + a probe: UniPC has the
        parameter but only honours it for flow-matching sigmas). Flow entries shift what they are given, so
        custom SIGMAS run on flow models through the k-diffusion rules instead. Declared (``custom_sigmas``);
        :func:`probe` checks the declaration."""
        return self.kind == "discrete" and self.custom_sigmas

    @property
    def accepts_timesteps(self) -> bool:
        """``set_timesteps(timesteps=...)`` works for an SD epsilon config (signature + a probe)."""
        return self.kind == "discrete" and _probe(self.name, "timesteps")

    @property
    def sigma_spacings(self) -> tuple[str, ...]:
        """Sigma spacings the class supports through its config flags, besides 'default'."""
        params = _init_params(self.cls)
        return tuple(k for k, flag in SIGMA_FLAGS.items() if flag in params)

    @property
    def supports_timestep_spacing(self) -> bool:
        return "timestep_spacing" in _init_params(self.cls)

    @property
    def order(self) -> int:
        """Model calls per step for a multi-call solver (Heun, DPM2, DPM++ SDE: 2), else 1."""
        return int(getattr(self.cls, "order", 1))

    def step_accepts(self, param: str) -> bool:
        """Whether ``step`` takes ``param`` (e.g. 'generator', 'eta'), as the pipeline checks it."""
        return param in inspect.signature(self.cls.step).parameters


def _e(name, label, class_name, **kw) -> SchedulerEntry:
    return SchedulerEntry(name, label, class_name, **kw)


_SDE = {"algorithm_type": "sde-dpmsolver++"}

#: Registry order is the order a UI combo shows.
REGISTRY: Mapping[str, SchedulerEntry] = MappingProxyType(
    {
        e.name: e
        for e in [
            _e("ddpm", "DDPM", "DDPMScheduler", stochastic=True),
            _e("ddim", "DDIM", "DDIMScheduler"),
            _e("pndm", "PNDM (PLMS)", "PNDMScheduler"),
            _e("lms", "LMS", "LMSDiscreteScheduler", requires="scipy"),
            _e("euler", "Euler", "EulerDiscreteScheduler", custom_sigmas=True),
            _e("euler_ancestral", "Euler Ancestral", "EulerAncestralDiscreteScheduler", stochastic=True),
            _e("heun", "Heun", "HeunDiscreteScheduler"),
            _e("dpmpp_2m", "DPM++ 2M", "DPMSolverMultistepScheduler"),
            _e(
                "dpmpp_2m_sde", "DPM++ 2M SDE", "DPMSolverMultistepScheduler", overrides=_SDE, stochastic=True
            ),
            _e("dpmpp_3m", "DPM++ 3M", "DPMSolverMultistepScheduler", overrides={"solver_order": 3}),
            _e(
                "dpmpp_3m_sde",
                "DPM++ 3M SDE",
                "DPMSolverMultistepScheduler",
                overrides={**_SDE, "solver_order": 3},
                stochastic=True,
            ),
            _e("dpm_singlestep", "DPM++ Singlestep", "DPMSolverSinglestepScheduler"),
            _e("deis", "DEIS", "DEISMultistepScheduler"),
            _e("unipc", "UniPC", "UniPCMultistepScheduler"),
            _e("kdpm2", "DPM2", "KDPM2DiscreteScheduler"),
            _e("kdpm2_ancestral", "DPM2 Ancestral", "KDPM2AncestralDiscreteScheduler", stochastic=True),
            _e(
                "dpmpp_sde",
                "DPM++ SDE",
                "DPMSolverSDEScheduler",
                stochastic=True,
                requires="torchsde",
                seed_config_key="noise_sampler_seed",
            ),
            _e("sasolver", "SA-Solver", "SASolverScheduler", stochastic=True),
            _e("lcm", "LCM", "LCMScheduler", stochastic=True),
            _e("tcd", "TCD", "TCDScheduler"),
            _e("flow_euler", "Flow Euler", "FlowMatchEulerDiscreteScheduler", kind="flow"),
            _e("flow_heun", "Flow Heun", "FlowMatchHeunDiscreteScheduler", kind="flow"),
            _e("flow_dpmpp_2m", "Flow DPM++ 2M", "DPMSolverMultistepScheduler", kind="flow"),
            _e("flow_unipc", "Flow UniPC", "UniPCMultistepScheduler", kind="flow"),
        ]
    }
)


def names() -> list[str]:
    """Registered scheduler names, in display order."""
    return list(REGISTRY)


def fitting_names(scheduler_config: Mapping[str, Any]) -> list[str]:
    """The names that run a model with ``scheduler_config`` (discrete or flow-matching)."""
    return [n for n, e in REGISTRY.items() if e.fits(scheduler_config)]


def get(name: str) -> SchedulerEntry:
    """The entry for ``name``; a ValueError listing the valid names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; expected one of: {', '.join(REGISTRY)}") from None


def load_class(class_name: str, requires: str | None = None, name: str | None = None) -> type:
    """``diffusers.<class_name>``, refusing diffusers' placeholder classes with a message that names the
    missing package (the placeholder would only fail later, deep inside from_config)."""
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if cls is None:
        raise MissingDependencyError(f"diffusers {diffusers.__version__} has no {class_name}")
    if _is_placeholder(cls):
        backends = [b for b in getattr(cls, "_backends", []) if b != "torch"] or [requires or "?"]
        missing = [b for b in backends if importlib.util.find_spec(b) is None] or backends
        label = f"scheduler {name!r} ({class_name})" if name else class_name
        raise MissingDependencyError(
            f"{label} needs the Python package {' and '.join(repr(m) for m in missing)}, which is not "
            f"installed; install it with `pip install {' '.join(missing)}`"
        )
    return cls


def _is_placeholder(cls: Any) -> bool:
    from diffusers.utils import DummyObject

    return isinstance(cls, DummyObject)


def _init_params(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.__init__).parameters)


#: the k-diffusion step rules (``schedulers.kdiffusion.RULES``), named here so that declarations need no torch
STEP_RULES = ("euler", "euler_ancestral", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "lms",
              "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde",
              "ddpm", "lcm", "ipndm", "ipndm_v", "res_multistep", "res_multistep_ancestral", "gradient_estimation",
              "deis", "uni_pc", "uni_pc_bh2", "exp_heun_2_x0", "exp_heun_2_x0_sde", "seeds_2", "seeds_3", "er_sde",
              "euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp",
              "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp", "gradient_estimation_cfg_pp", "dpm_fast", "dpm_adaptive",
              "sa_solver", "sa_solver_pece")


def sigma_runners() -> list[str]:
    """What can run a given SIGMAS tensor: the k-diffusion step rules, then registered diffusers schedulers
    that follow custom sigmas (a name that is both runs the diffusers class where it fits the model)."""
    return [*STEP_RULES, *(n for n, e in REGISTRY.items() if e.accepts_sigmas and n not in STEP_RULES)]


def probe(name: str, kind: str) -> bool:
    """Whether the class of entry ``name`` really takes ``set_timesteps(<kind>=...)`` for an SD config."""
    return _probe(name, kind)


@cache
def _probe(name: str, kind: str) -> bool:
    entry = REGISTRY[name]
    cls = entry.cls
    if kind not in inspect.signature(cls.set_timesteps).parameters:
        return False
    value = [14.0, 3.0, 0.5, 0.0] if kind == "sigmas" else [999, 500, 1]
    with quiet_diffusers():
        sched = entry.build(SD15_SCHEDULER_CONFIG)
        try:
            sched.set_timesteps(**{kind: value})
        except (ValueError, TypeError, NotImplementedError):
            return False
    return True


@contextmanager
def quiet_diffusers():
    """Silence diffusers' info/warning logging (config notes, custom-timestep warnings) for a moment."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def compatible_names(scheduler: Any) -> list[str]:
    """Registry names whose class is in ``scheduler.compatibles`` (the guide's
    ``pipeline.scheduler.compatibles``). ``scheduler`` may be an instance, a class or a registry name."""
    if isinstance(scheduler, str):
        scheduler = get(scheduler).cls
    if isinstance(scheduler, type):
        classes = scheduler._get_compatibles()
    else:
        classes = scheduler.compatibles
    wanted = {c.__name__ for c in classes}
    return [n for n, e in REGISTRY.items() if e.class_name in wanted]
