"""Which device and dtype the built-in nodes use: chosen once, overridable.

``auto`` means CUDA in fp16 when a GPU is available, else the CPU in fp32. The environment variables
``GRAPH_RUNTIME_DEVICE`` (``cpu``, ``cuda``, ``cuda:1`` ...) and ``GRAPH_RUNTIME_DTYPE`` (``fp32``, ``fp16``,
``bf16``) change the automatic choice; LoadModel's ``device`` / ``dtype`` inputs override it per model.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

from graph_runtime import NodeError

if TYPE_CHECKING:  # torch loads when a device is first chosen, not when the nodes are declared
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")
_DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16",
                "float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


@cache
def default_device() -> torch.device:
    import torch

    env = os.environ.get("GRAPH_RUNTIME_DEVICE", "").strip()
    if env and env != "auto":
        return _parse_device(env)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _parse_device(name: str) -> torch.device:
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise NodeError(f"unknown device {name!r}: use auto, cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NodeError(f"device {name!r} requested but CUDA is not available on this machine")
    return dev


def resolve_device(choice: str = "auto") -> torch.device:
    """``auto`` -> :func:`default_device`; ``cpu`` / ``cuda`` -> that device (an error if CUDA is missing)."""
    if choice in ("", "auto"):
        return default_device()
    return _parse_device(choice)


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """``auto`` -> GRAPH_RUNTIME_DTYPE if set, else fp16 on CUDA and fp32 elsewhere."""
    import torch

    if choice in ("", "auto"):
        env = os.environ.get("GRAPH_RUNTIME_DTYPE", "").strip().lower()
        if env and env != "auto":
            choice = env
        else:
            return torch.float16 if device.type == "cuda" else torch.float32
    try:
        return getattr(torch, _DTYPE_NAMES[choice])
    except KeyError:
        raise NodeError(f"unknown dtype {choice!r}: use auto, fp32, fp16 or bf16") from None


def dtype_name(dtype: torch.dtype) -> str:
    import torch

    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))
