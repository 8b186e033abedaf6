"""The model side of sampling: a UNet, its text conditioning and classifier-free guidance.

``CFGDenoiser`` computes the noise prediction exactly as diffusers' StableDiffusionPipeline does (same
batching, same order of operations), so that a run through ``sampling.sample`` reproduces the pipeline
bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["CFGDenoiser"]


class CFGDenoiser:
    """Epsilon prediction with classifier-free guidance.

    ``positive`` / ``negative`` are text-encoder hidden states (batch, tokens, dim) matching the latents'
    batch. With ``cfg > 1`` (the pipeline's ``do_classifier_free_guidance``) the UNet runs once on
    ``cat([x, x])`` with ``cat([negative, positive])`` and the result is ``uncond + cfg * (cond - uncond)``;
    with ``cfg <= 1`` only the positive pass runs (one UNet call per evaluation) and the prediction is used as
    is, as the pipeline does. ``unet_kwargs`` are passed to every UNet call (e.g. ``added_cond_kwargs``).

    ``calls`` counts UNet evaluations (one per ``__call__``, whatever the CFG batching).
    """

    def __init__(
        self,
        unet: Callable[..., Any],
        positive: torch.Tensor,
        negative: torch.Tensor | None = None,
        cfg: float = 7.5,
        *,
        unet_kwargs: Mapping[str, Any] | None = None,
    ):
        self.unet = unet
        self.cfg = float(cfg)
        self.positive = positive
        self.negative = negative
        self.unet_kwargs = dict(unet_kwargs or {})
        self.calls = 0
        if self.do_cfg:
            if negative is None:
                raise ValueError(
                    f"cfg={cfg} > 1 needs negative (unconditional) embeddings; encode an empty prompt for them"
                )
            if negative.shape != positive.shape:
                raise ValueError(
                    f"negative embeddings {tuple(negative.shape)} must have the positive's shape "
                    f"{tuple(positive.shape)}"
                )
            self._context = torch.cat([negative, positive])
        else:
            self._context = positive

    @property
    def do_cfg(self) -> bool:
        return self.cfg > 1.0

    def __call__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        scale: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Noise prediction at timestep ``t``; ``scale(model_input, t)`` is the scheduler's
        ``scale_model_input``, applied after the CFG batching as in the pipeline."""
        model_input = torch.cat([x] * 2) if self.do_cfg else x
        if scale is not None:
            model_input = scale(model_input, t)
        self.calls += 1
        eps = self.unet(
            model_input, t, encoder_hidden_states=self._context, return_dict=False, **self.unet_kwargs
        )[0]
        if self.do_cfg:
            uncond, cond = eps.chunk(2)
            eps = uncond + self.cfg * (cond - uncond)
        return eps
