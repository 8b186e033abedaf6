"""The user's own files: settings (one JSON file) and /userdata (workflows, subgraphs, editor files), every
name confined to the user folder and every stored .json readable back."""

from __future__ import annotations

import mimetypes
import os
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from graph_runtime import UnsafePathError, strict_json
from graph_runtime.paths import check_file_name

from .files import INLINE_TYPES, disposition, folder_problem
from .replies import error, read_json
from .security import confine

DEFAULT_SETTINGS: dict[str, Any] = {
    # No first-run templates dialog: the default workflow is one of our own graphs.
    "Comfy.TutorialCompleted": True,
}


class Settings:
    """The user's settings, one JSON file in the user folder."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> dict:
        try:
            data = strict_json.loads_stored(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def all(self) -> dict:
        return {**DEFAULT_SETTINGS, **self.load()}

    def update(self, values: dict) -> None:
        with self._lock:
            data = self.load()
            data.update(values)
            _atomic_write(self.path, strict_json.dumps(data, indent=2).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def get_settings(request: Request) -> Response:
    return JSONResponse(request.app.state.server.settings.all())


async def post_settings(request: Request) -> Response:
    try:
        body = await read_json(request)
    except ValueError as exc:
        return error(400, str(exc))
    if not isinstance(body, dict):
        return error(400, "settings must be a JSON object")
    request.app.state.server.settings.update(body)
    return Response(status_code=200)


async def get_setting(request: Request) -> Response:
    return JSONResponse(request.app.state.server.settings.all().get(request.path_params["id"]))


async def post_setting(request: Request) -> Response:
    try:
        value = await read_json(request)
    except ValueError as exc:
        return error(400, str(exc))
    request.app.state.server.settings.update({request.path_params["id"]: value})
    return Response(status_code=200)


def _file_info(root: Path, path: Path) -> dict:
    st = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": st.st_size, "modified": int(st.st_mtime * 1000),
            "created": int(st.st_ctime * 1000)}


async def list_userdata(request: Request) -> Response:
    root: Path = request.app.state.server.user_dir
    q = request.query_params
    directory = q.get("dir", "")
    if not directory:
        return error(400, "dir is required")
    try:
        folder = confine(root, directory)
    except UnsafePathError as exc:
        return error(400, str(exc), "unsafe_path")
    if not folder.is_dir():
        return error(404, f"no such folder: {directory}", "not_found")
    recurse = q.get("recurse", "").lower() in ("1", "true")
    full = q.get("full_info", "").lower() in ("1", "true")
    split = q.get("split", "").lower() in ("1", "true")
    files = sorted(p for p in (folder.rglob("*") if recurse else folder.iterdir())
                   if p.is_file() and not p.name.startswith(".tmp-"))
    files = [p for p in files if p.resolve().is_relative_to(folder)]  # symlinks pointing out are not listed
    if full:
        return JSONResponse([_file_info(folder, p) for p in files])
    rel = [p.relative_to(folder).as_posix() for p in files]
    if split:
        return JSONResponse([[r, *r.split("/")] for r in rel])
    return JSONResponse(rel)


def _userdata_parts(request: Request) -> list[str]:
    """The path after /userdata/, split on the raw (still encoded) slashes, each part decoded."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    raw_text = raw.decode("latin-1").split("?", 1)[0]
    marker = "/userdata/"
    rest = raw_text[raw_text.index(marker) + len(marker):]
    return [unquote(p) for p in rest.split("/")]


async def userdata(request: Request) -> Response:
    root: Path = request.app.state.server.user_dir
    parts = _userdata_parts(request)
    dest = None
    if request.method == "POST" and len(parts) == 3 and parts[1] == "move":
        name, dest = parts[0], parts[2]
    else:
        name = "/".join(parts)
    try:
        path = confine(root, name)
        target = confine(root, dest) if dest is not None else None
    except UnsafePathError as exc:
        return error(400, str(exc), "unsafe_path")
    if path == root:
        return error(400, "a file name is required")
    overwrite = request.query_params.get("overwrite", "true").lower() not in ("0", "false")
    full = request.query_params.get("full_info", "").lower() in ("1", "true")

    if request.method == "GET":
        if not path.is_file():
            return error(404, f"no such file: {name}", "not_found")
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                   "Content-Security-Policy": "default-src 'none'; sandbox"}
        if media not in ("application/json", "text/css") and media not in INLINE_TYPES:
            # SVG, HTML, XML, scripts: never rendered as a page of this origin; downloaded as bytes
            media = "application/octet-stream"
            headers["Content-Disposition"] = disposition("attachment", path.name)
        return FileResponse(path, media_type=media, headers=headers)
    if request.method == "DELETE":
        if not path.is_file():
            return error(404, f"no such file: {name}", "not_found")
        path.unlink()
        return Response(status_code=204)
    if target is not None:  # move
        if not path.is_file():
            return error(404, f"no such file: {name}", "not_found")
        try:
            check_file_name(dest, "the destination")
        except UnsafePathError as exc:
            return error(400, str(exc), "unsafe_path")
        if target == root or target.is_dir():
            return error(409, f"{dest} is a folder", "conflict")
        if target.exists() and not overwrite:
            return error(409, f"{dest} already exists", "conflict")
        problem = folder_problem(root, target.parent)
        if problem:
            return error(409, f"{dest}: {problem}", "conflict")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except OSError as exc:
            return error(409, f"cannot move {name} to {dest}: {exc.strerror or type(exc).__name__}", "conflict")
        return JSONResponse(_file_info(root, target) if full else target.relative_to(root).as_posix())
    # POST: store
    try:
        check_file_name(name)
    except UnsafePathError as exc:
        return error(400, str(exc), "unsafe_path")
    if path.is_dir():
        return error(409, f"{name} is a folder", "conflict")
    if path.exists() and not overwrite:
        return error(409, f"{name} already exists", "conflict")
    problem = folder_problem(root, path.parent)
    if problem:
        return error(409, f"{name}: {problem}", "conflict")
    body = await request.body()
    if path.suffix.lower() == ".json":  # a workflow or an editor setting file: what is stored must read back
        try:
            strict_json.loads(body, name)
        except ValueError as exc:
            return error(400, str(exc), "invalid_json")
    try:
        await run_in_threadpool(_atomic_write, path, body)
    except OSError as exc:
        return error(409, f"cannot store {name}: {exc.strerror or type(exc).__name__}", "conflict")
    return JSONResponse(_file_info(root, path) if full else path.relative_to(root).as_posix())


def touch_dirs(user_dir: Path) -> None:
    for sub in ("workflows", "subgraphs"):
        (user_dir / sub).mkdir(parents=True, exist_ok=True)
