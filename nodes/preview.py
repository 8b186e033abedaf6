"""Cheap previews of latents during sampling: a fixed linear map of the 4 SD1.x latent channels to RGB
(the approximation ComfyUI uses for its latent previews), upscaled to be visible, encoded as JPEG."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Rows: latent channels 0..3; columns: R, G, B. A least-squares fit of SD1.x latents to their decoded colours.
SD1_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.4887),
)
MIN_SIDE = 256
MAX_SIDE = 512


def latent_to_rgb(latents: torch.Tensor) -> torch.Tensor:
    """The first latent of a batch [B, 4, h, w] (or one [4, h, w]) -> uint8 [h, w, 3] on the CPU."""
    import torch

    z = latents[0] if latents.ndim == 4 else latents
    factors = torch.tensor(SD1_LATENT_RGB, dtype=torch.float32, device=z.device)
    rgb = torch.einsum("chw,cr->hwr", z[:4].float(), factors)
    return ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).cpu()


def latent_preview_jpeg(latents: torch.Tensor, quality: int = 80) -> bytes:
    """A JPEG preview of the first latent in ``latents``, scaled up (nearest) so its short side is at least
    256 pixels (and its long side at most 512 where that allows)."""
    from PIL import Image

    img = Image.fromarray(latent_to_rgb(latents).numpy())
    w, h = img.size
    scale = max(1, MIN_SIDE // max(1, min(w, h)))
    while scale > 1 and max(w, h) * scale > MAX_SIDE:
        scale -= 1
    if scale > 1:
        img = img.resize((w * scale, h * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
