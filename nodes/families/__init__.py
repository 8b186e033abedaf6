"""Model families, one module each (see :mod:`nodes.families.base` for the interface they share).

``FAMILIES`` is the one place that lists them; loaders ask :func:`for_folder` which one a model is.
"""

from __future__ import annotations

from pathlib import Path

from graph_runtime import NodeError

from .base import Family, LatentFormat, Parts, TextEncoder, read_json
from .flux import Flux
from .qwen_image import QwenImage
from .sd1 import StableDiffusion1
from .sd2 import StableDiffusion2
from .sd3 import StableDiffusion3
from .sdxl import StableDiffusionXL
from .zimage import ZImage

__all__ = ["FAMILIES", "Family", "LatentFormat", "Parts", "TextEncoder", "by_name", "for_file", "for_folder"]

FAMILIES: tuple[Family, ...] = (StableDiffusion1(), StableDiffusion2(), StableDiffusionXL(), StableDiffusion3(),
                                Flux(), ZImage(), QwenImage())


def by_name(name: str) -> Family:
    for f in FAMILIES:
        if f.name == name:
            return f
    raise KeyError(name)


def for_folder(folder: Path) -> Family:
    """The family of a diffusers folder, from its ``model_index.json`` (and component configs)."""
    index = read_json(folder / "model_index.json")
    for f in FAMILIES:
        if f.matches_folder(folder, index):
            return f
    known = ", ".join(f"{f.label} ({', '.join(f.pipelines)})" for f in FAMILIES)
    raise NodeError(f"{folder.name}: a {index.get('_class_name', 'unknown')} folder is not a model family this "
                    f"runtime knows; known: {known}")


def for_network_config(config: dict) -> Family:
    """The family of a denoising network from its own config.json (a component folder loaded alone)."""
    for f in FAMILIES:
        if f.matches_network_config(config):
            return f
    raise NodeError(f"a {config.get('_class_name', 'network')} with this config is no model family this runtime "
                    "knows")


def for_file(path: Path) -> Family:
    """The family of an all-in-one ``.safetensors`` checkpoint, from its tensor names (SD1.x when no other
    family claims it: its loader then says whether a configuration fits)."""
    from ..checkpoint import checkpoint_shapes

    try:
        shapes = checkpoint_shapes(path)
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise NodeError(f"cannot read {path.name}: not a valid .safetensors file ({exc})") from exc
    for f in FAMILIES:
        if f.matches_file(shapes):
            return f
    return by_name("sd1")
