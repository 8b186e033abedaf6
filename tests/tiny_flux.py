"""Tiny random-weight Flux.1 models (dev with the guidance embedding, schnell without) and their single files,
from the package (nodes.stand_ins.flux) under the names tests import; ComfyUI's scaled-fp8 form of a state
dict. Registered with :mod:`tiny_families` as ``flux-dev`` and ``flux-schnell``.
"""

from __future__ import annotations

import tiny_families
import torch

from nodes.stand_ins.flux import (  # noqa: F401
    SCHNELL_SCHEDULER,
    T5_DIM,
    build_flux,
    flux_checkpoint,
    flux_original,
    transformer_config,
    write_flux_parts,
)

tiny_families.BUILDERS.update({"flux-dev": build_flux,
                               "flux-schnell": lambda workdir: build_flux(workdir, seed=10, guidance=False)})


def scaled_fp8(state: dict[str, torch.Tensor], per_row: bool = False) -> dict[str, torch.Tensor]:
    """ComfyUI's scaled-fp8 form of a state dict: each matrix as fp8 e4m3fn of ``weight / scale`` with its
    scale beside it (``scale_weight``, one number; ``per_row``: the newer ``weight_scale``, one per output
    row), other tensors as they are, and the ``scaled_fp8`` marker."""
    out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for k, v in state.items():
        if k.endswith(".weight") and v.ndim == 2:
            scale = (v.abs().amax(dim=1) if per_row else v.abs().max()).float() / 448
            out[k] = (v / (scale[:, None] if per_row else scale)).to(torch.float8_e4m3fn)
            out[k.removesuffix("weight") + ("weight_scale" if per_row else "scale_weight")] = scale
        else:
            out[k] = v
    return out


def dequantized(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a scaled-fp8 state dict stands for, in float32 (the test's own reading of the format)."""
    out = {}
    for k, v in state.items():
        if v.dtype == torch.float8_e4m3fn and k != "scaled_fp8":
            stem = k.removesuffix("weight")
            scale = state.get(stem + "scale_weight", state.get(stem + "weight_scale"))
            out[k] = v.float() * (scale[:, None] if scale.ndim else scale)
        elif not k.endswith(("scale_weight", "weight_scale")) and k != "scaled_fp8":
            out[k] = v
    return out
