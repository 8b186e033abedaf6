"""LoadModel, and where models are found.

Models live in the repository's ``models/`` folder (the embedded ``tiny-shapes-sd`` among them), in the
folders listed in ``GRAPH_RUNTIME_MODELS`` (separated by ``os.pathsep``) and in the runtime's
``paths.models``. A model is a diffusers folder (one holding ``model_index.json`` and ``.safetensors``
weights, of any family in :mod:`nodes.families`) or a single SD1.x ``.safetensors`` checkpoint; its name is its path relative to the models folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from graph_runtime import (
    Node,
    NodeError,
    NodeInputs,
    Output,
    UnsafePathError,
    Widget,
    active_paths,
    resolve_inside,
)

from .device import DEVICE_CHOICES, DTYPE_CHOICES, resolve_device, resolve_dtype
from .model_store import ModelStore, file_identity
from .part_files import config_folders

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
EMBEDDED_NAME = "tiny-shapes-sd"
CONFIGS_DIR = REPO_MODELS / "configs"
SD15_CONFIG = CONFIGS_DIR / "stable-diffusion-v1-5"
_MAX_DEPTH = 3
#: folders of a models root that hold no whole models: shipped configs, and ComfyUI's folders of parts (each
#: read by its own loader) and of add-ons
_SKIP = {"configs", "tokenizers", "__pycache__", "diffusion_models", "unet", "text_encoders", "clip", "vae",
         "loras", "controlnet", "upscale_models", "embeddings", "clip_vision"}


def model_dirs(extra: Iterable[Path] = ()) -> list[Path]:
    """The models folders, in the order they are searched: ``extra`` (by default the running runtime's
    ``paths.models``), ``GRAPH_RUNTIME_MODELS``, the repo's."""
    if not extra:
        active = active_paths()
        extra = active.models if active is not None else ()
    found: list[Path] = []
    env = [p for p in os.environ.get("GRAPH_RUNTIME_MODELS", "").split(os.pathsep) if p.strip()]
    for d in [*extra, *map(Path, env), REPO_MODELS]:
        d = Path(d).resolve()
        if d.is_dir() and d not in found:
            found.append(d)
    return found


def is_model_folder(path: Path) -> bool:
    """A diffusers pipeline folder with weights (``unet/`` or ``transformer/`` holding .safetensors)."""
    return (path / "model_index.json").is_file() and any(
        any((path / part).glob("*.safetensors")) for part in ("unet", "transformer"))


def _walk(root: Path, here: Path, depth: int, out: list[str]) -> None:
    try:
        entries = sorted(here.iterdir())
    except OSError:
        return
    for p in entries:
        if p.name.startswith(".") or (here == root and p.name in _SKIP):
            continue
        if p.is_dir():
            if any(p.glob("*.py")):  # code (the embedded model's training package), not models
                continue
            if is_model_folder(p):
                out.append(p.relative_to(root).as_posix())
            elif depth < _MAX_DEPTH:
                _walk(root, p, depth + 1, out)
        elif p.suffix.lower() == ".safetensors":
            out.append(p.relative_to(root).as_posix())


def list_models(extra: Iterable[Path] = ()) -> list[str]:
    """Every loadable model name; the embedded model first."""
    names: list[str] = []
    for d in model_dirs(extra):
        found: list[str] = []
        _walk(d, d, 1, found)
        names.extend(n for n in found if n not in names)
    if EMBEDDED_NAME in names:
        names.remove(EMBEDDED_NAME)
        names.insert(0, EMBEDDED_NAME)
    return names


CHECKPOINTS = "checkpoints"


def list_checkpoints(extra: Iterable[Path] = ()) -> list[str]:
    """The names CheckpointLoaderSimple lists: every loadable model, those in a ``checkpoints/`` folder by their
    name inside it, as ComfyUI names them (``v1-5-pruned-emaonly.safetensors``)."""
    names: list[str] = []
    for name in list_models(extra):
        short = name.removeprefix(CHECKPOINTS + "/")
        if short not in names:
            names.append(short)
    return names


def is_listed_model(name: str) -> bool:
    """Whether ``name`` is a model under its path in a models folder (``checkpoints/x.safetensors``, as
    LoadModel lists it), which CheckpointLoaderSimple takes too."""
    return name in list_models()


def find_model(name: str, extra: Iterable[Path] = ()) -> Path:
    """The path of model ``name`` (confined to the models folders): ``DIR/name``, else ``DIR/checkpoints/name``
    (ComfyUI's checkpoint names are relative to that folder)."""
    for d in model_dirs(extra):
        for base in (d, d / CHECKPOINTS):
            try:
                p = resolve_inside(base, name)
            except UnsafePathError as exc:
                raise NodeError(f"model_name: {exc}") from exc
            if p.exists():
                return p
    raise NodeError(f"model {name!r} not found in the models folders "
                    f"({', '.join(str(d) for d in model_dirs(extra)) or 'none exist'})")


class LoadModel(Node):
    """Load a model of any known family (SD1.x, SD2.x, SDXL, SD3.x): a diffusers folder or a single
    .safetensors checkpoint.

    Outputs the denoiser (MODEL), the text encoder (CLIP) and the autoencoder (VAE). Loaded models are
    shared across runs; device ``auto`` is CUDA in fp16 when available, else the CPU in fp32.
    """

    CATEGORY = "loaders"
    DISPLAY_NAME = "Load Model"

    class Inputs(NodeInputs):
        model_name: str = Widget(EMBEDDED_NAME, choices=list_models,
                                 tooltip="a diffusers folder or .safetensors file in the models folders")
        device: Literal[DEVICE_CHOICES] = Widget("auto", optional=True)  # type: ignore[valid-type]
        dtype: Literal[DTYPE_CHOICES] = Widget("auto", optional=True)  # type: ignore[valid-type]

    OUTPUTS = (
        Output("MODEL", "MODEL", "the denoising network and its scheduler configuration"),
        Output("CLIP", "CLIP", "the text encoder, for TextEncode"),
        Output("VAE", "VAE", "the autoencoder, for VAEDecode / VAEEncode"),
    )

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return load_model(ctx, inputs.model_name, inputs.device, inputs.dtype)

    @classmethod
    def fingerprint(cls, literals: dict, ctx: Any) -> Any:
        return model_fingerprint(ctx, str(literals.get("model_name", EMBEDDED_NAME)))


def load_model(ctx: Any, name: str, device: str = "auto", dtype: str = "auto", what: str = "model_name") -> tuple:
    """(MODEL, CLIP, VAE) of model ``name``: LoadModel's work, and CheckpointLoaderSimple's."""
    extra = getattr(ctx.paths, "models", []) or []
    path = find_model(name, extra)
    dev = resolve_device(device)
    loaded = ctx.service(ModelStore).load(path, device=dev, dtype=resolve_dtype(dtype, dev), name=name,
                                          config_folders=config_folders(extra))
    missing = [n for n, v in (("MODEL", loaded.model), ("CLIP", loaded.clip), ("VAE", loaded.vae)) if v is None]
    if missing:
        raise NodeError(f"{what}: {name} holds no {' / '.join(missing)}; load that part with its own loader")
    return (loaded.model, loaded.clip, loaded.vae)


def model_fingerprint(ctx: Any, name: str) -> Any:
    """The identity of model ``name``'s files (a changed file re-runs its loader), or None if not found."""
    try:
        return file_identity(find_model(name, getattr(ctx.paths, "models", [])))
    except NodeError:
        return None
