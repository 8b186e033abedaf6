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
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch

__all__ = ["Discrete", "Flow", "ModelSampling", "is_flow_config", "model_sampling", "time_shift"]

FLOW_CLASSES = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler",
                "FlowMatchLCMScheduler")


def is_flow_config(config: Mapping[str, Any]) -> bool:
    """Whether a scheduler config belongs to a flow-matching model (its class, or flow prediction)."""
    return (str(config.get("_class_name", "")) in FLOW_CLASSES
            or config.get("prediction_type") == "flow_prediction" or bool(config.get("use_flow_sigmas")))


def time_shift(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow models' timestep shift ``shift * s / (1 + (shift - 1) * s)`` (SD3's, and diffusers')."""
    return shift * sigma / (1 + (shift - 1) * sigma)


class ModelSampling:
    """The interface every parameterisation gives the step rules."""

    kind = "epsilon"
    #: the noise level of pure noise, the largest a schedule starts from
    sigma_max: float
    sigma_min: float

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The network's timestep input for noise level ``sigma``."""
        raise NotImplementedError

    def input_scale(self, sigma: torch.Tensor) -> torch.Tensor | None:
        """The divisor of ``x`` for the network's input, or None where the network sees ``x`` itself."""
        return None

    def denoised(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The clean estimate from the network's output ``out`` at ``x``, noise level ``sigma``."""
        raise NotImplementedError

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor | None) -> torch.Tensor:
        """The starting point of a run at ``sigma``: ``noise`` added to ``x0`` (zeros when None)."""
        raise NotImplementedError


class Discrete(ModelSampling):
    """A DDPM-trained model (epsilon, v or x0 prediction -- diffusers' "sample") over its train sigmas
    (ascending, one per timestep)."""

    def __init__(self, train_sigmas: torch.Tensor, kind: str = "epsilon"):
        if kind not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type {kind!r} is not supported by the step rules "
                             "(epsilon, v_prediction and sample are)")
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

    def input_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        # a division (not a multiplication by the reciprocal), as diffusers' scale_model_input does
        return (sigma**2 + 1) ** 0.5

    def denoised(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.kind == "v_prediction":
            return x / (sigma**2 + 1) - out * sigma / (sigma**2 + 1) ** 0.5
        if self.kind == "sample":
            return out
        return x - sigma * out

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor | None) -> torch.Tensor:
        return noise * sigma if x0 is None else x0 + noise * sigma


class Flow(ModelSampling):
    """A rectified-flow model: sigma in [0, 1], network timestep ``sigma * multiplier``."""

    kind = "flow"

    def __init__(self, shift: float = 1.0, multiplier: float = 1000.0):
        self.shift = float(shift)
        self.multiplier = float(multiplier)
        self.sigma_max = 1.0
        self.sigma_min = float(time_shift(torch.tensor(1.0 / multiplier), self.shift))

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma * self.multiplier

    def denoised(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return x - sigma * out

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor | None) -> torch.Tensor:
        return noise * sigma if x0 is None else sigma * noise + (1 - sigma) * x0

    def sigma_ramp(self, t: torch.Tensor) -> torch.Tensor:
        """Sigmas at fractions ``t`` of the train range (1 = pure noise), shifted."""
        return time_shift(t, self.shift)

    def table(self, n: int = 1000) -> torch.Tensor:
        """ComfyUI's table of the model's sigmas: the shifted ``t / n`` for ``t = 1 .. n`` (ascending)."""
        return self.sigma_ramp(torch.arange(1, n + 1, dtype=torch.float32) / n)


def _key(config: Mapping[str, Any]) -> str:
    return json.dumps(dict(config), sort_keys=True, default=str)


@lru_cache(maxsize=64)
def _cached(key: str) -> ModelSampling:
    config = json.loads(key)
    if is_flow_config(config):
        shift = float(config.get("shift", config.get("flow_shift", 1.0)) or 1.0)
        return Flow(shift=shift, multiplier=float(config.get("num_train_timesteps", 1000)))
    from .sigmas import model_sigmas

    return Discrete(model_sigmas(config), config.get("prediction_type", "epsilon") or "epsilon")


def model_sampling(config: Mapping[str, Any]) -> ModelSampling:
    """The parameterisation of a model with scheduler config ``config`` (cached per config)."""
    return _cached(_key(config))

