"""Classifier-free guidance that keeps the unconditional prediction, for the CFG++ step rules.

CFG++ (Chung et al. 2024) steps from the guided denoised estimate but renoises with the *unconditional* one,
so those rules need both. ``UncondCFG`` batches ``[negative, positive]`` on ``cat([x, x])`` as
:class:`schedulers.guidance.CFGDenoiser` does with guidance on -- also at cfg 1, where the unconditional pass
is still needed -- returns ``uncond + cfg * (cond - uncond)`` and keeps ``uncond`` of the last call, which
:meth:`schedulers.kdiffusion.SigmaDenoiser.uncond` turns into a denoised estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .dual_cfg import _cat

__all__ = ["UncondCFG"]


class UncondCFG:
    """The guided prediction of ``network(x, t, return_dict=False, **inputs)``, keeping the unconditional one.

    ``positive`` / ``negative`` are the network's keyword inputs for the latents' batch (same keys and shapes).
    """

    def __init__(self, network: Callable[..., Any], positive: Mapping[str, Any], negative: Mapping[str, Any],
                 cfg: float):
        self.network = network
        self.cfg = float(cfg)
        self.calls = 0
        self.uncond: torch.Tensor | None = None
        self._inputs = _cat([dict(negative), dict(positive)])

    def __call__(self, x: torch.Tensor, t: torch.Tensor,
                 scale: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        model_input = torch.cat([x, x])
        if scale is not None:
            model_input = scale(model_input, t)
        self.calls += 1
        out = self.network(model_input, t, return_dict=False, **self._inputs)
        if isinstance(out, tuple | list):
            out = out[0]
        uncond, cond = out.chunk(2)
        self.uncond = uncond
        return uncond + self.cfg * (cond - uncond)
