"""The values that flow between the built-in diffusion nodes, one class per port type.

Port type -> Python value:

* ``MODEL``: :class:`ModelBundle` (the denoising network plus what a sampler needs to drive it).
* ``CLIP``: :class:`TextEncoderBundle` (the family's tokenizers + text encoders).
* ``VAE``: :class:`VAEBundle`.
* ``CONDITIONING``: :class:`Conditioning` (prompt embeddings on the model device).
* ``LATENT``: a dict ``{"samples": Tensor[B, C, H/8, W/8]}`` (C = 4 for SD1.x/SDXL, 16 for SD3) in diffusion space, i.e. VAE latents already
  shifted by the VAE's ``shift_factor`` and multiplied by its ``scaling_factor`` (the diffusers convention; VAEDecode divides). It may also hold
  ``"noise_mask"`` (``Tensor[B, H, W]`` or ``[B, 1, H/8, W/8]``, 1 = repaint). The tensor may live on any device
  and dtype: consumers move it where they need it.
* ``IMAGE``: ``float32`` tensor ``[B, H, W, C]`` in 0..1 on the CPU (ComfyUI's convention).
* ``MASK``: ``float32`` tensor ``[B, H, W]`` in 0..1 on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the values hold tensors; declaring the port types needs no torch
    import torch

# Port type names (ComfyUI's, so the graph editor colours and links them).
MODEL, CLIP, VAE, CONDITIONING, LATENT, IMAGE, MASK = (
    "MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK",
)


@dataclass(eq=False)
class ModelBundle:
    """A loaded denoiser.

    ``network`` is the family's denoising network (a diffusers ``UNet2DConditionModel`` for SD1.x/SD2.x/SDXL,
    an ``SD3Transformer2DModel`` for SD3), already on ``device`` in ``dtype`` and in eval mode; ``family`` is
    its :class:`nodes.families.base.Family`. ``scheduler_config`` is the model's own scheduler configuration
    (a plain dict, as in ``scheduler_config.json``) for ``SomeScheduler.from_config``; ModelSampling nodes
    change it with :meth:`with_config`. ``name`` is the model's name in the loader's list and ``source`` the
    resolved path it was loaded from. ``loras`` are the LoRA adapters (:class:`nodes.lora.Adapter`, strength)
    this value runs with: the network is shared, and the sampler switches on exactly these before it runs.
    """

    network: Any
    family: Any
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype
    name: str
    source: str
    loras: tuple = ()

    @property
    def unet(self) -> Any:
        return self.network

    @property
    def prediction_type(self) -> str:
        """"epsilon", "v_prediction" or "flow" (from the scheduler config)."""
        from schedulers.model_sampling import model_sampling

        return model_sampling(self.scheduler_config).kind

    @property
    def latent_channels(self) -> int:
        n = self._network_channels
        if n is None:
            return self.family.latent.channels
        return self.family.latent.channels if n == self.family.latent.channels + self.inpaint_channels else n

    @property
    def _network_channels(self) -> int | None:
        """Channels the network takes per latent pixel (a packed network's input divided by its packing)."""
        packed = getattr(self.network.config, "in_channels", None)
        return None if packed is None else int(packed) // self.family.latent.packing ** 2

    @property
    def inpaint_channels(self) -> int:
        """Extra input channels of an inpainting UNet (a mask and the masked image's latents: 1 + channels),
        else 0."""
        c = self.family.latent.channels
        n = self._network_channels
        return c + 1 if n == 2 * c + 1 else 0

    def with_config(self, **changes: Any) -> ModelBundle:
        """The same network with scheduler config keys changed (the network is shared, not copied)."""
        return replace(self, scheduler_config={**self.scheduler_config, **changes})


@dataclass(eq=False)
class TextEncoderBundle:
    """A family's text encoders by slot (e.g. ``clip_l``, ``clip_g``, ``t5``), each a tokenizer and a
    transformers model on ``device``. ``last_layer`` is CLIPSetLastLayer's choice (None: the family's own);
    ``loras`` the LoRA adapters (adapter, strength) on its encoders that encoding switches on (see ModelBundle)."""

    family: Any
    encoders: dict
    device: torch.device
    dtype: torch.dtype
    name: str
    last_layer: int | None = None
    loras: tuple = ()

    @property
    def first(self) -> Any:
        return next(iter(self.encoders.values()))

    @property
    def tokenizer(self) -> Any:
        return self.first.tokenizer

    @property
    def text_encoder(self) -> Any:
        return self.first.model


@dataclass(eq=False)
class VAEBundle:
    """A diffusers ``AutoencoderKL`` on ``device``: diffusion-space latents are
    ``(vae_latents - shift_factor) * scaling_factor`` (the shift is 0 for SD1.x/SDXL, non-zero for SD3)."""

    vae: Any
    scaling_factor: float
    device: torch.device
    dtype: torch.dtype
    name: str
    shift_factor: float = 0.0

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


@dataclass(eq=False)
class Conditioning:
    """Encoded prompt: ``embeds`` is ``Tensor[B, seq, D]`` on the text encoder's device and dtype.

    ``B`` is 1 for one prompt (the sampler repeats it over the latent batch). ``seq`` is 77 for SD1.x, or a
    multiple of 77 when TextEncode's ``long_prompt`` is "chunk". Positive and negative must have the same
    ``seq`` before classifier-free guidance batches them: the sampler pads the shorter one with
    :func:`match_lengths` (as ComfyUI does). ``pooled`` is the pooled text embedding of the families that
    use one (SDXL, SD3). ``extra`` holds optional details (e.g. ``dropped_tokens``; SDXL's ``sizes``).

    A CONDITIONING is one or more such entries (ComfyUI's list of conditionings): ``combined`` holds the
    entries after this one (ConditioningCombine), and :attr:`entries` all of them. The sampler predicts each
    entry on its own -- over its ``area`` (``(height, width, y, x)`` in latent pixels, or ComfyUI's
    ``("percentage", h, w, y, x)``), weighted by ``strength`` and its ``mask`` (``[B, H, W]`` at any size,
    times ``mask_strength``; ``set_area_to_bounds`` narrows the area to the mask's box), only between
    ``start_percent`` and ``end_percent`` of the schedule -- and averages the predictions by those weights.
    ``control`` is a ControlNet applied with this entry (:mod:`nodes.controlnet`); ``concat_latent`` and
    ``concat_mask`` are the extra input channels of inpainting models (InpaintModelConditioning). Nodes that
    change a conditioning change every entry (:func:`map_entries`).
    """

    embeds: torch.Tensor
    prompt: str
    pooled: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)
    area: tuple | None = None
    strength: float = 1.0
    mask: torch.Tensor | None = None
    mask_strength: float = 1.0
    set_area_to_bounds: bool = False
    start_percent: float = 0.0
    end_percent: float = 1.0
    control: Any = None
    control_apply_to_uncond: bool = False
    concat_latent: torch.Tensor | None = None
    concat_mask: torch.Tensor | None = None
    combined: tuple[Conditioning, ...] = ()

    @property
    def entries(self) -> tuple[Conditioning, ...]:
        """Every entry, this one first (each without ``combined``)."""
        first = replace(self, combined=()) if self.combined else self
        return (first, *self.combined)

    @property
    def is_plain(self) -> bool:
        """One entry over the whole image for the whole schedule, with nothing attached: the sampler then
        runs exactly the diffusers pipelines' guidance."""
        return (not self.combined and self.area is None and self.mask is None and self.control is None
                and self.concat_latent is None and self.start_percent <= 0.0 and self.end_percent >= 1.0)


def combine(entries: list[Conditioning] | tuple[Conditioning, ...]) -> Conditioning:
    """One CONDITIONING of several entries, in order."""
    flat = [e for c in entries for e in c.entries]
    if not flat:
        raise ValueError("a conditioning needs at least one entry")
    return replace(flat[0], combined=tuple(flat[1:]))


def map_entries(cond: Conditioning, change: Any) -> Conditioning:
    """``change(entry) -> entry`` applied to every entry of ``cond``."""
    return combine([change(e) for e in cond.entries])


def match_lengths(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Give two ``[B, seq, D]`` embeddings the same ``seq`` by repeating each along the sequence axis up to
    the least common multiple of both lengths (ComfyUI's rule for chunked prompts; 77 and 154 -> 154)."""
    la, lb = a.shape[1], b.shape[1]
    if la == lb:
        return a, b
    n = math.lcm(la, lb)
    return a.repeat(1, n // la, 1), b.repeat(1, n // lb, 1)
