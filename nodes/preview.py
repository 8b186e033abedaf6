"""Cheap previews of latents during sampling: a fixed linear map of a family's latent channels to RGB (the
approximation ComfyUI uses for its latent previews; the factors live in each family's latent format),
upscaled to be visible, encoded as JPEG."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from .families.base import LatentFormat

MIN_SIDE = 256
MAX_SIDE = 512


def latent_to_rgb(latents: torch.Tensor, fmt: LatentFormat | None = None) -> torch.Tensor:
    """The first latent of a batch [B, C, h, w] (or one [C, h, w]) -> uint8 [h, w, 3] on the CPU, with the
    family's preview factors (SD1.x's by default)."""
    import torch

    if fmt is None:
        from .families.sd1 import StableDiffusion1

        fmt = StableDiffusion1.latent
    z = latents[0] if latents.ndim == 4 else latents
    factors = torch.tensor(fmt.rgb_factors, dtype=torch.float32, device=z.device)
    rgb = torch.einsum("chw,cr->hwr", z[: len(fmt.rgb_factors)].float(), factors)
    if fmt.rgb_bias is not None:
        rgb = rgb + torch.tensor(fmt.rgb_bias, dtype=torch.float32, device=z.device)
    return ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).cpu()


def latent_preview_jpeg(latents: torch.Tensor, fmt: LatentFormat | None = None, quality: int = 80) -> bytes:
    """A JPEG preview of the first latent in ``latents``, scaled up (nearest) so its short side is at least
    256 pixels (and its long side at most 512 where that allows)."""
    from PIL import Image

    img = Image.fromarray(latent_to_rgb(latents, fmt).numpy())
    w, h = img.size
    scale = max(1, MIN_SIDE // max(1, min(w, h)))
    while scale > 1 and max(w, h) * scale > MAX_SIDE:
        scale -= 1
    if scale > 1:
        img = img.resize((w * scale, h * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
