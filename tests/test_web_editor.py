"""What the official editor reads from the server besides running prompts: per-node execution state and
previews with metadata, the queue panel's job states, the logs panel, the model library, templates.
Socket- and HTTP-level; the browser side is in test_web_frontend.py."""

from __future__ import annotations

import json
import struct

import pytest
from test_web_support import collect_until_done, http, new_id, start_server, submit, ws_connect


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("editor"))
    yield srv
    srv.stop()


@pytest.fixture
def base(server):
    return server.url


def announce(ws, **flags) -> dict:
    assert json.loads(ws.recv(timeout=5))["type"] == "status"
    ws.send(json.dumps({"type": "feature_flags", "data": flags}))
    reply = json.loads(ws.recv(timeout=5))
    assert reply["type"] == "feature_flags"
    return reply["data"]


def test_progress_state_and_previews_with_metadata(base):
    cid = new_id()
    prompt = {"1": {"class_type": "SendPreview", "inputs": {"size": 8}},
              "2": {"class_type": "PrimitiveInt", "inputs": {"value": 3}}}
    with ws_connect(base, cid) as ws:
        flags = announce(ws, supports_preview_metadata=True)
        assert flags["supports_preview_metadata"] is True
        pid = submit(base, prompt, cid)["prompt_id"]
        msgs = collect_until_done(ws, pid)

    (frame,) = [d for k, d in msgs if k == "binary"]
    event, length = struct.unpack(">II", frame[:8])
    assert event == 4
    meta = json.loads(frame[8:8 + length])
    assert meta == {"node_id": "1", "display_node_id": "1", "prompt_id": pid, "parent_node_id": None,
                    "real_node_id": "1", "image_type": "image/jpeg"}
    assert frame[8 + length:8 + length + 2] == b"\xff\xd8"

    states = [d for k, d in msgs if k == "progress_state"]
    assert states and all(s["prompt_id"] == pid for s in states)
    seen = [(s["nodes"]["1"]["state"], s["nodes"]["1"]["value"], s["nodes"]["1"]["max"]) for s in states]
    assert seen[0] == ("running", 0, 1)
    assert ("running", 1, 2) in seen and ("running", 2, 2) in seen
    assert seen[-1] == ("finished", 2, 2)
    node = states[-1]["nodes"]["1"]
    assert node["node_id"] == node["display_node_id"] == node["real_node_id"] == "1"
    assert node["parent_node_id"] is None and node["prompt_id"] == pid
    # the running node's state comes before its preview; pending nodes are never listed
    first_running = next(i for i, (k, d) in enumerate(msgs) if k == "progress_state")
    assert first_running < next(i for i, (k, _) in enumerate(msgs) if k == "binary")
    kinds = [k for k, _ in msgs]
    assert "executing" in kinds and "progress" in kinds  # older clients still get these


def test_plain_preview_frames_for_clients_without_the_flag(base):
    cid = new_id()
    with ws_connect(base, cid) as ws:
        announce(ws, supports_preview_metadata=False)
        pid = submit(base, {"1": {"class_type": "SendPreview", "inputs": {"size": 9}}}, cid)["prompt_id"]
        msgs = collect_until_done(ws, pid)
    (frame,) = [d for k, d in msgs if k == "binary"]
    assert struct.unpack(">II", frame[:8]) == (1, 1) and frame[8:10] == b"\xff\xd8"


def test_user_css_is_empty_until_written(server):
    base = server.url
    for path in ("/api/userdata/user.css", "/userdata/user.css", "/user.css"):
        r = http("GET", base + path)
        assert (r.status, r.body) == (200, b""), path
        assert r.headers["content-type"].startswith("text/css")
    assert http("POST", base + "/api/userdata/user.css", raw="body { color: red }").status == 200
    assert http("GET", base + "/api/userdata/user.css").body == b"body { color: red }"
    assert http("DELETE", base + "/api/userdata/user.css").status == 204
    assert http("GET", base + "/api/userdata/user.css").body == b""


def test_system_stats_and_about_name_this_project(base):
    from importlib.metadata import version

    system = http("GET", base + "/api/system_stats").json()["system"]
    assert system["comfyui_version"] == f"graph-runtime {version('graph-runtime')}"
    readme = http("GET", base + "/api/graph_runtime/readme")
    assert readme.status == 200 and readme.body.startswith(b"# graph-runtime")


def test_logs_panel_reads_and_follows_the_server_log(base):
    import logging

    raw = http("GET", base + "/internal/logs/raw").json()
    assert set(raw) == {"entries", "size"} and raw["size"]["cols"] > 0
    assert "graph-runtime" in raw["entries"][0]["m"] and "serving on" in raw["entries"][0]["m"]
    assert raw["entries"][0]["m"].endswith("\r\n") and raw["entries"][0]["t"]

    cid = new_id()
    with ws_connect(base, cid) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "status"
        r = http("PATCH", base + "/internal/logs/subscribe", {"enabled": True, "clientId": cid})
        assert r.status == 200
        logging.getLogger("web.test").warning("a line for the logs panel")
        while True:
            msg = json.loads(ws.recv(timeout=5))
            if msg["type"] == "logs":
                break
        assert "a line for the logs panel" in msg["data"]["entries"][0]["m"]
        assert "WARNING" in msg["data"]["entries"][0]["m"]
        assert http("PATCH", base + "/api/internal/logs/subscribe", {"enabled": False, "clientId": cid}).status == 200
        logging.getLogger("web.test").warning("not sent after unsubscribing")
        with pytest.raises(TimeoutError):
            while True:
                if json.loads(ws.recv(timeout=0.5))["type"] == "logs":
                    break
    text = http("GET", base + "/internal/logs")
    assert text.status == 200 and b"a line for the logs panel" in text.body and b"not sent after" in text.body
    bad = http("PATCH", base + "/internal/logs/subscribe", {"enabled": "yes"})
    assert bad.status == 400 and b"enabled" in bad.body


def test_the_log_buffer_is_bounded():
    from web.logs import MAX_MESSAGE, LogBuffer

    buf = LogBuffer(capacity=5)
    for i in range(20):
        buf.write(f"line {i}")
    buf.write("x" * (MAX_MESSAGE * 3))
    entries = buf.snapshot()
    assert len(entries) == 5 and entries[0]["m"].startswith("line 16")
    assert len(entries[-1]["m"]) < MAX_MESSAGE + 20


def _safetensors(path, meta: dict | None = None) -> None:
    header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    if meta is not None:
        header["__metadata__"] = meta
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0\0\0")


def test_model_library_lists_loadable_models_by_folder(base, tmp_path, monkeypatch):
    models = tmp_path / "models"
    _safetensors(models / "checkpoints" / "sd" / "mine.safetensors", {"modelspec.title": "Mine"})
    (models / "checkpoints" / "old.ckpt").write_bytes(b"pickle")  # never loaded: not listed
    _safetensors(models / "loras" / "style.safetensors")
    _safetensors(models / "diffusion_models" / "dit.safetensors")
    _safetensors(models / "upscale_models" / "x4.safetensors")
    _safetensors(models / "tools" / "net.safetensors")  # beside code: not a model
    (models / "tools" / "train.py").write_text("")
    monkeypatch.setenv("GRAPH_RUNTIME_MODELS", str(models))

    folders = {f["name"]: f["folders"] for f in http("GET", base + "/api/experiment/models").json()}
    assert list(folders) == ["checkpoints", "diffusion_models", "text_encoders", "vae", "loras", "controlnet",
                             "upscale_models"]
    assert str(models / "checkpoints") in folders["checkpoints"]
    assert http("GET", base + "/models").json() == list(folders)

    ckpts = http("GET", base + "/api/experiment/models/checkpoints").json()
    names = [m["name"] for m in ckpts]
    assert names[0] == "tiny-shapes-sd"  # the embedded model, as LoadModel names it
    assert "checkpoints/sd/mine.safetensors" in names
    assert not [n for n in names if n.startswith(("shapes/", "tools/", "loras/", "diffusion_models/"))], names
    assert not [n for n in names if n.endswith(".ckpt")]
    mine = next(m for m in ckpts if m["name"] == "checkpoints/sd/mine.safetensors")
    assert mine["size"] > 0 and mine["modified"] > 0
    assert folders["checkpoints"][mine["pathIndex"]] == str(models / "checkpoints")

    assert http("GET", base + "/models/loras").json() == ["style.safetensors"]
    assert http("GET", base + "/api/models/diffusion_models").json() == ["dit.safetensors"]
    assert [m["name"] for m in http("GET", base + "/api/experiment/models/upscale_models").json()] == ["x4.safetensors"]
    assert http("GET", base + "/api/experiment/models/controlnet").json() == []

    meta = http("GET", base + "/api/view_metadata/checkpoints?filename=checkpoints/sd/mine.safetensors")
    assert meta.json() == {"modelspec.title": "Mine"}
    assert http("GET", base + "/view_metadata/loras?filename=style.safetensors").json() == {}
    embedded = http("GET", base + "/api/view_metadata/checkpoints?filename=tiny-shapes-sd").json()
    assert embedded == {"modelspec.title": "tiny-shapes-sd", "modelspec.architecture": "StableDiffusionPipeline"}
    (models / "checkpoints" / "sd" / "mine.webp").write_bytes(b"RIFF....WEBP")
    pic = http("GET", base + "/api/experiment/models/preview/checkpoints/0/checkpoints/sd/mine.webp")
    assert pic.status == 200 and pic.body == b"RIFF....WEBP" and pic.headers["content-type"] == "image/webp"
    assert http("GET", base + "/api/experiment/models/preview/checkpoints/0/tiny-shapes-sd").status == 204
    for url, status in (("/api/experiment/models/nope", 404), ("/models/nope", 404),
                        ("/view_metadata/loras?filename=../checkpoints/sd/mine.safetensors", 404),
                        ("/view_metadata/loras", 400)):
        r = http("GET", base + url)
        assert r.status == status and r.json()["error"]["message"], url


def test_templates_index_workflows_and_thumbnails_offline(base):
    from web.templates import _json_dir

    if _json_dir() is None:
        pytest.fail("ComfyUI's templates are missing: pip install comfyui-workflow-templates-core==0.3.388 "
                    "comfyui-workflow-templates-json==0.1.123")
    index = http("GET", base + "/templates/index.json").json()
    ours = index[0]
    assert ours["title"] == "graph-runtime" and ours["moduleName"] == "default"
    names = [t["name"] for t in ours["templates"]]
    assert "graph_runtime-default" in names and "graph_runtime-txt2img" in names
    theirs = [t for c in index[1:] for t in c["templates"]]
    assert len(theirs) > 100  # ComfyUI's own, from comfyui-workflow-templates-json

    own = http("GET", base + "/templates/graph_runtime-txt2img.json")
    assert own.status == 200 and [n["type"] for n in own.json()["nodes"]]
    first = theirs[0]["name"]
    wf = http("GET", base + f"/api/templates/{first}.json")
    assert wf.status == 200 and "nodes" in wf.json()
    # thumbnails: installed ones, else a drawn card; never a request that leaves this machine
    for name in (f"{first}-1.webp", "graph_runtime-txt2img-1.webp", "logo/google.png"):
        thumb = http("GET", base + f"/templates/{name}")
        assert thumb.status == 200 and thumb.headers["content-type"].startswith("image/"), name
    assert http("GET", base + "/templates/index_logo.json").status == 200
    localised = http("GET", base + "/templates/index.fr.json").json()
    assert localised[0]["title"] == "graph-runtime" and len(localised) == len(index)
    for bad in ("index.schema.json", "nope.json", "../pyproject.toml", "..%2Fpyproject.toml.json", "x.exe"):
        assert http("GET", base + f"/templates/{bad}").status == 404, bad


def test_saved_templates_are_empty_until_written(base):
    assert http("GET", base + "/api/userdata/comfy.templates.json").json() == []
    assert http("POST", base + "/api/userdata/comfy.templates.json", raw='[{"name": "t"}]').status == 200
    assert http("GET", base + "/api/userdata/comfy.templates.json").json() == [{"name": "t"}]


def test_own_api_format_workflows_are_served_as_editor_graphs(server):
    """Every workflow in workflows/ is a template; an API-format one reaches the editor as its graph, which
    converts back to the same prompt (widgets the file leaves out at their defaults)."""
    from graph_runtime.ui_format import ui_to_api

    base = server.url
    (ours,) = [c for c in http("GET", base + "/templates/index.json").json() if c["title"] == "graph-runtime"]
    names = {t["name"] for t in ours["templates"]}
    from test_web_support import ROOT

    for path in sorted((ROOT / "workflows").glob("*.json")):
        stem = path.name.removesuffix(".ui.json").removesuffix(".json")
        assert f"graph_runtime-{stem}" in names, stem
        api = json.loads(path.read_text())
        if "nodes" in api:
            continue
        graph = http("GET", base + f"/templates/graph_runtime-{stem}.json").json()
        back = ui_to_api(graph, server.state.registry)
        assert set(back) == set(api), stem
        for nid, node in api.items():
            got = back[nid]["inputs"]
            assert {k: got.get(k) for k in node["inputs"]} == node["inputs"], (stem, nid)


def test_node_warnings_reach_the_logs_panel_as_lines(tmp_path):
    srv = start_server(tmp_path, node_modules=("test_web_editor",))
    try:
        cid = new_id()
        with ws_connect(srv.url, cid) as ws:
            pid = submit(srv.url, {"1": {"class_type": "WarnOnce", "inputs": {"text": "two\nlines"}}}, cid)["prompt_id"]
            msgs = collect_until_done(ws, pid)
    finally:
        srv.stop()
    (logs,) = [d for k, d in msgs if k == "logs"]
    (entry,) = logs["entries"]
    assert entry["m"] == "node 1: two\r\nlines\r\n" and "T" in entry["t"] and logs["node"] == "1"


def register(registry) -> None:
    """Test nodes for a server started with node_modules=("test_web_editor",)."""
    from graph_runtime import Node, NodeInputs, NodeResult, Widget

    class WarnOnce(Node):
        CATEGORY = "testing"
        OUTPUT_NODE = True

        class Inputs(NodeInputs):
            text: str = Widget("")

        OUTPUTS = ()

        def execute(self, inputs, ctx):
            ctx.warn(inputs.text)
            return NodeResult(ui={"text": ["warned"]})

    registry.register_all([WarnOnce])
