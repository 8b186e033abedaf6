"""The official ComfyUI frontend (PyPI: comfyui-frontend-package) as static files, plus our default graph.

The frontend is optional at import time: without it the server still speaks the API (clients, the remote
CLI) and ``/`` explains how to install the editor.
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

EXTENSION_URL = "/extensions/graph_runtime/default_graph.js"

# Loaded by the editor as an extension: where the editor would load its built-in default graph (a first
# visit with nothing saved, or "load default"), whose node types this runtime lacks, it loads a graph of
# our own nodes instead.
EXTENSION_JS = """\
const app = window.comfyAPI?.app?.app;
if (app) {
  app.registerExtension({
    name: "graph_runtime.default_graph",
    // About: this server is graph-runtime; its README says how to use it and where to report problems
    aboutPageBadges: [{ label: "graph-runtime README", url: "api/graph_runtime/readme", icon: "pi pi-book" }],
    async init() {
      let ours = null;
      try {
        const res = await fetch("api/graph_runtime/default_graph");
        ours = res.ok ? await res.json() : null;
      } catch (e) {
        ours = null;
      }
      if (!ours) return;
      const load = app.loadGraphData.bind(app);
      app.loadGraphData = (graphData, ...rest) => load(graphData ?? structuredClone(ours), ...rest);
    },
  });
}
"""


def static_dir() -> Path | None:
    try:
        from importlib.resources import files

        import comfyui_frontend_package
    except ImportError:
        return None
    path = Path(str(files(comfyui_frontend_package) / "static"))
    return path if (path / "index.html").is_file() else None


NO_FRONTEND = """<!doctype html><title>graph-runtime</title><h1>graph-runtime server</h1>
<p>The API is up. To use the graph editor, install the frontend:
<code>pip install comfyui-frontend-package==1.58.1</code> and restart the server.</p>"""


async def extension(request: Request) -> Response:
    return Response(EXTENSION_JS, media_type="text/javascript")


async def default_graph(request: Request) -> Response:
    path = request.app.state.server.default_workflow
    if path is None or not path.is_file():
        return JSONResponse(None)
    return Response(path.read_bytes(), media_type="application/json")


async def user_css(request: Request) -> Response:
    path = request.app.state.server.user_dir / "user.css"
    return Response(path.read_bytes() if path.is_file() else b"", media_type="text/css")


def readme_text() -> str:
    """The project's README: the repository's file beside the package, else the installed package's."""
    path = Path(__file__).resolve().parents[1] / "README.md"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    try:
        from importlib.metadata import metadata

        return metadata("graph-runtime").get_payload() or ""
    except Exception:
        return ""


async def readme(request: Request) -> Response:
    text = readme_text()
    if not text:
        return Response("graph-runtime: no README in this installation", status_code=404, media_type="text/plain")
    return Response(text, media_type="text/plain; charset=utf-8", headers={"X-Content-Type-Options": "nosniff"})


async def no_frontend(request: Request) -> Response:
    return HTMLResponse(NO_FRONTEND)


def routes(enabled: bool = True) -> list:
    out = [Route(EXTENSION_URL, extension), Route("/api/graph_runtime/default_graph", default_graph),
           Route("/graph_runtime/default_graph", default_graph), Route("/user.css", user_css),
           Route("/api/graph_runtime/readme", readme), Route("/graph_runtime/readme", readme)]
    static = static_dir() if enabled else None
    if static is None:
        out.append(Route("/", no_frontend))
    else:
        out.append(Mount("/", app=StaticFiles(directory=str(static), html=True), name="frontend"))
    return out


def load_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))
