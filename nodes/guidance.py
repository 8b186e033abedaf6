"""What the sampler makes of a CONDITIONING: the guidance's entries (:class:`schedulers.guidance.CondEntry`).

ComfyUI resolves a conditioning list once before sampling (``process_conds``), and so does this module:

* an area in percent becomes latent pixels (``round``, at least 1 pixel); a mask is resized (bilinear) to
  the latent and, with ``set_area_to_bounds``, narrows the area to the box of its non-zero pixels (at least
  8 x 8 latent pixels);
* ``start_percent`` / ``end_percent`` become network timesteps through the model sampling;
* every area entry on one side gets a partner with the same area on the other side, made of the smallest
  other-side entry that covers it (so areas are guided against a negative of the same area);
* a ControlNet applied with ControlNetApply (the positive only) is lent to the negative's entries;
* inpainting UNets get their extra input channels (mask, masked image latents) from
  InpaintModelConditioning, or from the latent's noise mask and the latent itself.

A plain single entry on each side needs none of this: :func:`plain` says so, and the sampler then runs
exactly the diffusers pipelines' guidance.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from graph_runtime import NodeError
from graph_runtime.limits import LIMITS

from .types import Conditioning, ModelBundle

if TYPE_CHECKING:
    import torch

    from schedulers.guidance import CondEntry

#: the smallest area a mask's bounds may give (ComfyUI's)
MIN_BOUNDS = 8


def check_conditioning(cond: Any, what: str) -> Conditioning:
    if not isinstance(cond, Conditioning):
        raise NodeError(f"{what}: expected CONDITIONING (from TextEncode), got {type(cond).__name__}")
    return cond


def plain(model: ModelBundle, positive: Conditioning, negative: Conditioning | None) -> bool:
    """Whether the run is one plain entry per side on a model without extra input channels."""
    return model.inpaint_channels == 0 and positive.is_plain and (negative is None or negative.is_plain)


def resolve_area(entry: Conditioning, height: int, width: int, what: str) -> Conditioning:
    """``entry`` with its area in latent pixels and its mask at the latent's size (ComfyUI's
    ``resolve_areas_and_cond_masks``)."""
    import torch

    area = entry.area
    if area is not None and area[0] == "percentage":
        _, h, w, y, x = area
        area = (max(1, round(h * height)), max(1, round(w * width)), round(y * height), round(x * width))
    mask = entry.mask
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
            raise NodeError(f"{what}: a conditioning mask must be a MASK [batch, height, width]")
        mask = mask.float()
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if tuple(mask.shape[1:]) != (height, width):
            mask = torch.nn.functional.interpolate(mask.unsqueeze(1), size=(height, width), mode="bilinear",
                                                   align_corners=False).squeeze(1)
        if entry.set_area_to_bounds:
            bounds = mask.abs().amax(dim=0)
            ys, xs = torch.nonzero(bounds, as_tuple=True)
            if ys.numel() == 0:
                area = (MIN_BOUNDS, MIN_BOUNDS, 0, 0)
            else:
                y0, x0 = int(ys.min()), int(xs.min())
                area = (max(MIN_BOUNDS, int(ys.max()) - y0 + 1), max(MIN_BOUNDS, int(xs.max()) - x0 + 1), y0, x0)
    if area is not None:
        area = tuple(int(v) for v in area)
    return replace(entry, area=area, mask=mask)


def _covers(outer: tuple, inner: tuple) -> bool:
    """Whether area ``outer`` holds all of area ``inner`` (both ``(h, w, y, x)``)."""
    return (inner[2] >= outer[2] and inner[3] >= outer[3] and outer[0] + outer[2] >= inner[0] + inner[2]
            and outer[1] + outer[3] >= inner[1] + inner[3])


def add_opposite_area(side: list[Conditioning], entry: Conditioning) -> None:
    """Give ``side`` an entry with ``entry``'s area (and its other settings), its text from the smallest
    ``side`` entry that covers the area -- unless that one already has exactly this area (ComfyUI's
    ``create_cond_with_same_area_if_none``)."""
    if entry.area is None:
        return
    smallest = None
    for other in side:
        if other.area is not None:
            if _covers(other.area, entry.area):
                if smallest is None or smallest.area is None or \
                        smallest.area[0] * smallest.area[1] > other.area[0] * other.area[1]:
                    smallest = other
        elif smallest is None:
            smallest = other
    if smallest is None or smallest.area == entry.area:
        return
    side.append(replace(entry, embeds=smallest.embeds, prompt=smallest.prompt, pooled=smallest.pooled,
                        extra=smallest.extra, concat_latent=smallest.concat_latent,
                        concat_mask=smallest.concat_mask))


def lend_controls(positive: list[Conditioning], negative: list[Conditioning]) -> None:
    """ControlNetApply's ControlNets (positive entries without an area) are lent to the negative's entries
    without an area and without a ControlNet, in turn -- unless some negative entry has one already."""
    controls = [e.control for e in positive if e.control_apply_to_uncond and e.area is None
                and e.control is not None]
    if not controls or any(e.area is None and e.control is not None for e in negative):
        return
    free = [(i, e) for i, e in enumerate(negative) if e.area is None and e.control is None]
    if not free:
        return
    for k, control in enumerate(controls):
        i, original = free[k % len(free)]
        negative[i] = replace(original, control=control)


def _timestep_range(model: ModelBundle, entry: Conditioning) -> tuple[float, float] | None:
    if entry.start_percent <= 0.0 and entry.end_percent >= 1.0:
        return None
    from schedulers.model_sampling import model_sampling

    ms = model_sampling(model.scheduler_config)
    return (ms.percent_timestep(entry.start_percent), ms.percent_timestep(entry.end_percent))


def _batch_mask(mask: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if mask.shape[0] >= batch:
        return mask[:batch]
    if batch % mask.shape[0]:
        raise NodeError(f"{what}: a mask batch of {mask.shape[0]} does not divide the latent batch of {batch}")
    return mask


def guidance_entries(model: ModelBundle, positive: Conditioning, negative: Conditioning | None,
                     samples: torch.Tensor, do_cfg: bool, noise_mask: torch.Tensor | None = None
                     ) -> tuple[list[CondEntry], list[CondEntry] | None]:
    """Both sides' entries for a latent batch ``samples`` (see the module's description)."""
    from schedulers.guidance import CondEntry

    from .sampling import _to

    shape = tuple(samples.shape)
    b, _, height, width = shape
    n = len(positive.entries) + (len(negative.entries) if do_cfg else 0)
    if n > LIMITS.max_conditioning_entries:
        raise NodeError(f"positive / negative: {n} conditioning entries is more than the limit of "
                        f"{LIMITS.max_conditioning_entries} (max_conditioning_entries); combine fewer")
    sides = {"positive": [resolve_area(e, height, width, "positive") for e in positive.entries]}
    if do_cfg:
        sides["negative"] = [resolve_area(e, height, width, "negative") for e in negative.entries]
    if do_cfg:
        pos, neg = sides["positive"], sides["negative"]
        for e in list(pos):
            add_opposite_area(neg, e)
        for e in list(neg):
            add_opposite_area(pos, e)
        lend_controls(pos, neg)
    out: dict[str, list[CondEntry]] = {}
    bound: dict[int, Any] = {}  # one bound ControlNet per application: entries sharing it share its call
    for what, entries in sides.items():
        made = []
        for e in entries:
            inputs = _to(model.family.network_inputs(model, e, shape, what), model.device, model.dtype)
            mask = None
            if e.mask is not None:
                mask = _batch_mask(e.mask, b, what).to(model.device) * e.mask_strength
            control = None
            if e.control is not None:
                if id(e.control) not in bound:
                    bound[id(e.control)] = e.control.bind(model, b)
                control = bound[id(e.control)]
            made.append(CondEntry(inputs, area=e.area, strength=float(e.strength), mask=mask,
                                  timestep_range=_timestep_range(model, e), control=control,
                                  concat=inpaint_concat(model, e, samples, noise_mask, what)))
        out[what] = made
    return out["positive"], out.get("negative")


def inpaint_concat(model: ModelBundle, entry: Conditioning, samples: torch.Tensor,
                   noise_mask: torch.Tensor | None, what: str) -> torch.Tensor | None:
    """An inpainting UNet's extra input ``cat([mask, masked image latents])`` for the latent batch: from
    InpaintModelConditioning's ``concat_mask`` / ``concat_latent``, else the latent's noise mask and the
    latent itself (what VAEEncodeForInpaint gives). The mask is resized (bilinear) and rounded, as ComfyUI
    does; None for other models."""
    if model.inpaint_channels == 0:
        return None
    import torch

    from .inpainting import latent_mask, resize_to_batch

    b, _, h, w = samples.shape
    latent = entry.concat_latent if entry.concat_latent is not None else samples
    mask = entry.concat_mask if entry.concat_mask is not None else noise_mask
    if mask is None:
        raise NodeError(f"{what}: {model.name} is an inpainting model (its UNet takes a mask and the masked "
                        "image): use InpaintModelConditioning, or VAEEncodeForInpaint for the latent")
    latent = latent.to(device=model.device, dtype=torch.float32)
    if tuple(latent.shape[2:]) != (h, w):
        latent = torch.nn.functional.interpolate(latent, size=(h, w), mode="bilinear", align_corners=False)
    latent = resize_to_batch(latent, b)
    mask = resize_to_batch(latent_mask(mask, (b, 1, h, w)).round(), b).to(model.device)
    return torch.cat([mask, latent], dim=1).to(model.dtype)
