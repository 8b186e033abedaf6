"""Scheduler and Sampler: diffusers' "swap the scheduler" guide as two nodes.

``Scheduler`` builds a schedule the guide's way, ``Class.from_config(model.scheduler_config, **overrides)``,
and hands it on as SCHEDULE (plus its SIGMAS and TIMESTEPS for inspection or editing). ``Sampler`` runs any
schedule -- or a SIGMAS tensor with a step rule -- over the model with classifier-free guidance, with the
noise, batching and order of operations of ``StableDiffusionPipeline`` (txt2img) and
``StableDiffusionImg2ImgPipeline`` (denoise < 1 over encoded latents), so that for the same model, seed and
settings its image equals the pipeline's.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from graph_runtime import Interrupted, Link, Node, NodeError, NodeInputs, Output, Widget
from schedulers import registry

from .guidance import check_conditioning
from .preview import latent_preview_jpeg
from .types import ModelBundle, match_lengths

if TYPE_CHECKING:  # torch, diffusers and the sampling loop load when a node runs, not when it is declared
    import torch

    from schedulers.schedule import Schedule

SCHEDULE, SIGMAS, TIMESTEPS = "SCHEDULE", "SIGMAS", "TIMESTEPS"
SEED_MAX = 2**64 - 1
SIGMA_SPACINGS = ("default", "karras", "exponential", "beta")
TIMESTEP_SPACINGS = ("default", "leading", "linspace", "trailing")
#: at most one preview per this many seconds (each costs a device -> host copy and a JPEG encode)
PREVIEW_INTERVAL_S = 0.05


sigma_samplers = registry.sigma_runners  # the Sampler's and SchedulerFromSigmas' choices


# --------------------------------------------------------------------------------------------- helpers


def _check_model(model: Any, what: str = "model") -> ModelBundle:
    if not isinstance(model, ModelBundle):
        raise NodeError(f"{what}: expected a MODEL (from LoadModel), got {type(model).__name__}")
    return model


def parse_overrides(text: str, cls: type, what: str = "config_overrides") -> dict[str, Any]:
    """A JSON object of scheduler config keys; every key must be a parameter of ``cls``."""
    text = (text or "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NodeError(f"{what}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(value, dict):
        raise NodeError(f"{what}: expected a JSON object such as {{\"solver_order\": 3}}, "
                        f"got {type(value).__name__}")
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]
    for key in value:
        if key not in params:
            raise NodeError(f"{what}: {cls.__name__} has no config key {key!r}; its keys: {', '.join(params)}")
    return value


def make_schedule(model: ModelBundle, scheduler: str, steps: int, denoise: float = 1.0,
                  sigma_spacing: str = "default", timestep_spacing: str = "default",
                  config_overrides: str = "", eta: float | None = None,
                  latent_shape: tuple[int, ...] | None = None) -> Schedule:
    """The Scheduler node's work as a function (used by CompareSchedulers and the benchmarks too).
    ``latent_shape`` sizes a resolution-dependent shift (Flux) for those latents, as the pipeline does."""
    from schedulers.model_sampling import dynamic_mu
    from schedulers.schedule import build_schedule

    try:
        entry = registry.get(scheduler)
        cls = entry.cls
    except ValueError as exc:
        raise NodeError(f"scheduler: {exc}") from None
    except registry.MissingDependencyError as exc:
        raise NodeError(f"scheduler: {exc}") from None
    if sigma_spacing != "default" and sigma_spacing not in entry.sigma_spacings:
        have = [n for n, e in registry.REGISTRY.items() if _has_spacing(e, sigma_spacing)]
        raise NodeError(f"sigma_spacing: scheduler {scheduler!r} ({entry.class_name}) has no {sigma_spacing} "
                        f"spacing; schedulers that have it: {', '.join(have)}. Or build SIGMAS with a sigma "
                        "node and feed the Sampler's sigmas input.")
    if timestep_spacing != "default" and not entry.supports_timestep_spacing:
        raise NodeError(f"timestep_spacing: scheduler {scheduler!r} ({entry.class_name}) has no "
                        "timestep_spacing setting; leave it at default")
    overrides = parse_overrides(config_overrides, cls)
    if not 0.0 < denoise <= 1.0:
        raise NodeError(f"denoise: must be above 0 and at most 1, got {denoise}")
    config = model.scheduler_config
    if latent_shape is not None:
        mu = dynamic_mu(config, model.family.latent.image_seq_len(latent_shape))
        if mu is not None:
            config = {**config, "mu": mu}
    try:
        return build_schedule(
            scheduler, config, steps, denoise=denoise, sigma_spacing=sigma_spacing,
            timestep_spacing=None if timestep_spacing == "default" else timestep_spacing,
            overrides=overrides, eta=eta, device=model.device, pipeline_sigmas=model.family.pipeline_sigmas(steps),
            sigmas_for_flow_solvers=model.family.sigmas_for_flow_solvers)
    except (ValueError, TypeError, NotImplementedError) as exc:
        where = "denoise" if "denoise" in str(exc) else "config_overrides" if overrides else "scheduler"
        raise NodeError(f"{where}: {scheduler} with these settings fails: {exc}") from None


def _has_spacing(entry: registry.SchedulerEntry, spacing: str) -> bool:
    try:
        return spacing in entry.sigma_spacings
    except registry.MissingDependencyError:
        return False


def check_sigmas(value: Any, what: str = "sigmas", *, require_zero_end: bool = True) -> torch.Tensor:
    """``schedulers.sigmas.validate`` with the error naming the node input."""
    from schedulers import sigmas as sigmas_mod

    try:
        return sigmas_mod.validate(value, name=what, require_zero_end=require_zero_end)
    except ValueError as exc:
        raise NodeError(f"{what}: {exc}") from None


def schedule_for_sigmas(model: ModelBundle, sigmas: Any, sampler: str, what: str = "sigmas") -> Schedule:
    """A schedule that runs exactly ``sigmas`` (a split's high part may end above 0) with ``sampler``."""
    from schedulers.schedule import schedule_from_sigmas

    s = check_sigmas(sigmas, what, require_zero_end=False)
    try:
        return schedule_from_sigmas(s, sampler, model.scheduler_config, device=model.device)
    except ValueError as exc:
        raise NodeError(f"sampler: {exc}") from None


@dataclass
class SampleResult:
    samples: torch.Tensor
    denoised: torch.Tensor | None
    seconds: float


def _to(inputs: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if isinstance(inputs, dict):
        return {k: _to(v, device, dtype) for k, v in inputs.items()}
    return inputs.to(device=device, dtype=dtype) if inputs.is_floating_point() else inputs.to(device)


def guidance_inputs(model: ModelBundle, positive: Any, negative: Any, shape: tuple[int, ...],
                    do_cfg: bool) -> tuple[dict, dict | None]:
    """The network's keyword inputs for the positive and (with guidance) negative conditioning: the
    family's (text states, pooled embeddings, size ids, ...), batched and on the model's device and dtype."""
    pos = check_conditioning(positive, "positive")
    family = model.family
    neg = None
    if do_cfg:
        neg = check_conditioning(negative, "negative")
        if family.matched_lengths:
            a, b = match_lengths(pos.embeds, neg.embeds)
            pos, neg = replace(pos, embeds=a), replace(neg, embeds=b)
        neg = _to(family.network_inputs(model, neg, shape, "negative"), model.device, model.dtype)
    return _to(family.network_inputs(model, pos, shape, "positive"), model.device, model.dtype), neg


def latent_samples(latent: Any, model: ModelBundle, what: str = "latent") -> torch.Tensor:
    import torch

    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise NodeError(f"{what}: expected a LATENT ({{'samples': tensor}})")
    s = latent["samples"]
    if s.ndim != 4 or s.shape[1] != model.latent_channels:
        raise NodeError(f"{what}: expected latents [batch, {model.latent_channels}, h, w] for this model, "
                        f"got shape {list(s.shape)}")
    return s


def sampling_work(schedule: Schedule, shape: tuple[int, ...], do_cfg: bool, pixels: int | None = None) -> int:
    """Network evaluations x latent pixels x batch (twice with CFG): what a run costs, known before it starts.
    ``pixels``: the latent pixels one evaluation covers over all conditioning entries and ControlNets (by
    default the latent once per side)."""
    if schedule.runner == "diffusers":
        calls = len(schedule.timesteps)
    else:
        from schedulers.kdiffusion import model_calls

        calls = model_calls(schedule.rule, schedule.steps)
    if pixels is None:
        pixels = shape[2] * shape[3] * (2 if do_cfg else 1)
    return calls * shape[0] * pixels


def admit(model: ModelBundle, schedule: Schedule, shape: tuple[int, ...], do_cfg: bool,
          pixels: int | None = None) -> None:
    """Refuse a run that costs more than the device kind's limit (graph_runtime.limits), before any work."""
    from graph_runtime.limits import LIMITS

    cpu = model.device.type == "cpu"
    limit = LIMITS.max_sampling_work_cpu if cpu else LIMITS.max_sampling_work_gpu
    work = sampling_work(schedule, shape, do_cfg, pixels)
    if work > limit:
        name = "max_sampling_work_cpu" if cpu else "max_sampling_work_gpu"
        raise NodeError(
            f"steps / latent: {schedule.steps} steps over a latent batch of {shape[0]} x {shape[2]}x{shape[3]}"
            f"{' with guidance' if do_cfg else ''} is {work:,} network evaluations x latent pixels, more than "
            f"the limit of {limit:,} on {'the CPU' if cpu else 'this device'} ({name}); use fewer steps or a "
            "smaller image, or raise GRAPH_RUNTIME_LIMIT_" + name.upper())


def entry_pixels(entries: list, shape: tuple[int, ...]) -> int:
    """Latent pixels the network (and each entry's ControlNets) evaluates per step over ``entries``."""
    total = 0
    for e in entries:
        area = e.clipped_area(shape[2], shape[3])
        px = shape[2] * shape[3] if area is None else max(0, area[0]) * max(0, area[1])
        total += px * (1 + (e.control.networks if e.control is not None else 0))
    return total


def run_sampler(ctx: Any, model: ModelBundle, positive: Any, negative: Any, latent: Any, schedule: Schedule,
                seed: int, cfg: float, add_noise: bool = True, *, init_from_latent: bool | None = None,
                progress: Callable[[int, int], None] | None = None, previews: bool = True,
                guide: Callable[[tuple[int, ...]], Any] | None = None) -> SampleResult:
    """Sample ``schedule`` from ``latent`` and return the final latents (on the model's device).

    With ``add_noise``: an all-zero latent (EmptyLatent) starts from the seed's noise as the txt2img pipeline
    does; any other latent is the img2img starting point, noised to the schedule's first step. Without it,
    the latent is used as it is (continuing a split schedule). ``init_from_latent`` forces the choice.
    Previews are off when the prompt asks for none (``extra_data["preview_method"] == "none"``, as the editor's
    "Live preview method" setting sends it). ``guide(latent_shape)``, when given, builds the guided network
    instead of classifier-free guidance over ``positive`` / ``negative`` (e.g. a DualCFGGuider's).
    """
    import torch

    from schedulers.guidance import CFGDenoiser
    from schedulers.sampling import SamplingInterrupted, make_noise, sample

    model = _check_model(model)
    previews = previews and (getattr(ctx, "extra_data", None) or {}).get("preview_method") != "none"
    samples = latent_samples(latent, model)
    do_cfg = cfg > 1.0
    if do_cfg and negative is None and guide is None:
        raise NodeError(f"negative: cfg {cfg} > 1 needs a negative conditioning (encode an empty prompt, as "
                        "diffusers does, or set cfg to 1 to skip the unconditional pass)")
    device, dtype = model.device, model.dtype
    shape = tuple(samples.shape)
    from .guidance import guidance_entries, plain
    from .inpainting import noise_mask_of

    mask = noise_mask_of(latent, shape, device)
    if guide is not None:  # a guider of its own (custom sampling): it builds the guided network
        admit(model, schedule, shape, do_cfg)
        denoiser = guide(shape)
    else:
        positive = check_conditioning(positive, "positive")
        negative = check_conditioning(negative, "negative") if do_cfg else None
        empty = None
        if plain(model, positive, negative):
            admit(model, schedule, shape, do_cfg)
            pos, neg = guidance_inputs(model, positive, negative, shape, do_cfg)
        else:
            pos, neg = guidance_entries(model, positive, negative, samples, do_cfg,
                                        latent.get("noise_mask") if mask is not None else None)
            admit(model, schedule, shape, do_cfg, entry_pixels(pos + (neg or []), shape))
            if schedule.runner != "diffusers":  # ComfyUI's rule for pixels no entry covers: a denoised estimate of 0
                from schedulers.model_sampling import model_sampling

                ms = model_sampling(schedule.config)

                def empty(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                    return ms.zero_estimate(x, ms.sigma(t))
        denoiser = CFGDenoiser(model.family.network(model), pos, neg, cfg, empty=empty,
                               combine=model.family.guide)

    x = samples.to(device=device, dtype=dtype)
    if not add_noise:
        start, init = x, None
        generator = torch.Generator("cpu").manual_seed(seed)
    else:
        start, generator = make_noise(tuple(x.shape), seed, device=device, dtype=dtype, generator_device="cpu")
        use_init = bool(x.any()) if init_from_latent is None else init_from_latent  # one host read per run
        init = x if use_init else None

    state: dict[str, Any] = {"denoised": None, "last_preview": 0.0}

    def callback(i: int, n: int, xt: torch.Tensor, denoised: torch.Tensor | None) -> None:
        state["denoised"] = denoised
        if progress is not None:
            progress(i + 1, n)
        else:
            ctx.progress(i + 1, n)
        if previews and denoised is not None:
            now = time.perf_counter()
            if now - state["last_preview"] >= PREVIEW_INTERVAL_S or i + 1 == n:
                state["last_preview"] = now
                ctx.preview(latent_preview_jpeg(denoised, model.family.latent), "JPEG")

    from .interruption import interruptible
    from .lora import model_applied

    t0 = time.perf_counter()
    try:
        # as no_grad in the pipeline, minus autograd's version counting; stoppable inside each network call;
        # exactly this MODEL's LoRAs switched on in the shared network
        with torch.inference_mode(), interruptible(model.network, ctx.check_interrupted), model_applied(model):
            out = sample(denoiser, start, schedule, generator, add_noise=add_noise, init_latents=init,
                         callback=callback, should_stop=lambda: ctx.interrupted,
                         denoise_mask=mask, mask_latents=x if mask is not None else None)
    except SamplingInterrupted:
        raise Interrupted() from None
    except ValueError as exc:
        raise NodeError(f"sampling failed: {exc}") from None
    if not bool(torch.isfinite(out).all()):  # one host read per run, after the loop
        raise NodeError(f"sampling with {schedule.name!r} ({schedule.steps} steps) produced NaN or infinite "
                        "values: this scheduler setting is unstable for this model; try more steps or "
                        "another scheduler")
    return SampleResult(out, state["denoised"], time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------- nodes


class Scheduler(Node):
    """Pick a diffusers scheduler by name and build its schedule from the model's scheduler config.

    This is diffusers' scheduler swap (``Class.from_config(model.scheduler_config)``): the model's beta schedule,
    prediction type and timestep spacing carry over; sigma_spacing, timestep_spacing and config_overrides
    (a JSON object of config keys) change it. denoise < 1 keeps the tail of the schedule for img2img.
    A latent sizes the shift of a model whose shift follows the image size (Flux), as its pipeline does;
    without one such a model runs at its own fixed shift (ModelSamplingFlux, else its max_shift).
    """

    CATEGORY = "sampling"
    DISPLAY_NAME = "Scheduler"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        scheduler: str = Widget("dpmpp_2m", choices=registry.names)
        steps: int = Widget(20, ge=1, le=10000)
        denoise: float = Widget(1.0, ge=0.0, le=1.0, step=0.01,
                                tooltip="img2img strength: the share of the schedule that runs")
        sigma_spacing: Literal[SIGMA_SPACINGS] = Widget("default", optional=True)  # type: ignore[valid-type]
        timestep_spacing: Literal[TIMESTEP_SPACINGS] = Widget("default", optional=True)  # type: ignore[valid-type]
        config_overrides: str = Widget("", optional=True, multiline=True,
                                       tooltip='scheduler config keys as JSON, e.g. {"solver_order": 3}')
        latent: Any = Link("LATENT", optional=True,
                           tooltip="the latents to size a resolution-dependent shift for (Flux)")

    OUTPUTS = (
        Output(SCHEDULE, "SCHEDULE", "the whole run, for the Sampler"),
        Output(SIGMAS, "SIGMAS", "noise level at the start of each step, then 0"),
        Output(TIMESTEPS, "TIMESTEPS", "model timesteps in call order"),
    )

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        model = _check_model(inputs.model)
        shape = None if inputs.latent is None else tuple(latent_samples(inputs.latent, model).shape)
        sch = make_schedule(model, inputs.scheduler, inputs.steps, inputs.denoise,
                            inputs.sigma_spacing, inputs.timestep_spacing, inputs.config_overrides,
                            latent_shape=shape)
        return (sch, sch.sigmas, sch.timesteps)


class SchedulerFromSigmas(Node):
    """A schedule that runs exactly the given SIGMAS with a k-diffusion rule or a diffusers scheduler that
    accepts custom sigmas (Euler)."""

    CATEGORY = "sampling/sigmas"
    DISPLAY_NAME = "Scheduler From Sigmas"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        sigmas: Any = Link(SIGMAS)
        sampler: str = Widget("euler", choices=sigma_samplers)

    OUTPUTS = (Output(SCHEDULE, "SCHEDULE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        model = _check_model(inputs.model)
        return (schedule_for_sigmas(model, inputs.sigmas, inputs.sampler),)


class Sampler(Node):
    """Denoise a latent with a SCHEDULE (from Scheduler) or a SIGMAS tensor plus a step rule, with
    classifier-free guidance; the same result as diffusers' Stable Diffusion pipelines for the same settings.

    An empty latent starts from the seed's noise (txt2img); a latent from VAEEncode is noised to the schedule's
    first step (img2img, with the Scheduler's denoise). add_noise off continues from the latent as is.
    """

    CATEGORY = "sampling"
    DISPLAY_NAME = "Sampler"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        positive: Any = Link("CONDITIONING")
        negative: Any = Link("CONDITIONING", optional=True,
                             tooltip="needed when cfg > 1 (encode an empty prompt for plain guidance)")
        latent: Any = Link("LATENT")
        schedule: Any = Link(SCHEDULE, optional=True)
        sigmas: Any = Link(SIGMAS, optional=True, tooltip="instead of schedule: run these with 'sampler'")
        sampler: str = Widget("euler", choices=sigma_samplers, optional=True,
                              tooltip="the step rule for a sigmas input; a connected schedule brings its own "
                                      "scheduler, and this choice is then not used")
        seed: int = Widget(0, ge=0, le=SEED_MAX, control_after_generate=True)
        cfg: float = Widget(7.5, ge=0.0, le=100.0, step=0.1, round=0.01)
        add_noise: bool = Widget(True, optional=True)

    OUTPUTS = (Output("LATENT", "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        model = _check_model(inputs.model)
        if (inputs.schedule is None) == (inputs.sigmas is None):
            raise NodeError("schedule / sigmas: connect exactly one of them (a SCHEDULE from Scheduler, or "
                            "SIGMAS plus the sampler choice)")
        if inputs.schedule is not None:
            from schedulers.schedule import Schedule

            if not isinstance(inputs.schedule, Schedule):
                raise NodeError(f"schedule: expected a SCHEDULE, got {type(inputs.schedule).__name__}")
            schedule = inputs.schedule
            if inputs.sampler != type(inputs).model_fields["sampler"].default and inputs.sampler != schedule.name:
                ctx.warn(f"sampler: {inputs.sampler} is not used: the connected schedule runs "
                         f"{schedule.name} (the sampler choice applies to a sigmas input)")
        else:
            schedule = schedule_for_sigmas(model, inputs.sigmas, inputs.sampler)
        res = run_sampler(ctx, model, inputs.positive, inputs.negative, inputs.latent, schedule,
                          inputs.seed, inputs.cfg, inputs.add_noise)
        return ({**inputs.latent, "samples": res.samples},)
