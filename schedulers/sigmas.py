"""SIGMAS tensors: builders, edits and validation.

A SIGMAS value is what ComfyUI passes between its scheduler and sampler nodes: a 1-D float tensor,
``steps + 1`` long, non-increasing, ending in 0. ``sigmas[i]`` is the noise level at the start of step
``i`` in the k-diffusion parameterisation ``x = x0 + sigma * eps`` (an epsilon model sees
``x / sqrt(sigma^2 + 1)``); the trailing 0 is where sampling ends.

Spacings here follow the k-diffusion / ComfyUI formulas (Karras et al. 2022 for ``karras``, a log-linear
ramp for ``exponential``, ComfyUI's timestep-quantile form for ``beta``) so that ComfyUI workflows can be
reproduced. Diffusers' own ``use_karras_sigmas`` & co. are driven through the scheduler config instead (see
``schedule.build_schedule``), because they take sigma_min / sigma_max from the scheduler's timestep spacing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .comfy_names import COMFY_SCHEDULERS  # the names live with the ComfyUI mapping

__all__ = [
    "append_zero",
    "beta",
    "comfy_scheduler_sigmas",
    "COMFY_SCHEDULERS",
    "custom",
    "ddim_uniform",
    "exponential",
    "flip",
    "karras",
    "model_sigmas",
    "normal",
    "sgm_uniform",
    "sigmas_from_alphas",
    "simple",
    "split",
    "validate",
]


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    """Append the final 0 that ends every SIGMAS tensor."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def _out(values: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    return append_zero(values.to(torch.float32)).to(device if device is not None else "cpu")


def karras(
    steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Karras et al. (2022) spacing: uniform in ``sigma ** (1 / rho)`` from sigma_max down to sigma_min."""
    _check_steps(steps)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _out((hi + ramp * (lo - hi)) ** rho, device)


def exponential(
    steps: int, sigma_min: float, sigma_max: float, device: torch.device | str | None = None
) -> torch.Tensor:
    """Uniform in log sigma from sigma_max down to sigma_min."""
    _check_steps(steps)
    return _out(
        torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64).exp(), device
    )


def model_sigmas(scheduler_config: Mapping[str, Any]) -> torch.Tensor:
    """The model's noise level at every train timestep (ascending, float32).

    For a DDPM-trained model the training sigmas ``sqrt((1 - a) / a)``, built through diffusers'
    DDPMScheduler so every beta schedule diffusers knows (and zero-SNR rescaling) is honoured exactly as the
    pipelines see it. For a flow-matching model ComfyUI's table: the shifted ``t / n`` for ``t = 1 .. n``.
    """
    from .model_sampling import is_flow_config, model_sampling

    if is_flow_config(scheduler_config):
        return model_sampling(scheduler_config).table()
    from diffusers import DDPMScheduler

    ac = DDPMScheduler.from_config(dict(scheduler_config)).alphas_cumprod
    return ((1 - ac) / ac) ** 0.5


def _train_sigmas(model: torch.Tensor | Mapping[str, Any]) -> torch.Tensor:
    return model if isinstance(model, torch.Tensor) else model_sigmas(model)


def _flow(model: torch.Tensor | Mapping[str, Any]):
    """The flow model sampling of a scheduler config, or None (a tensor of train sigmas is discrete)."""
    if isinstance(model, torch.Tensor):
        return None
    from .model_sampling import Flow, model_sampling

    ms = model_sampling(model)
    return ms if isinstance(ms, Flow) else None


def _flow_ramp(flow, steps: int, sgm: bool, device) -> torch.Tensor:
    """ComfyUI's normal / sgm_uniform over a flow model: timesteps evenly spaced from the largest to the
    smallest (sgm: ``steps + 1`` of them, the last dropped), each mapped back to its shifted sigma."""
    start, end = flow.sigma_max * flow.multiplier, flow.sigma_min * flow.multiplier
    t = torch.linspace(start, end, steps + 1)[:-1] if sgm else torch.linspace(start, end, steps)
    return _out(flow.sigma_ramp(t / flow.multiplier), device)


def _sigma_at(train_sigmas: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Sigma at continuous timesteps ``t``, interpolating linearly in log sigma (k-diffusion's t_to_sigma)."""
    log_sigmas = train_sigmas.double().log()
    t = t.double().clamp(0, len(log_sigmas) - 1)
    low = t.floor().long()
    high = t.ceil().long()
    w = t - low
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


def normal(
    steps: int, model: torch.Tensor | Mapping[str, Any], device: torch.device | str | None = None
) -> torch.Tensor:
    """ComfyUI ``normal``: timesteps evenly spaced from the last to the first train step, both included."""
    _check_steps(steps)
    if (flow := _flow(model)) is not None:
        return _flow_ramp(flow, steps, False, device)
    ts = _train_sigmas(model)
    t = torch.linspace(len(ts) - 1, 0, steps, dtype=torch.float64)
    return _out(_sigma_at(ts, t), device)


def sgm_uniform(
    steps: int, model: torch.Tensor | Mapping[str, Any], device: torch.device | str | None = None
) -> torch.Tensor:
    """ComfyUI ``sgm_uniform``: ``steps + 1`` evenly spaced timesteps with the last (t = 0) left out."""
    _check_steps(steps)
    if (flow := _flow(model)) is not None:
        return _flow_ramp(flow, steps, True, device)
    ts = _train_sigmas(model)
    t = torch.linspace(len(ts) - 1, 0, steps + 1, dtype=torch.float64)[:-1]
    return _out(_sigma_at(ts, t), device)


def simple(
    steps: int, model: torch.Tensor | Mapping[str, Any], device: torch.device | str | None = None
) -> torch.Tensor:
    """ComfyUI ``simple``: every ``n / steps``-th train sigma counted down from the largest."""
    _check_steps(steps)
    ts = _train_sigmas(model)
    stride = len(ts) / steps
    idx = torch.tensor([len(ts) - 1 - int(i * stride) for i in range(steps)])
    return _out(ts[idx], device)


def ddim_uniform(
    steps: int, model: torch.Tensor | Mapping[str, Any], device: torch.device | str | None = None
) -> torch.Tensor:
    """ComfyUI ``ddim_uniform``: train steps 1, 1 + k, 1 + 2k, ... (k = n // steps), largest first.

    Like ComfyUI, this gives more than ``steps`` steps when ``steps`` does not divide the train steps (12 steps
    over 1000 -> 13), so that the schedule reaches the top of the range.
    """
    _check_steps(steps)
    ts = _train_sigmas(model)
    stride = max(len(ts) // steps, 1)
    idx = torch.arange(1, len(ts), stride).flip(0)
    return _out(ts[idx], device)


def beta(
    steps: int,
    model: torch.Tensor | Mapping[str, Any],
    alpha: float = 0.6,
    beta: float = 0.6,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """ComfyUI ``beta`` (Lee et al. 2024): train timesteps at quantiles of a Beta(alpha, beta) distribution.

    Timesteps are rounded to train steps and repeated ones dropped, so a short result is possible for large
    ``steps`` -- as in ComfyUI.
    """
    import numpy as np
    from scipy import stats

    _check_steps(steps)
    ts = _train_sigmas(model)
    last = len(ts) - 1
    q = 1 - np.linspace(0, 1, steps, endpoint=False)
    t = np.rint(stats.beta.ppf(q, alpha, beta) * last).astype(np.int64)
    keep = np.concatenate([[True], t[1:] != t[:-1]])
    return _out(ts[torch.from_numpy(t[keep])], device)





def comfy_scheduler_sigmas(
    scheduler: str,
    steps: int,
    model: torch.Tensor | Mapping[str, Any],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """SIGMAS for one of ComfyUI's scheduler names over a model's train sigmas (or its scheduler config).

    ``karras`` and ``exponential`` span the full train range (sigma_min = first, sigma_max = last train
    sigma), as ComfyUI does. Pass a flow model's scheduler config (not a tensor) for its own formulas.
    """
    ts = _train_sigmas(model)
    if scheduler in ("karras", "exponential"):
        fn = karras if scheduler == "karras" else exponential
        return fn(steps, float(ts[0]), float(ts[-1]), device=device)
    fns = {
        "normal": normal,
        "sgm_uniform": sgm_uniform,
        "simple": simple,
        "ddim_uniform": ddim_uniform,
        "beta": beta,
    }
    if scheduler not in fns:
        raise ValueError(
            f"unknown ComfyUI scheduler {scheduler!r}; expected one of {', '.join(COMFY_SCHEDULERS)}"
        )
    return fns[scheduler](steps, model if _flow(model) is not None else ts, device=device)


def custom(values: Sequence[float] | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """A SIGMAS tensor from explicit values (e.g. a node's text field); validated, never silently fixed."""
    t = torch.as_tensor(values, dtype=torch.float32)
    validate(t)
    return t.to(device if device is not None else t.device)


def split(sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split at ``step`` into a high part (steps 0..step-1) and a low part; both keep the shared boundary.

    As ComfyUI's SplitSigmas: ``sigmas[:step + 1]`` and ``sigmas[step:]``, so running the first with a sampler
    and continuing from its output with the second equals one run (for single-step rules). The high part
    does not end in 0 on purpose: sampling stops at the boundary noise level.
    """
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
    if not 0 <= step < len(sigmas):
        raise ValueError(f"split step {step} is outside 0..{len(sigmas) - 1}")
    return sigmas[: step + 1], sigmas[step:]


def flip(sigmas: torch.Tensor) -> torch.Tensor:
    """Reverse the order (for inversion: noise is added step by step). A leading 0 becomes 1e-4, as ComfyUI
    does, so the first step has a non-zero sigma to divide by."""
    out = sigmas.flip(0).clone()
    if len(out) and out[0] == 0:
        out[0] = 1e-4
    return out


def validate(sigmas: Any, *, name: str = "sigmas", require_zero_end: bool = True) -> torch.Tensor:
    """Check a SIGMAS tensor and raise a ValueError that says what is wrong; return it unchanged.

    Runs once per schedule, outside the sampling loop (it reads the values on the host).
    """
    if not isinstance(sigmas, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(sigmas).__name__}")
    if not sigmas.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got dtype {sigmas.dtype}")
    if sigmas.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(sigmas.shape)}")
    if len(sigmas) < 2:
        raise ValueError(f"{name} needs at least 2 values (one step and the final 0), got {len(sigmas)}")
    host = sigmas.detach().to("cpu", torch.float64)
    bad = (~torch.isfinite(host)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{name} must be finite; index {bad[0]} is {host[bad[0]].item()}")
    if (host < 0).any():
        i = int((host < 0).nonzero()[0])
        raise ValueError(f"{name} must be >= 0; index {i} is {host[i].item()}")
    rises = (host[1:] > host[:-1]).nonzero().flatten().tolist()
    if rises:
        i = rises[0]
        raise ValueError(
            f"{name} must be non-increasing; it rises from {host[i].item():.6g} at index {i} "
            f"to {host[i + 1].item():.6g} at index {i + 1}"
        )
    if require_zero_end and host[-1] != 0:
        raise ValueError(f"{name} must end in 0 (the fully denoised level), got {host[-1].item():.6g}")
    return sigmas


def sigmas_from_alphas(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """SIGMAS for schedulers that keep no sigmas (DDIM, DDPM, PNDM, LCM, ...): ``sqrt((1 - a) / a)`` at each
    step's timestep, then 0. Non-integer timesteps are interpolated in log sigma."""
    ac = alphas_cumprod.to(torch.float64)
    train = ((1 - ac) / ac) ** 0.5
    t = timesteps.detach().to("cpu", torch.float64)
    if torch.equal(t, t.round()):
        s = train[t.long()]
    else:
        s = _sigma_at(train, t)
    return append_zero(s.float()).to(timesteps.device)


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
