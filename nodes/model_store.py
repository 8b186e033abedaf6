"""The model store: loaded models shared across workflows and runs.

Nodes reach it through ``ctx.service(ModelStore)`` (one per executor, so one per server). An entry is keyed by
the resolved path, the file's identity (mtime and size; for a folder, of every file in it), the device and
the dtype: loading the same model twice gives the same objects, a changed file or another dtype loads anew.
Only ``.safetensors`` weights are ever read; pickle formats (which can run code when loaded) are refused.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graph_runtime import NodeError

from .types import ModelBundle, TextEncoderBundle, VAEBundle

if TYPE_CHECKING:  # the store is declared (and found by the loaders) without torch; loading needs it
    import torch

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


@dataclass(eq=False)
class LoadedModel:
    """The parts of a model, as LoadModel outputs them; a part the file does not hold is None."""

    model: ModelBundle | None
    clip: TextEncoderBundle | None
    vae: VAEBundle | None
    #: a text encoder loaded alone (CLIPLoader & co. put it in a slot of their family's CLIP)
    encoder: Any = None
    name: str = ""
    #: a ControlNet (ControlNetLoader)
    controlnet: Any = None


def _name(loaded: LoadedModel) -> str:
    return loaded.name


def refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise NodeError(
            f"only .safetensors are loaded: {path.name!r} is a pickle file ({path.suffix}), which can run "
            "arbitrary code when loaded; convert it to .safetensors first"
        )


def file_identity(path: Path) -> str:
    """mtime and size of a file, or of every file inside a folder (as one short hash)."""
    if path.is_file():
        st = path.stat()
        return f"{st.st_mtime_ns}:{st.st_size}"
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path).as_posix()}:{st.st_mtime_ns}:{st.st_size}\n".encode())
    return h.hexdigest()[:16]


class ModelStore:
    """Thread-safe cache of loaded models (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple, LoadedModel] = {}
        self._loading: dict[tuple, threading.Lock] = {}

    def load(self, path: str | Path, *, device: torch.device, dtype: torch.dtype, name: str | None = None,
             config_folders: list[Path] | tuple[Path, ...] = (), kind: str = "model") -> LoadedModel:
        """Load (or reuse) the model at ``path``: a diffusers folder of any known family, or a single
        ``.safetensors`` checkpoint; with ``kind`` "network", "text_encoder" or "vae", one part alone (a
        diffusers component folder or a single file, see :mod:`nodes.part_files`).

        ``config_folders`` are diffusers folders to try, in order, as the configuration of a single file
        (the first whose tensor shapes fit the file is used).
        """
        path = Path(path).resolve()
        refuse_pickle(path)
        if not path.exists():
            raise NodeError(f"model not found: {path}")
        import torch

        device = torch.device(device)
        key = (str(path), file_identity(path), str(device), str(dtype), kind)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                return hit
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one load per key at a time; other threads wait and then share it
            with self._lock:
                hit = self._entries.get(key)
            if hit is not None:
                return hit
            if kind == "model":
                loaded = _load(path, device, dtype, name or path.name, config_folders)
            else:
                from .part_files import load_part

                loaded = load_part(kind, path, device, dtype, name or path.name, config_folders)
            with self._lock:
                # a changed file replaces its older version on the same device and dtype
                for old in [k for k in self._entries if k[0] == key[0] and k[2:] == key[2:]]:
                    del self._entries[old]
                self._entries[key] = loaded
                self._loading.pop(key, None)
            return loaded

    def unload(self, name: str | None = None) -> int:
        """Forget loaded models (all, or those named ``name`` / loaded from a path ending in it); returns how
        many. Memory is returned once nothing else holds them (cached node outputs may still)."""
        with self._lock:
            keys = [k for k, v in self._entries.items()
                    if name is None or _name(v) == name or k[0].endswith(name)]
            for k in keys:
                del self._entries[k]
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return len(keys)

    def loaded(self) -> list[dict]:
        """What is loaded: name, path, device, dtype."""
        with self._lock:
            return [{"name": _name(v), "path": k[0], "device": k[2], "dtype": k[3]}
                    for k, v in self._entries.items()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# ---- loading ----------------------------------------------------------------------------------------------

def _load(path: Path, device: torch.device, dtype: torch.dtype, name: str,
          config_folders: list[Path] | tuple[Path, ...]) -> LoadedModel:
    from . import families

    log.info("loading model %s on %s (%s)", path, device, dtype)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise NodeError(f"{path.name}: not a diffusers model folder (no model_index.json)")
        family = families.for_folder(path)
        parts = family.load_folder(path, dtype)
    else:
        if path.suffix.lower() != ".safetensors":
            raise NodeError(f"only .safetensors are loaded: {path.name!r} is not a .safetensors file")
        family = families.for_file(path)
        parts = family.load_file(path, dtype, config_folders)
    return bundle(parts, family, device, dtype, name, str(path))


def bundle(parts, family, device: torch.device, dtype: torch.dtype, name: str, source: str) -> LoadedModel:
    """The MODEL, CLIP and VAE values of loaded parts, moved to ``device`` (a missing part gives None)."""
    move([parts.network, parts.vae, *(e.model for e in parts.encoders.values())], device)
    model = None
    if parts.network is not None:
        model = ModelBundle(network=parts.network, family=family,
                            scheduler_config=family.sampling_config(dict(parts.scheduler_config)),
                            device=device, dtype=dtype, name=name, source=source)
    clip = None
    if parts.encoders:
        clip = TextEncoderBundle(family=family, encoders=dict(parts.encoders), device=device, dtype=dtype,
                                 name=name)
    vae = None
    if parts.vae is not None:
        cfg = parts.vae.config
        vae = VAEBundle(vae=parts.vae, scaling_factor=float(cfg.scaling_factor), device=device, dtype=dtype,
                        name=name, shift_factor=float(getattr(cfg, "shift_factor", None) or 0.0))
    return LoadedModel(model=model, clip=clip, vae=vae, name=name)


def move(modules, device: torch.device) -> None:
    """Modules (already in their dtype) to ``device``, in eval mode, without gradients, in aligned memory."""
    for m in modules:
        if m is None:
            continue
        m.to(device).eval().requires_grad_(False)
        if device.type == "cpu":
            _own_aligned_memory(m)


def load_original_checkpoint(path: Path, config_folder: Path, dtype: torch.dtype):
    """An all-in-one SD1.x checkpoint through diffusers' ``from_single_file`` with a shipped config."""
    from diffusers import StableDiffusionPipeline

    try:
        return StableDiffusionPipeline.from_single_file(
            str(path), config=str(config_folder), local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise NodeError(f"cannot load checkpoint {path.name}: {exc}") from exc


def _own_aligned_memory(module: torch.nn.Module) -> None:
    """Copy CPU tensors that still point into the (memory-mapped) weights file into fresh, aligned memory.

    CPU kernels take different vectorised paths for unaligned data, which changes results in the last bits:
    without this, the same weights loaded from a folder and from a single file give slightly different
    outputs. It also frees the model from the file (which may then change on disk).
    """
    for t in [*module.parameters(), *module.buffers()]:
        if t.device.type == "cpu" and t.data_ptr() % 64:
            t.data = t.data.clone()


def pick_config_folder(path: Path, candidates: list[Path] | tuple[Path, ...]) -> Path:
    """The first diffusers (config) folder whose architecture fits the single file's tensor shapes."""
    from .checkpoint import checkpoint_shapes, layout_mismatches

    try:
        shapes = checkpoint_shapes(path)
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise NodeError(f"cannot read {path.name}: not a valid .safetensors file ({exc})") from exc
    tried = []
    for folder in candidates:
        if not (folder / "unet" / "config.json").is_file():
            continue
        problems = layout_mismatches(shapes, folder)
        if not problems:
            return folder
        tried.append(f"{folder.name} ({'; '.join(problems)})")
    raise NodeError(
        f"{path.name}: not a Stable Diffusion 1.x checkpoint this runtime can configure; tried "
        + (", ".join(tried) or "no configuration folders")
    )
