"""Shared pieces of the server tests: a real server on a loopback port, HTTP and websocket helpers, and a
few nodes that only tests need (a gate that holds the queue, a node that sends previews).

The module is also importable by a server subprocess (``--node-module test_web_support``).
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from graph_runtime import Link, Node, NodeError, NodeInputs, NodeResult, Output, RuntimePaths, Widget

ROOT = Path(__file__).resolve().parents[1]
ARITHMETIC = json.loads((ROOT / "workflows" / "arithmetic.json").read_text())


# -- test nodes -----------------------------------------------------------------------------------------------


class WaitForFile(Node):
    """Holds the queue until a file exists (interruptible), then passes its value on."""

    CATEGORY = "testing"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        path: str = Widget("")
        value: int = Widget(0)

    OUTPUTS = (Output("INT", "INT"),)

    def execute(self, inputs, ctx):
        deadline = time.monotonic() + 120
        while not Path(inputs.path).exists():
            ctx.check_interrupted()
            if time.monotonic() > deadline:
                raise NodeError("gave up waiting")
            time.sleep(0.02)
        return NodeResult(outputs=(inputs.value,), ui={"text": [str(inputs.value)]})


class SendPreview(Node):
    """Sends one JPEG preview and a progress report."""

    CATEGORY = "testing"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        size: int = Widget(8, ge=1, le=64)

    OUTPUTS = ()

    def execute(self, inputs, ctx):
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (inputs.size, inputs.size), (200, 30, 30)).save(buf, format="JPEG")
        ctx.progress(1, 2)
        ctx.preview(buf.getvalue(), "JPEG")
        ctx.progress(2, 2)
        return NodeResult(ui={"text": ["sent"]})


class SaveTestImage(Node):
    """Writes a small PNG of one colour to the output folder, like SaveImage (an output node)."""

    CATEGORY = "testing"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        red: int = Widget(255, ge=0, le=255)
        filename_prefix: str = Widget("test")

    OUTPUTS = ()

    def execute(self, inputs, ctx):
        from PIL import Image

        from graph_runtime import resolve_inside

        name = f"{inputs.filename_prefix}_{inputs.red:03d}.png"
        path = resolve_inside(ctx.paths.output, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 8), (inputs.red, 0, 0)).save(path)
        return NodeResult(ui={"images": [{"filename": name, "subfolder": "", "type": "output"}]})


class ReportFloat(Node):
    """Reports a float in its ui; ``special`` makes it NaN/Infinity (a node pack's value that JSON cannot hold)."""

    CATEGORY = "testing"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        special: str = Widget("nan")

    OUTPUTS = ()

    def execute(self, inputs, ctx):
        value = float(inputs.special)
        return NodeResult(ui={"value": [value], "nested": [{"v": value}]})


class Unloadable:
    """A service with unload(), like a model store."""

    def __init__(self):
        self.unloaded = 0

    def unload(self):
        self.unloaded += 1


class AnyPassthrough(Node):
    """Passes an INT through (for bypass tests)."""

    CATEGORY = "testing"

    class Inputs(NodeInputs):
        value: Any = Link("INT")

    OUTPUTS = (Output("INT", "INT"),)

    def execute(self, inputs, ctx):
        return (inputs.value + 1000,)


def register(registry) -> None:
    registry.register_all([WaitForFile, SendPreview, AnyPassthrough, SaveTestImage, ReportFloat])


def registry():
    from graph_runtime import default_registry

    reg = default_registry()
    register(reg)
    return reg


# -- servers --------------------------------------------------------------------------------------------------


def start_server(tmp_path: Path, **options):
    from web.app import BackgroundServer
    from web.config import ServerConfig

    paths = RuntimePaths(base=tmp_path)
    config = ServerConfig(host="127.0.0.1", port=0, paths=paths, **options)
    return BackgroundServer(config, registry()).start()


# -- HTTP -----------------------------------------------------------------------------------------------------


class Reply:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: Any = None, headers: dict | None = None, raw: bytes | str | None = None,
         timeout: float = 30) -> Reply:
    if isinstance(raw, str):
        raw = raw.encode()
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and raw is None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.headers, exc.read())


def submit(base: str, prompt: dict, client_id: str | None = None, **extra) -> dict:
    r = http("POST", base + "/prompt", {"prompt": prompt, "client_id": client_id, **extra})
    assert r.status == 200, r.body
    return r.json()


def wait_history(base: str, prompt_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = http("GET", f"{base}/history/{prompt_id}").json()
        if prompt_id in h:
            return h[prompt_id]
        time.sleep(0.05)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout}s")


def ws_url(base: str, client_id: str | None = None) -> str:
    return base.replace("http://", "ws://") + "/ws" + (f"?clientId={client_id}" if client_id else "")


def ws_connect(base: str, client_id: str | None = None, **kw):
    """A websocket client that buffers everything it is sent (tests read at their own pace)."""
    from websockets.sync.client import connect

    return connect(ws_url(base, client_id), max_queue=None, close_timeout=2, **kw)


def collect_until_done(ws, prompt_id: str, timeout: float = 30) -> list[tuple[str, Any]]:
    """Messages of one prompt, up to its final executing(node=None) (or error/interrupted)."""
    out: list[tuple[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(msg, bytes):
            out.append(("binary", msg))
            continue
        m = json.loads(msg)
        out.append((m["type"], m["data"]))
        d = m["data"]
        if m["type"] == "executing" and d.get("node") is None and d.get("prompt_id") == prompt_id:
            return out
    raise AssertionError(f"no end of prompt {prompt_id}; got {[t for t, _ in out]}")


def gated_prompt(gate: Path, value: int = 1) -> dict:
    return {"1": {"class_type": "WaitForFile", "inputs": {"path": str(gate), "value": value}}}


def new_id() -> str:
    return uuid.uuid4().hex
