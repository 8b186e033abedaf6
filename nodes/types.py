"""The values that flow between the built-in diffusion nodes, one class per port type.

Port type -> Python value:

* ``MODEL``: :class:`ModelBundle` (the denoising UNet plus what a sampler needs to drive it).
* ``CLIP``: :class:`TextEncoderBundle` (tokenizer + text encoder).
* ``VAE``: :class:`VAEBundle`.
* ``CONDITIONING``: :class:`Conditioning` (prompt embeddings on the model device).
* ``LATENT``: a dict ``{"samples": Tensor[B, 4, H/8, W/8]}`` in diffusion space, i.e. VAE latents already
  multiplied by the VAE's ``scaling_factor`` (the diffusers convention; VAEDecode divides). It may also hold
  ``"noise_mask"`` (``Tensor[B, H, W]`` or ``[B, 1, H/8, W/8]``, 1 = repaint). The tensor may live on any device
  and dtype: consumers move it where they need it.
* ``IMAGE``: ``float32`` tensor ``[B, H, W, C]`` in 0..1 on the CPU (ComfyUI's convention).
* ``MASK``: ``float32`` tensor ``[B, H, W]`` in 0..1 on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

# Port type names (ComfyUI's, so the graph editor colours and links them).
MODEL, CLIP, VAE, CONDITIONING, LATENT, IMAGE, MASK = (
    "MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK",
)


@dataclass(eq=False)
class ModelBundle:
    """A loaded denoiser.

    ``unet`` is a diffusers ``UNet2DConditionModel`` already on ``device`` in ``dtype`` and in eval mode.
    ``scheduler_config`` is the model's own scheduler configuration (a plain dict, as in
    ``scheduler_config.json``) for ``SomeScheduler.from_config``; ``prediction_type`` is "epsilon",
    "v_prediction" or "sample" (read from that config). ``name`` is the model's name in the LoadModel list and
    ``source`` the resolved path it was loaded from (a diffusers folder or a ``.safetensors`` file).
    """

    unet: Any
    scheduler_config: dict
    prediction_type: str
    device: torch.device
    dtype: torch.dtype
    name: str
    source: str

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)


@dataclass(eq=False)
class TextEncoderBundle:
    """A CLIP tokenizer and text encoder (transformers ``CLIPTokenizer`` / ``CLIPTextModel``) on ``device``."""

    tokenizer: Any
    text_encoder: Any
    device: torch.device
    dtype: torch.dtype
    name: str


@dataclass(eq=False)
class VAEBundle:
    """A diffusers ``AutoencoderKL`` on ``device``; ``scaling_factor`` maps VAE latents to diffusion space."""

    vae: Any
    scaling_factor: float
    device: torch.device
    dtype: torch.dtype
    name: str

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


@dataclass(eq=False)
class Conditioning:
    """Encoded prompt: ``embeds`` is ``Tensor[B, seq, D]`` on the text encoder's device and dtype.

    ``B`` is 1 for one prompt (the sampler repeats it over the latent batch). ``seq`` is 77 for SD1.x, or a
    multiple of 77 when TextEncode's ``long_prompt`` is "chunk". Positive and negative must have the same
    ``seq`` before classifier-free guidance batches them: the sampler pads the shorter one with
    :func:`match_lengths` (as ComfyUI does). ``extra`` holds optional details (e.g. ``dropped_tokens``).
    """

    embeds: torch.Tensor
    prompt: str
    extra: dict = field(default_factory=dict)


def match_lengths(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Give two ``[B, seq, D]`` embeddings the same ``seq`` by repeating each along the sequence axis up to
    the least common multiple of both lengths (ComfyUI's rule for chunked prompts; 77 and 154 -> 154)."""
    la, lb = a.shape[1], b.shape[1]
    if la == lb:
        return a, b
    n = math.lcm(la, lb)
    return a.repeat(1, n // la, 1), b.repeat(1, n // lb, 1)
