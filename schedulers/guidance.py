"""Classifier-free guidance over any denoising network.

``CFGDenoiser`` computes the network's prediction exactly as diffusers' pipelines do (same batching, same
order of operations), so that a run through ``sampling.sample`` reproduces the pipeline bit for bit. It does
not care what the prediction is (epsilon, v, flow velocity): the model sampling turns it into a denoised
estimate (:mod:`schedulers.model_sampling`).

Each side of the guidance may also be several :class:`CondEntry` (ComfyUI's conditioning lists): every
entry is predicted on its own over its area, during its timestep range, with its ControlNet residuals and
extra input channels, and the side's prediction is the average of the entries' predictions weighted per
latent pixel by ``strength`` times the entry's mask (or, for an area without a mask, a weight that ramps up
over the area's inner 8 latent pixels on every side that does not touch the latent's border) -- ComfyUI's
``calc_cond_batch`` arithmetic. Entries of one shape and ControlNet run in one network call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["FEATHER", "CFGDenoiser", "CondEntry", "area_weights"]

#: latent pixels over which an area's weight ramps up from its inner edges (ComfyUI's area "fuzz")
FEATHER = 8
#: the weight every pixel starts with, so that a pixel no entry covers divides 0 by it (ComfyUI's)
_EMPTY_WEIGHT = 1e-37

Inputs = torch.Tensor | Mapping[str, Any]


def _as_inputs(value: Inputs) -> dict[str, Any]:
    return {"encoder_hidden_states": value} if isinstance(value, torch.Tensor) else dict(value)


def _cat(neg: Any, pos: Any, where: str) -> Any:
    """``cat([neg, pos])`` leaf by leaf through nested mappings (e.g. SDXL's ``added_cond_kwargs``)."""
    if isinstance(pos, Mapping):
        if not isinstance(neg, Mapping) or set(neg) != set(pos):
            raise ValueError(f"negative inputs {where or ''} must have the positive's keys {sorted(pos)}")
        return {k: _cat(neg[k], pos[k], f"{where}.{k}".strip(".")) for k in pos}
    if neg.shape != pos.shape:
        raise ValueError(f"negative {where or 'embeddings'} {tuple(neg.shape)} must have the positive's shape "
                         f"{tuple(pos.shape)}")
    return torch.cat([neg, pos])


@dataclass(eq=False)
class CondEntry:
    """One conditioning entry as the guidance evaluates it.

    ``inputs``: the network's keyword inputs for the whole latent batch. ``area``: ``(height, width, y, x)``
    in latent pixels (None: the whole latent). ``mask``: per-pixel weights ``[B or 1, H, W]`` at the
    latent's size (already times the mask strength). ``timestep_range``: ``(high, low)`` network timesteps;
    the entry takes part only while ``low <= t <= high``. ``control``: ``control(x, t, inputs)`` -> extra
    network inputs (ControlNet residuals) or None. ``concat``: extra input channels ``[B, c, H, W]`` put after
    the (scaled) latents, cropped to the area like them.
    """

    inputs: Mapping[str, Any]
    area: tuple[int, int, int, int] | None = None
    strength: float = 1.0
    mask: torch.Tensor | None = None
    timestep_range: tuple[float, float] | None = None
    control: Callable[..., Mapping[str, Any] | None] | None = None
    concat: torch.Tensor | None = None

    def clipped_area(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """The area within a ``height`` x ``width`` latent (size cut at the border), or None for all of it."""
        if self.area is None:
            return None
        h, w, y, x = self.area
        return (min(h, height - y), min(w, width - x), y, x)


def area_weights(entry: CondEntry, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The per-pixel weight ``[B, 1, h, w]`` (float32) of ``entry`` over its area of a latent of ``shape``.

    ``strength`` times the mask where there is one; without a mask, an area that does not touch the latent's
    top / bottom / left / right border ramps its weight over ``min(8, side // 4)`` pixels on that side, row
    ``t`` from the edge weighing ``(t + 1) / rr`` (the ramps of crossing sides multiply)."""
    b, _, height, width = shape
    area = entry.clipped_area(height, width)
    h, w, y, x = area if area is not None else (height, width, 0, 0)
    if entry.mask is not None:
        mask = entry.mask[:b, y:y + h, x:x + w].to(device=device, dtype=torch.float32)
        mult = (mask * entry.strength).unsqueeze(1)
        if mult.shape[0] != b:
            mult = mult.repeat(b // mult.shape[0], 1, 1, 1)
        return mult
    mult = torch.full((b, 1, h, w), float(entry.strength), device=device, dtype=torch.float32)
    if area is None:
        return mult
    for dim, (size, start, total) in enumerate(((h, y, height), (w, x, width))):
        rr = min(FEATHER, size // 4)
        for t in range(rr):
            ramp = (1.0 / rr) * (t + 1)
            if start != 0:
                mult.narrow(dim + 2, t, 1).mul_(ramp)
            if size + start < total:
                mult.narrow(dim + 2, size - 1 - t, 1).mul_(ramp)
    return mult


def _crop(t: torch.Tensor, area: tuple[int, int, int, int] | None) -> torch.Tensor:
    if area is None:
        return t
    h, w, y, x = area
    return t[:, :, y:y + h, x:x + w]


def _shapes(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _shapes(v)) for k, v in value.items()))
    return tuple(value.shape) if isinstance(value, torch.Tensor) else id(value)


def _cat_all(values: list[Any]) -> Any:
    """``torch.cat`` leaf by leaf over several entries' inputs (all of one structure and shape)."""
    first = values[0]
    if isinstance(first, Mapping):
        return {k: _cat_all([v[k] for v in values]) for k in first}
    return torch.cat(values) if len(values) > 1 else first


class CFGDenoiser:
    """A network's prediction with classifier-free guidance.

    ``positive`` / ``negative`` are the network's conditioning inputs for the latents' batch: a tensor of
    text-encoder hidden states (passed as ``encoder_hidden_states``, a UNet's), or a mapping of keyword
    inputs (nested mappings allowed). With ``cfg > 1`` (the pipelines' ``do_classifier_free_guidance``) the
    network runs once on ``cat([x, x])`` with every input as ``cat([negative, positive])`` and the result is
    ``uncond + cfg * (cond - uncond)``; with ``cfg <= 1`` only the positive pass runs, as the pipelines do.
    ``network(x, t, return_dict=False, **inputs)`` may return a tensor or a tuple whose first item is one.
    With entries, ``empty(x, t)`` is the prediction of a latent pixel no entry of a side covers (ComfyUI's: the
    output whose denoised estimate is 0); without it such pixels predict 0.

    ``combine(uncond, cond, cfg)`` replaces that formula where a family's pipeline orders the arithmetic
    differently (the same value, other last bits).

    ``calls`` counts network evaluations (one per ``__call__``, whatever the CFG batching).
    """

    def __init__(self, network: Callable[..., Any], positive: Inputs | Sequence[CondEntry],
                 negative: Inputs | Sequence[CondEntry] | None = None, cfg: float = 7.5,
                 empty: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 combine: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None):
        self.network = network
        self.cfg = float(cfg)
        self.combine = combine
        self.calls = 0
        self.empty = empty
        self._entries: list[tuple[int, CondEntry]] | None = None
        self._uncovered: dict[tuple, dict[int, torch.Tensor | None]] = {}
        if _is_entries(positive) or _is_entries(negative):
            if self.do_cfg and negative is None:
                raise ValueError(f"cfg={cfg} > 1 needs negative (unconditional) conditioning")
            # the unconditional side first, as the pipelines batch cat([negative, positive])
            sides = ([(0, e) for e in _entry_list(negative)] if self.do_cfg else []) + \
                [(1, e) for e in _entry_list(positive)]
            self._entries = sides
            self._weights: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}
            return
        pos = _as_inputs(positive)
        if self.do_cfg:
            if negative is None:
                raise ValueError(
                    f"cfg={cfg} > 1 needs negative (unconditional) embeddings; encode an empty prompt for them"
                )
            self._inputs = _cat(_as_inputs(negative), pos, "")
        else:
            self._inputs = pos

    @property
    def do_cfg(self) -> bool:
        return self.cfg > 1.0

    def __call__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        scale: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The guided prediction at timestep ``t``; ``scale(model_input, t)`` is the scheduler's
        ``scale_model_input``, applied after the CFG batching as in the pipelines."""
        if self._entries is not None:
            return self._call_entries(x, t, scale)
        model_input = torch.cat([x] * 2) if self.do_cfg else x
        if scale is not None:
            model_input = scale(model_input, t)
        self.calls += 1
        out = self.network(model_input, t, return_dict=False, **self._inputs)
        if isinstance(out, tuple | list):
            out = out[0]
        if self.do_cfg:
            uncond, cond = out.chunk(2)
            if self.combine is not None:
                return self.combine(uncond, cond, self.cfg)
            out = uncond + self.cfg * (cond - uncond)
        return out

    def _call_entries(self, x: torch.Tensor, t: torch.Tensor, scale: Any) -> torch.Tensor:
        """ComfyUI's calc_cond_batch: each active entry over its area, weighted, averaged per side."""
        shape = tuple(x.shape)
        ranged = any(e.timestep_range is not None for _, e in self._entries)
        now = float(t.reshape(-1)[0]) if ranged else 0.0  # a host read only where an entry has a range
        groups: dict[Any, list[tuple[int, CondEntry]]] = {}
        active = []
        for i, (side, e) in enumerate(self._entries):
            if e.timestep_range is not None and not e.timestep_range[1] <= now <= e.timestep_range[0]:
                continue
            active.append(i)
            area = e.clipped_area(shape[2], shape[3])
            if area is not None and (area[0] <= 0 or area[1] <= 0):
                continue  # an area outside the latent covers nothing
            size = area[:2] if area is not None else shape[2:]
            key = (size, id(e.control), _shapes(e.inputs), None if e.concat is None else tuple(e.concat.shape))
            groups.setdefault(key, []).append((side, e))
        acc = {s: torch.zeros(shape, device=x.device, dtype=torch.float32) for s in (0, 1)}
        weight = {s: torch.full(shape, _EMPTY_WEIGHT, device=x.device, dtype=torch.float32) for s in (0, 1)}
        for members in groups.values():
            areas = [e.clipped_area(shape[2], shape[3]) for _, e in members]
            model_input = torch.cat([_crop(x, a) for a in areas])
            if scale is not None:
                model_input = scale(model_input, t)
            inputs = _cat_all([dict(e.inputs) for _, e in members])
            control = members[0][1].control
            if control is not None:
                extra = control(model_input, t, inputs)
                if extra:
                    inputs = {**inputs, **extra}
            if members[0][1].concat is not None:
                model_input = torch.cat([model_input, torch.cat([_crop(e.concat, a) for (_, e), a in
                                                                 zip(members, areas, strict=True)])], dim=1)
            self.calls += 1
            out = self.network(model_input, t, return_dict=False, **inputs)
            if isinstance(out, tuple | list):
                out = out[0]
            for (side, e), area, o in zip(members, areas, out.chunk(len(members)), strict=True):
                mult = self._weight(e, shape, x.device)
                h, w, y, x0 = area if area is not None else (shape[2], shape[3], 0, 0)
                acc[side][:, :, y:y + h, x0:x0 + w] += o.float() * mult
                weight[side][:, :, y:y + h, x0:x0 + w] += mult
        out = {s: (acc[s] / weight[s]).to(x.dtype) for s in (0, 1)}
        if self.empty is not None:
            holes = self._holes(tuple(active), weight)
            if any(h is not None for h in holes.values()):
                zero = self.empty(x, t)
                for s, h in holes.items():
                    if h is not None:
                        out[s] = torch.where(h, zero, out[s])
        cond = out[1]
        if not self.do_cfg:
            return cond
        uncond = out[0]
        if self.combine is not None:
            return self.combine(uncond, cond, self.cfg)
        return uncond + self.cfg * (cond - uncond)

    def _holes(self, active: tuple, weight: dict) -> dict[int, torch.Tensor | None]:
        """Per side, the pixels no active entry covers (None where there are none); found once per set of
        active entries (one host read each)."""
        if active not in self._uncovered:
            holes = {}
            for s in (0, 1) if self.do_cfg else (1,):
                h = weight[s] == _EMPTY_WEIGHT
                holes[s] = h if bool(h.any()) else None
            self._uncovered[active] = holes
        return self._uncovered[active]

    def _weight(self, entry: CondEntry, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        key = (id(entry), shape)
        if key not in self._weights:
            self._weights[key] = area_weights(entry, shape, device)
        return self._weights[key]


def _is_entries(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(e, CondEntry) for e in value)


def _entry_list(value: Any) -> list[CondEntry]:
    if value is None:
        return []
    if _is_entries(value):
        return list(value)
    return [CondEntry(_as_inputs(value))]
