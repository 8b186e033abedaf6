"""ComfyUI core node names, so workflows saved from ComfyUI (API format) run here unchanged.

Each alias takes ComfyUI's input names and defaults and does its work with the built-in nodes and the
schedulers library. KSampler's ``sampler_name`` / ``scheduler`` go through :mod:`schedulers.comfy_names`: each
sampler runs its own step rule over ComfyUI's own SIGMAS formulas. Nodes whose names already equal ComfyUI's
(VAEDecode, VAEEncode, SaveImage, PreviewImage, LoadImage) take ComfyUI's input names themselves and are not
repeated here; the custom-sampling
set (KSamplerSelect, BasicScheduler, SamplerCustom, guiders, noise) lives in :mod:`nodes.custom_sampling`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

from graph_runtime import Link, Node, NodeError, NodeInputs, Output, Widget
from schedulers import comfy_names

from .conditioning import check_clip, encode
from .custom_sampling import uncond_guide
from .latents import MAX_SIZE, empty_latent
from .models import EMBEDDED_NAME, is_listed_model, list_checkpoints, load_model, model_fingerprint
from .sampling import SEED_MAX, _check_model, run_sampler
from .types import Conditioning, map_entries

if TYPE_CHECKING:  # torch and the sigma builders load when a node runs, not when it is declared
    from schedulers.schedule import Schedule


class CheckpointLoaderSimple(Node):
    """Load a checkpoint (ComfyUI's name for LoadModel): MODEL, CLIP and VAE."""

    CATEGORY = "loaders"
    DISPLAY_NAME = "Load Checkpoint"

    class Inputs(NodeInputs):
        ckpt_name: str = Widget(EMBEDDED_NAME, choices=list_checkpoints, accept=is_listed_model)

    OUTPUTS = (Output("MODEL", "MODEL"), Output("CLIP", "CLIP"), Output("VAE", "VAE"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return load_model(ctx, inputs.ckpt_name, what="ckpt_name")

    @classmethod
    def fingerprint(cls, literals: dict, ctx: Any) -> Any:
        return model_fingerprint(ctx, str(literals.get("ckpt_name", EMBEDDED_NAME)))


class CLIPTextEncode(Node):
    """Encode a prompt (ComfyUI's name for TextEncode)."""

    CATEGORY = "conditioning"
    DISPLAY_NAME = "CLIP Text Encode (Prompt)"

    class Inputs(NodeInputs):
        text: str = Widget("", multiline=True, dynamicPrompts=True)
        clip: Any = Link("CLIP")

    OUTPUTS = (Output("CONDITIONING", "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (encode(inputs.clip, inputs.text, ctx),)


class EmptyLatentImage(Node):
    """An empty latent batch (ComfyUI's name for EmptyLatent)."""

    CATEGORY = "latent"
    DISPLAY_NAME = "Empty Latent Image"

    class Inputs(NodeInputs):
        width: int = Widget(512, ge=16, le=MAX_SIZE, step=8)
        height: int = Widget(512, ge=16, le=MAX_SIZE, step=8)
        batch_size: int = Widget(1, ge=1, le=4096)

    OUTPUTS = (Output("LATENT", "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (empty_latent(inputs.width, inputs.height, inputs.batch_size),)


class EmptySD3LatentImage(Node):
    """An empty 16-channel latent batch for SD3-style models (ComfyUI's name)."""

    CATEGORY = "latent/sd3"
    DISPLAY_NAME = "EmptySD3LatentImage"

    class Inputs(NodeInputs):
        width: int = Widget(1024, ge=16, le=MAX_SIZE, step=16)
        height: int = Widget(1024, ge=16, le=MAX_SIZE, step=16)
        batch_size: int = Widget(1, ge=1, le=4096)

    OUTPUTS = (Output("LATENT", "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (empty_latent(inputs.width, inputs.height, inputs.batch_size, channels=16),)


class CLIPTextEncodeSDXL(Node):
    """SDXL's prompt with its size conditioning: text_g for CLIP-G, text_l for CLIP-L, and the original
    size, crop and target size the UNet is told about (ComfyUI's name)."""

    CATEGORY = "advanced/conditioning"
    DISPLAY_NAME = "CLIPTextEncodeSDXL"

    class Inputs(NodeInputs):
        clip: Any = Link("CLIP")
        width: int = Widget(1024, ge=0, le=MAX_SIZE)
        height: int = Widget(1024, ge=0, le=MAX_SIZE)
        crop_w: int = Widget(0, ge=0, le=MAX_SIZE)
        crop_h: int = Widget(0, ge=0, le=MAX_SIZE)
        target_width: int = Widget(1024, ge=0, le=MAX_SIZE)
        target_height: int = Widget(1024, ge=0, le=MAX_SIZE)
        text_g: str = Widget("", multiline=True, dynamicPrompts=True)
        text_l: str = Widget("", multiline=True, dynamicPrompts=True)

    OUTPUTS = (Output("CONDITIONING", "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        clip = check_clip(inputs.clip)
        if clip.family.name != "sdxl":
            raise NodeError(f"clip: CLIPTextEncodeSDXL needs an SDXL text encoder, got {clip.family.label}")
        sizes = {k: getattr(inputs, k) for k in ("width", "height", "crop_w", "crop_h", "target_width",
                                                 "target_height")}
        return (encode(clip, inputs.text_g, ctx, texts={"clip_l": inputs.text_l, "clip_g": inputs.text_g},
                       **sizes),)


class ConditioningZeroOut(Node):
    """All-zero embeddings (and pooled embeddings) of a conditioning's shape: the "empty" negative that
    SDXL's and SD3's pipelines use when no negative prompt is given."""

    CATEGORY = "advanced/conditioning"
    DISPLAY_NAME = "ConditioningZeroOut"

    class Inputs(NodeInputs):
        conditioning: Any = Link("CONDITIONING")

    OUTPUTS = (Output("CONDITIONING", "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        c = inputs.conditioning
        if not isinstance(c, Conditioning):
            raise NodeError(f"conditioning: expected CONDITIONING, got {type(c).__name__}")

        def zero(e: Conditioning) -> Conditioning:
            pooled = None if e.pooled is None else torch.zeros_like(e.pooled)
            return dataclasses.replace(e, embeds=torch.zeros_like(e.embeds), pooled=pooled, prompt="")

        return (map_entries(c, zero),)


class FluxGuidance(Node):
    """Set Flux dev's distilled guidance (the guidance embedding, FluxPipeline's ``guidance_scale``) in a
    conditioning; without it Flux dev runs at 3.5. Schnell has no guidance embedding and ignores it."""

    CATEGORY = "advanced/conditioning/flux"
    DISPLAY_NAME = "FluxGuidance"

    class Inputs(NodeInputs):
        conditioning: Any = Link("CONDITIONING")
        guidance: float = Widget(3.5, ge=0.0, le=100.0, step=0.1)

    OUTPUTS = (Output("CONDITIONING", "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        c = inputs.conditioning
        if not isinstance(c, Conditioning):
            raise NodeError(f"conditioning: expected CONDITIONING, got {type(c).__name__}")
        return (with_guidance(c, inputs.guidance),)


def with_guidance(c: Conditioning, guidance: float) -> Conditioning:
    """Every entry of ``c`` with Flux's distilled guidance set."""
    return map_entries(c, lambda e: dataclasses.replace(e, extra={**e.extra, "guidance": float(guidance)}))


class CLIPTextEncodeFlux(Node):
    """Encode a Flux prompt with its own text for each encoder (CLIP-L's pooled summary, T5-XXL's tokens;
    FluxPipeline's prompt and prompt_2) and set the guidance, as TextEncode followed by FluxGuidance."""

    CATEGORY = "advanced/conditioning/flux"
    DISPLAY_NAME = "CLIPTextEncodeFlux"

    class Inputs(NodeInputs):
        clip: Any = Link("CLIP")
        clip_l: str = Widget("", multiline=True, dynamicPrompts=True)
        t5xxl: str = Widget("", multiline=True, dynamicPrompts=True)
        guidance: float = Widget(3.5, ge=0.0, le=100.0, step=0.1)

    OUTPUTS = (Output("CONDITIONING", "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        clip = check_clip(inputs.clip)
        if clip.family.name != "flux":
            raise NodeError(f"clip: CLIPTextEncodeFlux needs a Flux text encoder, got {clip.family.label}")
        c = encode(clip, inputs.t5xxl, ctx, texts={"clip_l": inputs.clip_l, "t5": inputs.t5xxl})
        return (with_guidance(c, inputs.guidance),)


def _comfy_schedule(model: Any, sampler_name: str, scheduler: str, steps: int, denoise: float) -> Schedule:
    try:
        return comfy_names.build_comfy_schedule(sampler_name, scheduler, model.scheduler_config, steps,
                                                denoise, device=model.device)
    except ValueError as exc:
        raise NodeError(f"sampler_name / scheduler: {exc}") from None


class KSampler(Node):
    """ComfyUI's KSampler: sample a latent with a named sampler and scheduler, classifier-free guidance and a
    seed. denoise < 1 samples only the tail of the schedule (img2img)."""

    CATEGORY = "sampling"
    DISPLAY_NAME = "KSampler"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        seed: int = Widget(0, ge=0, le=SEED_MAX, control_after_generate=True)
        steps: int = Widget(20, ge=1, le=10000)
        cfg: float = Widget(8.0, ge=0.0, le=100.0, step=0.1, round=0.01)
        sampler_name: Literal[comfy_names.COMFY_SAMPLERS] = Widget("euler")  # type: ignore[valid-type]
        scheduler: Literal[comfy_names.COMFY_SCHEDULERS] = Widget("normal")  # type: ignore[valid-type]
        positive: Any = Link("CONDITIONING")
        negative: Any = Link("CONDITIONING")
        latent_image: Any = Link("LATENT")
        denoise: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    OUTPUTS = (Output("LATENT", "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        model = _check_model(inputs.model)
        if inputs.denoise <= 0:
            return (inputs.latent_image,)
        schedule = _comfy_schedule(model, inputs.sampler_name, inputs.scheduler, inputs.steps, inputs.denoise)
        guide = uncond_guide(schedule.rule, model, inputs.positive, inputs.negative, inputs.cfg)
        res = run_sampler(ctx, model, inputs.positive, inputs.negative, inputs.latent_image, schedule,
                          inputs.seed, inputs.cfg, guide=guide)
        return ({**inputs.latent_image, "samples": res.samples},)


class KSamplerAdvanced(Node):
    """ComfyUI's KSamplerAdvanced: KSampler with a step window (start_at_step .. end_at_step), optional noise
    and optionally leftover noise at the end, for handing a latent on to a second sampler."""

    CATEGORY = "sampling"
    DISPLAY_NAME = "KSampler (Advanced)"

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        add_noise: Literal["enable", "disable"] = Widget("enable")
        noise_seed: int = Widget(0, ge=0, le=SEED_MAX, control_after_generate=True)
        steps: int = Widget(20, ge=1, le=10000)
        cfg: float = Widget(8.0, ge=0.0, le=100.0, step=0.1, round=0.01)
        sampler_name: Literal[comfy_names.COMFY_SAMPLERS] = Widget("euler")  # type: ignore[valid-type]
        scheduler: Literal[comfy_names.COMFY_SCHEDULERS] = Widget("normal")  # type: ignore[valid-type]
        positive: Any = Link("CONDITIONING")
        negative: Any = Link("CONDITIONING")
        latent_image: Any = Link("LATENT")
        start_at_step: int = Widget(0, ge=0, le=10000)
        end_at_step: int = Widget(10000, ge=0, le=10000)
        return_with_leftover_noise: Literal["disable", "enable"] = Widget("disable")

    OUTPUTS = (Output("LATENT", "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from schedulers.schedule import schedule_from_sigmas

        model = _check_model(inputs.model)
        steps = inputs.steps
        start, end = inputs.start_at_step, min(inputs.end_at_step, steps)
        add_noise = inputs.add_noise == "enable"
        full_denoise = inputs.return_with_leftover_noise != "enable"
        if start >= end:
            return (inputs.latent_image,)
        plan = _plan(inputs.sampler_name, inputs.scheduler)
        s = comfy_names.ksampler_sigmas(inputs.sampler_name, inputs.scheduler, steps, model.scheduler_config)
        s = s[: end + 1].clone()
        if full_denoise:
            s[-1] = 0
        s = s[start:]
        schedule = schedule_from_sigmas(s, plan.name, model.scheduler_config, runner="kdiffusion",
                                        device=model.device)
        guide = uncond_guide(schedule.rule, model, inputs.positive, inputs.negative, inputs.cfg)
        res = run_sampler(ctx, model, inputs.positive, inputs.negative, inputs.latent_image, schedule,
                          inputs.noise_seed, inputs.cfg, add_noise, init_from_latent=True if add_noise else None,
                          guide=guide)
        return ({**inputs.latent_image, "samples": res.samples},)


def _plan(sampler_name: str, scheduler: str) -> comfy_names.ComfyPlan:
    try:
        return comfy_names.resolve(sampler_name, scheduler)
    except ValueError as exc:
        raise NodeError(f"sampler_name / scheduler: {exc}") from None


NODES = [CheckpointLoaderSimple, CLIPTextEncode, CLIPTextEncodeSDXL, ConditioningZeroOut, FluxGuidance,
         CLIPTextEncodeFlux, EmptyLatentImage, EmptySD3LatentImage, KSampler, KSamplerAdvanced]
