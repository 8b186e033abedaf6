"""Shared fixtures of the built-in node tests: the embedded model folder (or, until it is trained, a
random-weight one of the same architecture family), and helpers to run workflows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the fixtures; a test module takes them with ``from nodes_support import *``
__all__ = ["loaded", "model_folder", "models_dir", "services"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = ROOT / "models" / "tiny-shapes-sd"
SD15_TOKENIZER = ROOT / "models" / "configs" / "stable-diffusion-v1-5" / "tokenizer"


def has_embedded() -> bool:
    return (EMBEDDED / "model_index.json").is_file() and any((EMBEDDED / "unet").glob("*.safetensors"))


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The repository's models folder; the embedded model ships with the project, so its absence is a failure."""
    assert has_embedded(), f"the embedded model is missing: expected a diffusers folder at {EMBEDDED}"
    return EMBEDDED.parent


@pytest.fixture(scope="session")
def model_folder(models_dir: Path) -> Path:
    return models_dir / "tiny-shapes-sd"


@pytest.fixture(scope="session")
def services():
    """One Services (so one ModelStore) for the whole session: each model loads once."""
    from graph_runtime import Services

    return Services()


@pytest.fixture(scope="session")
def loaded(model_folder, services):
    """The embedded model, loaded on the CPU in fp32 through the shared store."""
    import torch

    from nodes.model_store import ModelStore

    return services.get(ModelStore).load(model_folder, device=torch.device("cpu"), dtype=torch.float32,
                                         name="tiny-shapes-sd")


def make_registry():
    import nodes
    from graph_runtime import default_registry

    reg = default_registry(with_entry_points=False)
    nodes.register(reg)
    return reg


def make_executor(tmp_path: Path, services=None, **kw):
    from graph_runtime import Executor, RuntimePaths

    paths = RuntimePaths(base=tmp_path, **kw)
    for p in (paths.input, paths.output, paths.temp):
        p.mkdir(parents=True, exist_ok=True)
    return Executor(make_registry(), paths=paths, services=services)


def context(tmp_path: Path, services=None, events: list | None = None):
    from graph_runtime import ExecutionContext, RuntimePaths

    paths = RuntimePaths(base=tmp_path)
    emit = (lambda e, d: events.append((e, d))) if events is not None else None
    return ExecutionContext.standalone(paths=paths, services=services, emit=emit)
