"""Stopping inside one network call: a prompt can always be stopped within seconds, even when a single UNet
or VAE evaluation takes minutes (a large image on a CPU).

``interruptible(module, check)`` hooks the blocks of a network (every submodule down to three levels that is
itself called: resnets, attention blocks, transformer blocks) so that each of them first calls ``check``,
which raises to stop. The hooks change no numbers and are removed when the block of code ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: how deep into a network blocks are hooked (1: its direct children)
DEPTH = 3


def _blocks(module: Any, depth: int) -> Iterator[Any]:
    import torch

    for child in module.children():
        if not isinstance(child, torch.nn.ModuleList | torch.nn.ModuleDict | torch.nn.Sequential):
            yield child
        if depth > 1:
            yield from _blocks(child, depth - 1)


@contextmanager
def interruptible(module: Any, check: Callable[[], None]) -> Iterator[None]:
    """Within the block, every hooked sub-block of ``module`` runs ``check()`` before its forward."""
    handles = [m.register_forward_pre_hook(lambda _m, _args: check()) for m in _blocks(module, DEPTH)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
