"""Tiny random-weight models of every family beyond SD1.x (built by nodes.stand_ins.tiny), saved as diffusers
folders once per test session, and an executor over them."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch

from nodes.model_store import _own_aligned_memory
from nodes.stand_ins.tiny import (  # noqa: F401
    CLIP_DIM,
    CLIP_G_DIM,
    IMAGE_SIZE,
    ROOT,
    SD21_SCHEDULER,
    SDXL_SCHEDULER,
    T5_TOKENIZER,
    build_sd2v,
    build_sd3,
    build_sdxl,
)
from nodes.stand_ins.tiny import clip_tokenizer as _clip_tokenizer  # noqa: F401
from nodes.stand_ins.tiny import tiny_clip as _clip  # noqa: F401
from nodes.stand_ins.tiny import tiny_vae as _vae  # noqa: F401

BUILDERS = {"sd2v": build_sd2v, "sdxl": build_sdxl, "sd3": build_sd3,
            "sd3-no-t5": lambda workdir: build_sd3(workdir, with_t5=False)}
_SHARED: dict[str, SimpleNamespace] = {}


def shared_family(name: str, tmp_path_factory) -> SimpleNamespace:
    """One saved-and-reloaded tiny model of family ``name`` per test session: ``folder`` (inside ``models``,
    a models folder to give the runtime), ``pipe`` (the diffusers pipeline loaded back from the folder),
    ``config`` (its original scheduler config; tests may swap ``pipe.scheduler``)."""
    if name not in _SHARED:
        from diffusers import DiffusionPipeline

        models = tmp_path_factory.mktemp(f"tiny_{name}")
        pipe = BUILDERS[name](models.parent / f"{models.name}_src")
        folder = models / f"tiny-{name}"
        pipe.save_pretrained(folder)
        absent = {"text_encoder_3": None, "tokenizer_3": None} if name == "sd3-no-t5" else {}
        pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True, **absent).to(torch.float32)
        pipe.set_progress_bar_config(disable=True)
        for module in pipe.components.values():  # as the runtime keeps them: CPU kernels pick their
            if isinstance(module, torch.nn.Module):  # vectorised path by alignment, which shows in the last bits
                _own_aligned_memory(module)
        _SHARED[name] = SimpleNamespace(folder=folder, models=models, pipe=pipe, config=dict(pipe.scheduler.config))
    return _SHARED[name]


@contextmanager
def executor_over(models_folders, workdir: Path, services):
    """An executor whose models folders (GRAPH_RUNTIME_MODELS, as a user sets them) are ``models_folders``,
    on one torch thread (see tiny_sd.single_thread)."""
    import pytest
    from nodes_support import make_executor
    from tiny_sd import single_thread

    with pytest.MonkeyPatch.context() as mp, single_thread():
        mp.setenv("GRAPH_RUNTIME_MODELS", os.pathsep.join(str(m) for m in models_folders))
        yield make_executor(workdir, services=services)
