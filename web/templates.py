"""Workflow templates for the editor's template browser, offline.

ComfyUI's templates come from PyPI: ``comfyui-workflow-templates-core`` (the manifest) and
``comfyui-workflow-templates-json`` (the index and every workflow) are dependencies; their thumbnails live
in the media bundles of the ``comfyui-workflow-templates`` meta-package (about half a gigabyte, the optional
``templates-media`` extra). A thumbnail that is not installed is answered with a small drawn placeholder, so
the browser never waits on a remote one. The project's own workflows (``workflows/*.ui.json`` and the default
graph) come first, as the "graph-runtime" category.

Routes (the editor's): ``/templates/index.json`` (and ``index.{locale}.json``), ``/templates/{name}.json``,
``/templates/{name}-1.webp`` (thumbnails), ``/templates/index_logo.json``, ``/templates/{logo}``.
"""

from __future__ import annotations

import html
import json
import logging
import re
from functools import lru_cache
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import files

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
OWN_PREFIX = "graph_runtime-"
CATEGORY = {"moduleName": "default", "category": "graph-runtime", "title": "graph-runtime",
            "icon": "icon-[lucide--workflow]", "type": "image", "isEssential": True}
THUMB_SUFFIXES = {".webp", ".png", ".jpg", ".jpeg", ".gif", ".mp4", ".webm", ".mp3", ".svg"}
MEDIA = {".webp": "image/webp", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
         ".gif": "image/gif", ".mp4": "video/mp4", ".webm": "video/webm", ".mp3": "audio/mpeg",
         ".svg": "image/svg+xml"}


def _json_dir() -> Path | None:
    try:
        from importlib.resources import files as resource_files

        path = Path(str(resource_files("comfyui_workflow_templates_json") / "templates"))
    except (ImportError, TypeError):
        return None
    return path if (path / "index.json").is_file() else None


def own_workflows() -> dict[str, tuple[Path, str]]:
    """name -> (file, title) for the project's editor-format workflows."""
    out: dict[str, tuple[Path, str]] = {}
    default = ROOT / "web" / "default_graph.json"
    if default.is_file():
        out[OWN_PREFIX + "default"] = (default, "Default graph (txt2img, embedded model)")
    for path in sorted((ROOT / "workflows").glob("*.ui.json")):
        stem = path.name[: -len(".ui.json")]
        out[OWN_PREFIX + stem] = (path, stem.replace("_", " "))
    return out


def _own_category() -> dict:
    templates = []
    for name, (path, title) in own_workflows().items():
        templates.append({"name": name, "title": title, "description": f"{path.relative_to(ROOT).as_posix()} "
                          "from graph-runtime: runs offline with the embedded model",
                          "mediaType": "image", "mediaSubtype": "webp", "tags": ["graph-runtime"],
                          "models": ["tiny-shapes-sd"], "openSource": True, "username": "graph-runtime",
                          "size": 0})
    return {**CATEGORY, "templates": templates}


@lru_cache(maxsize=16)
def index(locale: str = "") -> list:
    """The package's index (localised when it has that locale), our category first."""
    own = _own_category()
    folder = _json_dir()
    if folder is None:
        return [own]
    path = folder / (f"index.{locale}.json" if locale else "index.json")
    if not path.is_file():
        path = folder / "index.json"
    try:
        theirs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.exception("could not read the templates index %s", path)
        theirs = []
    return [own, *[c for c in theirs if isinstance(c, dict)]] if isinstance(theirs, list) else [own]


def _package_names() -> set[str]:
    return {t["name"] for c in index() for t in c.get("templates", []) if isinstance(t, dict) and "name" in t}


def workflow_path(name: str) -> Path | None:
    own = own_workflows().get(name)
    if own is not None:
        return own[0]
    folder = _json_dir()
    if folder is None or name not in _package_names():
        return None
    path = folder / f"{name}.json"
    return path if path.is_file() else None


def thumbnail(filename: str) -> tuple[bytes, str] | None:
    """An installed thumbnail or logo of the package's media bundles, by file name."""
    try:
        from comfyui_workflow_templates_core import get_asset_path, iter_templates
    except ImportError:
        return None
    for entry in iter_templates():
        if any(a.filename == filename for a in entry.assets):
            try:
                path = Path(get_asset_path(entry.template_id, filename))
            except (FileNotFoundError, KeyError):
                return None
            return path.read_bytes(), MEDIA.get(path.suffix.lower(), "application/octet-stream")
    return None


def placeholder(title: str) -> bytes:
    """A drawn card for a template without an installed thumbnail."""
    text = html.escape(title[:40])
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512" viewBox="0 0 512 512">'
            '<rect width="512" height="512" fill="#232326"/>'
            '<circle cx="256" cy="220" r="90" fill="#c0392b"/><rect x="0" y="400" width="512" height="112" '
            f'fill="#1a3d7c"/><text x="256" y="470" font-family="sans-serif" font-size="28" fill="#fff" '
            f'text-anchor="middle">{text}</text></svg>').encode()


async def get_index(request: Request) -> Response:
    name = request.path_params["name"]
    locale = name[len("index."):-len(".json")] if name != "index.json" else ""
    if locale and not re.fullmatch(r"[a-z]{2}(-[A-Z]{2})?", locale):  # index.schema.json is not an index
        return files.error(404, f"no template index {name!r}", "not_found")
    return JSONResponse(await run_in_threadpool(index, locale))


async def get_template_file(request: Request) -> Response:
    name: str = request.path_params["name"]
    if name == "index_logo.json":
        folder = _json_dir()
        path = folder / name if folder is not None else None
        return Response(path.read_bytes() if path is not None and path.is_file() else b"{}",
                        media_type="application/json")
    if name.startswith("index.") and name.endswith(".json") and "/" not in name:
        return await get_index(request)
    if name.endswith(".json"):
        path = await run_in_threadpool(workflow_path, name[: -len(".json")])
        if path is None:
            return files.error(404, f"no template {name[:-5]!r}", "not_found")
        return Response(path.read_bytes(), media_type="application/json")
    suffix = Path(name).suffix.lower()
    if suffix not in THUMB_SUFFIXES or ".." in name.split("/") or name.startswith("/"):
        return files.error(404, f"no template file {name!r}", "not_found")
    found = await run_in_threadpool(thumbnail, name)
    if found is not None:
        body, media = found
        return Response(body, media_type=media, headers={"Cache-Control": "max-age=86400"})
    title = name.rsplit("-", 1)[0] if "-" in name else Path(name).stem
    own = own_workflows().get(title)
    return Response(placeholder(own[1] if own else title), media_type="image/svg+xml",
                    headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff",
                             "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})


async def user_templates(request: Request) -> Response:
    """The editor's legacy saved templates (userdata comfy.templates.json): none until it writes some."""
    path = request.app.state.server.user_dir / "comfy.templates.json"
    return Response(path.read_bytes() if path.is_file() else b"[]", media_type="application/json")


def routes() -> list:
    return [Route("/userdata/comfy.templates.json", user_templates, methods=["GET"]),
            Route("/api/userdata/comfy.templates.json", user_templates, methods=["GET"]),
            Route("/templates/{name:path}", get_template_file, methods=["GET"]),
            Route("/api/templates/{name:path}", get_template_file, methods=["GET"])]
