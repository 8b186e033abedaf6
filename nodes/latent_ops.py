"""ComfyUI's latent batch and transform nodes: LatentFromBatch, RepeatLatentBatch, LatentRotate, LatentFlip,
LatentCrop, LatentComposite, LatentBlend, LatentCompositeMasked.

Positions and sizes count in image pixels (multiples of 8), as in ComfyUI; the other keys of a LATENT (a noise
mask, ComfyUI's batch_index) travel with it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from graph_runtime import Link, Node, NodeError, NodeInputs, Output, Widget
from graph_runtime.limits import LIMITS

from .image_ops import FLIPS, ROTATIONS, check_latent, check_mask, composite, resize
from .latents import MAX_SIZE
from .types import LATENT, MASK

if TYPE_CHECKING:
    import torch

F = 8  # ComfyUI counts latent positions in pixels of an 8x latent


def _cycle(t: torch.Tensor, n: int) -> torch.Tensor:
    """The batch repeated (whole) until it has at least ``n`` items, then cut to ``n``."""
    if t.shape[0] >= n:
        return t
    return t.repeat((math.ceil(n / t.shape[0]),) + (1,) * (t.ndim - 1))[:n]


class LatentFromBatch(Node):
    """``length`` latents from ``batch_index`` on (clamped to the batch), with their noise masks; batch_index
    records where they came from (ComfyUI draws their noise as in the whole batch)."""

    CATEGORY = "latent/batch"
    DISPLAY_NAME = "Get Latent From Batch"

    class Inputs(NodeInputs):
        samples: Any = Link(LATENT)
        batch_index: int = Widget(0, ge=0, le=63)
        length: int = Widget(1, ge=1, le=64)

    OUTPUTS = (Output(LATENT, "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        s = check_latent(inputs.samples)
        n = s.shape[0]
        index = min(n - 1, inputs.batch_index)
        length = min(n - index, inputs.length)
        out = {**inputs.samples, "samples": s[index:index + length].clone()}
        mask = inputs.samples.get("noise_mask")
        if mask is not None:
            out["noise_mask"] = mask.clone() if mask.shape[0] == 1 else _cycle(mask, n)[index:index + length].clone()
        old = inputs.samples.get("batch_index")
        out["batch_index"] = list(range(index, index + length)) if old is None else old[index:index + length]
        return (out,)


class RepeatLatentBatch(Node):
    """The batch repeated ``amount`` times (a per-item noise mask too; batch_index continued)."""

    CATEGORY = "latent/batch"
    DISPLAY_NAME = "Repeat Latent Batch"

    class Inputs(NodeInputs):
        samples: Any = Link(LATENT)
        amount: int = Widget(1, ge=1, le=64)

    OUTPUTS = (Output(LATENT, "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        s = check_latent(inputs.samples)
        pixels = s.shape[0] * inputs.amount * s.shape[-2] * s.shape[-1] * F * F
        if pixels > LIMITS.max_latent_pixels:
            raise NodeError(f"amount: {s.shape[0] * inputs.amount} latents of {s.shape[-1] * F}x{s.shape[-2] * F} "
                            f"are {pixels:,} image pixels, over the limit of {LIMITS.max_latent_pixels:,} "
                            "(max_latent_pixels)")
        out = {**inputs.samples, "samples": s.repeat((inputs.amount,) + (1,) * (s.ndim - 1))}
        mask = inputs.samples.get("noise_mask")
        if mask is not None and mask.shape[0] > 1:
            out["noise_mask"] = mask.repeat((inputs.amount,) + (1,) * (mask.ndim - 1))
        index = inputs.samples.get("batch_index")
        if index is not None:
            offset = max(index) - min(index) + 1
            out["batch_index"] = index + [x + i * offset for i in range(1, inputs.amount) for x in index]
        return (out,)


class LatentRotate(Node):
    """Rotate latents by quarter turns (clockwise)."""

    CATEGORY = "latent/transform"
    DISPLAY_NAME = "Rotate Latent"

    class Inputs(NodeInputs):
        samples: Any = Link(LATENT)
        rotation: Literal[ROTATIONS] = Widget("none")  # type: ignore[valid-type]

    OUTPUTS = (Output(LATENT, "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        s = check_latent(inputs.samples)
        return ({**inputs.samples, "samples": torch.rot90(s, k=ROTATIONS.index(inputs.rotation), dims=[3, 2])},)


class LatentFlip(Node):
    """Mirror latents top to bottom (x-axis) or left to right (y-axis)."""

    CATEGORY = "latent/transform"
    DISPLAY_NAME = "Flip Latent"

    class Inputs(NodeInputs):
        samples: Any = Link(LATENT)
        flip_method: Literal[FLIPS] = Widget("x-axis: vertically")  # type: ignore[valid-type]

    OUTPUTS = (Output(LATENT, "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        s = check_latent(inputs.samples)
        dim = 2 if inputs.flip_method.startswith("x") else 3
        return ({**inputs.samples, "samples": torch.flip(s, dims=[dim])},)


class LatentCrop(Node):
    """A width x height window (image pixels) from (x, y); x and y stay at least 8 latent pixels (64 image
    pixels) inside the far edges, as ComfyUI keeps them."""

    CATEGORY = "latent/transform"
    DISPLAY_NAME = "Crop Latent"

    class Inputs(NodeInputs):
        samples: Any = Link(LATENT)
        width: int = Widget(512, ge=64, le=MAX_SIZE, step=8)
        height: int = Widget(512, ge=64, le=MAX_SIZE, step=8)
        x: int = Widget(0, ge=0, le=MAX_SIZE, step=8)
        y: int = Widget(0, ge=0, le=MAX_SIZE, step=8)

    OUTPUTS = (Output(LATENT, "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        s = check_latent(inputs.samples)
        x, y = min(inputs.x // F, s.shape[3] - 8), min(inputs.y // F, s.shape[2] - 8)
        x, y = max(x, 0), max(y, 0)  # a latent under 8 pixels wide starts at 0
        out = s[:, :, y:y + inputs.height // F, x:x + inputs.width // F]
        return ({**inputs.samples, "samples": out},)


class LatentComposite(Node):
    """Paste samples_from into samples_to at (x, y) (image pixels), feathered over ``feather`` pixels on the
    sides that lie inside samples_to."""

    CATEGORY = "latent"
    DISPLAY_NAME = "Latent Composite"

    class Inputs(NodeInputs):
        samples_to: Any = Link(LATENT)
        samples_from: Any = Link(LATENT)
        x: int = Widget(0, ge=0, le=MAX_SIZE, step=8)
        y: int = Widget(0, ge=0, le=MAX_SIZE, step=8)
        feather: int = Widget(0, ge=0, le=MAX_SIZE, step=8)

    OUTPUTS = (Output(LATENT, "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        to = check_latent(inputs.samples_to, "samples_to")
        src = check_latent(inputs.samples_from, "samples_from")
        x, y, feather = inputs.x // F, inputs.y // F, inputs.feather // F
        out = to.clone()
        src = src[:, :, :max(0, to.shape[2] - y), :max(0, to.shape[3] - x)]
        h, w = src.shape[2], src.shape[3]
        if h == 0 or w == 0:
            return ({**inputs.samples_to, "samples": out},)
        if src.shape[0] != out.shape[0] and src.shape[0] != 1:
            raise NodeError(f"samples_from: a batch of {src.shape[0]} cannot be pasted into {out.shape[0]}")
        mask = torch.ones_like(src)
        for t in range(feather):
            ramp = (1.0 / feather) * (t + 1)
            if y != 0:
                mask[:, :, t:t + 1, :] *= ramp
            if y + h < to.shape[2]:
                mask[:, :, h - 1 - t:h - t, :] *= ramp
            if x != 0:
                mask[:, :, :, t:t + 1] *= ramp
            if x + w < to.shape[3]:
                mask[:, :, :, w - 1 - t:w - t] *= ramp
        region = out[:, :, y:y + h, x:x + w]
        out[:, :, y:y + h, x:x + w] = src * mask + region * (1 - mask)
        return ({**inputs.samples_to, "samples": out},)


class LatentBlend(Node):
    """samples1 x blend_factor + samples2 x (1 - blend_factor); samples2 resized (bicubic, centre crop) to
    samples1's size where it differs."""

    CATEGORY = "_for_testing"
    DISPLAY_NAME = "Latent Blend"

    class Inputs(NodeInputs):
        samples1: Any = Link(LATENT)
        samples2: Any = Link(LATENT)
        blend_factor: float = Widget(0.5, ge=0.0, le=1.0, step=0.01)

    OUTPUTS = (Output(LATENT, "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        a = check_latent(inputs.samples1, "samples1")
        b = check_latent(inputs.samples2, "samples2")
        if a.shape != b.shape:
            b = resize(b, a.shape[3], a.shape[2], "bicubic", "center")
        try:
            blended = a * inputs.blend_factor + b * (1 - inputs.blend_factor)
        except RuntimeError:
            raise NodeError(f"samples2: a latent of shape {list(b.shape)} cannot blend with {list(a.shape)}") from None
        return ({**inputs.samples1, "samples": blended},)


class LatentCompositeMasked(Node):
    """Paste ``source`` into ``destination`` at (x, y) (image pixels) through an optional mask."""

    CATEGORY = "latent"
    DISPLAY_NAME = "LatentCompositeMasked"

    class Inputs(NodeInputs):
        destination: Any = Link(LATENT)
        source: Any = Link(LATENT)
        x: int = Widget(0, ge=0, le=MAX_SIZE, step=8)
        y: int = Widget(0, ge=0, le=MAX_SIZE, step=8)
        resize_source: bool = Widget(False)
        mask: Any = Link(MASK, optional=True)

    OUTPUTS = (Output(LATENT, "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        dest = check_latent(inputs.destination, "destination")
        src = check_latent(inputs.source, "source")
        if src.shape[1] != dest.shape[1]:
            raise NodeError(f"source: {src.shape[1]} latent channels cannot go into {dest.shape[1]}")
        mask = None if inputs.mask is None else check_mask(inputs.mask)
        out = composite(dest, src, inputs.x, inputs.y, mask, inputs.resize_source, multiplier=F)
        return ({**inputs.destination, "samples": out},)


NODES = [LatentFromBatch, RepeatLatentBatch, LatentRotate, LatentFlip, LatentCrop, LatentComposite, LatentBlend,
         LatentCompositeMasked]
