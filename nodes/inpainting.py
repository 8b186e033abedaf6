"""Inpainting: ComfyUI's VAEEncodeForInpaint, SetLatentNoiseMask, InpaintModelConditioning and (outpainting)
ImagePadForOutpaint.

A LATENT's ``noise_mask`` (1 = repaint) makes the Sampler denoise only the masked part and keep the rest at
the input latent (see :func:`schedulers.sampling.sample`): the mask is resized (bilinear) to the latent and
used per channel, as ComfyUI's ``prepare_mask`` does. Inpainting models (a UNet with 1 + 4 extra input
channels) also get the mask and the masked image's latents as input channels (:mod:`nodes.guidance`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from graph_runtime import Link, Node, NodeError, NodeInputs, Output, Widget

from .types import VAEBundle, map_entries

if TYPE_CHECKING:
    import torch


def resize_to_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """``t`` with ``batch`` items, picked evenly from its own (ComfyUI's ``resize_to_batch_size``)."""
    n = t.shape[0]
    if n == batch:
        return t
    if batch <= 1:
        return t[:batch]
    if batch < n:
        scale = (n - 1) / (batch - 1)
        index = [min(round(i * scale), n - 1) for i in range(batch)]
    else:
        scale = n / batch
        index = [min(math.floor((i + 0.5) * scale), n - 1) for i in range(batch)]
    return t[index]


def check_mask(mask: Any, what: str = "mask") -> torch.Tensor:
    import torch

    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4) or mask.numel() == 0:
        raise NodeError(f"{what}: expected a MASK [batch, height, width]")
    return mask.float()


def latent_mask(mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A mask ``[B, H, W]`` (or ``[B, 1, H, W]``) as ``shape`` ``[b, c, h, w]``: bilinear to ``h x w``,
    repeated over the channels and to the batch (ComfyUI's ``reshape_mask``)."""
    import torch

    m = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    if tuple(m.shape[2:]) != tuple(shape[2:]):
        m = torch.nn.functional.interpolate(m, size=tuple(shape[2:]), mode="bilinear", align_corners=False)
    if m.shape[1] < shape[1]:
        m = m.repeat(1, shape[1], 1, 1)
    return resize_to_batch(m, shape[0])


def noise_mask_of(latent: dict, shape: tuple[int, ...], device: torch.device) -> torch.Tensor | None:
    """The denoise mask ``shape``-sized on ``device`` from a LATENT's ``noise_mask`` (None without one)."""
    if latent.get("noise_mask") is None:
        return None
    return latent_mask(check_mask(latent["noise_mask"], "latent: noise_mask"), shape).to(device)


def _check_vae(vae: Any) -> VAEBundle:
    if not isinstance(vae, VAEBundle):
        raise NodeError(f"vae: expected a VAE, got {type(vae).__name__}")
    return vae


def _check_pixels(pixels: Any) -> torch.Tensor:
    import torch

    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4:
        raise NodeError("pixels: expected an IMAGE tensor [batch, height, width, channels]")
    return pixels


def pixel_mask(mask: torch.Tensor, pixels: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask ``[B, 1, H, W]`` at the pixels' size (bilinear) and both centre-cropped to a multiple of the
    VAE's ``factor`` (as the encoder crops)."""
    import torch

    h, w = pixels.shape[1] // factor * factor, pixels.shape[2] // factor * factor
    if h == 0 or w == 0:
        raise NodeError(f"pixels: image of {pixels.shape[2]}x{pixels.shape[1]} is smaller than {factor} pixels")
    m = torch.nn.functional.interpolate(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]),
                                        size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")
    y, x = (pixels.shape[1] % factor) // 2, (pixels.shape[2] % factor) // 2
    return pixels[:, y:y + h, x:x + w].clone(), m[:, :, y:y + h, x:x + w]


def grey_out(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pixels where the (rounded) mask is set replaced by mid grey 0.5, as ComfyUI masks them before encoding."""
    keep = (1.0 - mask.round()).squeeze(1).unsqueeze(-1)
    out = pixels.clone()
    out[..., :3] = (out[..., :3] - 0.5) * keep + 0.5
    return out


class VAEEncodeForInpaint(Node):
    """Encode an image for inpainting: the masked pixels turn grey before encoding, and the latent's noise
    mask is the mask grown by grow_mask_by pixels (so the sampler repaints only there, seamlessly)."""

    CATEGORY = "latent/inpaint"
    DISPLAY_NAME = "VAE Encode (for Inpainting)"

    class Inputs(NodeInputs):
        pixels: Any = Link("IMAGE")
        vae: Any = Link("VAE")
        mask: Any = Link("MASK")
        grow_mask_by: int = Widget(6, ge=0, le=64, step=1)

    OUTPUTS = (Output("LATENT", "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        from .latents import encode

        vae, pixels = _check_vae(inputs.vae), _check_pixels(inputs.pixels)
        pixels, mask = pixel_mask(check_mask(inputs.mask), pixels, vae.downscale)
        grow = inputs.grow_mask_by
        if grow == 0:
            grown = mask
        else:
            kernel = torch.ones((1, 1, grow, grow))
            grown = torch.nn.functional.conv2d(mask.round(), kernel, padding=math.ceil((grow - 1) / 2)).clamp(0, 1)
        samples = encode(vae, grey_out(pixels, mask), ctx).cpu()
        h, w = pixels.shape[1], pixels.shape[2]
        return ({"samples": samples, "noise_mask": grown[:, :, :h, :w].round()},)


class SetLatentNoiseMask(Node):
    """Attach a mask to a latent: the sampler then repaints only the masked part and keeps the rest."""

    CATEGORY = "latent/inpaint"
    DISPLAY_NAME = "Set Latent Noise Mask"

    class Inputs(NodeInputs):
        samples: Any = Link("LATENT")
        mask: Any = Link("MASK")

    OUTPUTS = (Output("LATENT", "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        if not isinstance(inputs.samples, dict) or not isinstance(inputs.samples.get("samples"), torch.Tensor):
            raise NodeError("samples: expected a LATENT ({'samples': tensor})")
        mask = check_mask(inputs.mask)
        return ({**inputs.samples, "noise_mask": mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])},)


class InpaintModelConditioning(Node):
    """Conditioning for inpainting models: the image with the masked part greyed out is encoded and, with the
    mask, given to every entry of both conditionings (the extra input channels of an inpainting UNet; other
    models ignore them). The latent is the whole image's, with the mask as its noise mask if noise_mask."""

    CATEGORY = "conditioning/inpaint"
    DISPLAY_NAME = "InpaintModelConditioning"

    class Inputs(NodeInputs):
        positive: Any = Link("CONDITIONING")
        negative: Any = Link("CONDITIONING")
        vae: Any = Link("VAE")
        pixels: Any = Link("IMAGE")
        mask: Any = Link("MASK")
        noise_mask: bool = Widget(True, tooltip="Add a noise mask to the latent so sampling will only happen "
                                                "within the mask. Might improve results or completely break "
                                                "things depending on the model.")

    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"),
               Output("LATENT", "latent"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        from dataclasses import replace

        from .guidance import check_conditioning
        from .latents import encode

        positive = check_conditioning(inputs.positive, "positive")
        negative = check_conditioning(inputs.negative, "negative")
        vae, original = _check_vae(inputs.vae), _check_pixels(inputs.pixels)
        pixels, mask = pixel_mask(check_mask(inputs.mask), original, vae.downscale)
        concat = encode(vae, grey_out(pixels, mask), ctx).cpu()
        latent = {"samples": encode(vae, original, ctx).cpu()}
        if inputs.noise_mask:
            latent["noise_mask"] = mask

        def attach(e: Any) -> Any:
            return replace(e, concat_latent=concat, concat_mask=mask)

        return (map_entries(positive, attach), map_entries(negative, attach), latent)


def outpaint_mask(height: int, width: int, sides: tuple[int, int, int, int], feathering: int) -> torch.Tensor:
    """The kept image's part of ImagePadForOutpaint's mask (``[height, width]``): 0 inside, rising as
    ``((feathering - d) / feathering) ** 2`` within ``feathering`` pixels of each padded side (``d`` the distance
    to the nearest one; sides not padded do not count), when the image is wider and taller than twice it."""
    import torch

    top, bottom, left, right = sides
    if not (feathering > 0 and 2 * feathering < height and 2 * feathering < width):
        return torch.zeros(height, width)
    i = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width)
    j = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width)
    far_h, far_w = torch.full_like(i, height), torch.full_like(j, width)
    d = torch.stack([i if top else far_h, height - i if bottom else far_h,
                     j if left else far_w, width - j if right else far_w]).amin(dim=0)
    v = (feathering - d) / feathering
    return torch.where(d < feathering, v * v, torch.zeros_like(v)).float()


class ImagePadForOutpaint(Node):
    """Pad an image for outpainting: the new border is mid grey, and the mask covers it (1) and fades into the
    image over feathering pixels, for VAEEncodeForInpaint or InpaintModelConditioning."""

    CATEGORY = "image"
    DISPLAY_NAME = "Pad Image for Outpainting"

    class Inputs(NodeInputs):
        image: Any = Link("IMAGE")
        left: int = Widget(0, ge=0, le=16384, step=8)
        top: int = Widget(0, ge=0, le=16384, step=8)
        right: int = Widget(0, ge=0, le=16384, step=8)
        bottom: int = Widget(0, ge=0, le=16384, step=8)
        feathering: int = Widget(40, ge=0, le=16384, step=1)

    OUTPUTS = (Output("IMAGE", "IMAGE"), Output("MASK", "MASK"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        from graph_runtime.limits import LIMITS

        image = _check_pixels(inputs.image).float()
        b, h, w, c = image.shape
        new_h, new_w = h + inputs.top + inputs.bottom, w + inputs.left + inputs.right
        if new_h * new_w > LIMITS.max_image_pixels or b * new_h * new_w > LIMITS.max_image_total_pixels:
            raise NodeError(f"left / top / right / bottom: the padded image of {new_w}x{new_h} (x {b}) is more "
                            f"than the limits of {LIMITS.max_image_pixels:,} pixels per image and "
                            f"{LIMITS.max_image_total_pixels:,} per batch (max_image_pixels, "
                            "max_image_total_pixels)")
        out = torch.full((b, new_h, new_w, c), 0.5)
        out[:, inputs.top:inputs.top + h, inputs.left:inputs.left + w] = image
        mask = torch.ones(new_h, new_w)
        mask[inputs.top:inputs.top + h, inputs.left:inputs.left + w] = outpaint_mask(
            h, w, (inputs.top, inputs.bottom, inputs.left, inputs.right), inputs.feathering)
        return (out, mask.unsqueeze(0))


NODES = [VAEEncodeForInpaint, SetLatentNoiseMask, InpaintModelConditioning, ImagePadForOutpaint]
