"""The official ComfyUI frontend, served by our server, driven in headless Chromium.

Needs Chromium (Debian: ``apt-get install -y chromium``) and the Python packages ``playwright`` and
``comfyui-frontend-package``. Missing pieces make this test fail with the command that installs them: the
editor is a feature, not an optional extra. A screenshot goes to tests/artifacts/.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from test_web_support import http, start_server

from graph_runtime.ui_format import ui_to_api

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def require_browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package 'playwright' is missing: pip install playwright==1.65.2 "
                    "(no 'playwright install': the test uses the system Chromium)")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: apt-get update && apt-get install -y chromium")
    from web.frontend import static_dir

    if static_dir() is None:
        pytest.fail("the editor is missing: pip install comfyui-frontend-package==1.58.1")
    return sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("frontend"))
    yield srv
    srv.stop()


def test_editor_loads_our_nodes_and_runs_a_workflow(server):
    sync_playwright = require_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    base = server.url
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda exc: problems.append(str(exc)[:300] + " " + str(exc.stack)[:600]))
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
                    if r.status >= 500 and r.url.startswith(base) else None)
            page.goto(base + "/")
            # our extension loads the default graph (the arithmetic workflow) on a first visit
            page.wait_for_function("() => window.app?.graph?._nodes?.length === 7", timeout=90_000)
            types = page.evaluate("() => window.app.graph._nodes.map((n) => n.type).sort()")
            assert types == sorted(["PrimitiveInt", "PrimitiveInt", "IntMath", "ToString", "StringFormat",
                                    "ShowValue", "SaveText"])
            assert page.evaluate("() => Object.keys(LiteGraph.registered_node_types).includes('IntMath')")

            # the editor's own conversion and ours agree on the graph it holds
            saved = page.evaluate("() => window.app.graph.serialize()")
            theirs = page.evaluate("async () => (await window.app.graphToPrompt()).output")
            ours = ui_to_api(saved, server.state.registry)
            assert {k: v["inputs"] for k, v in ours.items()} == {k: v["inputs"] for k, v in theirs.items()}

            page.get_by_role("button", name="Run").first.click()
            deadline = time.monotonic() + 30
            history: dict = {}
            while not history and time.monotonic() < deadline:
                history = http("GET", base + "/history").json()
                time.sleep(0.1)
            assert len(history) == 1, "pressing Run queued nothing"
            entry = next(iter(history.values()))
            assert entry["status"]["status_str"] == "success"
            assert entry["outputs"]["6"]["text"] == ["6 x 7 = 42 tiles"]
            assert entry["prompt"][3]["extra_pnginfo"]["workflow"]["nodes"]  # the editor sent its graph along

            # the result reaches the page over the websocket and is shown on the SaveText node
            page.wait_for_function(
                "() => JSON.stringify(window.app.nodeOutputs || {}).includes('6 x 7 = 42 tiles')", timeout=30_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('textarea')].some((t) => t.value === '6 x 7 = 42 tiles')",
                timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "frontend_arithmetic.png"))

            # settings written by the editor land in the user folder
            page.evaluate("async () => await window.app.api.storeSetting('Comfy.Test.Marker', 'set')")
            assert http("GET", base + "/api/settings/Comfy.Test.Marker").json() == "set"
            seen = list(problems)
        finally:
            browser.close()
    assert (server.config.paths.output / "tiles.txt").read_text() == "6 x 7 = 42 tiles"
    assert not seen, seen
