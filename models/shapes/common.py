"""Helpers shared by the training stages."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORKDIR = REPO_ROOT / "build" / "tiny-shapes"
DEFAULT_EXPORT = REPO_ROOT / "models" / "tiny-shapes-sd"
TRAIN_SEED = 1
TRAIN_PER_SPEC = 24


def setup_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def lr_at(base: float, step: int, frac: float, warmup: int = 200, floor: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine decay to ``floor * base`` over the time budget."""
    warm = min(1.0, (step + 1) / warmup)
    frac = min(max(frac, 0.0), 1.0)
    return base * warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))


def atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Clock:
    """Wall-clock budget that survives restarts: ``elapsed`` starts from what a checkpoint recorded."""

    def __init__(self, minutes: float, already: float = 0.0) -> None:
        self.budget = minutes * 60.0
        self.start = time.time() - already

    @property
    def elapsed(self) -> float:
        return time.time() - self.start

    @property
    def frac(self) -> float:
        return self.elapsed / self.budget if self.budget > 0 else 1.0

    def done(self) -> bool:
        return self.elapsed >= self.budget


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)
