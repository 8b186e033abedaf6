"""Latent nodes: EmptyLatent, VAEEncode, VAEDecode and their tiled forms (VAEDecodeTiled, VAEEncodeTiled).

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


class VAEDecodeTiled(Node):
    """Decode latents tile by tile (less memory for large images), as ComfyUI does: three tilings of
    different shapes, each tile feathered into its neighbours over the overlap, averaged. Where one tile holds
    the whole latent the result is the plain decode's. temporal_size / temporal_overlap matter only for video
    VAEs (none here) and are accepted for ComfyUI's workflows."""

    CATEGORY = "_for_testing"
    DISPLAY_NAME = "VAE Decode (Tiled)"

    class Inputs(NodeInputs):
        samples: Any = Link("LATENT")
        vae: Any = Link("VAE")
        tile_size: int = Widget(512, ge=64, le=4096, step=32, advanced=True)
        overlap: int = Widget(64, ge=0, le=4096, step=32, advanced=True)
        temporal_size: int = Widget(64, ge=8, le=4096, step=4, advanced=True,
                                    tooltip="Only used for video VAEs: Amount of frames to decode at a time.")
        temporal_overlap: int = Widget(8, ge=4, le=4096, step=4, advanced=True,
                                       tooltip="Only used for video VAEs: Amount of frames to overlap.")

    OUTPUTS = (Output("IMAGE", "IMAGE"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        from .interruption import interruptible

        vae = inputs.vae
        if not isinstance(vae, VAEBundle):
            raise NodeError(f"vae: expected a VAE, got {type(vae).__name__}")
        overlap = inputs.overlap if inputs.tile_size >= inputs.overlap * 4 else inputs.tile_size // 4
        tile, overlap = inputs.tile_size // vae.downscale, overlap // vae.downscale
        samples = _check_latent(inputs.samples)
        if samples.shape[1] != vae.vae.config.latent_channels:
            raise NodeError(f"samples: the VAE expects {vae.vae.config.latent_channels} latent channels, "
                            f"got {samples.shape[1]}")

        def decode_tile(z: torch.Tensor) -> torch.Tensor:
            z = z.to(device=vae.device, dtype=vae.dtype)
            return vae.vae.decode(z / vae.scaling_factor + vae.shift_factor).sample.float().cpu()

        shapes = ((tile * 2, tile // 2), (tile // 2, tile * 2), (tile, tile))  # (h, w) of each tiling
        with torch.inference_mode(), interruptible(vae.vae, ctx.check_interrupted):
            x = sum(tiled(samples, decode_tile, shape, overlap, vae.downscale, 3, ctx) for shape in shapes) / 3.0
        return ((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).contiguous(),)


class VAEEncodeTiled(Node):
    """Encode images tile by tile, as ComfyUI does: three tilings of different shapes, feathered over the
    overlap, averaged (tile_size and overlap in image pixels). Where one tile holds the whole image the result
    is the plain encode's."""

    CATEGORY = "_for_testing"
    DISPLAY_NAME = "VAE Encode (Tiled)"

    class Inputs(NodeInputs):
        pixels: Any = Link("IMAGE")
        vae: Any = Link("VAE")
        tile_size: int = Widget(512, ge=64, le=4096, step=64, advanced=True)
        overlap: int = Widget(64, ge=0, le=4096, step=32, advanced=True)
        temporal_size: int = Widget(64, ge=8, le=4096, step=4, advanced=True,
                                    tooltip="Only used for video VAEs: Amount of frames to encode at a time.")
        temporal_overlap: int = Widget(8, ge=4, le=4096, step=4, advanced=True,
                                       tooltip="Only used for video VAEs: Amount of frames to overlap.")

    OUTPUTS = (Output("LATENT", "LATENT"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import torch

        from .interruption import interruptible

        vae, tile, overlap = inputs.vae, inputs.tile_size, inputs.overlap
        if not isinstance(vae, VAEBundle):
            raise NodeError(f"vae: expected a VAE, got {type(vae).__name__}")
        if overlap >= tile // 2:
            raise NodeError(f"overlap: {overlap} must be less than half the tile_size ({tile}): the narrow tiling "
                            f"uses tiles {tile // 2} pixels wide")
        pixels = _crop_to_factor(inputs.pixels, vae.downscale)

        def encode_tile(x: torch.Tensor) -> torch.Tensor:
            x = x.to(device=vae.device, dtype=vae.dtype) * 2 - 1
            return vae.vae.encode(x).latent_dist.mode().float().cpu()

        shapes = ((tile, tile), (tile // 2, tile * 2), (tile * 2, tile // 2))
        x = pixels[..., :3].permute(0, 3, 1, 2)
        channels = vae.vae.config.latent_channels
        with torch.inference_mode(), interruptible(vae.vae, ctx.check_interrupted):
            z = sum(tiled(x, encode_tile, shape, overlap, 1 / vae.downscale, channels, ctx) for shape in shapes) / 3.0
        return ({"samples": (z - vae.shift_factor) * vae.scaling_factor},)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    return [max(0, min(size - overlap, p)) for p in range(0, size - overlap, tile - overlap)]


def _feather(length: int, band: int) -> torch.Tensor:
    """Weights along one side of a tile: ramps of ``band`` steps (1/band .. 1) at both ends, 1 between."""
    import torch

    w = torch.ones(length)
    if band < length:
        for t in range(band):
            w[t] *= (t + 1) / band
            w[length - 1 - t] *= (t + 1) / band
    return w


def tiled(x: torch.Tensor, fn: Any, tile: tuple[int, int], overlap: int, scale: float, out_channels: int,
          ctx: Any = None) -> torch.Tensor:
    """``fn`` (which scales space by ``scale``) applied to ``x`` [B, C, H, W] in (h, w) tiles that overlap by
    ``overlap``, the results blended with feathered weights (ComfyUI's tiled_scale). A batch item that fits in
    one tile goes through ``fn`` whole."""
    import itertools

    import torch

    b, _, h, w = x.shape
    out = torch.empty(b, out_channels, round(h * scale), round(w * scale))
    band = round(overlap * scale)
    for i in range(b):
        item = x[i:i + 1]
        if h <= tile[0] and w <= tile[1]:
            out[i:i + 1] = fn(item)
            continue
        acc = torch.zeros(1, out_channels, *out.shape[2:])
        weight = torch.zeros(1, 1, *out.shape[2:])
        for top, left in itertools.product(_tile_starts(h, tile[0], overlap), _tile_starts(w, tile[1], overlap)):
            if ctx is not None:
                ctx.check_interrupted()
            piece = fn(item[..., top:top + tile[0], left:left + tile[1]])
            ph, pw = piece.shape[-2:]
            y0, x0 = round(top * scale), round(left * scale)
            ph, pw = min(ph, acc.shape[-2] - y0), min(pw, acc.shape[-1] - x0)
            mask = (_feather(piece.shape[-2], band)[:, None] * _feather(piece.shape[-1], band)[None])[:ph, :pw]
            acc[..., y0:y0 + ph, x0:x0 + pw] += piece[..., :ph, :pw] * mask
            weight[..., y0:y0 + ph, x0:x0 + pw] += mask
        out[i:i + 1] = acc / weight
    return out


def _crop_to_factor(pixels: Any, f: int) -> torch.Tensor:
    """Centre crop of an IMAGE to a multiple of the VAE's factor (as VAEEncode)."""
    import torch

    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4:
        raise NodeError("pixels: expected an IMAGE tensor [batch, height, width, channels]")
    h, w = pixels.shape[1] // f * f, pixels.shape[2] // f * f
    if h == 0 or w == 0:
        raise NodeError(f"pixels: image of {pixels.shape[2]}x{pixels.shape[1]} is smaller than {f} pixels")
    y, x = (pixels.shape[1] - h) // 2, (pixels.shape[2] - w) // 2
    return pixels[:, y:y + h, x:x + w]


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

    pixels = _crop_to_factor(pixels, vae.downscale)
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
