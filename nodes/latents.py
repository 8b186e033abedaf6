"""Latent nodes: EmptyLatent, VAEEncode, VAEDecode.

LATENT values are ``{"samples": Tensor[B, C, H/8, W/8]}`` in diffusion space (VAE latents shifted and scaled
by the VAE's factors, as diffusers' pipelines keep them); see :mod:`nodes.types`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graph_runtime import Link, Node, NodeError, NodeInputs, Output, Widget
from graph_runtime.limits import LIMITS

from .types import ModelBundle, VAEBundle

if TYPE_CHECKING:  # torch loads when a latent is made or coded, not when the nodes are declared
    import torch

MAX_SIZE = 16384
DECODE_BATCH = 8


def empty_latent(width: int, height: int, batch_size: int, channels: int = 4, factor: int = 8) -> dict:
    """Zeros ``[batch, channels, height / factor, width / factor]`` on the CPU, after the size checks."""
    for name, v in (("width", width), ("height", height)):
        if v % factor:
            raise NodeError(f"{name} must be a multiple of {factor}, got {v} (try {v - v % factor} or "
                            f"{v - v % factor + factor})")
    total = width * height * batch_size
    if total > LIMITS.max_latent_pixels:
        raise NodeError(f"width / height / batch_size: {width} x {height} x batch {batch_size} = {total:,} pixels "
                        f"is more than the limit of {LIMITS.max_latent_pixels:,} pixels per latent batch "
                        "(max_latent_pixels); use a smaller size or batch")
    import torch

    return {"samples": torch.zeros(batch_size, channels, height // factor, width // factor)}


class EmptyLatent(Node):
    """An all-zero latent batch of the given image size, for a sampler to start from (full denoise).

    With a model connected, the latent has that model's channels (4 for SD1.x/SDXL, 16 for SD3); without,
    SD1.x's 4."""

    CATEGORY = "latent"
    DISPLAY_NAME = "Empty Latent"

    class Inputs(NodeInputs):
        width: int = Widget(512, ge=64, le=MAX_SIZE, step=8, tooltip="image width in pixels (multiple of 8)")
        height: int = Widget(512, ge=64, le=MAX_SIZE, step=8, tooltip="image height in pixels (multiple of 8)")
        batch_size: int = Widget(1, ge=1, le=4096, tooltip="how many images")
        model: Any = Link("MODEL", optional=True, tooltip="gives the latent this model's channel count")

    OUTPUTS = (Output("LATENT", "LATENT", "zeros [batch, channels, height/8, width/8] on the CPU"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        channels, factor = 4, 8
        if inputs.model is not None:
            if not isinstance(inputs.model, ModelBundle):
                raise NodeError(f"model: expected a MODEL, got {type(inputs.model).__name__}")
            channels, factor = inputs.model.latent_channels, inputs.model.family.latent.spatial_factor
        return (empty_latent(inputs.width, inputs.height, inputs.batch_size, channels, factor),)


class VAEEncode(Node):
    """Encode images into latents (deterministic: the mode of the VAE's latent distribution, times the
    scaling factor). Sizes that are not multiples of 8 are cropped to one."""

    CATEGORY = "latent"
    DISPLAY_NAME = "VAE Encode"

    class Inputs(NodeInputs):
        pixels: Any = Link("IMAGE")
        vae: Any = Link("VAE")

    OUTPUTS = (Output("LATENT", "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return ({"samples": encode(inputs.vae, inputs.pixels, ctx)},)


class VAEDecode(Node):
    """Decode latents into images (IMAGE: [batch, height, width, 3] in 0..1 on the CPU)."""

    CATEGORY = "latent"
    DISPLAY_NAME = "VAE Decode"

    class Inputs(NodeInputs):
        samples: Any = Link("LATENT")
        vae: Any = Link("VAE")

    OUTPUTS = (Output("IMAGE", "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (decode(inputs.vae, inputs.samples, ctx),)


def _check_latent(latent: Any) -> torch.Tensor:
    import torch

    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise NodeError("samples: expected a LATENT ({'samples': tensor})")
    s = latent["samples"]
    if s.ndim != 4:
        raise NodeError(f"samples: expected a latent tensor [batch, channels, h, w], got shape {list(s.shape)}")
    return s


def decode(vae: VAEBundle, latent: dict, ctx: Any = None) -> torch.Tensor:
    """See :func:`_decode` (run without autograd)."""
    import torch

    from .interruption import interruptible

    check = ctx.check_interrupted if ctx is not None else (lambda: None)
    with torch.inference_mode(), interruptible(vae.vae, check):
        return _decode(vae, latent, ctx)


def encode(vae: VAEBundle, pixels: Any, ctx: Any = None) -> torch.Tensor:
    """See :func:`_encode` (run without autograd)."""
    import torch

    from .interruption import interruptible

    check = ctx.check_interrupted if ctx is not None else (lambda: None)
    with torch.inference_mode(), interruptible(vae.vae, check):
        return _encode(vae, pixels, ctx)


def _decode(vae: VAEBundle, latent: dict, ctx: Any = None) -> torch.Tensor:
    """``vae.decode(samples / scaling_factor + shift_factor)``, then ``(x / 2 + 0.5).clamp(0, 1)`` (diffusers'
    VaeImageProcessor), as float32 [B, H, W, C] on the CPU. Decodes in slices of ``DECODE_BATCH``."""
    import torch

    samples = _check_latent(latent)
    if samples.shape[1] != vae.vae.config.latent_channels:
        raise NodeError(f"samples: the VAE expects {vae.vae.config.latent_channels} latent channels, "
                        f"got {samples.shape[1]}")
    out = []
    for i in range(0, samples.shape[0], DECODE_BATCH):
        if ctx is not None:
            ctx.check_interrupted()
        z = samples[i:i + DECODE_BATCH].to(device=vae.device, dtype=vae.dtype)
        x = vae.vae.decode(z / vae.scaling_factor + vae.shift_factor).sample
        x = (x / 2 + 0.5).clamp(0, 1)
        out.append(x.permute(0, 2, 3, 1).float().cpu())
    return torch.cat(out)


def _encode(vae: VAEBundle, pixels: Any, ctx: Any = None) -> torch.Tensor:
    """Images [B, H, W, C] in 0..1 -> latents [B, 4, H/8, W/8] (mode of the posterior times the scaling
    factor), on the VAE's device in float32."""
    import torch

    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4:
        raise NodeError("pixels: expected an IMAGE tensor [batch, height, width, channels]")
    f = vae.downscale
    h, w = pixels.shape[1] // f * f, pixels.shape[2] // f * f
    if h == 0 or w == 0:
        raise NodeError(f"pixels: image of {pixels.shape[2]}x{pixels.shape[1]} is smaller than {f} pixels")
    if (h, w) != tuple(pixels.shape[1:3]):  # centre crop to a multiple of the VAE's factor
        y, x = (pixels.shape[1] - h) // 2, (pixels.shape[2] - w) // 2
        pixels = pixels[:, y:y + h, x:x + w]
    out = []
    for i in range(0, pixels.shape[0], DECODE_BATCH):
        if ctx is not None:
            ctx.check_interrupted()
        x = pixels[i:i + DECODE_BATCH, :, :, :3].permute(0, 3, 1, 2)
        if x.shape[1] == 1:  # grey
            x = x.expand(-1, 3, -1, -1)
        x = x.to(device=vae.device, dtype=vae.dtype) * 2 - 1
        z = (vae.vae.encode(x).latent_dist.mode() - vae.shift_factor) * vae.scaling_factor
        out.append(z.float())
    return torch.cat(out)
