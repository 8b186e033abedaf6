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

from .replies import error

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
    """name -> (file, title) for the project's workflows: editor-format files, and API-format ones without
    an editor-format twin (converted when served)."""
    out: dict[str, tuple[Path, str]] = {}
    default = ROOT / "web" / "default_graph.json"
    if default.is_file():
        out[OWN_PREFIX + "default"] = (default, "Default graph (txt2img, embedded model)")
    folder = ROOT / "workflows"
    for path in sorted(folder.glob("*.json")):
        stem = path.name[: -len(".ui.json")] if path.name.endswith(".ui.json") else path.stem
        if not path.name.endswith(".ui.json") and (folder / f"{stem}.ui.json").is_file():
            continue
        out[OWN_PREFIX + stem] = (path, stem.replace("_", " "))
    return out


WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


def _is_widget(spec: list) -> bool:
    kind = spec[0] if spec else None
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return (isinstance(kind, list) or kind in WIDGET_TYPES or kind == "COMBO") and not opts.get("forceInput")


def api_to_ui(doc: dict, info: dict) -> dict:
    """An API-format workflow as the editor's graph: nodes laid out by depth, links, widget values in the
    editor's order (a "control after generate" value after the inputs that have one). ValueError if a node
    id is not a number or a node type is unknown."""
    ids = {key: int(key) for key in doc}  # ValueError for a non-numeric id
    depth: dict[str, int] = {}

    def level(key: str, seen: tuple = ()) -> int:
        if key not in depth:
            if key in seen:
                raise ValueError(f"node {key}: the graph has a cycle")
            srcs = [v[0] for v in doc[key]["inputs"].values() if isinstance(v, list) and len(v) == 2
                    and str(v[0]) in doc]
            depth[key] = 1 + max((level(str(s), (*seen, key)) for s in srcs), default=-1)
        return depth[key]

    nodes, links, rows = [], [], {}
    out_links: dict[tuple[str, int], list[int]] = {}
    for key in sorted(doc, key=lambda k: ids[k]):
        entry = doc[key]
        node_info = info.get(entry.get("class_type"))
        if node_info is None:
            raise ValueError(f"node {key}: unknown type {entry.get('class_type')!r}")
        col = level(key)
        row = rows[col] = rows.get(col, -1) + 1
        inputs, widgets = [], []
        specs = {**node_info["input"].get("required", {}), **node_info["input"].get("optional", {})}
        order = node_info["input_order"].get("required", []) + node_info["input_order"].get("optional", [])
        for name in order:
            spec = specs[name]
            value = entry["inputs"].get(name)
            linked = isinstance(value, list) and len(value) == 2 and str(value[0]) in doc
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            slot = {"name": name, "type": kind, "link": None}
            if _is_widget(spec):
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                default = opts.get("default", spec[0][0] if isinstance(spec[0], list) and spec[0] else None)
                widgets.append(default if linked or name not in entry["inputs"] else value)
                if opts.get("control_after_generate"):
                    widgets.append("fixed")
                slot["widget"] = {"name": name}
            if linked:
                link_id = len(links) + 1
                src, idx = str(value[0]), int(value[1])
                src_type = info[doc[src]["class_type"]]["output"][idx]
                links.append([link_id, ids[src], idx, ids[key], len(inputs), src_type])
                out_links.setdefault((src, idx), []).append(link_id)
                slot["link"] = link_id
            if _is_widget(spec) or linked or not _is_widget(spec):
                inputs.append(slot)
        nodes.append({"id": ids[key], "type": entry["class_type"], "pos": [40 + 380 * col, 40 + 300 * row],
                      "size": [340, 220], "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs,
                      "outputs": [], "properties": {}, "widgets_values": widgets,
                      **({"title": entry["_meta"]["title"]} if entry.get("_meta", {}).get("title") else {})})
    for node, key in zip(nodes, sorted(doc, key=lambda k: ids[k]), strict=True):
        node_info = info[doc[key]["class_type"]]
        names = node_info.get("output_name") or node_info["output"]
        node["outputs"] = [{"name": names[i], "type": t, "links": out_links.get((key, i), [])}
                           for i, t in enumerate(node_info["output"])]
    return {"last_node_id": max(ids.values(), default=0), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


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
        return error(404, f"no template index {name!r}", "not_found")
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
            return error(404, f"no template {name[:-5]!r}", "not_found")
        if name.startswith(OWN_PREFIX):
            from graph_runtime.ui_format import is_ui_format

            doc = json.loads(path.read_text(encoding="utf-8"))
            if not is_ui_format(doc):
                registry = request.app.state.server.registry
                try:
                    doc = api_to_ui(doc, await run_in_threadpool(registry.object_info))
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    return error(422, f"template {name[:-5]!r} cannot be shown in the editor: {exc}")
            return JSONResponse(doc)
        return Response(path.read_bytes(), media_type="application/json")
    suffix = Path(name).suffix.lower()
    if suffix not in THUMB_SUFFIXES or ".." in name.split("/") or name.startswith("/"):
        return error(404, f"no template file {name!r}", "not_found")
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
