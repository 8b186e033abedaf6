"""Classifier-free guidance over any denoising network.

``CFGDenoiser`` computes the network's prediction exactly as diffusers' pipelines do (same batching, same
order of operations), so that a run through ``sampling.sample`` reproduces the pipeline bit for bit. It does
not care what the prediction is (epsilon, v, flow velocity): the model sampling turns it into a denoised
estimate (:mod:`schedulers.model_sampling`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["CFGDenoiser"]

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


class CFGDenoiser:
    """A network's prediction with classifier-free guidance.

    ``positive`` / ``negative`` are the network's conditioning inputs for the latents' batch: a tensor of
    text-encoder hidden states (passed as ``encoder_hidden_states``, a UNet's), or a mapping of keyword
    inputs (nested mappings allowed). With ``cfg > 1`` (the pipelines' ``do_classifier_free_guidance``) the
    network runs once on ``cat([x, x])`` with every input as ``cat([negative, positive])`` and the result is
    ``uncond + cfg * (cond - uncond)``; with ``cfg <= 1`` only the positive pass runs, as the pipelines do.
    ``network(x, t, return_dict=False, **inputs)`` may return a tensor or a tuple whose first item is one.

    ``combine(uncond, cond, cfg)`` replaces that formula where a family's pipeline orders the arithmetic
    differently (the same value, other last bits).

    ``calls`` counts network evaluations (one per ``__call__``, whatever the CFG batching).
    """

    def __init__(self, network: Callable[..., Any], positive: Inputs, negative: Inputs | None = None,
                 cfg: float = 7.5, combine: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None):
        self.network = network
        self.cfg = float(cfg)
        self.combine = combine
        self.calls = 0
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
