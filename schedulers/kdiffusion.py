"""k-diffusion-style step rules over any SIGMAS tensor.

Diffusers schedulers own their sigma grid; these rules take it as input, which is what ComfyUI-style
custom sigmas (Karras, split, hand-written lists) need. The network is seen as a denoiser in sigma space
through its model sampling (k-diffusion's denoiser wrappers, :mod:`schedulers.model_sampling`): an epsilon
UNet gets ``x / sqrt(sigma^2 + 1)`` at the continuous timestep found by interpolating ``log sigma`` over the
model's train sigmas and ``x0 = x - sigma * eps``; a v-prediction UNet the same input with k-diffusion's v
formula; a flow transformer ``x`` itself at ``sigma * 1000`` and ``x0 = x - sigma * v``.

Each rule is ``rule(model, x, sigmas, *, generator, hooks) -> x``: ``model(x, j)`` returns the denoised
estimate at ``sigmas[j]`` (rules only evaluate at grid points), ``hooks.begin(i)`` runs before step ``i`` and
``hooks.end(i, x, denoised)`` after it. Step sizes come from device tensors; only branch decisions use a host
copy of the sigmas made once before the loop, so the loop never waits on the device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from diffusers.utils.torch_utils import randn_tensor

from .model_sampling import Discrete, ModelSampling

__all__ = ["RULES", "STOCHASTIC_RULES", "SigmaDenoiser", "sigma_to_t"]


class Hooks(Protocol):
    def begin(self, i: int) -> None: ...

    def end(self, i: int, x: torch.Tensor, denoised: torch.Tensor) -> None: ...


class _NoHooks:
    def begin(self, i: int) -> None:
        pass

    def end(self, i: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        pass


def sigma_to_t(sigmas: torch.Tensor, train_sigmas: torch.Tensor) -> torch.Tensor:
    """Continuous timesteps for ``sigmas``: linear interpolation in log sigma between the two neighbouring
    train sigmas (``train_sigmas`` ascending, index = train timestep); clamped to [0, n - 1]."""
    return Discrete(train_sigmas).timestep(sigmas)


class SigmaDenoiser:
    """A network's prediction seen as ``x0 = D(x, sigma)`` on a fixed SIGMAS grid.

    ``network(x, t, scale)`` is e.g. a ``guidance.CFGDenoiser``; ``sampling`` (a
    :class:`~schedulers.model_sampling.ModelSampling`, or a tensor of train sigmas for an epsilon model)
    gives the timestep, the input scaling -- applied after any CFG batching, as diffusers pipelines apply
    ``scale_model_input`` -- and turns the prediction into the denoised estimate.
    """

    def __init__(self, network: Callable[..., torch.Tensor], sigmas: torch.Tensor,
                 sampling: ModelSampling | torch.Tensor):
        self.network = network
        self.sampling = Discrete(sampling) if isinstance(sampling, torch.Tensor) else sampling
        self.sigmas = sigmas
        self.timesteps = self.sampling.timestep(sigmas)
        self._in_denominator = self.sampling.input_scale(sigmas)

    def __call__(self, x: torch.Tensor, j: int) -> torch.Tensor:
        scale = None
        if self._in_denominator is not None:
            denom = self._in_denominator[j]

            def scale(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return x_in / denom

        out = self.network(x, self.timesteps[j], scale=scale)
        return self.sampling.denoised(x, self.sigmas[j], out)


def _to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def euler(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks()):
    """First-order step along the probability-flow ODE (k-diffusion sample_euler, no churn)."""
    for i in range(len(sigmas) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        d = _to_d(x, sigmas[i], denoised)
        x = x + d * (sigmas[i + 1] - sigmas[i])
        hooks.end(i, x, denoised)
    return x


def euler_ancestral(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0):
    """Euler step to sigma_down, then fresh noise up to sigma_next (k-diffusion sample_euler_ancestral)."""
    host = sigmas.tolist()
    for i in range(len(sigmas) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        s, sn = sigmas[i], sigmas[i + 1]
        sigma_up = torch.minimum(sn, eta * (sn**2 * (s**2 - sn**2) / s**2) ** 0.5)
        sigma_down = (sn**2 - sigma_up**2) ** 0.5
        x = x + _to_d(x, s, denoised) * (sigma_down - s)
        if host[i + 1] > 0:
            x = x + randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype) * sigma_up
        hooks.end(i, x, denoised)
    return x


def heun(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks()):
    """Second-order Heun (trapezoid) step; Euler for the last step to 0. 2N-1 model calls."""
    host = sigmas.tolist()
    for i in range(len(sigmas) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        d = _to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if host[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, sigmas[i + 1], model(x_2, i + 1))
            x = x + (d + d_2) / 2 * dt
        hooks.end(i, x, denoised)
    return x


def dpmpp_2m(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks()):
    """DPM-Solver++(2M) (Lu et al. 2022) in k-diffusion's form: multistep, data prediction, first order on the
    first and the final (to 0) step."""
    host = sigmas.tolist()
    neg_log = -sigmas.clamp(min=1e-10).log()  # lambda = -log(sigma); the clamped final 0 is never used
    old = None
    for i in range(len(sigmas) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        h = neg_log[i + 1] - neg_log[i]
        if old is None or host[i + 1] == 0:
            d = denoised
        else:
            r = (neg_log[i] - neg_log[i - 1]) / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
        if host[i + 1] == 0:
            x = denoised
        else:
            x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * d
        old = denoised
        hooks.end(i, x, denoised)
    return x


def dpmpp_2m_sde(
    model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0, s_noise: float = 1.0
):
    """DPM-Solver++(2M) SDE, midpoint variant (k-diffusion sample_dpmpp_2m_sde). The noise is Gaussian from
    the run's generator (as diffusers' sde-dpmsolver++ draws it), not a Brownian tree."""
    host = sigmas.tolist()
    neg_log = -sigmas.clamp(min=1e-10).log()
    old, h_last = None, None
    for i in range(len(sigmas) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        if host[i + 1] == 0:
            x = denoised
        else:
            h = neg_log[i + 1] - neg_log[i]
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * torch.exp(-eta_h) * x + (-torch.expm1(-h - eta_h)) * denoised
            if old is not None:
                r = h_last / h
                x = x + 0.5 * (-torch.expm1(-h - eta_h)) * (1 / r) * (denoised - old)
            if eta:
                noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x + noise * sigmas[i + 1] * (-torch.expm1(-2 * eta_h)) ** 0.5 * s_noise
            h_last = h
        old = denoised
        hooks.end(i, x, denoised)
    return x


def _lms_coefficient(host: list[float], order: int, i: int, j: int) -> float:
    from scipy import integrate

    def basis(tau: float) -> float:
        out = 1.0
        for k in range(order):
            if k != j:
                out *= (tau - host[i - k]) / (host[i - j] - host[i - k])
        return out

    return integrate.quad(basis, host[i], host[i + 1], epsrel=1e-4)[0]


def lms(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), order: int = 4):
    """Linear multistep (Adams-Bashforth in sigma) over the last ``order`` derivatives (k-diffusion
    sample_lms). Coefficients are integrated on the host before the loop."""
    host = sigmas.tolist()
    n = len(sigmas) - 1
    coeffs = [
        [_lms_coefficient(host, min(i + 1, order), i, j) for j in range(min(i + 1, order))] for i in range(n)
    ]
    ds: list[torch.Tensor] = []
    for i in range(n):
        hooks.begin(i)
        denoised = model(x, i)
        ds.append(_to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        x = x + sum(c * d for c, d in zip(coeffs[i], reversed(ds), strict=False))
        hooks.end(i, x, denoised)
    return x


#: name -> rule. Names match ComfyUI's KSampler sampler names.
RULES: dict[str, Callable[..., Any]] = {
    "euler": euler,
    "euler_ancestral": euler_ancestral,
    "heun": heun,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "lms": lms,
}

#: rules that draw noise and so need a generator
STOCHASTIC_RULES = frozenset({"euler_ancestral", "dpmpp_2m_sde"})
