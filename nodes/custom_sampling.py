"""ComfyUI's custom-sampling node set: a run split into its parts, each a value that flows between nodes.

* ``SAMPLER`` (KSamplerSelect): the step rule, a :class:`SamplerChoice`.
* ``SIGMAS`` (BasicScheduler and the sigma nodes): the noise levels.
* ``NOISE`` (RandomNoise, DisableNoise): a :class:`NoiseSource`, the seed of the starting noise or none.
* ``GUIDER`` (BasicGuider, CFGGuider, DualCFGGuider): a :class:`Guider`, the model with its conditioning and
  how the predictions combine.

SamplerCustom (model + cfg + conditioning) and SamplerCustomAdvanced (noise + guider) put them together through
the one sampling path, :func:`nodes.sampling.run_sampler`, so SamplerCustomAdvanced with CFGGuider and
RandomNoise gives the image SamplerCustom and KSampler give for the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from graph_runtime import Link, Node, NodeError, NodeInputs, Output, Widget
from schedulers import comfy_names

from .guidance import check_conditioning
from .sampling import (
    SEED_MAX,
    SIGMAS,
    _check_model,
    _to,
    check_sigmas,
    guidance_inputs,
    run_sampler,
    schedule_for_sigmas,
)
from .types import ModelBundle, match_lengths

if TYPE_CHECKING:  # torch loads when a node runs, not when it is declared
    import torch

SAMPLER, NOISE, GUIDER = "SAMPLER", "NOISE", "GUIDER"


@dataclass(frozen=True)
class SamplerChoice:
    """The SAMPLER value of KSamplerSelect: a ComfyUI sampler name and what runs it over SIGMAS."""

    comfy_name: str
    runs_as: str  # the step rule (schedulers.kdiffusion.RULES)


@dataclass(frozen=True)
class NoiseSource:
    """The NOISE value: the starting noise of a run, from ``seed`` (ComfyUI's: a CPU generator seeded with it,
    one standard-normal draw of the latent's shape), or none (``enabled`` false: the latent is used as is)."""

    seed: int
    enabled: bool = True

    def generate(self, samples: torch.Tensor) -> torch.Tensor:
        """The noise for a latent batch ``samples`` (zeros when disabled), float32 on the CPU."""
        import torch

        if not self.enabled:
            return torch.zeros(samples.shape, dtype=torch.float32)
        generator = torch.Generator("cpu").manual_seed(self.seed)
        return torch.randn(tuple(samples.shape), generator=generator, dtype=torch.float32)


@dataclass(frozen=True, eq=False)
class Guider:
    """The GUIDER value: a model, its conditioning and the guidance that combines the predictions.

    ``kind`` 'basic' (the positive prediction alone), 'cfg' (classifier-free guidance with ``cfg``) or 'dual'
    (DualCFGGuider: ``positive`` = cond1, ``middle`` = cond2, ``cfg`` = cfg_conds, ``cfg2`` =
    cfg_cond2_negative, ``style`` regular or nested).
    """

    model: ModelBundle
    kind: Literal["basic", "cfg", "dual"]
    positive: Any
    negative: Any = None
    cfg: float = 1.0
    middle: Any = None
    cfg2: float = 1.0
    style: str = "regular"

    def guide(self) -> Any:
        """What ``run_sampler(guide=...)`` takes: None for basic / cfg guidance (run_sampler's own), else a
        builder of the dual-prompt network for a latent shape."""
        if self.kind != "dual":
            return None
        return lambda shape: _dual_denoiser(self, shape)


def _dual_denoiser(g: Guider, shape: tuple[int, ...]) -> Any:
    from schedulers.dual_cfg import DualCFGDenoiser

    model = g.model
    conds = {"positive": check_conditioning(g.positive, "cond1"), "middle": check_conditioning(g.middle, "cond2"),
             "negative": check_conditioning(g.negative, "negative")}
    embeds = [c.embeds for c in conds.values()]
    for _ in range(2):  # every length up to the common multiple of all three
        embeds[0], embeds[1] = match_lengths(embeds[0], embeds[1])
        embeds[1], embeds[2] = match_lengths(embeds[1], embeds[2])
    from dataclasses import replace

    inputs = {}
    for (role, cond), e in zip(conds.items(), embeds, strict=True):
        what = {"positive": "cond1", "middle": "cond2", "negative": "negative"}[role]
        raw = model.family.network_inputs(model, replace(cond, embeds=e), shape, what)
        inputs[role] = _to(raw, model.device, model.dtype)
    return DualCFGDenoiser(model.family.network(model), inputs["positive"], inputs["middle"], inputs["negative"],
                           g.cfg, g.cfg2, g.style)


def uncond_guide(rule: str | None, model: ModelBundle, positive: Any, negative: Any, cfg: float,
                 what: str = "negative") -> Any:
    """For a CFG++ rule, the ``run_sampler(guide=...)`` builder of a guided network that keeps the
    unconditional prediction; None for any other rule."""
    from schedulers.kdiffusion import UNCOND_RULES

    if rule not in UNCOND_RULES:
        return None
    if negative is None:
        raise NodeError(f"{what}: the CFG++ sampler {rule!r} needs a negative conditioning (its unconditional "
                        "prediction); use CFGGuider, SamplerCustom or KSampler with one")

    def build(shape: tuple[int, ...]) -> Any:
        from schedulers.cfg_pp import UncondCFG

        pos, neg = guidance_inputs(model, positive, negative, shape, True)
        return UncondCFG(model.family.network(model), pos, neg, cfg)

    return build


def sigma_runner(sampler_name: str) -> str:
    """The step rule that runs ComfyUI sampler ``sampler_name`` over given SIGMAS; NodeError if none does."""
    try:
        return comfy_names.resolve(sampler_name, "normal").name
    except ValueError as exc:
        raise NodeError(f"sampler_name: {exc}") from None


def sample_custom(ctx: Any, model: Any, sampler: Any, sigmas: Any, latent: Any, *, seed: int, add_noise: bool,
                  positive: Any, negative: Any, cfg: float, guide: Any = None) -> tuple[dict, dict]:
    """SamplerCustom's and SamplerCustomAdvanced's run: ``(output, denoised_output)`` latents."""
    import torch

    model = _check_model(model)
    if not isinstance(sampler, SamplerChoice):
        raise NodeError(f"sampler: expected a SAMPLER (from KSamplerSelect), got {type(sampler).__name__}")
    if isinstance(sigmas, torch.Tensor) and sigmas.ndim == 1 and sigmas.numel() <= 1:
        return latent, latent  # nothing to sample (ComfyUI returns the input)
    check_sigmas(sigmas, "sigmas", require_zero_end=False)
    schedule = schedule_for_sigmas(model, sigmas, sampler.runs_as)
    if guide is None:
        guide = uncond_guide(schedule.rule, model, positive, negative, cfg)
    res = run_sampler(ctx, model, positive, negative, latent, schedule, seed, cfg, add_noise,
                      init_from_latent=True if add_noise else None, guide=guide)
    denoised = res.denoised if res.denoised is not None else res.samples
    return {**latent, "samples": res.samples}, {**latent, "samples": denoised}


# ----------------------------------------------------------------------------------------------- nodes


class KSamplerSelect(Node):
    """Choose a sampler (step rule) for SamplerCustom / SamplerCustomAdvanced."""

    CATEGORY = "sampling/custom_sampling/samplers"
    DISPLAY_NAME = "KSamplerSelect"

    class Inputs(NodeInputs):
        sampler_name: Literal[comfy_names.COMFY_SAMPLERS] = Widget("euler")  # type: ignore[valid-type]

    OUTPUTS = (Output(SAMPLER, "SAMPLER"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (SamplerChoice(inputs.sampler_name, sigma_runner(inputs.sampler_name)),)


class BasicScheduler(Node):
    """SIGMAS for a ComfyUI scheduler name (normal, karras, exponential, ...) over the model's noise levels.
    denoise < 1 keeps the last steps of a longer schedule."""

    CATEGORY = "sampling/custom_sampling/schedulers"
    DISPLAY_NAME = "BasicScheduler"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        scheduler: Literal[comfy_names.COMFY_SCHEDULERS] = Widget("normal")  # type: ignore[valid-type]
        steps: int = Widget(20, ge=1, le=10000)
        denoise: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    OUTPUTS = (Output(SIGMAS, "SIGMAS"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        model = _check_model(inputs.model)
        if inputs.denoise <= 0.0:
            return (torch.zeros(0),)
        return (comfy_names.denoised_sigmas(inputs.scheduler, inputs.steps, inputs.denoise,
                                            model.scheduler_config)[0],)


class KarrasScheduler(Node):
    """Karras et al. (2022) SIGMAS between sigma_max and sigma_min (no model needed)."""

    CATEGORY = "sampling/custom_sampling/schedulers"
    DISPLAY_NAME = "KarrasScheduler"

    class Inputs(NodeInputs):
        steps: int = Widget(20, ge=1, le=10000)
        sigma_max: float = Widget(14.614642, ge=0.0, le=5000.0, step=0.01, round=False)
        sigma_min: float = Widget(0.0291675, ge=0.0, le=5000.0, step=0.01, round=False)
        rho: float = Widget(7.0, ge=0.0, le=100.0, step=0.01, round=False)

    OUTPUTS = (Output(SIGMAS, "SIGMAS"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from schedulers import sigmas as sigmas_mod

        if not 0 < inputs.sigma_min < inputs.sigma_max:
            raise NodeError(f"sigma_min: need 0 < sigma_min < sigma_max, got {inputs.sigma_min} and "
                            f"{inputs.sigma_max}")
        if inputs.rho <= 0:
            raise NodeError("rho: must be above 0")
        return (sigmas_mod.karras(inputs.steps, inputs.sigma_min, inputs.sigma_max, inputs.rho),)


class SamplerCustom(Node):
    """Sample a latent over given SIGMAS with a chosen sampler (ComfyUI's SamplerCustom). Outputs the result
    and the model's last denoised estimate."""

    CATEGORY = "sampling/custom_sampling"
    DISPLAY_NAME = "SamplerCustom"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        add_noise: bool = Widget(True)
        noise_seed: int = Widget(0, ge=0, le=SEED_MAX, control_after_generate=True)
        cfg: float = Widget(8.0, ge=0.0, le=100.0, step=0.1, round=0.01)
        positive: Any = Link("CONDITIONING")
        negative: Any = Link("CONDITIONING")
        sampler: Any = Link(SAMPLER)
        sigmas: Any = Link(SIGMAS)
        latent_image: Any = Link("LATENT")

    OUTPUTS = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return sample_custom(ctx, inputs.model, inputs.sampler, inputs.sigmas, inputs.latent_image,
                             seed=inputs.noise_seed, add_noise=inputs.add_noise, positive=inputs.positive,
                             negative=inputs.negative, cfg=inputs.cfg)


class RandomNoise(Node):
    """Starting noise from a seed, the same noise KSampler and SamplerCustom draw for that seed."""

    CATEGORY = "sampling/custom_sampling/noise"
    DISPLAY_NAME = "RandomNoise"

    class Inputs(NodeInputs):
        noise_seed: int = Widget(0, ge=0, le=SEED_MAX, control_after_generate=True)

    OUTPUTS = (Output(NOISE, "NOISE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (NoiseSource(inputs.noise_seed),)


class DisableNoise(Node):
    """No starting noise: the sampler continues from the latent as it is (e.g. the low part of a split)."""

    CATEGORY = "sampling/custom_sampling/noise"
    DISPLAY_NAME = "DisableNoise"

    class Inputs(NodeInputs):
        pass

    OUTPUTS = (Output(NOISE, "NOISE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (NoiseSource(0, enabled=False),)


class BasicGuider(Node):
    """Guide with one conditioning and no classifier-free guidance (distilled models such as Flux)."""

    CATEGORY = "sampling/custom_sampling/guiders"
    DISPLAY_NAME = "BasicGuider"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        conditioning: Any = Link("CONDITIONING")

    OUTPUTS = (Output(GUIDER, "GUIDER"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        model = _check_model(inputs.model)
        return (Guider(model, "basic", check_conditioning(inputs.conditioning, "conditioning")),)


class CFGGuider(Node):
    """Classifier-free guidance between a positive and a negative conditioning (KSampler's)."""

    CATEGORY = "sampling/custom_sampling/guiders"
    DISPLAY_NAME = "CFGGuider"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        positive: Any = Link("CONDITIONING")
        negative: Any = Link("CONDITIONING")
        cfg: float = Widget(8.0, ge=0.0, le=100.0, step=0.1, round=0.01)

    OUTPUTS = (Output(GUIDER, "GUIDER"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        model = _check_model(inputs.model)
        return (Guider(model, "cfg", check_conditioning(inputs.positive, "positive"),
                       check_conditioning(inputs.negative, "negative"), inputs.cfg),)


class DualCFGGuider(Node):
    """Guidance between two prompts and a negative: cfg_cond2_negative pulls cond2 away from the negative,
    cfg_conds pulls cond1 away from cond2. ``nested`` applies the first inside the second."""

    CATEGORY = "sampling/custom_sampling/guiders"
    DISPLAY_NAME = "DualCFGGuider"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        cond1: Any = Link("CONDITIONING")
        cond2: Any = Link("CONDITIONING")
        negative: Any = Link("CONDITIONING")
        cfg_conds: float = Widget(8.0, ge=0.0, le=100.0, step=0.1, round=0.01)
        cfg_cond2_negative: float = Widget(8.0, ge=0.0, le=100.0, step=0.1, round=0.01)
        style: Literal["regular", "nested"] = Widget("regular", optional=True)

    OUTPUTS = (Output(GUIDER, "GUIDER"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        model = _check_model(inputs.model)
        return (Guider(model, "dual", check_conditioning(inputs.cond1, "cond1"), check_conditioning(inputs.negative, "negative"),
                       inputs.cfg_conds, check_conditioning(inputs.cond2, "cond2"), inputs.cfg_cond2_negative,
                       inputs.style or "regular"),)


class SamplerCustomAdvanced(Node):
    """Sample a latent from its parts: NOISE, GUIDER, SAMPLER and SIGMAS (ComfyUI's SamplerCustomAdvanced).
    Outputs the result and the model's last denoised estimate."""

    CATEGORY = "sampling/custom_sampling"
    DISPLAY_NAME = "SamplerCustomAdvanced"

    class Inputs(NodeInputs):
        noise: Any = Link(NOISE)
        guider: Any = Link(GUIDER)
        sampler: Any = Link(SAMPLER)
        sigmas: Any = Link(SIGMAS)
        latent_image: Any = Link("LATENT")

    OUTPUTS = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        noise, g = inputs.noise, inputs.guider
        if not isinstance(noise, NoiseSource):
            raise NodeError(f"noise: expected NOISE (from RandomNoise or DisableNoise), got {type(noise).__name__}")
        if not isinstance(g, Guider):
            raise NodeError(f"guider: expected GUIDER (from CFGGuider, BasicGuider or DualCFGGuider), got "
                            f"{type(g).__name__}")
        cfg = g.cfg if g.kind == "cfg" else max(g.cfg, g.cfg2) if g.kind == "dual" else 1.0
        if g.kind == "dual" and isinstance(inputs.sampler, SamplerChoice) and inputs.sampler.runs_as.endswith(
                "_cfg_pp"):
            raise NodeError(f"guider: the CFG++ sampler {inputs.sampler.comfy_name!r} needs CFGGuider (one "
                            "positive and one negative), not DualCFGGuider")
        return sample_custom(ctx, g.model, inputs.sampler, inputs.sigmas, inputs.latent_image, seed=noise.seed,
                             add_noise=noise.enabled, positive=g.positive, negative=g.negative, cfg=cfg,
                             guide=g.guide())


NODES = [KSamplerSelect, BasicScheduler, KarrasScheduler, SamplerCustom, SamplerCustomAdvanced, RandomNoise,
         DisableNoise, BasicGuider, CFGGuider, DualCFGGuider]
