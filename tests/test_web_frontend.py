"""The official ComfyUI frontend, served by our server, driven in headless Chromium.

Needs Chromium (Debian: ``apt-get install -y chromium``) and the Python packages ``playwright`` and
``comfyui-frontend-package``. Missing pieces make this test fail with the command that installs them: the
editor is a feature, not an optional extra. Screenshots go to tests/artifacts/.

One page for the module: a first visit shows the default graph (txt2img), which runs with the embedded model;
then the arithmetic workflow is loaded into the same page and run.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from test_web_support import ROOT, http, start_server

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


TXT2IMG_TYPES = ["EmptyLatent", "LoadModel", "Sampler", "SaveImage", "Scheduler", "TextEncode", "TextEncode",
                 "VAEDecode"]


class Page:
    """The browser page and what it saw: page errors, server errors, websocket messages and binary frames."""

    def __init__(self, page, base: str):
        self.page, self.base = page, base
        self.problems: list[str] = []
        self.messages: list[dict] = []
        self.frames: list[bytes] = []
        self.missing: list[str] = []  # requests to our server answered 4xx (the goal: none)
        page.on("pageerror", lambda exc: self.problems.append(str(exc)[:300] + " " + str(exc.stack)[:600]))
        page.on("response", lambda r: self.problems.append(f"{r.status} {r.url}")
                if r.status >= 500 and r.url.startswith(base) else None)
        page.on("response", lambda r: self.missing.append(f"{r.status} {r.request.method} {r.url[len(base):]}")
                if 400 <= r.status < 500 and r.url.startswith(base) else None)
        page.on("websocket", self.watch)

    def watch(self, ws) -> None:
        ws.on("framereceived", self.frame)

    def frame(self, payload) -> None:
        if isinstance(payload, bytes):
            self.frames.append(payload)
        else:
            try:
                self.messages.append(json.loads(payload))
            except ValueError:
                pass

    def of_prompt(self, kind: str, pid: str) -> list[dict]:
        return [m["data"] for m in self.messages if m.get("type") == kind and m["data"].get("prompt_id") == pid]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("frontend"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def editor(server):
    """The editor opened once (a first visit: nothing saved yet), with the node types it showed first."""
    sync_playwright = require_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = Page(browser.new_page(viewport={"width": 1400, "height": 900}), server.url)
            page.page.goto(server.url + "/")
            # our extension loads the default graph on a first visit
            page.page.wait_for_function("() => window.app?.graph?._nodes?.length > 0 && "
                                        "Object.keys(LiteGraph.registered_node_types).includes('Sampler')",
                                        timeout=90_000)
            page.first_types = page.page.evaluate("() => window.app.graph._nodes.map((n) => n.type).sort()")
            page.first_load_missing = list(page.missing)
            yield page
        finally:
            ARTIFACTS.joinpath("frontend_4xx.txt").write_text("".join(m + "\n" for m in page.missing))
            browser.close()


def run_in_editor(editor: Page, server, timeout: float = 60) -> tuple[str, dict]:
    """Press Run; the prompt it queued and its history entry once finished."""
    before = set(http("GET", server.url + "/history").json())
    editor.page.get_by_role("button", name="Run").first.click()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = {k: v for k, v in http("GET", server.url + "/history").json().items() if k not in before}
        if new:
            assert len(new) == 1, "pressing Run queued more than one prompt"
            return next(iter(new.items()))
        time.sleep(0.1)
    raise AssertionError("pressing Run queued nothing (or it did not finish)")


def editor_and_ours_agree(editor: Page, server) -> None:
    """The editor's own conversion and ours agree on the graph it holds."""
    saved = editor.page.evaluate("() => window.app.graph.serialize()")
    theirs = editor.page.evaluate("async () => (await window.app.graphToPrompt()).output")
    ours = ui_to_api(saved, server.state.registry)
    assert {k: v["inputs"] for k, v in ours.items()} == {k: v["inputs"] for k, v in theirs.items()}


def test_editor_shows_txt2img_first_and_renders_it(editor, server):
    from nodes_support import has_embedded

    assert has_embedded(), "the embedded model is missing: models/tiny-shapes-sd"
    assert editor.first_types == TXT2IMG_TYPES
    page = editor.page
    assert not editor.first_load_missing, editor.first_load_missing  # user.css, comfy.templates.json included
    # the editor names this project as its core (About, error reports)
    core = page.evaluate(f"() => {STORE}('systemStats').systemStats.system.comfyui_version")
    assert core.startswith("graph-runtime ")
    editor_and_ours_agree(editor, server)

    pid, entry = run_in_editor(editor, server)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (image,) = entry["outputs"]["8"]["images"]
    assert entry["prompt"][2]["6"]["inputs"]["seed"] == 42  # the value in the file; the editor randomizes after
    assert entry["prompt"][3]["extra_pnginfo"]["workflow"]["nodes"]  # the editor sent its graph along

    # the image reaches the SaveImage node: loaded from /view and drawn on the node
    page.wait_for_function(
        """() => { const n = window.app.graph.getNodeById(8);
                   return n?.imgs?.length > 0 && n.imgs[0].complete && n.imgs[0].naturalWidth === 64; }""",
        timeout=30_000)
    src = page.evaluate("() => window.app.graph.getNodeById(8).imgs[0].src")
    assert "/view?" in src and image["filename"] in src
    page.evaluate("() => window.app.graph.setDirtyCanvas(true, true)")
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "frontend_txt2img.png"))

    # the page heard the run over its websocket: sampler steps, latent previews, the result
    steps = entry["prompt"][2]["5"]["inputs"]["steps"]
    progress = [d for d in editor.of_prompt("progress", pid) if d["node"] == "6"]
    assert [d["value"] for d in progress][-1] == steps and {d["max"] for d in progress} == {steps}
    # the editor announces supports_preview_metadata: previews come as type-4 frames naming the Sampler
    metas = [json.loads(f[8:8 + int.from_bytes(f[4:8], "big")]) for f in editor.frames if f[:4] == b"\x00\x00\x00\x04"]
    assert metas and all(m["node_id"] == "6" and m["prompt_id"] == pid for m in metas), metas[:2]
    states = editor.of_prompt("progress_state", pid)
    assert states[-1]["nodes"]["6"]["state"] == "finished" and states[-1]["nodes"]["6"]["max"] == steps
    executed = {d["node"]: d["output"] for d in editor.of_prompt("executed", pid)}
    assert executed["8"]["images"] == [image]
    assert editor.of_prompt("execution_success", pid)
    assert not editor.problems, editor.problems


def test_editor_loads_our_nodes_and_runs_a_workflow(editor, server):
    page = editor.page
    doc = json.loads((ROOT / "tests" / "data" / "arithmetic.ui.json").read_text())
    page.evaluate("async (doc) => await window.app.loadGraphData(doc)", doc)
    page.wait_for_function("() => window.app?.graph?._nodes?.length === 7", timeout=30_000)
    types = page.evaluate("() => window.app.graph._nodes.map((n) => n.type).sort()")
    assert types == sorted(["PrimitiveInt", "PrimitiveInt", "IntMath", "ToString", "StringFormat",
                            "ShowValue", "SaveText"])
    assert page.evaluate("() => Object.keys(LiteGraph.registered_node_types).includes('IntMath')")
    editor_and_ours_agree(editor, server)

    _, entry = run_in_editor(editor, server, timeout=30)
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
    assert http("GET", server.url + "/api/settings/Comfy.Test.Marker").json() == "set"
    assert (server.config.paths.output / "tiles.txt").read_text() == "6 x 7 = 42 tiles"
    assert not editor.problems, editor.problems


# One of the editor's Pinia stores by id (what its panels read).
STORE = "((id) => document.getElementById('vue-app').__vue_app__.config.globalProperties.$pinia._s.get(id))"

# Pixels of the editor's canvas in a node's box (graph coordinates -> canvas pixels), for looking at what it drew.
NODE_PIXELS = """([id, margin]) => {
    const app = window.app, node = app.graph.getNodeById(id), el = app.canvas.canvas;
    const scale = el.width / el.clientWidth, title = LiteGraph.NODE_TITLE_HEIGHT;
    const [x0, y0] = app.canvas.ds.convertCanvasToOffset([node.pos[0] - margin, node.pos[1] - title - margin]);
    const [x1, y1] = app.canvas.ds.convertCanvasToOffset([node.pos[0] + node.size[0] + margin,
                                                          node.pos[1] + node.size[1] + margin]);
    const w = Math.round((x1 - x0) * scale), h = Math.round((y1 - y0) * scale);
    const data = el.getContext('2d').getImageData(Math.round(x0 * scale), Math.round(y0 * scale), w, h).data;
    let outline = 0, colour = 0;
    for (let i = 0; i < data.length; i += 4) {
        const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
        if (g > 200 && r < 60 && b < 60) outline++;                       // the running outline, #0f0
        else if (Math.max(r, g, b) - Math.min(r, g, b) > 60) colour++;    // saturated: not the grey node UI
    }
    return {outline, colour, w, h};
}"""


def test_running_node_is_outlined_with_progress_and_preview(editor, server):
    """A long run: the Sampler is outlined as running, its progress bar moves, the live preview is drawn on it."""
    page = editor.page
    doc = json.loads((ROOT / "web" / "default_graph.json").read_text())
    page.evaluate("async (doc) => await window.app.loadGraphData(doc)", doc)
    page.wait_for_function("() => window.app.graph.getNodeById(6)?.type === 'Sampler'", timeout=30_000)
    page.evaluate("""() => { const s = window.app.graph.getNodeById(5).widgets.find((w) => w.name === 'steps');
                             s.value = 400; window.app.graph.setDirtyCanvas(true, true); }""")
    idle = page.evaluate(NODE_PIXELS, [6, 6])
    before = set(http("GET", server.url + "/history").json())
    page.get_by_role("button", name="Run").first.click()
    try:
        page.wait_for_function(
            """() => { const n = window.app.graph.getNodeById(6);
                       const stroke = n.strokeStyles?.running?.call(n);
                       const previews = window.app.nodePreviewImages?.['6'] || [];
                       return stroke?.color === '#0f0' && n.progress > 0 && n.progress < 1 &&
                              previews.length > 0 && n.imgs?.[0]?.complete && n.imgs[0].naturalWidth > 0 &&
                              n.imgs[0].src.startsWith('blob:'); }""", timeout=60_000)
        first = page.evaluate("() => window.app.graph.getNodeById(6).progress")
        # the bar moves; by a quarter of the steps the preview shows the picture forming (colours, not black)
        page.wait_for_function(f"() => window.app.graph.getNodeById(6).progress > Math.max({first}, 0.25)",
                               timeout=60_000)
        page.evaluate("() => window.app.graph.setDirtyCanvas(true, true)")
        page.wait_for_timeout(300)
        running = page.evaluate(NODE_PIXELS, [6, 6])
        other = page.evaluate(NODE_PIXELS, [1, 6])
        page.screenshot(path=str(ARTIFACTS / "frontend_running.png"))
        topbar = page.evaluate("() => document.body.innerText")
    finally:
        page.evaluate("async () => await window.app.api.interrupt(null)")
    assert running["outline"] > 200 and idle["outline"] < 20, (idle, running)
    assert other["outline"] < 20, other  # only the running node is outlined
    assert running["colour"] > idle["colour"] + 300, (idle, running)  # the preview image on the node body
    assert "Sampler" in topbar or "Current node" not in topbar
    pid = [m["data"]["prompt_id"] for m in editor.messages if m.get("type") == "progress_state"][-1]
    assert pid not in before
    deadline = time.monotonic() + 30
    while pid not in http("GET", server.url + "/history").json():
        assert time.monotonic() < deadline, "the interrupted run did not end"
        time.sleep(0.1)
    frames = [f for f in editor.frames if f[:4] == b"\x00\x00\x00\x04"]
    assert frames, "no preview with metadata reached the page"

    # the interrupted job is cancelled, not failed, in what the queue panel reads (its jobs store)
    job = http("GET", f"{server.url}/api/jobs/{pid}").json()
    assert job["status"] == "cancelled" and job["execution_error"] is None, job
    page.wait_for_function(f"() => {STORE}('queue')?.historyTasks?.some((t) => t.jobId === '{pid}')",
                           timeout=30_000)
    shown = page.evaluate(f"() => {STORE}('queue').historyTasks.find((t) => t.jobId === '{pid}').displayStatus")
    assert shown == "Cancelled"
    assert not editor.problems, editor.problems


def test_logs_panel_shows_the_server_log(editor, server):
    import logging

    page = editor.page
    page.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleBottomPanelTab.logs-terminal')")
    text = "() => [...document.querySelectorAll('.xterm-rows')].map((e) => e.innerText).join('\\\\n')"
    page.wait_for_function(f"() => ({text})().includes('serving on')", timeout=30_000)
    # the panel subscribed: a new line of the server's log appears without reloading
    page.wait_for_timeout(500)
    logging.getLogger("web.test").warning("a line the artist sees in the console")
    page.wait_for_function(f"() => ({text})().includes('a line the artist sees')", timeout=30_000)
    body = page.evaluate("() => document.body.innerText")
    assert "Unable to load logs" not in body
    page.screenshot(path=str(ARTIFACTS / "frontend_logs.png"))
    page.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleBottomPanelTab.logs-terminal')")
    assert not editor.problems, editor.problems


def test_model_library_lists_the_embedded_model(editor, server):
    page = editor.page
    page.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleSidebarTab.model-library')")
    page.get_by_text("checkpoints", exact=False).first.wait_for(timeout=30_000)
    page.get_by_text("checkpoints", exact=False).first.click()
    page.get_by_text("tiny-shapes-sd").first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)  # its metadata (title, architecture) loaded
    body = page.evaluate("() => document.body.innerText")
    assert "classifier" not in body  # models/shapes is training code, not a model
    page.screenshot(path=str(ARTIFACTS / "frontend_models.png"))
    page.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleSidebarTab.model-library')")
    assert not editor.problems, editor.problems


def test_template_browser_lists_and_runs_our_templates(editor, server):
    page = editor.page
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text("Default graph (txt2img, embedded model)").first.wait_for(timeout=30_000)
    known = page.evaluate(f"""() => {{ const s = {STORE}('workflowTemplates');
        return [s.enhancedTemplates.length, !!s.getTemplateByName('graph_runtime-txt2img')]; }}""")
    assert known[0] > 100 and known[1], known  # ComfyUI's templates and ours
    page.screenshot(path=str(ARTIFACTS / "frontend_templates.png"))
    page.get_by_text("Default graph (txt2img, embedded model)").first.click()
    page.wait_for_function("() => window.app.graph._nodes.length === 8 && "
                           "window.app.graph._nodes.some((n) => n.type === 'Sampler')", timeout=30_000)
    page.keyboard.press("Escape")
    types = page.evaluate("() => window.app.graph._nodes.map((n) => n.type).sort()")
    assert types == TXT2IMG_TYPES
    _, entry = run_in_editor(editor, server)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert not editor.problems, editor.problems


def test_an_api_format_workflow_loads_as_a_template_and_runs(editor, server):
    """workflows/arithmetic.json is API format: the template browser opens it as a graph that runs."""
    page = editor.page
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text("arithmetic", exact=True).first.wait_for(timeout=30_000)
    page.get_by_text("arithmetic", exact=True).first.click()
    page.wait_for_function("() => window.app.graph._nodes.some((n) => n.type === 'IntMath')", timeout=30_000)
    page.keyboard.press("Escape")
    editor_and_ours_agree(editor, server)
    theirs = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    api = json.loads((ROOT / "workflows" / "arithmetic.json").read_text())
    for nid, node in api.items():
        assert {k: theirs[nid]["inputs"].get(k) for k in node["inputs"]} == node["inputs"], nid
    _, entry = run_in_editor(editor, server, timeout=30)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert "6 x 7 = 42 tiles" in json.dumps(entry["outputs"])
    page.screenshot(path=str(ARTIFACTS / "frontend_template_arithmetic.png"))
    assert not editor.problems, editor.problems


def test_uploading_an_image_on_load_image(editor, server, tmp_path):
    """LoadImage's upload button: the file chooser's picture goes to /upload/image, the node's image widget
    names it, and the page gets no 404 or error on the way."""
    from PIL import Image

    picture = tmp_path / "uploaded-in-editor.png"
    Image.new("RGB", (16, 16), (10, 200, 10)).save(picture)
    page = editor.page
    page.evaluate("""() => { const n = LiteGraph.createNode('LoadImage'); n.pos = [40, 40];
                             window.app.graph.add(n); window.__upload_node = n.id; }""")
    missing_before = len(editor.missing)
    with page.expect_file_chooser(timeout=30_000) as chooser:
        page.evaluate("""() => { const n = window.app.graph.getNodeById(window.__upload_node);
                                 const w = n.widgets.find((w) => w.type === 'button' || w.name === 'upload');
                                 w.callback ? w.callback() : w.options.onClick(); }""")
    with page.expect_response(lambda r: "/upload/image" in r.url, timeout=30_000) as reply:
        chooser.value.set_files(str(picture))
    assert reply.value.status == 200
    page.wait_for_function("""() => window.app.graph.getNodeById(window.__upload_node)
                                  .widgets.find((w) => w.name === 'image').value === 'uploaded-in-editor.png'""",
                           timeout=30_000)
    assert (server.config.paths.input / "uploaded-in-editor.png").is_file()
    assert editor.missing[missing_before:] == [] and not editor.problems, (editor.missing, editor.problems)
    page.evaluate("() => window.app.graph.remove(window.app.graph.getNodeById(window.__upload_node))")


def test_math_expression_autogrow_slots_in_the_editor(editor, server):
    """ComfyMathExpression's COMFY_AUTOGROW_V3 input: the editor makes its values.a slot, links a float into it,
    grows a spare slot, and sends what ComfyUI sends; the result shows on PreviewAny."""
    page = editor.page
    page.evaluate("""() => {
        const g = window.app.graph; g.clear();
        const f = LiteGraph.createNode('PrimitiveFloat'); g.add(f); f.widgets[0].value = 2.5;
        const m = LiteGraph.createNode('ComfyMathExpression'); g.add(m); m.pos = [300, 0];
        m.widgets.find((w) => w.name === 'expression').value = 'a * 4';
        const p = LiteGraph.createNode('PreviewAny'); g.add(p); p.pos = [650, 0];
        f.connect(0, m, m.inputs.findIndex((i) => i.name === 'values.a'));
        m.connect(1, p, 0);
    }""")
    names = page.evaluate("() => window.app.graph._nodes.find((n) => n.type === 'ComfyMathExpression')"
                          ".inputs.map((i) => i.name)")
    assert names[:2] == ["values.a", "values.b"]  # the linked slot and the spare one the editor grew
    theirs = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    math_node = next(v for v in theirs.values() if v["class_type"] == "ComfyMathExpression")
    assert math_node["inputs"]["expression"] == "a * 4" and len(math_node["inputs"]["values.a"]) == 2
    editor_and_ours_agree(editor, server)
    _, entry = run_in_editor(editor, server, timeout=30)
    assert entry["status"]["status_str"] == "success"
    assert ["10"] in [out.get("text") for out in entry["outputs"].values()]
    slots = page.evaluate("() => { const n = LiteGraph.createNode('BatchImagesNode'); window.app.graph.add(n);"
                          " return n.inputs.map((i) => i.name); }")
    assert slots[0] == "images.image0"  # a numbered Autogrow starts with its minimum
    assert not editor.problems, editor.problems


def test_resize_dynamic_combo_in_the_editor(editor, server):
    """ResizeImageMaskNode's COMFY_DYNAMICCOMBO_V3: the editor shows the chosen option's widgets, swaps them when
    the option changes, saves them after the combo, and sends resize_type.* as we convert it."""
    page = editor.page
    widgets = page.evaluate("""async () => {
        const g = window.app.graph; g.clear();
        const e = LiteGraph.createNode('EmptyImage'); g.add(e);
        const r = LiteGraph.createNode('ResizeImageMaskNode'); g.add(r); r.pos = [350, 0];
        const p = LiteGraph.createNode('GetImageSize'); g.add(p); p.pos = [700, 0];
        const q = LiteGraph.createNode('PreviewAny'); g.add(q); q.pos = [950, 0];
        e.connect(0, r, 0); r.connect(0, p, 0); p.connect(0, q, 0);
        const before = r.widgets.map((w) => w.name);
        const combo = r.widgets.find((w) => w.name === 'resize_type');
        combo.value = 'scale longer dimension'; combo.callback?.(combo.value);
        await new Promise((done) => setTimeout(done, 100));
        r.widgets.find((w) => w.name === 'resize_type.longer_size').value = 128;
        return [before, r.widgets.map((w) => w.name)];
    }""")
    assert widgets[0] == ["resize_type", "resize_type.width", "resize_type.height", "resize_type.crop", "scale_method"]
    assert widgets[1] == ["resize_type", "resize_type.longer_size", "scale_method"]
    saved = page.evaluate("() => window.app.graph.serialize()")
    (node,) = [n for n in saved["nodes"] if n["type"] == "ResizeImageMaskNode"]
    assert node["widgets_values"] == ["scale longer dimension", 128, "area"]
    editor_and_ours_agree(editor, server)
    _, entry = run_in_editor(editor, server, timeout=30)
    assert entry["status"]["status_str"] == "success"
    assert ["128"] in [out.get("text") for out in entry["outputs"].values()]  # 512x512 -> longer edge 128
    assert not editor.problems, editor.problems


def test_image_compare_in_the_editor(editor, server):
    """ImageCompare's IMAGECOMPARE widget: the editor draws it and sends its state, the run shows both sides."""
    page = editor.page
    page.evaluate("""() => {
        const g = window.app.graph; g.clear();
        const a = LiteGraph.createNode('EmptyImage'); g.add(a); a.widgets.find((w) => w.name === 'color').value = 255;
        const b = LiteGraph.createNode('EmptyImage'); g.add(b); b.pos = [0, 300];
        const c = LiteGraph.createNode('ImageCompare'); g.add(c); c.pos = [350, 0];
        a.connect(0, c, c.inputs.findIndex((i) => i.name === 'image_a'));
        b.connect(0, c, c.inputs.findIndex((i) => i.name === 'image_b'));
    }""")
    assert page.evaluate("() => window.app.graph._nodes.find((n) => n.type === 'ImageCompare')"
                         ".widgets.map((w) => w.type)") == ["imagecompare"]
    theirs = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    ours = ui_to_api(page.evaluate("() => window.app.graph.serialize()"), server.state.registry)
    strip = lambda p: {k: {n: v for n, v in e["inputs"].items() if n != "compare_view"} for k, e in p.items()}  # noqa: E731
    assert strip(theirs) == strip(ours)
    _, entry = run_in_editor(editor, server, timeout=30)
    assert entry["status"]["status_str"] == "success"
    (ui,) = [o for o in entry["outputs"].values() if "a_images" in o]
    assert len(ui["a_images"]) == 1 and len(ui["b_images"]) == 1
    assert not editor.problems, editor.problems
