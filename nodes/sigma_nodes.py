"""SIGMAS nodes: build, write, split and flip noise-level lists for the Sampler's ``sigmas`` input.

SIGMAS is a 1-D float tensor, ``steps + 1`` long, non-increasing and ending in 0 (ComfyUI's convention; see
:mod:`schedulers.sigmas`). Every SIGMAS input is checked with ``schedulers.sigmas.validate`` and a bad one is
reported with the input's name.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from graph_runtime import Link, Node, NodeError, NodeInputs, Output, Widget

from .sampling import SIGMAS, _check_model, check_sigmas

if TYPE_CHECKING:  # torch and the sigma builders load when a node runs, not when the nodes are declared
    import torch

_MAX_STEPS = 10000


def _range(model: Any, sigma_min: float, sigma_max: float) -> tuple[float, float]:
    """sigma_min / sigma_max, a 0 standing for the model's own train range."""
    if sigma_min <= 0 or sigma_max <= 0:
        from schedulers import sigmas as sigmas_mod

        train = sigmas_mod.model_sigmas(_check_model(model).scheduler_config)
        sigma_min = sigma_min if sigma_min > 0 else float(train[0])
        sigma_max = sigma_max if sigma_max > 0 else float(train[-1])
    if sigma_min >= sigma_max:
        raise NodeError(f"sigma_min: {sigma_min:.6g} must be below sigma_max {sigma_max:.6g}")
    return sigma_min, sigma_max


class KarrasSigmas(Node):
    """Karras et al. (2022) noise levels: uniform in sigma^(1/rho) from sigma_max down to sigma_min.

    A sigma_min or sigma_max of 0 takes the model's own range (its smallest and largest train sigma).
    """

    CATEGORY = "sampling/sigmas"
    DISPLAY_NAME = "Karras Sigmas"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        steps: int = Widget(20, ge=1, le=_MAX_STEPS)
        rho: float = Widget(7.0, ge=0.1, le=100.0, step=0.1)
        sigma_min: float = Widget(0.0, ge=0.0, le=5000.0, step=0.001, optional=True, tooltip="0 = the model's")
        sigma_max: float = Widget(0.0, ge=0.0, le=5000.0, step=0.01, optional=True, tooltip="0 = the model's")

    OUTPUTS = (Output(SIGMAS, "SIGMAS"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from schedulers import sigmas as sigmas_mod

        lo, hi = _range(inputs.model, inputs.sigma_min or 0.0, inputs.sigma_max or 0.0)
        return (sigmas_mod.karras(inputs.steps, lo, hi, inputs.rho),)


class ExponentialSigmas(Node):
    """Noise levels uniform in log sigma from sigma_max down to sigma_min (0 = the model's range)."""

    CATEGORY = "sampling/sigmas"
    DISPLAY_NAME = "Exponential Sigmas"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        steps: int = Widget(20, ge=1, le=_MAX_STEPS)
        sigma_min: float = Widget(0.0, ge=0.0, le=5000.0, step=0.001, optional=True, tooltip="0 = the model's")
        sigma_max: float = Widget(0.0, ge=0.0, le=5000.0, step=0.01, optional=True, tooltip="0 = the model's")

    OUTPUTS = (Output(SIGMAS, "SIGMAS"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from schedulers import sigmas as sigmas_mod

        lo, hi = _range(inputs.model, inputs.sigma_min or 0.0, inputs.sigma_max or 0.0)
        return (sigmas_mod.exponential(inputs.steps, lo, hi),)


class BetaSigmas(Node):
    """Noise levels at the model's train timesteps placed by quantiles of a Beta(alpha, beta) distribution
    (Lee et al. 2024, ComfyUI's ``beta`` scheduler): more steps at both ends of the range."""

    CATEGORY = "sampling/sigmas"
    DISPLAY_NAME = "Beta Sigmas"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        steps: int = Widget(20, ge=1, le=1000)
        alpha: float = Widget(0.6, ge=0.01, le=50.0, step=0.01)
        beta: float = Widget(0.6, ge=0.01, le=50.0, step=0.01)

    OUTPUTS = (Output(SIGMAS, "SIGMAS"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from schedulers import sigmas as sigmas_mod

        model = _check_model(inputs.model)
        return (sigmas_mod.beta(inputs.steps, model.scheduler_config, alpha=inputs.alpha, beta=inputs.beta),)


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf(?:inity)?|nan)", re.IGNORECASE)


def parse_sigmas(text: str, what: str = "sigmas", *, require_zero_end: bool = True) -> torch.Tensor:
    """Numbers separated by commas, spaces or new lines (brackets allowed) -> a validated SIGMAS tensor."""
    body = (text or "").strip().strip("[]()")
    parts = [p for p in re.split(r"[,\s;]+", body) if p]
    if not parts:
        raise NodeError(f"{what}: write the noise levels as numbers, e.g. 14.6, 7.0, 3.0, 1.0, 0")
    import torch

    values = []
    for i, p in enumerate(parts):
        if not _NUMBER.fullmatch(p):
            raise NodeError(f"{what}: item {i + 1} ({p!r}) is not a number")
        values.append(float(p))
    return check_sigmas(torch.tensor(values, dtype=torch.float32), what, require_zero_end=require_zero_end)


class CustomSigmas(Node):
    """SIGMAS written by hand: noise levels from high to low, ending in 0 (e.g. "14.6, 7.0, 3.0, 1.0, 0")."""

    CATEGORY = "sampling/sigmas"
    DISPLAY_NAME = "Custom Sigmas"

    class Inputs(NodeInputs):
        sigmas: str = Widget("14.6146, 6.4745, 3.0726, 1.4905, 0.6909, 0.2964, 0.0292, 0", multiline=True)

    OUTPUTS = (Output(SIGMAS, "SIGMAS"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (parse_sigmas(inputs.sigmas),)


class SplitSigmas(Node):
    """Split SIGMAS at a step: high (steps before it, ending at its noise level) and low (the rest). Sample
    with high, then continue from that latent with low and add_noise off."""

    CATEGORY = "sampling/sigmas"
    DISPLAY_NAME = "Split Sigmas"

    class Inputs(NodeInputs):
        sigmas: Any = Link(SIGMAS)
        step: int = Widget(0, ge=0, le=_MAX_STEPS)

    OUTPUTS = (Output(SIGMAS, "high_sigmas"), Output(SIGMAS, "low_sigmas"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from schedulers import sigmas as sigmas_mod

        s = check_sigmas(inputs.sigmas, "sigmas", require_zero_end=False)
        if inputs.step >= len(s):
            raise NodeError(f"step: {inputs.step} is past the last index {len(s) - 1} of sigmas")
        return sigmas_mod.split(s, inputs.step)


class FlipSigmas(Node):
    """Reverse SIGMAS (low to high, for inversion); a leading 0 becomes 1e-4."""

    CATEGORY = "sampling/sigmas"
    DISPLAY_NAME = "Flip Sigmas"

    class Inputs(NodeInputs):
        sigmas: Any = Link(SIGMAS)

    OUTPUTS = (Output(SIGMAS, "SIGMAS"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from schedulers import sigmas as sigmas_mod

        s = check_sigmas(inputs.sigmas, "sigmas", require_zero_end=False)
        return (sigmas_mod.flip(s),)


class ManualSigmas(Node):
    """SIGMAS typed as a line of numbers, high to low (ComfyUI's ManualSigmas; a list may stop above 0, and
    sampling then stops at that noise level)."""

    CATEGORY = "sampling/custom_sampling"
    DISPLAY_NAME = "ManualSigmas"

    class Inputs(NodeInputs):
        sigmas: str = Widget("1, 0.5")

    OUTPUTS = (Output(SIGMAS, "SIGMAS"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (parse_sigmas(inputs.sigmas, require_zero_end=False),)


class SetFirstSigma(Node):
    """Replace the first noise level of SIGMAS (e.g. to start a run from a higher level than the schedule's)."""

    CATEGORY = "sampling/custom_sampling/sigmas"
    DISPLAY_NAME = "SetFirstSigma"

    class Inputs(NodeInputs):
        sigmas: Any = Link(SIGMAS)
        sigma: float = Widget(136.0, ge=0.0, le=20000.0, step=0.001, round=False)

    OUTPUTS = (Output(SIGMAS, "SIGMAS"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        s = check_sigmas(inputs.sigmas, "sigmas", require_zero_end=False).clone()
        if inputs.sigma < float(s[1]):
            raise NodeError(f"sigma: {inputs.sigma:.6g} is below the next noise level {float(s[1]):.6g}; SIGMAS "
                            "must not rise")
        s[0] = inputs.sigma
        return (s,)


class SplitSigmasDenoise(Node):
    """Split SIGMAS so that the low part holds the last ``round(steps * denoise)`` steps (ComfyUI's
    SplitSigmasDenoise); both parts keep the shared boundary. A denoise that rounds to no step leaves every
    step in the high part."""

    CATEGORY = "sampling/custom_sampling/sigmas"
    DISPLAY_NAME = "SplitSigmasDenoise"

    class Inputs(NodeInputs):
        sigmas: Any = Link(SIGMAS)
        denoise: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    OUTPUTS = (Output(SIGMAS, "high_sigmas"), Output(SIGMAS, "low_sigmas"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from schedulers import sigmas as sigmas_mod

        s = check_sigmas(inputs.sigmas, "sigmas", require_zero_end=False)
        steps = len(s) - 1
        low_steps = round(steps * inputs.denoise)
        return sigmas_mod.split(s, steps - low_steps)


class AlignYourStepsScheduler(Node):
    """Align Your Steps noise levels (Sabour et al. 2024) for SD1, SDXL or SVD models, stretched to ``steps``
    (ComfyUI's AlignYourStepsScheduler)."""

    CATEGORY = "sampling/custom_sampling/schedulers"
    DISPLAY_NAME = "AlignYourStepsScheduler"

    class Inputs(NodeInputs):
        model_type: Literal["SD1", "SDXL", "SVD"] = Widget("SD1")
        steps: int = Widget(10, ge=1, le=_MAX_STEPS)
        denoise: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    OUTPUTS = (Output(SIGMAS, "SIGMAS"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from schedulers import sigmas as sigmas_mod

        return (sigmas_mod.align_your_steps(inputs.model_type, inputs.steps, inputs.denoise),)


class SDTurboScheduler(Node):
    """SD Turbo's noise levels: 1 to 10 steps at train timesteps 999, 899, ... (ComfyUI's SDTurboScheduler)."""

    CATEGORY = "sampling/custom_sampling/schedulers"
    DISPLAY_NAME = "SDTurboScheduler"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        steps: int = Widget(1, ge=1, le=10)
        denoise: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    OUTPUTS = (Output(SIGMAS, "SIGMAS"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from schedulers import sigmas as sigmas_mod

        model = _check_model(inputs.model)
        return (sigmas_mod.sd_turbo(inputs.steps, model.scheduler_config, inputs.denoise),)


NODES = [KarrasSigmas, ExponentialSigmas, BetaSigmas, CustomSigmas, SplitSigmas, SplitSigmasDenoise, FlipSigmas,
         SetFirstSigma, ManualSigmas, AlignYourStepsScheduler, SDTurboScheduler]
