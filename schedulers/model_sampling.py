"""What a network's output means at a noise level: the parameterisations (k-diffusion's denoiser wrappers).

Step rules work in k-diffusion's sigma space and only ever ask for a denoised estimate ``D(x, sigma)``. How to
get it depends on how the model was trained:

* ``Discrete`` -- DDPM-trained UNets (SD1.x, SD2.x, SDXL) predicting epsilon or v. ``x = x0 + sigma * eps``;
  the network sees ``x / sqrt(sigma^2 + 1)`` at the continuous timestep found by interpolating log sigma
  over the train sigmas (k-diffusion's DiscreteEpsDDPMDenoiser / DiscreteVDDPMDenoiser).
* ``Flow`` -- rectified-flow transformers (SD3, Flux, ...) predicting the velocity ``noise - x0``.
  ``x = (1 - sigma) * x0 + sigma * noise`` with sigma in [0, 1]; the network sees ``x`` itself at timestep
  ``sigma * multiplier`` and ``x0 = x - sigma * v``.

``model_sampling(config)`` picks one from a model's own scheduler config (the ``prediction_type`` and the
scheduler class it names), so nothing else needs to know which family a model belongs to.

A flow config with ``use_dynamic_shifting`` (Flux) shifts by the image size: ``mu`` grows linearly with the
number of image tokens from ``base_shift`` (``base_image_seq_len``) to ``max_shift`` (``max_image_seq_len``),
and sigmas are ``exp(mu) / (exp(mu) + 1 / t - 1)`` (``time_shift_type`` exponential) or
``mu / (mu + 1 / t - 1)`` (linear). The config's own ``mu`` key fixes it (set by ModelSamplingFlux or by a
Scheduler sized for a latent); without one it is ``max_shift``, ComfyUI's default for Flux. A config's
``sigma_table_size`` (not a diffusers key; a family sets it) sizes ComfyUI's sigma table, which its Flux
sampling keeps at 10000 entries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch

__all__ = ["Discrete", "Flow", "ModelSampling", "dynamic_mu", "is_flow_config", "model_sampling", "time_shift"]

FLOW_CLASSES = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler",
                "FlowMatchLCMScheduler")


def is_flow_config(config: Mapping[str, Any]) -> bool:
    """Whether a scheduler config belongs to a flow-matching model (its class, or flow prediction)."""
    return (str(config.get("_class_name", "")) in FLOW_CLASSES
            or config.get("prediction_type") == "flow_prediction" or bool(config.get("use_flow_sigmas")))


def time_shift(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow models' timestep shift ``shift * s / (1 + (shift - 1) * s)`` (SD3's, and diffusers')."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def dynamic_mu(config: Mapping[str, Any], image_seq_len: int | None = None) -> float | None:
    """The resolution-dependent shift ``mu`` of a ``use_dynamic_shifting`` flow config (None without it):
    the config's own ``mu``, else the line through (base_image_seq_len, base_shift) and (max_image_seq_len,
    max_shift) at ``image_seq_len`` (the pipelines' formula), else ``max_shift``."""
    if not config.get("use_dynamic_shifting"):
        return None
    if config.get("mu") is not None:
        return float(config["mu"])
    base_shift = float(config.get("base_shift", 0.5))
    max_shift = float(config.get("max_shift", 1.15))
    if image_seq_len is None:
        return max_shift
    base_len = int(config.get("base_image_seq_len", 256))
    max_len = int(config.get("max_image_seq_len", 4096))
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + (base_shift - slope * base_len)


class ModelSampling:
    """The interface every parameterisation gives the step rules."""

    kind = "epsilon"
    #: the noise level of pure noise, the largest a schedule starts from
    sigma_max: float
    sigma_min: float

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The network's timestep input for noise level ``sigma``."""
        raise NotImplementedError

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """The noise level at network timestep ``timestep`` (the inverse of :meth:`timestep`)."""
        raise NotImplementedError

    def zero_estimate(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The network output whose denoised estimate at ``x`` is 0 (the estimate is affine in the output, with
        a slope that does not depend on ``x``)."""
        slope = self.denoised(torch.zeros_like(x), sigma, torch.ones_like(x))
        return -self.denoised(x, sigma, torch.zeros_like(x)) / slope

    def input_scale(self, sigma: torch.Tensor) -> torch.Tensor | None:
        """The divisor of ``x`` for the network's input, or None where the network sees ``x`` itself."""
        return None

    def denoised(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The clean estimate from the network's output ``out`` at ``x``, noise level ``sigma``."""
        raise NotImplementedError

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor | None) -> torch.Tensor:
        """The starting point of a run at ``sigma``: ``noise`` added to ``x0`` (zeros when None)."""
        raise NotImplementedError

    def percent_timestep(self, percent: float) -> float:
        """The network timestep ``percent`` of the way through the model's noise range (0 = pure noise),
        ComfyUI's ``percent_to_sigma`` seen as a timestep: conditioning and ControlNet ranges are checked
        against it. 0 and below: +inf (from the start); 1 and above: -inf (to the end)."""
        if percent <= 0.0:
            return math.inf
        if percent >= 1.0:
            return -math.inf
        return self._percent_timestep(percent)

    def _percent_timestep(self, percent: float) -> float:
        raise NotImplementedError


class Discrete(ModelSampling):
    """A DDPM-trained model (epsilon or v prediction) over its train sigmas (ascending, one per timestep)."""

    def __init__(self, train_sigmas: torch.Tensor, kind: str = "epsilon"):
        if kind not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type {kind!r} is not supported by the step rules "
                             "(epsilon and v_prediction are)")
        self.kind = kind
        self.train_sigmas = train_sigmas.to(torch.float32)
        self._log_train = self.train_sigmas.log()
        self.sigma_min = float(self.train_sigmas[0])
        self.sigma_max = float(self.train_sigmas[-1])

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Linear interpolation in log sigma between the two neighbouring train sigmas, clamped to the range."""
        log_train = self._log_train.to(sigma.device)
        log_s = sigma.to(torch.float32).clamp(min=1e-10).log()
        low = (torch.searchsorted(log_train, log_s, right=True) - 1).clamp(0, len(log_train) - 2)
        lo, hi = log_train[low], log_train[low + 1]
        w = ((lo - log_s) / (lo - hi)).clamp(0, 1)
        return (1 - w) * low + w * (low + 1)

    def _percent_timestep(self, percent: float) -> float:
        return (1.0 - percent) * (len(self.train_sigmas) - 1)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Log-linear interpolation of the train sigmas at a continuous timestep (ComfyUI's ``sigma``)."""
        log_train = self._log_train.to(timestep.device)
        t = timestep.to(torch.float32).clamp(0, len(log_train) - 1)
        low = t.floor().long()
        high = t.ceil().long()
        w = t - low
        return ((1 - w) * log_train[low] + w * log_train[high]).exp()

    def input_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        # a division (not a multiplication by the reciprocal), as diffusers' scale_model_input does
        return (sigma**2 + 1) ** 0.5

    def denoised(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.kind == "v_prediction":
            return x / (sigma**2 + 1) - out * sigma / (sigma**2 + 1) ** 0.5
        return x - sigma * out

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor | None) -> torch.Tensor:
        return noise * sigma if x0 is None else x0 + noise * sigma


class Flow(ModelSampling):
    """A rectified-flow model: sigma in [0, 1], network timestep ``sigma * multiplier``."""

    kind = "flow"

    def __init__(self, shift: float = 1.0, multiplier: float = 1000.0, mu: float | None = None,
                 shift_type: str = "exponential", table_size: int | None = None):
        self.shift = float(shift)
        self.multiplier = float(multiplier)
        #: the resolution-dependent shift (dynamic shifting), which replaces ``shift`` when set
        self.mu = None if mu is None else float(mu)
        self.shift_type = shift_type
        #: entries of ComfyUI's sigma table (1000, as ComfyUI's flow sampling keeps; its Flux sampling 10000)
        self.table_size = int(table_size or 1000)
        self.sigma_max = 1.0
        self.sigma_min = float(self.sigma_ramp(torch.tensor(1.0 / self.table_size)))

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma * self.multiplier

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return timestep / self.multiplier

    def denoised(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return x - sigma * out

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor | None) -> torch.Tensor:
        return noise * sigma if x0 is None else sigma * noise + (1 - sigma) * x0

    def _percent_timestep(self, percent: float) -> float:
        return float(time_shift(torch.tensor(1.0 - percent, dtype=torch.float64), self.shift)) * self.multiplier

    def sigma_ramp(self, t: torch.Tensor) -> torch.Tensor:
        """Sigmas at fractions ``t`` of the train range (1 = pure noise), shifted."""
        if self.mu is None:
            return time_shift(t, self.shift)
        m = math.exp(self.mu) if self.shift_type == "exponential" else self.mu
        return m / (m + (1 / t - 1))

    def table(self, n: int | None = None) -> torch.Tensor:
        """ComfyUI's table of the model's sigmas: the shifted ``t / n`` for ``t = 1 .. n`` (ascending;
        ``n`` is the table size by default)."""
        n = n or self.table_size
        return self.sigma_ramp(torch.arange(1, n + 1, dtype=torch.float32) / n)


def _key(config: Mapping[str, Any]) -> str:
    return json.dumps(dict(config), sort_keys=True, default=str)


@lru_cache(maxsize=64)
def _cached(key: str) -> ModelSampling:
    config = json.loads(key)
    if is_flow_config(config):
        shift = float(config.get("shift", config.get("flow_shift", 1.0)) or 1.0)
        return Flow(shift=shift, multiplier=float(config.get("num_train_timesteps", 1000)), mu=dynamic_mu(config),
                    shift_type=str(config.get("time_shift_type", "exponential")),
                    table_size=config.get("sigma_table_size"))
    from .sigmas import model_sigmas

    return Discrete(model_sigmas(config), config.get("prediction_type", "epsilon") or "epsilon")


def model_sampling(config: Mapping[str, Any]) -> ModelSampling:
    """The parameterisation of a model with scheduler config ``config`` (cached per config)."""
    return _cached(_key(config))

