"""Helpers of the sampling tests: the repository's workflows, loaded and edited for fast runs."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

# the fixtures; a test module takes them with ``from sampling_support import *``
__all__ = ["start_image"]

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
PROMPT = "a large red circle in the center on a blue background"


def workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


def node_of(doc: dict, class_type: str) -> str:
    ids = [k for k, v in doc.items() if v["class_type"] == class_type]
    assert len(ids) == 1, f"{class_type}: {ids}"
    return ids[0]


def txt2img(scheduler: str = "euler", steps: int = 4, seed: int = 42, cfg: float = 6.0, **scheduler_inputs) -> dict:
    """workflows/txt2img.json with the scheduler, steps, seed and cfg set."""
    doc = copy.deepcopy(workflow("txt2img.json"))
    s = node_of(doc, "Scheduler")
    doc[s]["inputs"].update(scheduler=scheduler, steps=steps, **scheduler_inputs)
    k = node_of(doc, "Sampler")
    doc[k]["inputs"].update(seed=seed, cfg=cfg)
    return doc


def img2img(scheduler: str = "dpmpp_2m", steps: int = 6, denoise: float = 0.6, seed: int = 7, cfg: float = 6.0) -> dict:
    """workflows/img2img.json with the scheduler, steps, denoise, seed and cfg set."""
    doc = copy.deepcopy(workflow("img2img.json"))
    doc[node_of(doc, "Scheduler")]["inputs"].update(scheduler=scheduler, steps=steps, denoise=denoise)
    doc[node_of(doc, "Sampler")]["inputs"].update(seed=seed, cfg=cfg)
    return doc


@pytest.fixture
def start_image(executor):
    """tests/data/red_circle.png in the executor's input folder (LoadImage lists that folder)."""
    from nodes import images

    shutil.copy(ROOT / "tests" / "data" / "red_circle.png", executor.paths.input / "red_circle.png")
    images.set_input_folder(executor.paths.input)
    yield executor.paths.input / "red_circle.png"
    images.set_input_folder(None)
