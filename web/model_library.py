"""The editor's model library: ComfyUI's model folders and what in them this runtime can load.

Folders, as ComfyUI users keep them under each models folder: checkpoints (every model LoadModel and
CheckpointLoaderSimple accept, named as those nodes name them), diffusion_models, text_encoders, vae (the
parts the loader nodes accept), loras, controlnet, upscale_models (their .safetensors files). Only loadable
things are listed: .safetensors files and diffusers folders; a folder of code (a .py beside the file, as
models/shapes holds training code and a classifier) is not a model.

Routes: ``/experiment/models`` (folders and where they are), ``/experiment/models/{folder}`` (files with
size and dates), ``/models`` and ``/models/{folder}`` (names only), ``/view_metadata/{folder}?filename=``
(a safetensors file's ``__metadata__``; a diffusers folder's model_index.json).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .replies import error

#: library folder -> the part kind of nodes.part_files (None: plain files in that ComfyUI folder)
PART_KINDS = {"diffusion_models": "network", "text_encoders": "text_encoder", "vae": "vae"}
PLAIN = {"loras": ("loras",), "controlnet": ("controlnet", "t2i_adapter"), "upscale_models": ("upscale_models",)}
FOLDERS = ("checkpoints", *PART_KINDS, *PLAIN)
#: ComfyUI folders that hold parts or add-ons, never whole models (not listed as checkpoints)
NOT_CHECKPOINTS = {"diffusion_models", "unet", "text_encoders", "clip", "vae", "loras", "controlnet",
                   "t2i_adapter", "upscale_models", "embeddings", "clip_vision", "configs", "tokenizers"}
MAX_HEADER = 16 * 1024 * 1024  # a safetensors header larger than this is not read


def _roots() -> list[Path]:
    from nodes.models import model_dirs

    return model_dirs()


def _is_code_folder(folder: Path) -> bool:
    return any(folder.glob("*.py"))


def _checkpoints() -> list[tuple[str, Path]]:
    from nodes.models import find_model, list_models

    out = []
    for name in list_models():
        if name.split("/", 1)[0] in NOT_CHECKPOINTS:
            continue
        try:
            path = find_model(name)
        except Exception:
            continue
        if path.is_file() and _is_code_folder(path.parent):
            continue
        out.append((name, path))
    return out


def _parts(kind: str) -> list[tuple[str, Path]]:
    from nodes.part_files import find_part, list_parts

    out = []
    for name in list_parts(kind):
        try:
            out.append((name, find_part(kind, name, "filename")))
        except Exception:
            continue
    return out


def _plain(subs: tuple[str, ...]) -> list[tuple[str, Path]]:
    out: dict[str, Path] = {}
    for root in _roots():
        for sub in subs:
            base = root / sub
            if not base.is_dir():
                continue
            for p in sorted(base.rglob("*.safetensors")):
                rel = p.relative_to(base)
                if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                    out.setdefault(rel.as_posix(), p)
    return list(out.items())


def entries(folder: str) -> list[tuple[str, Path]]:
    """(name as the loader nodes take it, path) for every loadable model of ``folder``."""
    if folder == "checkpoints":
        return _checkpoints()
    if folder in PART_KINDS:
        return _parts(PART_KINDS[folder])
    return _plain(PLAIN[folder])


def folder_paths(folder: str) -> list[str]:
    subs = PLAIN.get(folder) or {"checkpoints": ("checkpoints",), "diffusion_models": ("diffusion_models", "unet"),
                                 "text_encoders": ("text_encoders", "clip"), "vae": ("vae",)}[folder]
    roots = _roots()
    paths = [str(r / s) for r in roots for s in subs]
    if folder == "checkpoints":  # whole models may sit at the top of a models folder, as the embedded one
        paths = [str(r) for r in roots] + paths
    return paths


def _size_and_times(path: Path) -> dict[str, Any]:
    try:
        st = path.stat()
        size = st.st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*.safetensors"))
        return {"size": size, "modified": st.st_mtime, "created": st.st_ctime}
    except OSError:
        return {}


def _path_index(path: Path, paths: list[str]) -> int:
    """The most specific of ``paths`` that holds ``path``."""
    best: int | None = None
    for i, p in enumerate(paths):
        if str(path).startswith(p.rstrip("/") + "/") and (best is None or len(p) > len(paths[best])):
            best = i
    return best or 0


def metadata(path: Path, name: str = "") -> dict:
    """A safetensors file's ``__metadata__``; for a diffusers folder, its name and pipeline class in the
    modelspec keys the editor reads."""
    if path.is_dir():
        index = path / "model_index.json"
        info = json.loads(index.read_text(encoding="utf-8")) if index.is_file() else {}
        meta = {"modelspec.title": name or path.name}
        if isinstance(info, dict) and isinstance(info.get("_class_name"), str):
            meta["modelspec.architecture"] = info["_class_name"]
        return meta
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError("not a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER:
            raise ValueError(f"safetensors header of {length} bytes is too large to read")
        header = json.loads(fh.read(length))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def _folder(request: Request) -> str | None:
    folder = request.path_params["folder"]
    return folder if folder in FOLDERS else None


def _unknown(folder: str) -> Response:
    return error(404, f"no model folder {folder!r}; the folders are {', '.join(FOLDERS)}", "not_found")


async def experiment_folders(request: Request) -> Response:
    listing = await run_in_threadpool(lambda: [{"name": f, "folders": folder_paths(f)} for f in FOLDERS])
    return JSONResponse(listing)


async def experiment_files(request: Request) -> Response:
    folder = _folder(request)
    if folder is None:
        return _unknown(request.path_params["folder"])

    def listing():
        paths = folder_paths(folder)
        return [{"name": name, "pathIndex": _path_index(path, paths), **_size_and_times(path)}
                for name, path in entries(folder)]

    return JSONResponse(await run_in_threadpool(listing))


async def model_types(request: Request) -> Response:
    return JSONResponse(list(FOLDERS))


async def model_names(request: Request) -> Response:
    folder = _folder(request)
    if folder is None:
        return _unknown(request.path_params["folder"])
    return JSONResponse([name for name, _ in await run_in_threadpool(entries, folder)])


async def view_metadata(request: Request) -> Response:
    folder = _folder(request)
    if folder is None:
        return _unknown(request.path_params["folder"])
    name = request.query_params.get("filename") or ""
    if not name:
        return error(400, "filename is required")

    def find():
        for n, p in entries(folder):
            if n == name:
                return p
        return None

    path = await run_in_threadpool(find)
    if path is None:
        return error(404, f"no model {name!r} in {folder}", "not_found")
    try:
        return JSONResponse(await run_in_threadpool(metadata, path, name))
    except (OSError, ValueError) as exc:
        return error(400, f"{folder}/{name}: cannot read its metadata: {exc}")


PREVIEW_TYPES = {".webp": "image/webp", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


async def preview(request: Request) -> Response:
    """A model's preview image kept beside it (``name.webp``, ``.png``, ``.jpg``); 204 when it has none (the
    editor then shows its placeholder)."""
    folder = _folder(request)
    if folder is None:
        return _unknown(request.path_params["folder"])
    wanted = request.path_params["filename"]
    stem = wanted.rsplit(".", 1)[0]

    def find():
        for name, path in entries(folder):
            if name.rsplit(".", 1)[0] != stem or not path.is_file():
                continue
            for ext in PREVIEW_TYPES:
                candidate = path.with_suffix(ext)
                if candidate.is_file():
                    return candidate
        return None

    found = await run_in_threadpool(find)
    if found is None:
        return Response(status_code=204)
    return Response(found.read_bytes(), media_type=PREVIEW_TYPES[found.suffix.lower()],
                    headers={"X-Content-Type-Options": "nosniff"})


def routes() -> list:
    out = []
    for prefix in ("/api", ""):
        out += [Route(prefix + "/experiment/models", experiment_folders, methods=["GET"]),
                Route(prefix + "/experiment/models/{folder}", experiment_files, methods=["GET"]),
                Route(prefix + "/experiment/models/preview/{folder}/{index:int}/{filename:path}", preview,
                      methods=["GET"]),
                Route(prefix + "/models", model_types, methods=["GET"]),
                Route(prefix + "/models/{folder}", model_names, methods=["GET"]),
                Route(prefix + "/view_metadata/{folder}", view_metadata, methods=["GET"])]
    return out
