"""ComfyUI's part loaders: UNETLoader, CLIPLoader, DualCLIPLoader, TripleCLIPLoader and VAELoader.

They read the ComfyUI folders of every models folder (``diffusion_models/``, ``text_encoders/``, ``vae/``; see
:mod:`nodes.part_files`) and give the same MODEL, CLIP and VAE values as LoadModel, so the rest of a graph
does not care how a model was kept. A CLIP made of separate files gets its family from the loader's ``type``
(ComfyUI's names) and its slots from the files: a T5 or Qwen3 file fills the slot of its kind (``t5``,
``qwen3``), CLIP files ``clip_l`` then ``clip_g`` (the narrower first, as CLIP-L is narrower than CLIP-G).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

from graph_runtime import Node, NodeError, NodeInputs, Output, Widget

from .device import resolve_device, resolve_dtype
from .model_store import ModelStore, file_identity
from .part_files import config_folders, find_part, list_parts, text_encoder_kind
from .types import TextEncoderBundle

CLIP_TYPES = ("stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2",
              "ovis")
DUAL_CLIP_TYPES = ("sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image", "hunyuan_video_15",
                   "kandinsky5", "kandinsky5_image", "ltxv", "newbie", "ace")
#: ComfyUI CLIP type -> the family it makes here
CLIP_FAMILIES = {"stable_diffusion": "sd1", "sd3": "sd3", "sdxl": "sdxl", "flux": "flux", "lumina2": "z_image",
                 "qwen_image": "qwen_image"}
#: transformers model types of the text encoders that are no CLIP -> the slot each fills
NAMED_SLOTS = {"t5": "t5", "qwen3": "qwen3", "qwen2_5_vl": "qwen25vl"}
SLOT_LABELS = {"t5": "T5", "qwen3": "Qwen3", "qwen25vl": "Qwen2.5-VL"}


def _extra(ctx: Any) -> list:
    return getattr(ctx.paths, "models", []) or []


def _load(ctx: Any, kind: str, name: str, what: str, device: str = "auto"):
    extra = _extra(ctx)
    path = find_part(kind, name, what, extra)
    dev = resolve_device(device)
    return ctx.service(ModelStore).load(path, device=dev, dtype=resolve_dtype("auto", dev), name=name, kind=kind,
                                        config_folders=config_folders(extra))


def _fingerprint(kind: str, *inputs: str):
    def fingerprint(cls, literals: dict, ctx: Any) -> Any:
        out = []
        for field in inputs:
            try:
                out.append(file_identity(find_part(kind, str(literals.get(field, "")), field, _extra(ctx))))
            except NodeError:
                return None
        return tuple(out)

    return classmethod(fingerprint)


class UNETLoader(Node):
    """Load a diffusion model alone (ComfyUI's diffusion_models/ folder): a single file in its family's
    original layout, or a diffusers component folder. Weights are computed in the device's dtype."""

    CATEGORY = "advanced/loaders"
    DISPLAY_NAME = "Load Diffusion Model"

    class Inputs(NodeInputs):
        unet_name: str = Widget("", choices=partial(list_parts, "network"))
        weight_dtype: Literal["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"] = Widget("default")

    OUTPUTS = (Output("MODEL", "MODEL"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        if inputs.weight_dtype != "default":
            ctx.warn(f"weight_dtype {inputs.weight_dtype}: weights are kept and computed in the device's dtype "
                     "here (fp8 files are read and converted)")
        return (_load(ctx, "network", inputs.unet_name, "unet_name").model,)

    fingerprint = _fingerprint("network", "unet_name")


class VAELoader(Node):
    """Load a VAE alone (ComfyUI's vae/ folder): a single file (original or diffusers names) or a diffusers
    component folder."""

    CATEGORY = "loaders"
    DISPLAY_NAME = "Load VAE"

    class Inputs(NodeInputs):
        vae_name: str = Widget("", choices=partial(list_parts, "vae"))

    OUTPUTS = (Output("VAE", "VAE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (_load(ctx, "vae", inputs.vae_name, "vae_name").vae,)

    fingerprint = _fingerprint("vae", "vae_name")


def make_clip(ctx: Any, clip_type: str, names: list[tuple[str, str]], device: str) -> TextEncoderBundle:
    """A CLIP of family ``clip_type`` from text-encoder files ``(input name, file name)``."""
    from . import families

    family_name = CLIP_FAMILIES.get(clip_type)
    if family_name is None:
        raise NodeError(f"type: {clip_type} text encoders are not supported here yet; supported: "
                        f"{', '.join(CLIP_FAMILIES)}")
    family = families.by_name(family_name)
    slots = [s for s, _, _ in family.encoder_slots]
    for what, name in names:  # before any weights are read: a file of a kind the family has no slot for
        kind = text_encoder_kind(find_part("text_encoder", name, what, _extra(ctx)))
        if kind in SLOT_LABELS and kind not in slots:
            raise NodeError(f"{what}: {name} is a {SLOT_LABELS[kind]} text encoder; a {clip_type} CLIP "
                            f"({family.label}) takes {', '.join(slots)}")
    loaded = [(what, _load(ctx, "text_encoder", name, what, "cpu" if device == "cpu" else "auto"))
              for what, name in names]
    named = [(NAMED_SLOTS[x.encoder.model.config.model_type], w, x) for w, x in loaded
             if x.encoder.model.config.model_type in NAMED_SLOTS]
    clips = sorted(((w, x) for w, x in loaded if x.encoder.model.config.model_type not in NAMED_SLOTS),
                   key=lambda wx: wx[1].encoder.model.config.hidden_size)  # stable: equal widths keep their order
    clip_slots = [s for s in slots if s.startswith("clip")]
    kinds = [slot for slot, _, _ in named]
    if len(clips) > len(clip_slots) or any(k not in slots or kinds.count(k) > 1 for k in kinds):
        got = [f"{len(clips)} CLIP file{'s' * (len(clips) > 1)}"] if clips else []
        got += [f"{w} a {SLOT_LABELS[slot]} text encoder" for slot, w, _ in named]
        raise NodeError(f"{names[0][0]}: a {clip_type} CLIP takes {', '.join(slots)}; got {', '.join(got)}")
    encoders = {slot: x.encoder for slot, (_, x) in zip(clip_slots, clips, strict=False)}
    encoders |= {slot: x.encoder for slot, _, x in named}
    if family_name == "sd1" and clips and clips[0][1].encoder.model.config.hidden_size == 1024:
        family_name = "sd2"  # OpenCLIP-H: SD2.x
    family = families.by_name(family_name)
    first = loaded[0][1]
    return TextEncoderBundle(family=family, encoders=encoders, device=first.encoder.model.device,
                             dtype=first.encoder.model.dtype, name=" + ".join(n for _, n in names))


class CLIPLoader(Node):
    """Load one text encoder file (ComfyUI's text_encoders/ folder) as the CLIP of a model family."""

    CATEGORY = "advanced/loaders"
    DISPLAY_NAME = "Load CLIP"

    class Inputs(NodeInputs):
        clip_name: str = Widget("", choices=partial(list_parts, "text_encoder"))
        type: Literal[CLIP_TYPES] = Widget("stable_diffusion")  # type: ignore[valid-type]
        device: Literal["default", "cpu"] = Widget("default", optional=True)

    OUTPUTS = (Output("CLIP", "CLIP"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (make_clip(ctx, inputs.type, [("clip_name", inputs.clip_name)], inputs.device),)

    fingerprint = _fingerprint("text_encoder", "clip_name")


class DualCLIPLoader(Node):
    """Load two text encoder files as one CLIP (SDXL: CLIP-L and CLIP-G; SD3: two of CLIP-L, CLIP-G, T5)."""

    CATEGORY = "advanced/loaders"
    DISPLAY_NAME = "DualCLIPLoader"

    class Inputs(NodeInputs):
        clip_name1: str = Widget("", choices=partial(list_parts, "text_encoder"))
        clip_name2: str = Widget("", choices=partial(list_parts, "text_encoder"))
        type: Literal[DUAL_CLIP_TYPES] = Widget("sdxl")  # type: ignore[valid-type]
        device: Literal["default", "cpu"] = Widget("default", optional=True)

    OUTPUTS = (Output("CLIP", "CLIP"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        names = [("clip_name1", inputs.clip_name1), ("clip_name2", inputs.clip_name2)]
        return (make_clip(ctx, inputs.type, names, inputs.device),)

    fingerprint = _fingerprint("text_encoder", "clip_name1", "clip_name2")


class TripleCLIPLoader(Node):
    """Load SD3's three text encoders (CLIP-L, CLIP-G, T5-XXL) as one CLIP."""

    CATEGORY = "advanced/loaders"
    DISPLAY_NAME = "TripleCLIPLoader"

    class Inputs(NodeInputs):
        clip_name1: str = Widget("", choices=partial(list_parts, "text_encoder"))
        clip_name2: str = Widget("", choices=partial(list_parts, "text_encoder"))
        clip_name3: str = Widget("", choices=partial(list_parts, "text_encoder"))

    OUTPUTS = (Output("CLIP", "CLIP"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        names = [("clip_name1", inputs.clip_name1), ("clip_name2", inputs.clip_name2),
                 ("clip_name3", inputs.clip_name3)]
        return (make_clip(ctx, "sd3", names, "default"),)

    fingerprint = _fingerprint("text_encoder", "clip_name1", "clip_name2", "clip_name3")


NODES = [UNETLoader, CLIPLoader, DualCLIPLoader, TripleCLIPLoader, VAELoader]
