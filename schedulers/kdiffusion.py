"""k-diffusion-style step rules over any SIGMAS tensor.

Diffusers schedulers own their sigma grid; these rules take it as input, which is what ComfyUI-style
custom sigmas (Karras, split, hand-written lists) need. The network is seen as a denoiser in sigma space
through its model sampling (k-diffusion's denoiser wrappers, :mod:`schedulers.model_sampling`): an epsilon
UNet gets ``x / sqrt(sigma^2 + 1)`` at the continuous timestep found by interpolating ``log sigma`` over the
model's train sigmas and ``x0 = x - sigma * eps``; a v-prediction UNet the same input with k-diffusion's v
formula; a flow transformer ``x`` itself at ``sigma * 1000`` and ``x0 = x - sigma * v``.

Each rule is ``rule(model, x, sigmas, *, generator, hooks) -> x``: ``model(x, j)`` returns the denoised
estimate at ``sigmas[j]``, ``model.at(x, sigma)`` at a level between grid points (the stages of two- and
three-stage rules), ``model.uncond()`` the unconditional estimate of the last call (CFG++ rules);
``hooks.begin(i)`` runs before step ``i`` and ``hooks.end(i, x, denoised)`` after it. Step sizes and weights
are worked out from a host copy of the sigmas made once before the loop, so the loop never waits on the
device (dpm_adaptive reads its error estimate once a step: that is its method).

Every sampler of ComfyUI's KSampler list has its rule here under its ComfyUI name. Noise is Gaussian from
the run's generator (ComfyUI draws the SDE rules' noise from a Brownian tree), so stochastic rules agree
with ComfyUI in distribution, deterministic ones in value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
from diffusers.utils.torch_utils import randn_tensor

from .model_sampling import Discrete, ModelSampling

__all__ = ["RULES", "STOCHASTIC_RULES", "UNCOND_RULES", "SigmaDenoiser", "model_calls", "sigma_to_t"]


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
        self._last = (x, self.sigmas[j])
        return self.sampling.denoised(x, self.sigmas[j], out)

    def uncond(self) -> torch.Tensor:
        """The unconditional denoised estimate of the last evaluation (CFG++ rules; the guided network must
        keep its unconditional prediction, as :class:`schedulers.cfg_pp.UncondCFG` does)."""
        pred = getattr(self.network, "uncond", None)
        if pred is None:
            raise ValueError("this sampler (CFG++) needs the unconditional prediction beside the guided one; "
                             "sample with positive and negative conditioning (KSampler, SamplerCustom or "
                             "CFGGuider)")
        x, sigma = self._last
        return self.sampling.denoised(x, sigma, pred)

    def at(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """The denoised estimate at a noise level between grid points (second stages of two-stage rules)."""
        s = torch.tensor(float(sigma), dtype=torch.float32, device=self.sigmas.device)
        t = self.sampling.timestep(s.reshape(1))[0]
        denom = self.sampling.input_scale(s)
        scale = None if denom is None else (lambda x_in, t_in: x_in / denom)
        self._last = (x, s)
        return self.sampling.denoised(x, s, self.network(x, t, scale=scale))

    def on(self, sigmas: torch.Tensor) -> SigmaDenoiser:
        """The same network over another grid (a rule that moves a grid point, e.g. off a flow model's 1)."""
        return SigmaDenoiser(self.network, sigmas, self.sampling)

    @property
    def flow(self) -> bool:
        return self.sampling.kind == "flow"


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


# ---------------------------------------------------------------------------------- the rest of ComfyUI's list
#
# Scalars (step sizes, log-SNRs, weights) are worked out in float64 on the host copy of the sigmas; only the
# latents live on the device. A flow model (sigma in [0, 1]) takes the rectified-flow forms ComfyUI gives it:
# ancestral steps that renoise along (1 - sigma) x0 + sigma noise, and log-SNRs lambda = log((1 - s) / s).


def _noise(x: torch.Tensor, generator) -> torch.Tensor:
    return randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _ancestral(s: float, sn: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up): where the deterministic part of an ancestral step lands, and the noise added."""
    if not eta or sn == 0:
        return sn, 0.0
    up = min(sn, eta * (sn**2 * (s**2 - sn**2) / s**2) ** 0.5)
    return (sn**2 - up**2) ** 0.5, up


def _flow_ancestral(s: float, sn: float, eta: float) -> tuple[float, float, float]:
    """A flow model's ancestral step: (sigma_down, the scale that brings the signal back to 1 - sigma_next, the
    noise added)."""
    down = sn * (1 + (sn / s - 1) * eta)
    alpha_n, alpha_down = 1 - sn, 1 - down
    renoise = max(sn**2 - down**2 * alpha_n**2 / alpha_down**2, 0.0) ** 0.5
    return down, alpha_n / alpha_down, renoise


def _lam(model, sigma: float) -> float:
    """Half log-SNR ``log(alpha / sigma)``: ``-log sigma`` for a discrete model, ``log((1 - s) / s)`` for flow."""
    return math.log((1 - sigma) / sigma) if model.flow else -math.log(sigma)


def _sigma_of(model, lam: float) -> float:
    return 1 / (1 + math.exp(lam)) if model.flow else math.exp(-lam)


def _snr_grid(model, sigmas: torch.Tensor, host: list[float]):
    """A flow schedule starting at 1 (infinite log-SNR) starts a hair below instead, as ComfyUI does."""
    if model.flow and host[0] >= 1:
        first = float(model.sampling.sigma_ramp(torch.tensor(1 - 1e-4, dtype=torch.float64)))
        sigmas = sigmas.clone()
        sigmas[0] = first
        host = [first, *host[1:]]
        model = model.on(sigmas)
    return model, sigmas, host


def _euler_to(x, s: float, denoised, target: float):
    return x + (x - denoised) / s * (target - s)


def euler_ancestral(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0):
    """Euler step to sigma_down, then fresh noise up to sigma_next (k-diffusion sample_euler_ancestral; on a
    flow model its rectified-flow form)."""
    host = sigmas.tolist()
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        s, sn = host[i], host[i + 1]
        if sn == 0:
            x = denoised
        elif model.flow:
            down, rescale, renoise = _flow_ancestral(s, sn, eta)
            x = (down / s) * x + (1 - down / s) * denoised
            if eta > 0:
                x = rescale * x + _noise(x, generator) * renoise
        else:
            down, up = _ancestral(s, sn, eta)
            x = _euler_to(x, s, denoised, down)
            if up:
                x = x + _noise(x, generator) * up
        hooks.end(i, x, denoised)
    return x


def dpm_2(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks()):
    """DPM-Solver-2 in k-diffusion's form: an Euler half step to the log-midpoint sigma, then the full step
    with the slope found there; Euler for the last step to 0. 2N-1 model calls."""
    host = sigmas.tolist()
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        s, sn = host[i], host[i + 1]
        if sn == 0:
            x = _euler_to(x, s, denoised, sn)
        else:
            mid = math.exp((math.log(s) + math.log(sn)) / 2)
            x2 = _euler_to(x, s, denoised, mid)
            d2 = (x2 - model.at(x2, mid)) / mid
            x = x + d2 * (sn - s)
        hooks.end(i, x, denoised)
    return x


def dpm_2_ancestral(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0):
    """DPM-Solver-2 to sigma_down, then noise up to sigma_next (k-diffusion sample_dpm_2_ancestral; the
    rectified-flow form on a flow model)."""
    host = sigmas.tolist()
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        s, sn = host[i], host[i + 1]
        if model.flow:
            down, rescale, up = _flow_ancestral(s, sn, eta)
        else:
            (down, up), rescale = _ancestral(s, sn, eta), 1.0
        if down == 0:
            x = _euler_to(x, s, denoised, 0.0)
        else:
            mid = math.exp((math.log(s) + math.log(down)) / 2)
            x2 = _euler_to(x, s, denoised, mid)
            d2 = (x2 - model.at(x2, mid)) / mid
            x = x + d2 * (down - s)
            x = rescale * x + _noise(x, generator) * up
        hooks.end(i, x, denoised)
    return x


def dpmpp_2s_ancestral(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0):
    """DPM-Solver++(2S) single-step second order to sigma_down (midpoint in log-SNR), then noise up to
    sigma_next (k-diffusion sample_dpmpp_2s_ancestral; the rectified-flow form on a flow model)."""
    host = sigmas.tolist()
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        s, sn = host[i], host[i + 1]
        if model.flow:
            down, rescale, up = _flow_ancestral(s, sn, eta)
            if sn == 0:
                x = _euler_to(x, s, denoised, down)
            else:
                mid = 0.9999 if s == 1.0 else _sigma_of(model, (_lam(model, s) + _lam(model, down)) / 2)
                u = (mid / s) * x + (1 - mid / s) * denoised
                d2 = model.at(u, mid)
                x = (down / s) * x + (1 - down / s) * d2
                if eta > 0:
                    x = rescale * x + _noise(x, generator) * up
        else:
            down, up = _ancestral(s, sn, eta)
            if down == 0:
                x = _euler_to(x, s, denoised, 0.0)
            else:
                h = math.log(s) - math.log(down)
                mid = math.exp(math.log(s) - h / 2)
                x2 = (mid / s) * x - math.expm1(-h / 2) * denoised
                x = (down / s) * x - math.expm1(-h) * model.at(x2, mid)
            if sn > 0 and up:
                x = x + _noise(x, generator) * up
        hooks.end(i, x, denoised)
    return x


def dpmpp_sde(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0,
              s_noise: float = 1.0, r: float = 0.5):
    """DPM-Solver++ SDE (k-diffusion sample_dpmpp_sde): a stochastic first stage to the log-SNR fraction ``r``
    of the step, then the step with the two estimates combined. Gaussian noise from the run's generator
    (ComfyUI draws it from a Brownian tree). 2N-1 model calls."""
    model, sigmas, host = _snr_grid(model, sigmas, sigmas.tolist())
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        s, sn = host[i], host[i + 1]
        if sn == 0:
            x = denoised
        else:
            lam_s, lam_t = _lam(model, s), _lam(model, sn)
            h = lam_t - lam_s
            lam_1 = lam_s + r * h
            s1 = _sigma_of(model, lam_1)
            alpha_s, alpha_1, alpha_t = s * math.exp(lam_s), s1 * math.exp(lam_1), sn * math.exp(lam_t)
            down, up = _ancestral(math.exp(-lam_s), math.exp(-lam_1), eta)
            h_ = -math.log(down) - lam_s
            x2 = (alpha_1 / alpha_s) * math.exp(-h_) * x - alpha_1 * math.expm1(-h_) * denoised
            if eta > 0 and s_noise > 0:
                x2 = x2 + _noise(x, generator) * (alpha_1 * s_noise * up)
            d2 = model.at(x2, s1)
            down, up = _ancestral(math.exp(-lam_s), math.exp(-lam_t), eta)
            h_ = -math.log(down) - lam_s
            fac = 1 / (2 * r)
            mixed = (1 - fac) * denoised + fac * d2
            x = (alpha_t / alpha_s) * math.exp(-h_) * x - alpha_t * math.expm1(-h_) * mixed
            if eta > 0 and s_noise > 0:
                x = x + _noise(x, generator) * (alpha_t * s_noise * up)
        hooks.end(i, x, denoised)
    return x


def _dpmpp_multistep_sde(model, x, sigmas, generator, hooks, eta, s_noise, order, solver_type="midpoint"):
    """DPM-Solver++(2M) / (3M) SDE over the half log-SNR (k-diffusion sample_dpmpp_2m_sde / _3m_sde)."""
    model, sigmas, host = _snr_grid(model, sigmas, sigmas.tolist())
    d1 = d2 = None  # the previous two denoised estimates
    h1 = h2 = None  # and their step sizes
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        s, sn = host[i], host[i + 1]
        h = None
        if sn == 0:
            x = denoised
        else:
            lam_s, lam_t = _lam(model, s), _lam(model, sn)
            h = lam_t - lam_s
            h_eta = h * (eta + 1)
            alpha_t = sn * math.exp(lam_t)
            x = (sn / s * math.exp(-h * eta)) * x + (-alpha_t * math.expm1(-h_eta)) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if order == 3 and h2 is not None:
                r0, r1 = h1 / h, h2 / h
                g0 = (denoised - d1) / r0
                g1 = (d1 - d2) / r1
                first = g0 + (g0 - g1) * (r0 / (r0 + r1))
                second = (g0 - g1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * first - (alpha_t * phi_3) * second
            elif h1 is not None:
                r = h1 / h
                if order == 3 or solver_type == "heun":
                    x = x + (alpha_t * phi_2 / r) * (denoised - d1)
                else:  # midpoint
                    x = x + (-0.5 * alpha_t * math.expm1(-h_eta) / r) * (denoised - d1)
            if eta > 0 and s_noise > 0:
                x = x + _noise(x, generator) * (sn * (-math.expm1(-2 * h * eta)) ** 0.5 * s_noise)
        if order == 3:
            d1, d2, h1, h2 = denoised, d1, h, h1
        else:
            d1 = denoised
            h1 = h if h is not None else h1
        hooks.end(i, x, denoised)
    return x


def dpmpp_2m_sde(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0,
                 s_noise: float = 1.0):
    """DPM-Solver++(2M) SDE, midpoint variant (k-diffusion sample_dpmpp_2m_sde). Gaussian noise from the run's
    generator, as diffusers' sde-dpmsolver++ draws it (ComfyUI: a Brownian tree)."""
    return _dpmpp_multistep_sde(model, x, sigmas, generator, hooks, eta, s_noise, 2, "midpoint")


def dpmpp_2m_sde_heun(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0,
                      s_noise: float = 1.0):
    """DPM-Solver++(2M) SDE with the Heun-type second-order correction (solver_type='heun')."""
    return _dpmpp_multistep_sde(model, x, sigmas, generator, hooks, eta, s_noise, 2, "heun")


def dpmpp_3m_sde(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0,
                 s_noise: float = 1.0):
    """DPM-Solver++(3M) SDE (k-diffusion sample_dpmpp_3m_sde): third order from the last three estimates."""
    return _dpmpp_multistep_sde(model, x, sigmas, generator, hooks, eta, s_noise, 3)


def res_multistep(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 0.0,
                  s_noise: float = 1.0, cfg_pp: bool = False):
    """RES second-order multistep (Zhang et al. 2023, arXiv 2308.02157; ComfyUI's res_multistep): an
    exponential integrator in ``t = -log sigma`` whose second stage is the previous step's estimate, with
    phi-function weights; Euler on the first and the final step. With ``eta > 0`` (res_multistep_ancestral)
    each step lands at sigma_down and fresh noise brings it to sigma_next.

    The same arithmetic serves flow models (sigma in [0, 1], as Z-Image Turbo's default graph runs it): in
    sigma space their probability-flow ODE is k-diffusion's, ``dx/dsigma = (x - D) / sigma``. ``cfg_pp``:
    the CFG++ form, which renoises with the unconditional estimate."""
    host = sigmas.tolist()
    old = None
    old_down = None
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        u = model.uncond() if cfg_pp else denoised
        s, sn = host[i], host[i + 1]
        down, up = _ancestral(s, sn, eta)
        if down == 0 or old is None:
            x = denoised + (x - u) / s * down if cfg_pp else _euler_to(x, s, denoised, down)
        else:
            if cfg_pp:
                x = x + (denoised - u)
            t, t_old, t_next, t_prev = -math.log(s), -math.log(old_down), -math.log(down), -math.log(host[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = math.expm1(-h) / -h
            phi2 = (phi1 - 1) / -h
            b1 = phi1 - phi2 / c2 if c2 else 0.0
            b2 = phi2 / c2 if c2 else 0.0
            x = math.exp(-h) * x + h * (b1 * u + b2 * old)
        if sn > 0 and up:
            x = x + _noise(x, generator) * (s_noise * up)
        old, old_down = u, down
        hooks.end(i, x, denoised)
    return x


def res_multistep_ancestral(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0,
                            s_noise: float = 1.0):
    """res_multistep with ancestral noise (eta = 1 by default)."""
    return res_multistep(model, x, sigmas, generator=generator, hooks=hooks, eta=eta, s_noise=s_noise)


def ddpm(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks()):
    """The DDPM ancestral step (Ho et al. 2020) in sigma space, as ComfyUI's ddpm sampler: the variance-
    preserving latent ``x / sqrt(1 + sigma^2)`` steps to the posterior mean plus its noise, then is scaled
    back."""
    host = sigmas.tolist()
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        s, sn = host[i], host[i + 1]
        eps = (x - denoised) / s
        ac, ac_prev = 1 / (s * s + 1), 1 / (sn * sn + 1)
        alpha = ac / ac_prev
        x = (1 / alpha) ** 0.5 * (x / (1 + s * s) ** 0.5 - (1 - alpha) * eps / (1 - ac) ** 0.5)
        if sn > 0:
            x = x + _noise(x, generator) * ((1 - alpha) * (1 - ac_prev) / (1 - ac)) ** 0.5
            x = x * (1 + sn * sn) ** 0.5
        hooks.end(i, x, denoised)
    return x


def lcm(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks()):
    """Latent Consistency Model sampling (Luo et al. 2023): jump to the denoised estimate, then noise it
    afresh to the next level (the model's own noising, so flow models too)."""
    host = sigmas.tolist()
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        x = denoised
        if host[i + 1] > 0:
            x = model.sampling.noise_scaling(sigmas[i + 1], _noise(x, generator), x)
        hooks.end(i, x, denoised)
    return x


def heunpp2(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks()):
    """Heun++ (ComfyUI's heunpp2): up to three slopes -- here, one step ahead, two steps ahead -- averaged with
    weights that grow with the noise level of the point, then one step; Heun before the last and Euler on
    the last step. Up to 3 model calls a step."""
    host = sigmas.tolist()
    end = host[-1]
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        s, sn = host[i], host[i + 1]
        d = (x - denoised) / s
        dt = sn - s
        if sn == end:
            x = x + d * dt
        elif host[i + 2] == end:
            x2 = x + d * dt
            d2 = (x2 - model(x2, i + 1)) / sn
            w2 = sn / (2 * host[0])
            x = x + (d * (1 - w2) + d2 * w2) * dt
        else:
            x2 = x + d * dt
            d2 = (x2 - model(x2, i + 1)) / sn
            x3 = x2 + d2 * (host[i + 2] - sn)
            d3 = (x3 - model(x3, i + 2)) / host[i + 2]
            w2, w3 = sn / (3 * host[0]), host[i + 2] / (3 * host[0])
            x = x + ((1 - w2 - w3) * d + w2 * d2 + w3 * d3) * dt
        hooks.end(i, x, denoised)
    return x


def _pndm_coefficients(host: list[float], i: int, order: int, variable: bool) -> list[float]:
    """Weights of the current and the previous slopes for improved PNDM (Zhang & Chen 2023, iPNDM): the
    Adams-Bashforth weights, or (``variable``) their variable-step form over the actual sigma gaps."""
    if order == 1:
        return [1.0]
    if not variable:
        return {2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}[order]
    hn = host[i + 1] - host[i]
    h1 = host[i] - host[i - 1]
    if order == 2:
        return [(2 + hn / h1) / 2, -(hn / h1) / 2]
    h2 = host[i - 1] - host[i - 2]
    t1 = (1 - hn / (3 * (hn + h1)) * (hn * (hn + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return [(2 + hn / h1) / 2 + t1, -(hn / h1) / 2 - (1 + h1 / h2) * t1, t1 * h1 / h2]
    h3 = host[i - 2] - host[i - 3]
    t2 = ((1 - hn / (3 * (hn + h1))) / 2 + (1 - hn / (2 * (hn + h1))) * hn / (6 * (hn + h1 + h2))) * (
        hn * (hn + h1) * (hn + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3))
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return [(2 + hn / h1) / 2 + t1 + t2, -(hn / h1) / 2 - (1 + h1 / h2) * t1 - (1 + h1 / h2 + q) * t2,
            t1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * t2, -t2 * q * h1 / h2]


def _ipndm(model, x, sigmas, hooks, max_order: int, variable: bool):
    host = sigmas.tolist()
    slopes: list[torch.Tensor] = []  # newest last
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        s, sn = host[i], host[i + 1]
        d = (x - denoised) / s
        order = min(max_order, i + 1)
        if sn == 0:
            x = denoised
        else:
            w = _pndm_coefficients(host, i, order, variable)
            x = x + (sn - s) * sum(c * g for c, g in zip(w, [d, *reversed(slopes)], strict=False))
        slopes = [*slopes, d][-(max_order - 1):]
        hooks.end(i, x, denoised)
    return x


def ipndm(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), max_order: int = 4):
    """Improved PNDM (iPNDM): Adams-Bashforth in sigma over up to four slopes, lower orders while warming up."""
    return _ipndm(model, x, sigmas, hooks, max_order, False)


def ipndm_v(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), max_order: int = 4):
    """iPNDM with variable-step Adams-Bashforth weights (for unevenly spaced sigmas)."""
    return _ipndm(model, x, sigmas, hooks, max_order, True)


def gradient_estimation(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), ge_gamma: float = 2.0,
                        cfg_pp: bool = False):
    """Gradient-estimation sampler (Permenter & Yuan 2024): Euler plus ``(gamma - 1)`` times the change of the
    slope since the last step; the final step jumps to the denoised estimate. ``cfg_pp``: the slope from the
    unconditional estimate (CFG++)."""
    host = sigmas.tolist()
    old = None
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        s, sn = host[i], host[i + 1]
        d = (x - (model.uncond() if cfg_pp else denoised)) / s
        if sn == 0:
            x = denoised
        else:
            x = denoised + d * sn if cfg_pp else x + d * (sn - s)
            if old is not None:
                x = x + (ge_gamma - 1) * (d - old) * (sn - s)
        old = d
        hooks.end(i, x, denoised)
    return x


def _unipc_update(model, x, history, j: int, s_t: float, order: int, variant: str, corrector: bool):
    """One UniPC multistep update (Zhao et al. 2023) in data prediction, to noise level ``s_t`` (grid index
    ``j``): the order-``order`` predictor from the last estimates ``history`` [(sigma, D), ...], then -- with
    ``corrector`` -- the network at the predicted point and the corrector that uses it. Returns (x, D at
    the predicted point or None). Worked in sigma space: UniPC's variance-preserving latents divided by alpha."""
    s_p, m_p = history[-1]
    lam_p, lam_t = -math.log(s_p), -math.log(s_t)
    h = lam_t - lam_p
    rks, d1s = [], []
    for k in range(1, order):
        s_k, m_k = history[-(k + 1)]
        rk = (-math.log(s_k) - lam_p) / h
        rks.append(rk)
        d1s.append((m_k - m_p) / rk)
    rks.append(1.0)
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else math.expm1(hh)
    rows, b = [], []
    h_phi_k, fact = h_phi_1 / hh - 1, 1
    for i in range(1, order + 1):
        rows.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    base = (s_t / s_p) * x - h_phi_1 * m_p
    if d1s:
        if order == 2:
            rhos_p = [0.5]
        else:
            rhos_p = torch.linalg.solve(torch.tensor(rows, dtype=torch.float64)[:-1, :-1],
                                        torch.tensor(b[:-1], dtype=torch.float64)).tolist()
        x_t = base - b_h * sum(r * d for r, d in zip(rhos_p, d1s, strict=True))
    else:
        x_t = base
    if not corrector:
        return x_t, None
    rhos_c = [0.5] if order == 1 else torch.linalg.solve(torch.tensor(rows, dtype=torch.float64),
                                                         torch.tensor(b, dtype=torch.float64)).tolist()
    m_t = model(x_t, j)
    corr = sum((r * d for r, d in zip(rhos_c[:-1], d1s, strict=True)), torch.zeros_like(x))
    return base - b_h * (corr + rhos_c[-1] * (m_t - m_p)), m_t


def uni_pc(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), variant: str = "bh1",
           max_order: int = 3):
    """UniPC multistep predictor-corrector (Zhao et al. 2023, B(h) = h for bh1, e^h - 1 for bh2) as ComfyUI
    runs it: order up to 3 (lower at the start and the end), one network call a step (the corrector's
    evaluation is the next step's estimate), and a schedule ending in 0 stops at sigma 0.001 without a final
    denoise."""
    host = sigmas.tolist()
    if host[-1] == 0:
        host[-1] = 0.001
    steps = len(host) - 1
    order = max(min(max_order, steps - 1), 1)
    hooks.begin(0)
    denoised = model(x, 0)
    history = [(host[0], denoised)]
    for i in range(steps):
        if i:
            hooks.begin(i)
        last = i == steps - 1
        step_order = min(order, i + 1, steps - i)
        x, m = _unipc_update(model, x, history, i + 1, host[i + 1], step_order, variant, corrector=not last)
        if m is not None:
            denoised = m
            history = [*history, (host[i + 1], m)][-order:]
        hooks.end(i, x, denoised)
    return x


def uni_pc_bh2(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks()):
    """UniPC with B(h) = e^h - 1 (bh2)."""
    return uni_pc(model, x, sigmas, generator=generator, hooks=hooks, variant="bh2")


#: the VP-SDE that DEIS measures time in, fitted to sigma 0.002 .. 80 (EDM's range) with t_min = 1e-3
_DEIS_EPS, _DEIS_SMIN, _DEIS_SMAX = 1e-3, 0.002, 80.0


def _deis_coefficients(host: list[float], max_order: int) -> list[list[float]]:
    """DEIS-tAB weights (Zhang & Chen 2023): per step, the integral over VP time of d sigma / dt times each
    Lagrange basis polynomial through the last ``order`` step times, so ``x + sum_j w_j eps_j`` is
    Adams-Bashforth on the noise prediction in that time."""
    from scipy import integrate

    beta_d = 2 * (math.log(_DEIS_SMIN**2 + 1) / _DEIS_EPS - math.log(_DEIS_SMAX**2 + 1)) / (_DEIS_EPS - 1)
    beta_min = math.log(_DEIS_SMAX**2 + 1) - 0.5 * beta_d
    t = [(math.sqrt(beta_min**2 + 2 * beta_d * math.log(s * s + 1)) - beta_min) / beta_d for s in host]

    def dsigma_dt(tau: float) -> float:
        alpha = math.exp(-0.5 * tau * tau * beta_d - tau * beta_min)
        return 0.5 * (tau * beta_d + beta_min) / math.sqrt(alpha * (1 - alpha))

    out = []
    for i in range(len(host) - 1):
        order = min(i + 1, max_order)
        if order == 1 or host[i + 1] <= 0:
            out.append([])
            continue
        prev = [t[i - k] for k in range(order)]

        def basis(tau: float, j: int, prev=prev) -> float:
            v = 1.0
            for k, p in enumerate(prev):
                if k != j:
                    v *= (tau - p) / (prev[j] - p)
            return v

        out.append([integrate.quad(lambda tau, j=j: dsigma_dt(tau) * basis(tau, j), t[i], t[i + 1],
                                   epsrel=1e-10)[0] for j in range(order)])
    return out


def deis(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), max_order: int = 3):
    """DEIS, its time-based Adams-Bashforth form (tAB) as ComfyUI's deis sampler: the slopes ``(x - D) /
    sigma`` of the last up to three steps, weighted by :func:`_deis_coefficients`; Euler on the first and the
    last step. Weights are integrated on the host before the loop."""
    host = sigmas.tolist()
    weights = _deis_coefficients(host, max_order)
    slopes: list[torch.Tensor] = []  # newest first
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        d = (x - denoised) / host[i]
        slopes = [d, *slopes][:max_order]
        if not weights[i]:
            x = x + (host[i + 1] - host[i]) * d
        else:
            x = x + sum(w * g for w, g in zip(weights[i], slopes, strict=False))
        hooks.end(i, x, denoised)
    return x


def _phi_2(h: float) -> float:
    """``h * phi_2(h) = (e^h - 1 - h) / h``."""
    return (math.expm1(h) - h) / h


def _seeds_2(model, x, sigmas, generator, hooks, eta: float, s_noise: float, r: float, solver: str):
    """SEEDS-2 (Gonzalez et al. 2023) in data prediction over the half log-SNR: a stochastic exponential Euler
    stage to the fraction ``r`` of the step, then the step from both estimates -- their mix (``phi_1``) or the
    phi_2-weighted pair (``phi_2``). The noise of the two stages is correlated as one Brownian path."""
    model, sigmas, host = _snr_grid(model, sigmas, sigmas.tolist())
    inject = eta > 0 and s_noise > 0
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        s, sn = host[i], host[i + 1]
        if sn == 0:
            x = denoised
            hooks.end(i, x, denoised)
            continue
        lam_s, lam_t = _lam(model, s), _lam(model, sn)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        lam_1 = lam_s + r * h
        s1 = _sigma_of(model, lam_1)
        alpha_1, alpha_t = s1 * math.exp(lam_1), sn * math.exp(lam_t)
        x2 = (s1 / s * math.exp(-r * h * eta)) * x - (alpha_1 * math.expm1(-r * h_eta)) * denoised
        if inject:
            path = _noise(x, generator) * (-math.expm1(-2 * r * h * eta)) ** 0.5
            x2 = x2 + path * (s1 * s_noise)
        d2 = model.at(x2, s1)
        if solver == "phi_1":
            fac = 1 / (2 * r)
            mixed = denoised + fac * (d2 - denoised)
            x = (sn / s * math.exp(-h * eta)) * x - (alpha_t * math.expm1(-h_eta)) * mixed
        else:
            b2 = _phi_2(-h_eta) / r
            b1 = math.expm1(-h_eta) - b2
            x = (sn / s * math.exp(-h * eta)) * x - alpha_t * (b1 * denoised + b2 * d2)
        if inject:
            seg = (r - 1) * h * eta
            path = path * math.exp(seg) + _noise(x, generator) * (-math.expm1(2 * seg)) ** 0.5
            x = x + path * (sn * s_noise)
        hooks.end(i, x, denoised)
    return x


def seeds_2(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0,
            s_noise: float = 1.0):
    """SEEDS-2 with its midpoint stage (r = 1/2, phi_1 mix), as ComfyUI's seeds_2. 2N-1 model calls."""
    return _seeds_2(model, x, sigmas, generator, hooks, eta, s_noise, 0.5, "phi_1")


def exp_heun_2_x0(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks()):
    """Exponential Heun, second order, in data prediction and log-SNR time (SEEDS-2 with r = 1, phi_2, no
    noise): the second estimate is taken at the end of the step."""
    return _seeds_2(model, x, sigmas, generator, hooks, 0.0, 0.0, 1.0, "phi_2")


def exp_heun_2_x0_sde(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0,
                      s_noise: float = 1.0):
    """The stochastic exponential Heun (SEEDS-2 with r = 1, phi_2 weights)."""
    return _seeds_2(model, x, sigmas, generator, hooks, eta, s_noise, 1.0, "phi_2")


def seeds_3(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0,
            s_noise: float = 1.0, r_1: float = 1 / 3, r_2: float = 2 / 3):
    """SEEDS-3 (Gonzalez et al. 2023): three stages at the log-SNR fractions 0, r_1, r_2 with phi_1 / phi_2
    weights, the noise of the stages one correlated path. Up to 3 model calls a step."""
    model, sigmas, host = _snr_grid(model, sigmas, sigmas.tolist())
    inject = eta > 0 and s_noise > 0
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        s, sn = host[i], host[i + 1]
        if sn == 0:
            x = denoised
            hooks.end(i, x, denoised)
            continue
        lam_s, lam_t = _lam(model, s), _lam(model, sn)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        lam_1, lam_2 = lam_s + r_1 * h, lam_s + r_2 * h
        s1, s2 = _sigma_of(model, lam_1), _sigma_of(model, lam_2)
        alpha_1, alpha_2, alpha_t = s1 * math.exp(lam_1), s2 * math.exp(lam_2), sn * math.exp(lam_t)
        x2 = (s1 / s * math.exp(-r_1 * h * eta)) * x - (alpha_1 * math.expm1(-r_1 * h_eta)) * denoised
        if inject:
            path = _noise(x, generator) * (-math.expm1(-2 * r_1 * h * eta)) ** 0.5
            x2 = x2 + path * (s1 * s_noise)
        d2 = model.at(x2, s1)
        a32 = r_2 / r_1 * _phi_2(-r_2 * h_eta)
        a31 = math.expm1(-r_2 * h_eta) - a32
        x3 = (s2 / s * math.exp(-r_2 * h * eta)) * x - alpha_2 * (a31 * denoised + a32 * d2)
        if inject:
            seg = (r_1 - r_2) * h * eta
            path = path * math.exp(seg) + _noise(x, generator) * (-math.expm1(2 * seg)) ** 0.5
            x3 = x3 + path * (s2 * s_noise)
        d3 = model.at(x3, s2)
        b3 = _phi_2(-h_eta) / r_2
        b1 = math.expm1(-h_eta) - b3
        x = (sn / s * math.exp(-h * eta)) * x - alpha_t * (b1 * denoised + b3 * d3)
        if inject:
            seg = (r_2 - 1) * h * eta
            path = path * math.exp(seg) + _noise(x, generator) * (-math.expm1(2 * seg)) ** 0.5
            x = x + path * (sn * s_noise)
        hooks.end(i, x, denoised)
    return x


def _er_noise_scale(v: float) -> float:
    """ER-SDE's default noise scale function ``v (e^(v^0.3) + 10)``."""
    return v * (math.exp(v**0.3) + 10.0)


def er_sde(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), s_noise: float = 1.0,
           max_stage: int = 3):
    """ER-SDE-Solver-3 (Cui et al. 2023, VP form): exponential steps in ``v = sigma / alpha`` with first-,
    second- and third-order terms from the last estimates; the integrals of the noise scale function are
    200-point sums, as the reference code takes them."""
    model, sigmas, host = _snr_grid(model, sigmas, sigmas.tolist())
    v = [0.0 if s == 0 else math.exp(-_lam(model, s)) for s in host]
    old = old_d = None
    n_points = 200
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        stage = min(max_stage, i + 1)
        s, sn = host[i], host[i + 1]
        if sn == 0:
            x = denoised
        else:
            v_s, v_t = v[i], v[i + 1]
            alpha_s, alpha_t = s / v_s, sn / v_t
            r = _er_noise_scale(v_t) / _er_noise_scale(v_s)
            x = (alpha_t / alpha_s * r) * x + (alpha_t * (1 - r)) * denoised
            if stage >= 2:
                dt = v_t - v_s
                step = -dt / n_points
                pos = [v_t + k * step for k in range(n_points)]
                integral = sum(1 / _er_noise_scale(p) for p in pos) * step
                dd = (denoised - old) / (v_s - v[i - 1])
                x = x + (alpha_t * (dt + integral * _er_noise_scale(v_t))) * dd
                if stage >= 3:
                    integral_u = sum((p - v_s) / _er_noise_scale(p) for p in pos) * step
                    du = (dd - old_d) / ((v_s - v[i - 2]) / 2)
                    x = x + (alpha_t * (dt * dt / 2 + integral_u * _er_noise_scale(v_t))) * du
                old_d = dd
            if s_noise > 0:
                spread = v_t**2 - v_s**2 * r**2
                x = x + _noise(x, generator) * (alpha_t * s_noise * (spread**0.5 if spread > 0 else 0.0))
        old = denoised
        hooks.end(i, x, denoised)
    return x


def euler_ancestral_cfg_pp(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0,
                           s_noise: float = 1.0):
    """Euler ancestral in its CFG++ form (Chung et al. 2024): land on the guided estimate and renoise toward
    sigma_down with the unconditional one -- a DDIM-style step in ``sigma / alpha``, so flow models too (whose
    schedule starts a hair below 1, where alpha would be 0)."""
    model, sigmas, host = _snr_grid(model, sigmas, sigmas.tolist())
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        u = model.uncond()
        s, sn = host[i], host[i + 1]
        if sn == 0:
            x = denoised
        else:
            alpha_s, alpha_t = (1 - s, 1 - sn) if model.flow else (1.0, 1.0)
            d = (x - alpha_s * u) / s
            down, up = _ancestral(s / alpha_s, sn / alpha_t, eta)
            x = alpha_t * denoised + (alpha_t * down) * d
            if eta > 0 and s_noise > 0 and up:
                x = x + _noise(x, generator) * (alpha_t * s_noise * up)
        hooks.end(i, x, denoised)
    return x


def euler_cfg_pp(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks()):
    """Euler in its CFG++ form (euler_ancestral_cfg_pp without noise)."""
    return euler_ancestral_cfg_pp(model, x, sigmas, generator=generator, hooks=hooks, eta=0.0, s_noise=0.0)


def dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), eta: float = 1.0,
                              s_noise: float = 1.0):
    """DPM-Solver++(2S) ancestral in its CFG++ form: both stages start from ``x + (D - D_uncond)``."""
    host = sigmas.tolist()
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        u = model.uncond()
        s, sn = host[i], host[i + 1]
        down, up = _ancestral(s, sn, eta)
        if down == 0:
            x = denoised + (x - u) / s * down
        else:
            h = math.log(s) - math.log(down)
            mid = math.exp(math.log(s) - h / 2)
            shifted = x + (denoised - u)
            x2 = (mid / s) * shifted - math.expm1(-h / 2) * denoised
            x = (down / s) * shifted - math.expm1(-h) * model.at(x2, mid)
        if sn > 0 and up:
            x = x + _noise(x, generator) * (s_noise * up)
        hooks.end(i, x, denoised)
    return x


def dpmpp_2m_cfg_pp(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks()):
    """DPM-Solver++(2M) in its CFG++ form: the multistep correction from the unconditional estimates."""
    host = sigmas.tolist()
    old = None
    for i in range(len(host) - 1):
        hooks.begin(i)
        denoised = model(x, i)
        u = model.uncond()
        s, sn = host[i], host[i + 1]
        if sn == 0:
            x = denoised  # exp(-inf) = 0: the step lands on the guided estimate
        else:
            h = math.log(s) - math.log(sn)
            mix = -math.exp(-h) * u
            if old is not None:
                r = (math.log(host[i - 1]) - math.log(s)) / h
                mix = mix - math.expm1(-h) / (2 * r) * (denoised - old)
            x = denoised + mix + math.exp(-h) * x
        old = u
        hooks.end(i, x, denoised)
    return x


def res_multistep_cfg_pp(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), s_noise: float = 1.0):
    """res_multistep in its CFG++ form."""
    return res_multistep(model, x, sigmas, generator=generator, hooks=hooks, eta=0.0, s_noise=s_noise,
                         cfg_pp=True)


def res_multistep_ancestral_cfg_pp(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(),
                                   eta: float = 1.0, s_noise: float = 1.0):
    """res_multistep_ancestral in its CFG++ form."""
    return res_multistep(model, x, sigmas, generator=generator, hooks=hooks, eta=eta, s_noise=s_noise,
                         cfg_pp=True)


def gradient_estimation_cfg_pp(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(),
                               ge_gamma: float = 2.0):
    """gradient_estimation in its CFG++ form."""
    return gradient_estimation(model, x, sigmas, generator=generator, hooks=hooks, ge_gamma=ge_gamma, cfg_pp=True)


def _dpm_solver_2(x, t: float, h: float, e0, eps, r1: float = 0.5):
    """A DPM-Solver-2 step (Lu et al. 2022) in ``t = -log sigma`` from the noise prediction ``e0`` at ``t``;
    ``eps(x, t)`` gives the one at the intermediate point. Returns (x, that prediction)."""
    s1 = t + r1 * h
    e1 = eps(x - math.exp(-s1) * math.expm1(r1 * h) * e0, s1)
    sn = math.exp(-(t + h))
    return x - sn * math.expm1(h) * e0 - sn / (2 * r1) * math.expm1(h) * (e1 - e0), e1


def _dpm_solver_3(x, t: float, h: float, e0, eps, e1=None):
    """A DPM-Solver-3 step (r1 = 1/3, r2 = 2/3); ``e1`` is the prediction at t + h/3 when already known."""
    r1, r2 = 1 / 3, 2 / 3
    s1, s2 = t + r1 * h, t + r2 * h
    if e1 is None:
        e1 = eps(x - math.exp(-s1) * math.expm1(r1 * h) * e0, s1)
    u2 = (x - math.exp(-s2) * math.expm1(r2 * h) * e0
          - math.exp(-s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (e1 - e0))
    e2 = eps(u2, s2)
    sn = math.exp(-(t + h))
    return x - sn * math.expm1(h) * e0 - sn / r2 * (math.expm1(h) / h - 1) * (e2 - e0)


def _dpm_range(host: list[float]) -> tuple[float, float]:
    """dpm_fast's and dpm_adaptive's span in ``t = -log sigma``: the first level to the last above 0."""
    return -math.log(host[0]), -math.log(host[-1] if host[-1] > 0 else host[-2])


def dpm_fast(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks()):
    """DPM-Solver-fast (Lu et al. 2022) as ComfyUI's dpm_fast: the schedule gives only its end points
    (sigma_max = the first level, sigma_min = the last above 0) and the budget of network calls (one per
    step); the solver spends it on DPM-Solver-3 steps evenly spaced in ``t = -log sigma``, the last one or two
    of lower order, and stops at sigma_min (no final denoise). Progress is reported per network call (a step's
    calls all report its result)."""
    host = sigmas.tolist()
    nfe = len(host) - 1
    t0, t1 = _dpm_range(host)
    m = nfe // 3 + 1
    ts = [t0 + (t1 - t0) * k / m for k in range(m + 1)]
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    calls = 0

    def eps(xx, t):
        nonlocal calls
        hooks.begin(min(calls, nfe - 1))
        sig = math.exp(-t)
        calls += 1
        return (xx - model.at(xx, sig)) / sig

    for k, order in enumerate(orders):
        done = calls
        t, h = ts[k], ts[k + 1] - ts[k]
        e0 = eps(x, t)
        denoised = x - math.exp(-t) * e0
        if order == 1:
            x = x - math.exp(-(t + h)) * math.expm1(h) * e0
        elif order == 2:
            x = _dpm_solver_2(x, t, h, e0, eps)[0]
        else:
            x = _dpm_solver_3(x, t, h, e0, eps)
        for j in range(done, calls):  # one report per network call of the step
            hooks.end(j, x, denoised)
    return x


#: dpm_adaptive's most network calls: its cost must be known before the run (graph_runtime.limits)
ADAPTIVE_MAX_CALLS = 600


def dpm_adaptive(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), rtol: float = 0.05,
                 atol: float = 0.0078, h_init: float = 0.05, accept_safety: float = 0.81):
    """DPM-Solver-23 with adaptive step size (Lu et al. 2022) as ComfyUI's dpm_adaptive: each step compares a
    DPM-Solver-2 and a DPM-Solver-3 estimate (sharing a stage, 3 network calls), an integral controller scales
    the step by the error, and a step with too large an error is taken again. Like dpm_fast it uses only the
    schedule's end points; it stops at sigma_min. At most ``ADAPTIVE_MAX_CALLS`` network calls (ValueError
    past them); progress is the share of the span covered."""
    host = sigmas.tolist()
    steps = len(host) - 1
    t, t_end = _dpm_range(host)
    span = t_end - t
    calls = 0

    def eps(xx, tt):
        nonlocal calls
        if calls >= ADAPTIVE_MAX_CALLS:
            raise ValueError(f"dpm_adaptive needed more than {ADAPTIVE_MAX_CALLS} network calls at rtol {rtol}, "
                             f"atol {atol}; use dpm_fast or a fixed-step sampler")
        sig = math.exp(-tt)
        calls += 1
        return (xx - model.at(xx, sig)) / sig

    h, errs = h_init, None
    x_prev = x
    reported = -1
    while t < t_end - 1e-5:
        hooks.begin(max(reported, 0))
        tn = min(t_end, t + h)
        dt = tn - t
        e0 = eps(x, t)
        denoised = x - math.exp(-t) * e0
        x_low, e1 = _dpm_solver_2(x, t, dt, e0, eps, r1=1 / 3)
        x_high = _dpm_solver_3(x, t, dt, e0, eps, e1)
        delta = torch.maximum(torch.full_like(x_low, atol), rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = float(torch.linalg.norm((x_low - x_high) / delta)) / x.numel() ** 0.5  # one host read a step
        inv = 1 / (error + 1e-8)
        errs = [inv, inv, inv] if errs is None else [inv, *errs[1:]]
        factor = errs[0] ** (1 / 3)  # the integral controller of order 3 (ComfyUI's default coefficients)
        factor = 1 + math.atan(factor - 1)
        if factor >= accept_safety:
            errs = [errs[0], errs[0], errs[1]]
            x_prev, x, t = x_low, x_high, tn
            done = min(int((t - (t_end - span)) / span * steps), steps - 1) if span > 0 else steps - 1
            for j in range(reported + 1, done + 1):
                hooks.end(j, x, denoised)
            reported = max(reported, done)
        h *= factor
    for j in range(reported + 1, steps):
        hooks.end(j, x, x)
    return x


def _percent_to_sigma(model, percent: float) -> float:
    """The noise level at a fraction of the sampling range (0 = pure noise), as ComfyUI's model sampling
    places it: train timestep ``(1 - percent) * 999`` for a discrete model, the shifted ``1 - percent`` for
    flow."""
    if model.flow:
        return float(model.sampling.sigma_ramp(torch.tensor(1.0 - percent, dtype=torch.float64)))
    log_train = model.sampling.train_sigmas.double().log()
    t = (1.0 - percent) * 999.0
    lo = int(math.floor(t))
    hi = min(lo + 1, len(log_train) - 1)
    w = t - lo
    return math.exp((1 - w) * float(log_train[lo]) + w * float(log_train[hi]))


def _sa_coefficients(sigma_t: float, lams: list[float], lam_s: float, lam_t: float, tau: float) -> list[float]:
    """SA-Solver's b_i (Xue et al. 2023, eqs. 15 / 18): ``alpha_t`` times the integral over [lam_s, lam_t] of
    ``(1 + tau^2) e^((1 + tau^2)(lam - lam_t))`` times the Lagrange basis through ``lams``."""
    from scipy import integrate

    k = 1 + tau * tau

    def basis(v: float, j: int) -> float:
        out = 1.0
        for m, p in enumerate(lams):
            if m != j:
                out *= (v - p) / (lams[j] - p)
        return out

    alpha_t = sigma_t * math.exp(lam_t)
    return [alpha_t * integrate.quad(lambda v, j=j: k * math.exp(k * (v - lam_t)) * basis(v, j), lam_s, lam_t,
                                     epsabs=1e-12, epsrel=1e-10)[0] for j in range(len(lams))]


def sa_solver(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), s_noise: float = 1.0,
              predictor_order: int = 3, corrector_order: int = 4, pece: bool = False, eta: float = 1.0):
    """SA-Solver (Xue et al. 2023), stochastic Adams predictor-corrector in data prediction over the half
    log-SNR, as ComfyUI's sa_solver: predictor of order 3 and corrector of order 4 from the last estimates,
    lower near the end; noise strength ``eta`` for sigma between the 20 % and 80 % points of the model's range
    and none outside. ``pece`` evaluates the corrected state again (sa_solver_pece)."""
    model, sigmas, host = _snr_grid(model, sigmas, sigmas.tolist())
    lam = [_lam(model, s) if s > 0 else math.inf for s in host]
    start, end = _percent_to_sigma(model, 0.2), _percent_to_sigma(model, 0.8)
    n = len(host)
    to_end = host[-1] == 0
    x_pred, h, tau, noise = x, 0.0, 0.0, None
    preds: list[torch.Tensor] = []
    for i in range(n - 1):
        hooks.begin(i)
        denoised = model(x_pred, i)
        preds = [*preds, denoised][-max(predictor_order, corrector_order):]
        p_ord = min(predictor_order, len(preds))
        c_ord = 0 if i == 0 or (host[i + 1] == 0 and not pece) else min(corrector_order, len(preds))
        if to_end:
            p_ord, c_ord = min(p_ord, n - 2 - i), min(c_ord, n - 1 - i)
        if c_ord == 0:
            x = x_pred
        else:
            b = _sa_coefficients(host[i], lam[i - c_ord + 1:i + 1], lam[i - 1], lam[i], tau)
            x = (host[i] / host[i - 1] * math.exp(-tau * tau * h)) * x + sum(
                c * d for c, d in zip(b, preds[-c_ord:], strict=True))
            if noise is not None:
                x = x + noise
            if pece:
                denoised = model(x, i)
                preds[-1] = denoised
        if host[i + 1] == 0:
            x_pred = denoised
        else:
            tau = eta if eta > 0 and start >= host[i + 1] >= end else 0.0
            b = _sa_coefficients(host[i + 1], lam[i - p_ord + 1:i + 1], lam[i], lam[i + 1], tau)
            h = lam[i + 1] - lam[i]
            x_pred = (host[i + 1] / host[i] * math.exp(-tau * tau * h)) * x + sum(
                c * d for c, d in zip(b, preds[-p_ord:], strict=True))
            noise = None
            if tau > 0 and s_noise > 0:
                noise = _noise(x, generator) * (host[i + 1] * (-math.expm1(-2 * tau * tau * h)) ** 0.5 * s_noise)
                x_pred = x_pred + noise
        hooks.end(i, x_pred, denoised)
    return x_pred


def sa_solver_pece(model, x, sigmas, *, generator=None, hooks: Hooks = _NoHooks(), s_noise: float = 1.0,
                   eta: float = 1.0):
    """SA-Solver in PECE mode (predict, evaluate, correct, evaluate): 2N-1 model calls."""
    return sa_solver(model, x, sigmas, generator=generator, hooks=hooks, s_noise=s_noise, pece=True, eta=eta)


#: name -> rule. Names match ComfyUI's KSampler sampler names.
RULES: dict[str, Callable[..., Any]] = {
    "euler": euler,
    "euler_ancestral": euler_ancestral,
    "heun": heun,
    "heunpp2": heunpp2,
    "dpm_2": dpm_2,
    "dpm_2_ancestral": dpm_2_ancestral,
    "lms": lms,
    "dpmpp_2s_ancestral": dpmpp_2s_ancestral,
    "dpmpp_sde": dpmpp_sde,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "dpmpp_2m_sde_heun": dpmpp_2m_sde_heun,
    "dpmpp_3m_sde": dpmpp_3m_sde,
    "ddpm": ddpm,
    "lcm": lcm,
    "ipndm": ipndm,
    "ipndm_v": ipndm_v,
    "res_multistep": res_multistep,
    "res_multistep_ancestral": res_multistep_ancestral,
    "gradient_estimation": gradient_estimation,
    "deis": deis,
    "uni_pc": uni_pc,
    "uni_pc_bh2": uni_pc_bh2,
    "exp_heun_2_x0": exp_heun_2_x0,
    "exp_heun_2_x0_sde": exp_heun_2_x0_sde,
    "seeds_2": seeds_2,
    "seeds_3": seeds_3,
    "er_sde": er_sde,
    "euler_cfg_pp": euler_cfg_pp,
    "euler_ancestral_cfg_pp": euler_ancestral_cfg_pp,
    "dpmpp_2s_ancestral_cfg_pp": dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_2m_cfg_pp": dpmpp_2m_cfg_pp,
    "res_multistep_cfg_pp": res_multistep_cfg_pp,
    "res_multistep_ancestral_cfg_pp": res_multistep_ancestral_cfg_pp,
    "gradient_estimation_cfg_pp": gradient_estimation_cfg_pp,
    "dpm_fast": dpm_fast,
    "dpm_adaptive": dpm_adaptive,
    "sa_solver": sa_solver,
    "sa_solver_pece": sa_solver_pece,
}

#: rules that need the unconditional prediction beside the guided one (CFG++): sample them with a guided
#: network that keeps it (schedulers.cfg_pp.UncondCFG)
UNCOND_RULES = frozenset(name for name in RULES if name.endswith("_cfg_pp"))

#: rules that draw noise and so need a generator
STOCHASTIC_RULES = frozenset({"euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde",
                              "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde", "ddpm", "lcm",
                              "res_multistep_ancestral", "exp_heun_2_x0_sde", "seeds_2", "seeds_3", "er_sde",
                              "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "res_multistep_ancestral_cfg_pp",
                              "sa_solver", "sa_solver_pece"})

#: network evaluations per step at most (one where not listed); the last step to 0 takes one
_CALLS_PER_STEP = {"heun": 2, "dpm_2": 2, "dpm_2_ancestral": 2, "dpmpp_2s_ancestral": 2, "dpmpp_sde": 2,
                   "heunpp2": 3, "exp_heun_2_x0": 2, "exp_heun_2_x0_sde": 2, "seeds_2": 2, "seeds_3": 3,
                   "dpmpp_2s_ancestral_cfg_pp": 2, "sa_solver_pece": 2}


def model_calls(rule: str, steps: int) -> int:
    """Network evaluations a run of ``rule`` over ``steps`` steps costs at most (known before it starts)."""
    if rule == "dpm_adaptive":
        return ADAPTIVE_MAX_CALLS
    per = _CALLS_PER_STEP.get(rule, 1)
    return per * steps - (per - 1) if steps else 0
