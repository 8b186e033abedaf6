"""ComfyUI's conditioning nodes: combine, concatenate, average, and confine a conditioning to an area, a mask or
a part of the schedule.

A CONDITIONING is one or more entries (:class:`nodes.types.Conditioning`); each node here changes every entry
and the Sampler honours the settings (:mod:`nodes.guidance`, :mod:`schedulers.guidance`). Areas are given in
image pixels and kept in latent pixels (``// 8``), as ComfyUI keeps them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from graph_runtime import Link, Node, NodeError, NodeInputs, Output, Widget
from graph_runtime.limits import LIMITS

from .guidance import check_conditioning
from .inpainting import check_mask
from .latents import MAX_SIZE
from .types import Conditioning, combine, map_entries

COND = "CONDITIONING"
#: image pixels per latent pixel in ComfyUI's area inputs
AREA_FACTOR = 8


def _first_of(cond: Conditioning, ctx: Any, node: str) -> Conditioning:
    entries = cond.entries
    if len(entries) > 1 and ctx is not None:
        ctx.warn(f"conditioning_from: {node} uses only the first of its {len(entries)} entries")
    return entries[0]


class ConditioningCombine(Node):
    """Both conditionings as one: each entry is predicted on its own and the predictions are averaged
    (by their areas, masks and strengths)."""

    CATEGORY = "conditioning"
    DISPLAY_NAME = "Conditioning (Combine)"

    class Inputs(NodeInputs):
        conditioning_1: Any = Link(COND)
        conditioning_2: Any = Link(COND)

    OUTPUTS = (Output(COND, "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        a = check_conditioning(inputs.conditioning_1, "conditioning_1")
        b = check_conditioning(inputs.conditioning_2, "conditioning_2")
        n = len(a.combined) + len(b.combined) + 2
        if n > LIMITS.max_conditioning_entries:  # before the tuple is built: combining doubles quickly
            raise NodeError(f"conditioning_1 / conditioning_2: {n} entries together is more than the limit of "
                            f"{LIMITS.max_conditioning_entries} (max_conditioning_entries)")
        return (combine([a, b]),)


class ConditioningConcat(Node):
    """conditioning_from's tokens appended to each entry of conditioning_to (one longer prompt, attended to
    at once); the pooled embedding and settings stay conditioning_to's."""

    CATEGORY = "conditioning"
    DISPLAY_NAME = "Conditioning (Concat)"

    class Inputs(NodeInputs):
        conditioning_to: Any = Link(COND)
        conditioning_from: Any = Link(COND)

    OUTPUTS = (Output(COND, "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        to = check_conditioning(inputs.conditioning_to, "conditioning_to")
        src = _first_of(check_conditioning(inputs.conditioning_from, "conditioning_from"), ctx, "ConditioningConcat")

        def concat(e: Conditioning) -> Conditioning:
            if e.embeds.shape[-1] != src.embeds.shape[-1] or e.extra.get("t5_missing") != src.extra.get("t5_missing"):
                raise NodeError(f"conditioning_from: embeddings of width {src.embeds.shape[-1]} cannot follow "
                                f"conditioning_to's of width {e.embeds.shape[-1]} (encode both with one CLIP)")
            frm = src.embeds.to(device=e.embeds.device, dtype=e.embeds.dtype)
            if frm.shape[0] != e.embeds.shape[0]:
                frm = frm.expand(e.embeds.shape[0], -1, -1)
            return replace(e, embeds=torch.cat([e.embeds, frm], dim=1), prompt=f"{e.prompt} {src.prompt}".strip())

        return (map_entries(to, concat),)


class ConditioningAverage(Node):
    """conditioning_to_strength x conditioning_to + (1 - it) x conditioning_from, token by token (from's
    tokens cut or zero-padded to to's length; pooled embeddings mixed alike)."""

    CATEGORY = "conditioning"
    DISPLAY_NAME = "Conditioning (Average)"

    class Inputs(NodeInputs):
        conditioning_to: Any = Link(COND)
        conditioning_from: Any = Link(COND)
        conditioning_to_strength: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)

    OUTPUTS = (Output(COND, "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        to = check_conditioning(inputs.conditioning_to, "conditioning_to")
        src = _first_of(check_conditioning(inputs.conditioning_from, "conditioning_from"), ctx,
                        "ConditioningAverage")
        k = inputs.conditioning_to_strength

        def average(e: Conditioning) -> Conditioning:
            if e.embeds.shape[-1] != src.embeds.shape[-1]:
                raise NodeError(f"conditioning_from: embeddings of width {src.embeds.shape[-1]} cannot be mixed "
                                f"with conditioning_to's of width {e.embeds.shape[-1]}")
            frm = src.embeds[:, :e.embeds.shape[1]].to(device=e.embeds.device, dtype=e.embeds.dtype)
            if frm.shape[1] < e.embeds.shape[1]:
                pad = frm.new_zeros(frm.shape[0], e.embeds.shape[1] - frm.shape[1], frm.shape[2])
                frm = torch.cat([frm, pad], dim=1)
            pooled = e.pooled if e.pooled is not None else src.pooled
            if src.pooled is not None and pooled is not None:
                pooled = pooled * k + src.pooled.to(pooled) * (1.0 - k)
            return replace(e, embeds=e.embeds * k + frm * (1.0 - k), pooled=pooled)

        return (map_entries(to, average),)


class ConditioningSetArea(Node):
    """Confine the conditioning to a rectangle of the image (pixels, kept in latent pixels: // 8); the
    edges that are inside the image fade in over 8 latent pixels."""

    CATEGORY = "conditioning"
    DISPLAY_NAME = "Conditioning (Set Area)"

    class Inputs(NodeInputs):
        conditioning: Any = Link(COND)
        width: int = Widget(64, ge=64, le=MAX_SIZE, step=8)
        height: int = Widget(64, ge=64, le=MAX_SIZE, step=8)
        x: int = Widget(0, ge=0, le=MAX_SIZE, step=8)
        y: int = Widget(0, ge=0, le=MAX_SIZE, step=8)
        strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)

    OUTPUTS = (Output(COND, "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        f = AREA_FACTOR
        area = (inputs.height // f, inputs.width // f, inputs.y // f, inputs.x // f)
        return (map_entries(check_conditioning(inputs.conditioning, "conditioning"),
                            lambda e: replace(e, area=area, strength=inputs.strength, set_area_to_bounds=False)),)


class ConditioningSetAreaPercentage(Node):
    """Confine the conditioning to a rectangle given as fractions of the image (resolved against the
    latent's size when sampling)."""

    CATEGORY = "conditioning"
    DISPLAY_NAME = "Conditioning (Set Area with Percentage)"

    class Inputs(NodeInputs):
        conditioning: Any = Link(COND)
        width: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)
        height: float = Widget(1.0, ge=0.0, le=1.0, step=0.01)
        x: float = Widget(0.0, ge=0.0, le=1.0, step=0.01)
        y: float = Widget(0.0, ge=0.0, le=1.0, step=0.01)
        strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)

    OUTPUTS = (Output(COND, "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        area = ("percentage", inputs.height, inputs.width, inputs.y, inputs.x)
        return (map_entries(check_conditioning(inputs.conditioning, "conditioning"),
                            lambda e: replace(e, area=area, strength=inputs.strength, set_area_to_bounds=False)),)


class ConditioningSetAreaStrength(Node):
    """The weight of the conditioning where it applies (against the other entries it is combined with)."""

    CATEGORY = "conditioning"
    DISPLAY_NAME = "ConditioningSetAreaStrength"

    class Inputs(NodeInputs):
        conditioning: Any = Link(COND)
        strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)

    OUTPUTS = (Output(COND, "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (map_entries(check_conditioning(inputs.conditioning, "conditioning"),
                            lambda e: replace(e, strength=inputs.strength)),)


class ConditioningSetMask(Node):
    """Weight the conditioning per pixel by a mask (resized to the latent); with set_cond_area "mask bounds"
    it is also evaluated only over the mask's bounding box."""

    CATEGORY = "conditioning"
    DISPLAY_NAME = "Conditioning (Set Mask)"

    class Inputs(NodeInputs):
        conditioning: Any = Link(COND)
        mask: Any = Link("MASK")
        strength: float = Widget(1.0, ge=0.0, le=10.0, step=0.01)
        set_cond_area: Literal["default", "mask bounds"] = Widget("default")

    OUTPUTS = (Output(COND, "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        mask = check_mask(inputs.mask)
        if mask.ndim == 4:
            mask = mask.reshape(-1, mask.shape[-2], mask.shape[-1])
        elif mask.ndim == 2:
            mask = mask.unsqueeze(0)
        bounds = inputs.set_cond_area != "default"
        return (map_entries(check_conditioning(inputs.conditioning, "conditioning"),
                            lambda e: replace(e, mask=mask, set_area_to_bounds=bounds,
                                              mask_strength=inputs.strength)),)


class ConditioningSetTimestepRange(Node):
    """Use the conditioning only from start to end of the schedule (fractions of the model's noise range:
    0 = pure noise)."""

    CATEGORY = "advanced/conditioning"
    DISPLAY_NAME = "ConditioningSetTimestepRange"

    class Inputs(NodeInputs):
        conditioning: Any = Link(COND)
        start: float = Widget(0.0, ge=0.0, le=1.0, step=0.001)
        end: float = Widget(1.0, ge=0.0, le=1.0, step=0.001)

    OUTPUTS = (Output(COND, "CONDITIONING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (map_entries(check_conditioning(inputs.conditioning, "conditioning"),
                            lambda e: replace(e, start_percent=inputs.start, end_percent=inputs.end)),)


NODES = [ConditioningCombine, ConditioningConcat, ConditioningAverage, ConditioningSetArea,
         ConditioningSetAreaPercentage, ConditioningSetAreaStrength, ConditioningSetMask,
         ConditioningSetTimestepRange]
