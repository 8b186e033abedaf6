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
    "AYS_NOISE_LEVELS",
    "align_your_steps",
    "append_zero",
    "beta",
    "comfy_scheduler_sigmas",
    "COMFY_SCHEDULERS",
    "custom",
    "ddim_uniform",
    "exponential",
    "flip",
    "karras",
    "kl_optimal",
    "linear_quadratic",
    "model_sigmas",
    "normal",
    "sd_turbo",
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


def linear_quadratic(steps: int, model: torch.Tensor | Mapping[str, Any], threshold_noise: float = 0.025,
                     linear_steps: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """ComfyUI ``linear_quadratic`` (from Mochi): noise fractions rising linearly up to ``threshold_noise`` over
    the first ``linear_steps`` (default half the steps), then quadratically to 1; ``sigma = (1 - f) *
    sigma_max`` (the trailing 0 comes from f = 1)."""
    _check_steps(steps)
    if steps == 1:
        return torch.tensor([_sigma_max(model), 0.0], dtype=torch.float32, device=device or "cpu")
    n_lin = steps // 2 if linear_steps is None else linear_steps
    lin = [i * threshold_noise / n_lin for i in range(n_lin)]
    n_quad = steps - n_lin
    diff = n_lin - threshold_noise * steps
    quad_coef = diff / (n_lin * n_quad**2)
    lin_coef = threshold_noise / n_lin - 2 * diff / n_quad**2
    const = quad_coef * n_lin**2
    quad = [quad_coef * i**2 + lin_coef * i + const for i in range(n_lin, steps)]
    levels = torch.tensor([1.0 - f for f in lin + quad + [1.0]], dtype=torch.float32)
    return (levels * torch.tensor(_sigma_max(model), dtype=torch.float32)).to(device or "cpu")


def kl_optimal(steps: int, sigma_min: float, sigma_max: float,
               device: torch.device | str | None = None) -> torch.Tensor:
    """The KL-optimal spacing (Sabour et al. 2024, "Align Your Steps" appendix) as ComfyUI's ``kl_optimal``:
    ``tan`` of a linear ramp in ``atan(sigma)`` from sigma_max to sigma_min."""
    _check_steps(steps)
    step = torch.arange(steps, dtype=torch.float32) / max(steps - 1, 1)  # float32, as ComfyUI computes it
    lo, hi = math.atan(sigma_min), math.atan(sigma_max)
    return _out(torch.tan(step * lo + (1.0 - step) * hi), device)


def _sigma_max(model: torch.Tensor | Mapping[str, Any]) -> float:
    if (flow := _flow(model)) is not None:
        return float(flow.sigma_max)
    return float(_train_sigmas(model)[-1])


#: Align Your Steps noise levels (Sabour et al. 2024), 10 steps each, as NVIDIA publishes them
AYS_NOISE_LEVELS: dict[str, tuple[float, ...]] = {
    "SD1": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "SDXL": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
    "SVD": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}


def align_your_steps(model_type: str, steps: int, denoise: float = 1.0,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """ComfyUI's AlignYourStepsScheduler: the published 10-step table for ``model_type``, stretched to
    ``steps`` by linear interpolation of log sigma over an even grid; the last ``round(steps * denoise)`` steps
    for denoise < 1, the final level set to 0. Empty for denoise 0."""
    import numpy as np

    _check_steps(steps)
    if model_type not in AYS_NOISE_LEVELS:
        raise ValueError(f"model_type must be one of {', '.join(AYS_NOISE_LEVELS)}, got {model_type!r}")
    if denoise <= 0.0:
        return torch.zeros(0, device=device or "cpu")
    total = steps if denoise >= 1.0 else round(steps * denoise)
    table = np.array(AYS_NOISE_LEVELS[model_type], dtype=np.float64)
    if steps + 1 != len(table):
        ascending = np.log(table[::-1])
        grid = np.interp(np.linspace(0, 1, steps + 1), np.linspace(0, 1, len(table)), ascending)
        table = np.exp(grid)[::-1].copy()
    out = torch.from_numpy(table[-(total + 1):].copy()).to(torch.float32)
    out[-1] = 0
    return out.to(device or "cpu")


def sd_turbo(steps: int, model: torch.Tensor | Mapping[str, Any], denoise: float = 1.0,
             device: torch.device | str | None = None) -> torch.Tensor:
    """ComfyUI's SDTurboScheduler: the noise levels at train timesteps 999, 899, ..., 99 (SD Turbo's ten),
    ``steps`` of them from ``10 - int(10 * denoise)`` on, then 0."""
    _check_steps(steps)
    start = 10 - int(10 * denoise)
    t = torch.arange(1, 11, dtype=torch.float64).flip(0)[start:start + steps] * 100 - 1
    if (flow := _flow(model)) is not None:
        values = flow.sigma_ramp(t.float() / flow.multiplier)
    else:
        values = _sigma_at(_train_sigmas(model), t)
    return _out(values, device)


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
    if scheduler in ("karras", "exponential", "kl_optimal"):
        fn = {"karras": karras, "exponential": exponential, "kl_optimal": kl_optimal}[scheduler]
        return fn(steps, float(ts[0]), float(ts[-1]), device=device)
    if scheduler == "linear_quadratic":
        return linear_quadratic(steps, model, device=device)
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
