"""Guidance between two prompts and a negative (ComfyUI's DualCFGGuider).

Three predictions per step -- negative, a second ("middle") prompt and the first prompt -- are combined as

* ``regular``: ``neg + cfg2 * (mid - neg) + cfg1 * (pos - mid)``;
* ``nested``: ``neg + cfg2 * ((mid + cfg1 * (pos - mid)) - neg)``.

The three run as one batch on ``cat([x, x, x])``. In the regular style a ``cfg2`` of 1 needs no negative pass
and a ``cfg1`` of 1 as well no middle pass, which is ComfyUI's shortcut; the result is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["DualCFGDenoiser"]


def _cat(parts: list[Any]) -> Any:
    """Concatenate keyword inputs leaf by leaf (nested mappings, e.g. SDXL's ``added_cond_kwargs``)."""
    first = parts[0]
    if isinstance(first, Mapping):
        return {k: _cat([p[k] for p in parts]) for k in first}
    return torch.cat(parts)


class DualCFGDenoiser:
    """The guided prediction of ``network(x, t, return_dict=False, **inputs)`` over three conditionings.

    ``positive``, ``middle`` and ``negative`` are the network's keyword inputs for the latents' batch (same
    keys and shapes). Called like :class:`schedulers.guidance.CFGDenoiser`: ``(x, t, scale=None)``.
    """

    def __init__(self, network: Callable[..., Any], positive: Mapping[str, Any], middle: Mapping[str, Any],
                 negative: Mapping[str, Any], cfg1: float, cfg2: float, style: str = "regular"):
        if style not in ("regular", "nested"):
            raise ValueError(f"style must be 'regular' or 'nested', got {style!r}")
        self.network = network
        self.cfg1, self.cfg2, self.style = float(cfg1), float(cfg2), style
        self.calls = 0
        if style == "regular" and self.cfg2 == 1.0:
            self.roles = ("positive",) if self.cfg1 == 1.0 else ("middle", "positive")
        else:
            self.roles = ("negative", "middle", "positive")
        given = {"positive": positive, "middle": middle, "negative": negative}
        self._inputs = _cat([dict(given[r]) for r in self.roles])

    def __call__(self, x: torch.Tensor, t: torch.Tensor,
                 scale: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        n = len(self.roles)
        model_input = torch.cat([x] * n) if n > 1 else x
        if scale is not None:
            model_input = scale(model_input, t)
        self.calls += 1
        out = self.network(model_input, t, return_dict=False, **self._inputs)
        if isinstance(out, tuple | list):
            out = out[0]
        pred = dict(zip(self.roles, out.chunk(n), strict=True))
        pos = pred["positive"]
        mid = pred.get("middle", pos)
        text = mid + self.cfg1 * (pos - mid)
        if "negative" not in pred:
            return text
        neg = pred["negative"]
        if self.style == "nested":
            return neg + self.cfg2 * (text - neg)
        return neg + self.cfg2 * (mid - neg) + self.cfg1 * (pos - mid)
