"""The ComfyUI-compatible server over real HTTP and websocket connections on loopback."""

from __future__ import annotations

import copy
import io
import json
import struct
import time

import pytest
from test_web_support import (
    ARITHMETIC,
    Unloadable,
    collect_until_done,
    gated_prompt,
    http,
    new_id,
    start_server,
    submit,
    wait_history,
    ws_connect,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture
def base(server):
    return server.url


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_startup_routes(base, prefix):
    assert http("GET", base + prefix + "/users").json() == {"storage": "server", "migrated": True}
    assert http("GET", base + prefix + "/extensions").status == 200
    assert http("GET", base + prefix + "/embeddings").json() == []
    info = http("GET", base + prefix + "/object_info").json()
    assert info["IntMath"]["input_order"]["required"] == ["a", "b", "op"]
    one = http("GET", base + prefix + "/object_info/IntMath").json()
    assert list(one) == ["IntMath"]
    assert http("GET", base + prefix + "/object_info/Nope").json() == {}
    features = http("GET", base + prefix + "/features").json()
    assert features["max_upload_size"] > 0
    stats = http("GET", base + prefix + "/system_stats").json()
    assert stats["system"]["ram_total"] > stats["system"]["ram_free"] > 0
    assert stats["system"]["python_version"] and stats["devices"][0]["type"] in ("cpu", "cuda")
    assert http("GET", base + prefix + "/prompt").json() == {"exec_info": {"queue_remaining": 0}}


def test_settings_persist(server):
    base = server.url
    assert http("GET", base + "/api/settings").json()["Comfy.TutorialCompleted"] is True
    assert http("POST", base + "/api/settings/Comfy.Theme", "dark").status == 200
    assert http("POST", base + "/settings", {"A.B": 3}).status == 200
    assert http("GET", base + "/api/settings/Comfy.Theme").json() == "dark"
    stored = json.loads((server.config.user_dir / "comfy.settings.json").read_text())
    assert stored["Comfy.Theme"] == "dark" and stored["A.B"] == 3


def test_prompt_runs_with_events_to_the_submitter_only(base):
    me, other = new_id(), new_id()
    with ws_connect(base, me) as ws, ws_connect(base, other) as bystander:
        first = json.loads(ws.recv(timeout=5))
        assert first["type"] == "status" and first["data"]["sid"] == me
        ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": False}}))
        flags = json.loads(ws.recv(timeout=5))
        assert flags["type"] == "feature_flags" and "max_upload_size" in flags["data"]
        json.loads(bystander.recv(timeout=5))

        reply = submit(base, ARITHMETIC, me)
        assert reply["node_errors"] == {} and isinstance(reply["number"], int)
        pid = reply["prompt_id"]
        msgs = collect_until_done(ws, pid)
        kinds = [k for k, _ in msgs]
        for k in ("execution_start", "execution_cached", "executing", "executed", "execution_success"):
            assert k in kinds, kinds
        executed = {d["node"]: d["output"] for k, d in msgs if k == "executed"}
        assert executed["6"] == {"text": ["6 x 7 = 42 tiles"]}
        assert kinds.index("execution_success") > kinds.index("executed")

        # the bystander hears the queue status, never this prompt's execution
        seen = []
        try:
            while True:
                seen.append(json.loads(bystander.recv(timeout=0.5))["type"])
        except TimeoutError:
            pass
        assert set(seen) <= {"status"}

    entry = wait_history(base, pid)
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"]
    assert entry["outputs"]["7"]["files"] == [{"filename": "tiles.txt", "subfolder": "", "type": "output"}]
    assert entry["prompt"][1] == pid and entry["prompt"][4] == ["6", "7"]
    text = http("GET", base + "/view?filename=tiles.txt&type=output")
    assert text.status == 200 and text.body == b"6 x 7 = 42 tiles"

    jobs = http("GET", base + "/api/jobs?status=completed,failed&sort_by=created_at&sort_order=desc&limit=5").json()
    assert jobs["jobs"][0]["id"] == pid and jobs["jobs"][0]["status"] == "completed"
    assert jobs["pagination"]["offset"] == 0
    detail = http("GET", f"{base}/api/jobs/{pid}").json()
    assert detail["workflow"]["prompt"]["3"]["class_type"] == "IntMath"
    assert detail["outputs"]["6"]["text"] == ["6 x 7 = 42 tiles"]
    assert http("GET", base + "/api/jobs/nope").status == 404


def test_requeue_reruns_only_what_changed(base):
    cid = new_id()
    with ws_connect(base, cid) as ws:
        submit(base, ARITHMETIC, cid)
        changed = copy.deepcopy(ARITHMETIC)
        changed["5"]["inputs"]["template"] = "{c}"
        pid = submit(base, changed, cid)["prompt_id"]
        msgs = []
        while True:  # skip the first prompt's messages
            msgs = collect_until_done(ws, pid)
            if any(d.get("prompt_id") == pid for k, d in msgs if isinstance(d, dict)):
                break
    cached = next(d["nodes"] for k, d in msgs if k == "execution_cached" and d["prompt_id"] == pid)
    ran = [d["node"] for k, d in msgs if k == "executing" and d["prompt_id"] == pid and d["node"]]
    assert set(cached) == {"1", "2", "3", "4"} and set(ran) == {"5", "6", "7"}
    assert wait_history(base, pid)["outputs"]["6"]["text"] == ["42"]


def test_invalid_prompt_is_refused_with_node_errors(base):
    bad = copy.deepcopy(ARITHMETIC)
    bad["3"]["inputs"]["op"] = "explode"
    r = http("POST", base + "/prompt", {"prompt": bad})
    assert r.status == 400
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    err = body["node_errors"]["3"]
    assert err["class_type"] == "IntMath" and err["errors"][0]["extra_info"]["input_name"] == "op"
    assert set(err["dependent_outputs"]) == {"6", "7"}
    for payload in (b"not json", b"[]", b'{"prompt": 3}', b'{"x": 1}'):
        r = http("POST", base + "/api/prompt", raw=payload, headers={"Content-Type": "application/json"})
        assert r.status == 400 and "error" in r.json() and "node_errors" in r.json()


def test_undeclared_input_is_accepted_with_a_warning(base):
    doc = copy.deepcopy(ARITHMETIC)
    doc["3"]["inputs"]["operation"] = "add"
    r = http("POST", base + "/prompt", {"prompt": doc})
    assert r.status == 200
    body = r.json()
    assert body["node_errors"] == {}
    assert [(w["node_id"], w["extra_info"]["input_name"]) for w in body["warnings"]] == [("3", "operation")]
    assert wait_history(base, body["prompt_id"])["outputs"]["6"]["text"] == ["6 x 7 = 42 tiles"]
    # the editor ignores the answer's extra keys: the server log (its Logs panel) says it too
    log = http("GET", base + "/internal/logs").body.decode()
    assert f"prompt {body['prompt_id']}: node 3 (IntMath): input 'operation' is not an input of IntMath" in log


def test_ui_format_prompt_is_converted(base):
    from test_web_support import ROOT

    doc = json.loads((ROOT / "tests" / "data" / "arithmetic.ui.json").read_text())
    pid = submit(base, doc)["prompt_id"]
    assert wait_history(base, pid)["outputs"]["6"]["text"] == ["6 x 7 = 42 tiles"]


def test_queue_order_priority_delete_and_interrupt(base, tmp_path):
    gate = tmp_path / "open"
    cid = new_id()
    with ws_connect(base, cid) as ws:
        blocker = submit(base, gated_prompt(gate, 0), cid)["prompt_id"]
        deadline = time.monotonic() + 10
        while http("GET", base + "/queue").json()["queue_running"] == [] and time.monotonic() < deadline:
            time.sleep(0.02)
        ids = {}
        for name, extra in (("a", {}), ("b", {}), ("front", {"front": True}), ("early", {"number": -1000}),
                            ("gone", {})):
            value = {"a": 1, "b": 2, "front": 3, "early": 4, "gone": 5}[name]
            ids[name] = submit(base, gated_prompt(gate, value), cid, **extra)["prompt_id"]
        q = http("GET", base + "/queue").json()
        assert q["queue_running"][0][1] == blocker
        assert [p[1] for p in q["queue_pending"]] == [ids["early"], ids["front"], ids["a"], ids["b"], ids["gone"]]
        assert http("GET", base + "/prompt").json()["exec_info"]["queue_remaining"] == 6
        assert http("POST", base + "/queue", {"delete": [ids["gone"]]}).status == 200
        extra = submit(base, gated_prompt(gate, 6), cid)["prompt_id"]
        assert http("POST", base + "/api/jobs/cancel", {"job_ids": [extra]}).status == 200
        assert http("POST", base + "/api/jobs/cancel", {"job_ids": "x"}).status == 400
        pending = http("GET", base + "/api/jobs?status=pending").json()["jobs"]
        assert {j["id"] for j in pending} == {ids["early"], ids["front"], ids["a"], ids["b"]}

        # interrupt only the running prompt: it is cancelled, the rest run in order
        assert http("POST", base + "/interrupt", {"prompt_id": blocker}).status == 200
        msgs = collect_until_done(ws, blocker)
        assert "execution_interrupted" in [k for k, _ in msgs]
        gate.write_text("go")
        for name in ("early", "front", "a", "b"):
            wait_history(base, ids[name])
    order = [e["prompt"][1] for e in http("GET", base + "/history?max_items=5").json().values()]
    assert order == [blocker, ids["early"], ids["front"], ids["a"], ids["b"]]
    job = http("GET", f"{base}/api/jobs/{blocker}").json()
    assert job["status"] == "cancelled"
    assert http("GET", f"{base}/history/{ids['gone']}").json() == {}


def test_queue_clear_and_history_paging(base, tmp_path):
    gate = tmp_path / "open"
    blocker = submit(base, gated_prompt(gate, 0))["prompt_id"]
    for v in range(3):
        submit(base, gated_prompt(gate, v + 10))
    assert len(http("GET", base + "/queue").json()["queue_pending"]) >= 3
    assert http("POST", base + "/api/queue", {"clear": True}).status == 200
    assert http("GET", base + "/queue").json()["queue_pending"] == []
    gate.write_text("go")
    wait_history(base, blocker)
    everything = http("GET", base + "/history").json()
    ids = list(everything)
    assert ids[-1] == blocker
    page = http("GET", base + "/history?max_items=2&offset=1").json()
    assert list(page) == ids[1:3]
    assert list(http("GET", base + "/history?max_items=1").json()) == [blocker]
    assert http("POST", base + "/history", {"delete": [ids[0]]}).status == 200
    assert ids[0] not in http("GET", base + "/history").json()


def test_preview_frames_and_progress(base):
    cid = new_id()
    with ws_connect(base, cid) as ws:
        pid = submit(base, {"1": {"class_type": "SendPreview", "inputs": {"size": 8}}}, cid)["prompt_id"]
        msgs = collect_until_done(ws, pid)
    frames = [d for k, d in msgs if k == "binary"]
    assert len(frames) == 1
    event, image_type = struct.unpack(">II", frames[0][:8])
    assert (event, image_type) == (1, 1) and frames[0][8:10] == b"\xff\xd8"
    progress = [d for k, d in msgs if k == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 2, "1"), (2, 2, "1")]


def test_free_unloads_services(server):
    svc = Unloadable()
    server.state.executor.services.set(Unloadable, svc)
    assert http("POST", server.url + "/free", {"unload_models": True}).status == 200
    deadline = time.monotonic() + 5
    while svc.unloaded == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert svc.unloaded == 1


def _png(size=(4, 3), mode="RGBA") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, (10, 20, 30, 128) if mode == "RGBA" else (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def multipart(fields: dict, file_field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "----graphruntime" + new_id()
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_upload_and_view_image(base):
    png = _png()
    body, ctype = multipart({"type": "input", "subfolder": "up"}, "image", "pic.png", png)
    r = http("POST", base + "/upload/image", raw=body, headers={"Content-Type": ctype})
    assert r.status == 200 and r.json() == {"name": "pic.png", "subfolder": "up", "type": "input"}
    r2 = http("POST", base + "/api/upload/image", raw=body, headers={"Content-Type": ctype})
    assert r2.json()["name"] == "pic (1).png"  # no overwrite unless asked
    got = http("GET", base + "/view?filename=pic.png&subfolder=up&type=input")
    assert got.status == 200 and got.body == png and got.headers["Content-Type"] == "image/png"
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    webp = http("GET", base + "/api/view?filename=pic.png&subfolder=up&type=input&preview=webp;80")
    assert webp.headers["Content-Type"] == "image/webp" and webp.body[8:12] == b"WEBP"
    alpha = http("GET", base + "/view?filename=pic.png&subfolder=up&type=input&channel=a")
    from PIL import Image

    im = Image.open(io.BytesIO(alpha.body))
    assert im.mode == "L" and im.getpixel((0, 0)) == 128
    assert http("GET", base + "/view?filename=missing.png&type=input").status == 404
    assert http("GET", base + "/view?filename=pic.png&type=elsewhere").status == 400


def test_userdata_roundtrip(base):
    wf = {"nodes": [], "links": []}
    r = http("POST", base + "/api/userdata/workflows%2Fmine.json?overwrite=true&full_info=true", wf)
    assert r.status == 200 and r.json()["path"] == "workflows/mine.json"
    assert http("POST", base + "/api/userdata/workflows%2Fmine.json?overwrite=false", wf).status == 409
    listed = http("GET", base + "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true").json()
    assert [i["path"] for i in listed] == ["mine.json"] and listed[0]["size"] > 0
    assert http("GET", base + "/userdata?dir=workflows").json() == ["mine.json"]
    assert http("GET", base + "/api/userdata/workflows%2Fmine.json").json() == wf
    moved = http("POST", base + "/api/userdata/workflows%2Fmine.json/move/workflows%2Fsub%2Fyours.json?overwrite=false")
    assert moved.status == 200
    assert http("GET", base + "/api/userdata/workflows%2Fmine.json").status == 404
    assert http("GET", base + "/api/userdata?dir=workflows&recurse=true").json() == ["sub/yours.json"]
    assert http("DELETE", base + "/api/userdata/workflows%2Fsub%2Fyours.json").status == 204
    assert http("GET", base + "/api/userdata?dir=nowhere").status == 404


def test_slow_client_outbox_drops_previews_then_progress_then_the_client():
    from web.hub import Client

    c = Client("x", ws=None, cap=3)
    for kind, payload in (("json", "a"), ("preview", b"p"), ("progress", "g")):
        assert c.offer(kind, payload)
    assert c.offer("preview", b"p2") and c.dropped == 1  # full: a new preview is dropped
    assert c.offer("json", "b")  # an old preview makes room
    assert [k for k, _ in c.outbox] == ["json", "progress", "json"]
    assert c.offer("json", "c")  # then a progress message
    assert [p for _, p in c.outbox] == ["a", "b", "c"]
    assert not c.offer("json", "d")  # nothing left to drop: the client is too slow to keep


def test_a_client_that_never_reads_does_not_stall_the_queue(tmp_path):
    srv = start_server(tmp_path, max_ws_queue=8)
    try:
        sid = new_id()
        with ws_connect(srv.url, sid):  # connected, never reading
            ids = [submit(srv.url, {"1": {"class_type": "SendPreview", "inputs": {"size": 64}}}, sid)["prompt_id"]
                   for _ in range(40)]
            for pid in ids:
                assert wait_history(srv.url, pid, timeout=60)["status"]["status_str"] == "success"
    finally:
        srv.stop()


def test_events_wait_for_a_client_that_connects_after_submitting(base):
    cid = new_id()
    pid = submit(base, ARITHMETIC, cid)["prompt_id"]
    wait_history(base, pid)
    with ws_connect(base, cid) as ws:  # connected only after the prompt ran
        msgs = collect_until_done(ws, pid, timeout=10)
    assert [k for k, _ in msgs][0] == "status"
    assert "execution_success" in [k for k, _ in msgs]


def test_internal_files_lists_a_folder_newest_first(tmp_path):
    """The editor's /internal/files/{input|output|temp}: plain file names, newest first; other names refused."""
    import os

    srv = start_server(tmp_path)
    try:
        folder = tmp_path / "input"
        folder.mkdir(exist_ok=True)
        for i, name in enumerate(["old.png", "new.png"]):
            (folder / name).write_bytes(b"x")
            os.utime(folder / name, (1_000_000 + i, 1_000_000 + i))
        (folder / "sub").mkdir()
        (folder / ".hidden").write_bytes(b"x")
        for prefix in ("", "/api"):
            reply = http("GET", f"{srv.url}{prefix}/internal/files/input")
            assert reply.status == 200 and reply.json() == ["new.png", "old.png"]
        assert http("GET", f"{srv.url}/internal/files/output").json() == []
        assert http("GET", f"{srv.url}/internal/files/models").status == 400
    finally:
        srv.stop()


def test_mask_upload_puts_the_masks_alpha_on_the_original(base):
    """The editor's mask editor: /upload/mask takes a painted mask (its alpha) and the original's reference,
    and stores the original with that alpha under the mask's name."""
    from PIL import Image

    def png(img):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    original = png(Image.new("RGB", (8, 8), (200, 10, 10)))
    body, ctype = multipart({"type": "input", "overwrite": "true"}, "image", "photo.png", original)
    assert http("POST", base + "/upload/image", raw=body, headers={"Content-Type": ctype}).status == 200
    mask = Image.new("RGBA", (4, 4), (0, 0, 0, 255))
    mask.putpixel((0, 0), (0, 0, 0, 0))
    ref = json.dumps({"filename": "photo.png", "subfolder": "", "type": "input"})
    body, ctype = multipart({"type": "input", "subfolder": "clipspace", "original_ref": ref}, "image",
                            "clipspace-mask.png", png(mask))
    r = http("POST", base + "/api/upload/mask", raw=body, headers={"Content-Type": ctype})
    assert r.status == 200 and r.json() == {"name": "clipspace-mask.png", "subfolder": "clipspace", "type": "input"}
    got = Image.open(io.BytesIO(http("GET", base + "/view?filename=clipspace-mask.png&subfolder=clipspace"
                                                   "&type=input").body))
    assert got.size == (8, 8) and got.mode == "RGBA"
    assert got.getpixel((7, 7)) == (200, 10, 10, 255) and got.getpixel((0, 0))[3] < 64
    bad = json.dumps({"filename": "missing.png"})
    body, ctype = multipart({"original_ref": bad}, "image", "m.png", png(mask))
    assert http("POST", base + "/upload/mask", raw=body, headers={"Content-Type": ctype}).status == 404
    body, ctype = multipart({"original_ref": "{not json"}, "image", "m.png", png(mask))
    assert http("POST", base + "/upload/mask", raw=body, headers={"Content-Type": ctype}).status == 400
