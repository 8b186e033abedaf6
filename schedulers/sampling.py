"""The generic sampling loop.

For a pipeline-style schedule it repeats what diffusers' StableDiffusionPipeline (txt2img) and
StableDiffusionImg2ImgPipeline (``init_latents``) do step for step -- fresh scheduler, ``set_timesteps``,
initial noise times ``init_noise_sigma`` (or ``add_noise`` at the first timestep), ``scale_model_input`` on the
CFG batch, ``step`` with the pipeline's ``eta`` / ``generator`` keywords -- so the result equals the
pipeline's for the same model, seed and settings. A k-diffusion schedule runs its rule over the SIGMAS.

Progress is reported per *step* (not per model call): ``callback(step, total, x, denoised)`` after each of
``schedule.steps`` steps, ``step`` counting from 0. ``should_stop()`` is polled before each step; when it
returns true the run raises ``SamplingInterrupted``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from diffusers.utils.torch_utils import randn_tensor

from . import kdiffusion
from .model_sampling import Flow, model_sampling
from .schedule import Schedule

__all__ = ["SamplingInterrupted", "make_noise", "sample"]

Callback = Callable[[int, int, torch.Tensor, torch.Tensor | None], None]


class SamplingInterrupted(Exception):
    """Raised between steps when ``should_stop()`` returned true. ``latents`` are the latents reached so far
    (after ``step`` completed steps)."""

    def __init__(self, step: int, total: int, latents: torch.Tensor):
        super().__init__(f"sampling stopped before step {step + 1} of {total}")
        self.step = step
        self.total = total
        self.latents = latents


def make_noise(
    shape: tuple[int, ...],
    seed: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    generator_device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Generator]:
    """Standard-normal initial noise as the pipelines make it, and the generator that made it -- pass that
    same generator to ``sample`` so ancestral / SDE steps continue its stream, as the pipeline does.

    ``generator_device`` defaults to ``device``; a CPU generator gives the same noise on every device.
    """
    generator = torch.Generator(generator_device or device).manual_seed(seed)
    return randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype), generator


@torch.no_grad()
def sample(
    denoiser: Callable[..., torch.Tensor],
    latents_or_noise: torch.Tensor,
    schedule: Schedule,
    generator: torch.Generator | list[torch.Generator] | None = None,
    *,
    add_noise: bool = True,
    init_latents: torch.Tensor | None = None,
    callback: Callback | None = None,
    should_stop: Callable[[], bool] | None = None,
    denoise_mask: torch.Tensor | None = None,
    mask_latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``schedule`` and return the final latents.

    ``denoiser(x, t, scale=...)`` is the guided network (``guidance.CFGDenoiser``); what its prediction
    means (epsilon, v, flow velocity) comes from the schedule's config (``model_sampling``). With ``add_noise`` (default),
    ``latents_or_noise`` is standard-normal noise (``make_noise``): txt2img scales it by the scheduler's
    ``init_noise_sigma``; with ``init_latents`` (img2img) or a denoise < 1 schedule it is added to
    ``init_latents`` (zeros if absent) at the schedule's first timestep. With ``add_noise=False`` it is the
    starting latent as is (e.g. continuing from a split schedule). Everything stays on that tensor's device.
    Runs without autograd, as the pipelines do.

    ``denoise_mask`` (broadcastable to the latents, 1 = denoise) keeps the rest at ``mask_latents`` (the input
    latent, before noise): a k-diffusion rule sees the kept part as that latent noised to each step's sigma
    and its denoised estimate there as the latent itself (ComfyUI's KSamplerX0Inpaint); a diffusers scheduler
    gets the kept part replaced by the latent noised to the next timestep after each step (diffusers'
    inpainting pipeline). Where the mask is 0 the result is ``mask_latents`` exactly.
    """
    if not add_noise and init_latents is not None:
        raise ValueError("init_latents needs add_noise=True (with add_noise=False the input is used as is)")
    if init_latents is not None and init_latents.shape != latents_or_noise.shape:
        raise ValueError(
            f"init_latents {tuple(init_latents.shape)} and noise {tuple(latents_or_noise.shape)} differ in shape"
        )
    if schedule.stochastic and generator is None:
        raise ValueError(f"schedule {schedule.name!r} draws noise while sampling; pass a torch.Generator")
    hooks = _Hooks(schedule.steps, callback, should_stop)
    masked = None
    if denoise_mask is not None:
        if mask_latents is None or mask_latents.shape != latents_or_noise.shape:
            raise ValueError("denoise_mask needs mask_latents of the latents' shape")
        noise = latents_or_noise if add_noise else torch.zeros_like(latents_or_noise)
        masked = (denoise_mask.to(latents_or_noise), mask_latents.to(latents_or_noise), noise)
    run = _run_diffusers if schedule.runner == "diffusers" else _run_kdiffusion
    out = run(denoiser, latents_or_noise, schedule, generator, add_noise, init_latents, hooks, masked)
    if masked is not None:
        out = torch.where(masked[0] == 0, masked[1], out)
    return out


class _Hooks:
    def __init__(self, total: int, callback: Callback | None, should_stop: Callable[[], bool] | None):
        self.total = total
        self.callback = callback
        self.should_stop = should_stop
        self.latents: torch.Tensor | None = None

    def begin(self, i: int) -> None:
        if self.should_stop is not None and self.should_stop():
            raise SamplingInterrupted(i, self.total, self.latents)

    def end(self, i: int, x: torch.Tensor, denoised: torch.Tensor | None) -> None:
        self.latents = x
        if self.callback is not None:
            self.callback(i, self.total, x, denoised)


def _run_diffusers(denoiser, noise, schedule, generator, add_noise, init_latents, hooks: _Hooks, masked=None):
    if isinstance(generator, list):  # one generator per batch item, as the pipelines accept
        seed = [g.initial_seed() for g in generator]
    else:
        seed = generator.initial_seed() if generator is not None else None
    sched = schedule.make_scheduler(noise.device, seed=seed)
    ms = model_sampling(schedule.config)
    begin = schedule.begin_index
    timesteps = sched.timesteps[begin:]
    partial = init_latents is not None or begin > 0
    if partial and hasattr(sched, "set_begin_index"):
        sched.set_begin_index(begin)  # as StableDiffusionImg2ImgPipeline.get_timesteps
    flow = isinstance(ms, Flow)
    if not add_noise:
        latents = noise
    elif not partial:
        latents = noise if flow else noise * sched.init_noise_sigma
    else:
        base = init_latents if init_latents is not None else torch.zeros_like(noise)
        if flow:  # as the SD3 / Flux img2img pipelines
            latents = sched.scale_noise(base, timesteps[:1].repeat(noise.shape[0]), noise)
        else:
            latents = sched.add_noise(base, noise, timesteps[:1].repeat(noise.shape[0]))
    hooks.latents = latents

    params = inspect.signature(sched.step).parameters
    step_kwargs = {}
    if "eta" in params:
        step_kwargs["eta"] = 0.0 if schedule.eta is None else schedule.eta  # the pipeline's default
    if "generator" in params:
        step_kwargs["generator"] = generator

    order = int(getattr(sched, "order", 1))
    n_calls = len(timesteps)
    warmup = n_calls - schedule.steps * order
    # previews from the prediction where the scheduler returns no x0 estimate (multistep solvers, PNDM);
    # the model sampling works in k-diffusion's sigma space, which some schedulers' latents are not in
    sigma_space = flow or bool(torch.as_tensor(sched.init_noise_sigma) != 1)
    scale = getattr(sched, "scale_model_input", None)
    step_sigmas = schedule.sigmas.to(noise.device)

    step, step_start, preview = 0, True, None
    for i, t in enumerate(timesteps):
        if step_start:
            hooks.begin(step)
        x_in = latents
        eps = denoiser(latents, t, scale=scale)
        out = sched.step(eps, t, latents, **step_kwargs, return_dict=True)
        latents = out.prev_sample
        if masked is not None:
            latents = _keep_unmasked(sched, flow, latents, masked, timesteps[i + 1:i + 2])
        if hooks.callback is not None and step_start and step < len(step_sigmas):
            s = step_sigmas[step]
            preview = ms.denoised(x_in if sigma_space else x_in * (s * s + 1) ** 0.5, s, eps)
        # the pipeline's progress rule: a step completes every `order` calls after the warm-up calls
        step_start = i == n_calls - 1 or ((i + 1) > warmup and (i + 1) % order == 0)
        if step_start:
            x0 = getattr(out, "pred_original_sample", None)
            if x0 is None:
                x0 = getattr(out, "denoised", None)
            hooks.end(step, latents, x0 if x0 is not None else preview)
            step += 1
    return latents


def _keep_unmasked(sched, flow: bool, latents, masked, next_t):
    """The kept part replaced by the input latent noised to the next timestep (the latent itself after the
    last step), as diffusers' inpainting pipeline does."""
    mask, base, noise = masked
    if len(next_t):
        t = next_t.repeat(noise.shape[0])
        base = sched.scale_noise(base, t, noise) if flow else sched.add_noise(base, noise, t)
    return (1 - mask) * base + mask * latents


class _MaskedDenoiser:
    """ComfyUI's KSamplerX0Inpaint over a sigma denoiser: outside the mask the model sees the input latent
    noised to the step's sigma, and its estimate there is the latent itself."""

    def __init__(self, model, sigmas, ms, masked):
        self.model, self.sigmas, self.ms = model, sigmas, ms
        self.mask, self.latent, self.noise = masked
        self.keep = 1.0 - self.mask

    def __call__(self, x, j):
        x = x * self.mask + self.ms.noise_scaling(self.sigmas[j], self.noise, self.latent) * self.keep
        return self.model(x, j) * self.mask + self.latent * self.keep


def _run_kdiffusion(denoiser, noise, schedule, generator, add_noise, init_latents, hooks: _Hooks, masked=None):
    device = noise.device
    sigmas = schedule.sigmas.to(device)
    ms = model_sampling(schedule.config)
    x = ms.noise_scaling(sigmas[0], noise, init_latents) if add_noise else noise
    hooks.latents = x
    model = kdiffusion.SigmaDenoiser(denoiser, sigmas, ms)
    if masked is not None:
        model = _MaskedDenoiser(model, sigmas, ms, masked)
    rule = kdiffusion.RULES[schedule.rule]
    takes_eta = "eta" in inspect.signature(rule).parameters
    kwargs = {"eta": schedule.eta} if takes_eta and schedule.eta is not None else {}
    return rule(model, x, sigmas, generator=generator, hooks=hooks, **kwargs)
