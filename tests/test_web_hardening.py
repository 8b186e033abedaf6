"""Hostile and unlucky input against a real server on loopback: every answer is a named 4xx, never a 500, and
nothing a request stores can break a later read."""

from __future__ import annotations

import copy
import json
import sqlite3
import time
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_web_server import multipart
from test_web_support import (
    ARITHMETIC,
    ROOT,
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
    srv = start_server(tmp_path_factory.mktemp("hardening"))
    yield srv
    srv.stop()


@pytest.fixture
def base(server):
    return server.url


JSON = {"Content-Type": "application/json"}


def _reads_all_answer(base: str) -> None:
    for path in ("/history", "/history?max_items=5", "/queue", "/jobs", "/settings", "/prompt"):
        r = http("GET", base + path)
        assert r.status == 200, (path, r.status, r.body[:200])
        json.loads(r.body, parse_constant=_not_json)  # as a browser reads it: no bare NaN/Infinity


def _not_json(name: str):
    raise AssertionError(f"the reply holds {name}, which a browser's JSON.parse rejects")


# -- (a) strict JSON ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["prompt", "extra_data", "number"])
def test_non_finite_numbers_are_refused_in_prompts(base, constant, where):
    prompt = '{"1": {"class_type": "ShowValue", "inputs": {"value": %s}}}' % (constant if where == "prompt" else 1)
    extra = '{"x": {"y": [' + constant + "]}}" if where == "extra_data" else "{}"
    number = constant if where == "number" else "null"
    r = http("POST", base + "/prompt", raw=f'{{"prompt": {prompt}, "extra_data": {extra}, "number": {number}}}',
             headers=JSON)
    assert r.status == 400, r.body
    assert constant.lstrip("-") in r.json()["error"]["message"]
    _reads_all_answer(base)


@pytest.mark.parametrize("path, body", [("/settings/x", "NaN"), ("/settings", '{"a": Infinity}'),
                                        ("/settings", '{"a": [1, -Infinity]}'), ("/api/settings/y", "[NaN]")])
def test_non_finite_numbers_are_refused_in_settings(base, path, body):
    r = http("POST", base + path, raw=body, headers=JSON)
    assert r.status == 400 and "not a JSON value" in r.json()["error"]["message"], r.body
    _reads_all_answer(base)


@pytest.mark.parametrize("body", ["{bad", "[" * 5000 + "]" * 5000, "[" * 150 + "]" * 150, '"\\ud800', "\xff"])
def test_invalid_or_deep_json_is_a_400(base, body):
    for path in ("/settings", "/settings/z", "/prompt", "/queue", "/history", "/jobs/cancel", "/free"):
        r = http("POST", base + path, raw=body.encode("utf-8", "surrogatepass") if body != "\xff" else b"\xff",
                 headers=JSON)
        assert r.status == 400, (path, r.status, r.body[:200])
        assert "JSON" in r.json()["error"]["message"] or "nests too deeply" in r.json()["error"]["message"]
    _reads_all_answer(base)


def test_userdata_json_must_be_strict(base):
    r = http("POST", base + "/userdata/workflows%2Fnan.json", raw='{"nodes": [], "x": NaN}', headers=JSON)
    assert r.status == 400 and "NaN" in r.json()["error"]["message"]
    assert http("GET", base + "/userdata/workflows%2Fnan.json").status == 404
    ok = http("POST", base + "/userdata/workflows%2Fok.json", raw='{"nodes": [], "x": 1.5}', headers=JSON)
    assert ok.status == 200
    # a file that is not JSON by name is stored as it comes
    assert http("POST", base + "/userdata/notes.txt", raw="NaN", headers=JSON).status == 200


def test_a_node_value_that_json_cannot_hold_does_not_break_history(base):
    cid = new_id()
    with ws_connect(base, cid) as ws:
        json.loads(ws.recv(timeout=5))
        pid = submit(base, {"1": {"class_type": "ReportFloat", "inputs": {"special": "nan"}},
                            "2": {"class_type": "ReportFloat", "inputs": {"special": "-inf"}}}, cid)["prompt_id"]
        msgs = collect_until_done(ws, pid)
    executed = {d["node"]: d["output"] for k, d in msgs if k == "executed"}
    assert executed["1"]["value"] == ["NaN"] and executed["2"]["nested"] == [{"v": "-Infinity"}]
    entry = wait_history(base, pid)
    assert entry["outputs"]["1"]["value"] == ["NaN"]
    assert http("GET", f"{base}/jobs/{pid}").status == 200
    _reads_all_answer(base)


def test_rows_and_settings_an_older_version_wrote_with_nan_still_read(server):
    base = server.url
    pid = submit(base, ARITHMETIC)["prompt_id"]
    wait_history(base, pid)
    db = sqlite3.connect(str(server.config.db_path))
    db.execute("UPDATE history SET outputs=?, extra_data=? WHERE prompt_id=?",
               ('{"6": {"text": [NaN]}}', '{"v": Infinity}', pid))
    db.commit()
    db.close()
    settings = server.config.user_dir / "comfy.settings.json"
    settings.write_text('{"Old.Value": NaN}')
    assert http("GET", base + "/settings").json()["Old.Value"] == "NaN"
    assert http("GET", f"{base}/history/{pid}").json()[pid]["outputs"]["6"]["text"] == ["NaN"]
    assert http("GET", f"{base}/jobs/{pid}").status == 200
    _reads_all_answer(base)
    settings.write_text("{}")


# -- (b) malformed workflows: a named 400 through POST /prompt, exit 2 from the CLI ------------------------------

UI_ARITHMETIC = json.loads((ROOT / "tests" / "data" / "arithmetic.ui.json").read_text())


def _ui(**changes):
    doc = copy.deepcopy(UI_ARITHMETIC)
    for path, value in changes.items():
        target = doc
        keys = path.split("__")
        for k in keys[:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return doc


MALFORMED_UI = {
    "links_true": (_ui(links=True), "'links' must be a list"),
    "links_object": (_ui(links={"a": 1}), "'links' must be a list"),
    "link_short": (_ui(links=[[1, 2, 3]]), "malformed link"),
    "link_id_huge": (_ui(links=[[1e300, 1, 0, 3, 0, "INT"]]), "out of range"),
    "link_id_text": (_ui(links=[["x", 1, 0, 3, 0, "INT"]]), "must be an integer"),
    "definitions_list": (_ui(definitions=[{"subgraphs": []}]), "'definitions' must be an object"),
    "subgraphs_object": (_ui(definitions={"subgraphs": {"x": 1}}), "'subgraphs' must be a list"),
    "node_id_1e999": (json.loads(json.dumps(UI_ARITHMETIC).replace('"id": 1,', '"id": 1e999,', 1)), "1e999"),
    "node_id_float": (_ui(nodes__0__id=1.5), "node id must be an integer"),
    "node_id_list": (_ui(nodes__0__id=[1]), "node id must be an integer"),
    "node_id_twice": (_ui(nodes__1__id=1), "used by two nodes"),
    "type_list": (_ui(nodes__0__type=["PrimitiveInt"]), "'type' must be a node type name"),
    "type_object": (_ui(nodes__0__type={"a": 1}), "'type' must be a node type name"),
    "inputs_int": (_ui(nodes__2__inputs=5), "'inputs' must be a list"),
    "input_entry_text": (_ui(nodes__2__inputs=["a"]), "inputs[0] must be an object"),
    "input_widget_text": (_ui(nodes__2__inputs=[{"name": "a", "widget": "x", "link": None}]), "widget must be"),
    "input_link_list": (_ui(nodes__2__inputs=[{"name": "a", "link": [1]}]), "link must be an integer"),
    "input_name_list": (_ui(nodes__2__inputs=[{"name": [1], "link": 1}]), "name that is not a string"),
    "outputs_text": (_ui(nodes__0__outputs="x"), "'outputs' must be a list"),
    "widgets_number": (_ui(nodes__0__widgets_values=3), "widgets_values must be a list"),
    "mode_text": (_ui(nodes__0__mode="muted"), "'mode' must be a number"),
    "node_text": (_ui(nodes__0="node"), "malformed node entry"),
}


def test_empty_definitions_are_no_definitions(base):
    assert http("POST", base + "/prompt", {"prompt": _ui(definitions=[])}).status == 200
    assert http("POST", base + "/prompt", {"prompt": _ui(definitions=None)}).status == 200


@pytest.mark.parametrize("case", sorted(MALFORMED_UI))
def test_malformed_editor_workflows_get_a_named_400(base, case):
    doc, expected = MALFORMED_UI[case]
    if case == "node_id_1e999":  # 1e999 reads as an infinite float: refused as not JSON, or as a bad id
        text = '{"prompt": ' + json.dumps(UI_ARITHMETIC).replace('"id": 1,', '"id": 1e999,', 1) + "}"
        r = http("POST", base + "/prompt", raw=text, headers=JSON)
    else:
        r = http("POST", base + "/prompt", {"prompt": doc})
    assert r.status == 400, (r.status, r.body[:300])
    assert expected in r.json()["error"]["message"], r.json()["error"]


@pytest.mark.parametrize("case", sorted(MALFORMED_UI))
def test_the_cli_exits_2_for_malformed_editor_workflows(tmp_path, capsys, case):
    from graph_runtime.cli import main

    doc, expected = MALFORMED_UI[case]
    path = tmp_path / "bad.ui.json"
    text = json.dumps(doc)
    if case == "node_id_1e999":
        text = json.dumps(UI_ARITHMETIC).replace('"id": 1,', '"id": 1e999,', 1)
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=6))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=8)
NODE_KEYS = ["id", "type", "mode", "inputs", "outputs", "widgets_values", "title"]
SLOT_KEYS = ["name", "link", "widget", "type"]


@st.composite
def mutated_ui(draw):
    doc = copy.deepcopy(UI_ARITHMETIC)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["top", "node", "slot", "link", "widget"]))
        if where == "top":
            doc[draw(st.sampled_from(["links", "nodes", "definitions", "extra"]))] = draw(json_value)
            if not isinstance(doc.get("nodes"), list):
                doc["nodes"] = []
            continue
        nodes = doc["nodes"]
        if not nodes:
            continue
        n = draw(st.integers(0, len(nodes) - 1))
        if not isinstance(nodes[n], dict):
            continue
        if where == "node":
            nodes[n][draw(st.sampled_from(NODE_KEYS))] = draw(st.one_of(json_value, st.sampled_from(
                ["Reroute", "PrimitiveNode", "IntMath", 1e300, 2, 4, [1, 2]])))
        elif where == "slot":
            slots = nodes[n].get("inputs") if isinstance(nodes[n].get("inputs"), list) else None
            if slots:
                i = draw(st.integers(0, len(slots) - 1))
                if isinstance(slots[i], dict):
                    slots[i][draw(st.sampled_from(SLOT_KEYS))] = draw(json_value)
        elif where == "link" and isinstance(doc.get("links"), list) and doc["links"]:
            i = draw(st.integers(0, len(doc["links"]) - 1))
            link = doc["links"][i]
            if isinstance(link, list) and link:
                link[draw(st.integers(0, len(link) - 1))] = draw(st.one_of(json_value, st.integers(-3, 12)))
        elif where == "widget":
            nodes[n]["widgets_values"] = draw(st.lists(json_value, max_size=4))
    return doc


API_NAMES = ["PrimitiveInt", "IntMath", "StringFormat", "ShowValue", "ToString", "FloatMath", "Nope", ""]
api_input = st.one_of(json_value, st.tuples(st.sampled_from(["1", "2", "9"]), st.integers(-1, 2)).map(list))
api_node = st.fixed_dictionaries({"class_type": st.one_of(st.sampled_from(API_NAMES), json_value)}, optional={
    "inputs": st.one_of(st.dictionaries(st.sampled_from(["value", "a", "b", "op", "template", ""]), api_input,
                                        max_size=4), json_value), "_meta": json_value})
api_prompt = st.one_of(st.dictionaries(st.sampled_from(["1", "2", "3", "9"]), st.one_of(api_node, json_value),
                                       max_size=4), json_value)
body_extras = st.fixed_dictionaries({}, optional={
    "extra_data": json_value, "client_id": json_value, "prompt_id": json_value, "number": json_value,
    "front": json_value, "partial_execution_targets": json_value})


def _post_prompt_never_fails(base: str, body: dict) -> None:
    r = http("POST", base + "/prompt", raw=json.dumps(body, allow_nan=False), headers=JSON)
    assert r.status < 500, (r.status, r.body[:300], body)
    if r.status != 200:
        err = r.json()["error"]
        assert err["message"] and "Traceback" not in r.body.decode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(doc=mutated_ui())
def test_fuzzed_editor_workflows_never_get_a_5xx(base, doc):
    _post_prompt_never_fails(base, {"prompt": doc})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(prompt=api_prompt, extras=body_extras)
def test_fuzzed_api_prompts_never_get_a_5xx(base, prompt, extras):
    _post_prompt_never_fails(base, {"prompt": prompt, **extras})


# -- (c) file routes: 400/404/409, never a 500, never an absolute path -----------------------------------------


def _no_absolute_paths(server, body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    for root in (server.config.paths.base, server.config.paths.output, server.config.paths.input):
        assert str(root) not in text, text[:400]
    assert "Traceback" not in text


@pytest.mark.parametrize("name", ["雪_00001_.png", "ε.txt", "a\"b;c.png", "emoji😀.json"])
def test_view_of_names_beyond_latin_1_uses_rfc_5987(server, name):
    (server.config.paths.output / name).write_bytes(b"\x89PNG\r\n\x1a\n" if name.endswith(".png") else b"x")
    r = http("GET", f"{server.url}/view?filename={quote(name)}&type=output")
    assert r.status == 200, r.body[:200]
    disposition = r.headers["Content-Disposition"]
    disposition.encode("latin-1")
    if "filename*=" in disposition:
        assert disposition.split("filename*=UTF-8''")[1] == quote(name.replace('"', ""), safe="")
    assert '"' not in disposition.split("filename=")[1].strip('"').split('";')[0]


def test_upload_under_a_subfolder_that_is_a_file_is_a_409(server):
    (server.config.paths.input / "afile.png").write_bytes(b"x")
    for sub in ("afile.png", "afile.png/deeper"):
        body, ctype = multipart({"type": "input", "subfolder": sub}, "image", "pic.png", b"\x89PNG data")
        r = http("POST", server.url + "/upload/image", raw=body, headers={"Content-Type": ctype})
        assert r.status == 409 and "is a file" in r.json()["error"]["message"], r.body
        _no_absolute_paths(server, r.body)


@pytest.mark.parametrize("name", [".", "./", "..", " ", "sub/."])
def test_upload_names_that_are_no_file_are_refused(server, name):
    before = sorted(p.name for p in server.config.paths.base.iterdir())
    body, ctype = multipart({"type": "input"}, "image", name, b"\x89PNG data")
    r = http("POST", server.url + "/upload/image", raw=body, headers={"Content-Type": ctype})
    assert r.status == 400, r.body
    assert sorted(p.name for p in server.config.paths.base.iterdir()) == before  # no 'input (1)' beside input/


@pytest.mark.parametrize("dest, status", [(".", 400), ("workflows", 409), ("workflows%2F", 400),
                                          ("x.json%2Finside.json", 409)])
def test_userdata_move_onto_a_folder_or_through_a_file_is_refused(server, dest, status):
    base = server.url
    assert http("POST", base + "/userdata/x.json", {"a": 1}).status == 200
    assert http("POST", base + "/userdata/src.json", {"b": 2}).status == 200
    r = http("POST", f"{base}/userdata/src.json/move/{dest}")
    assert r.status == status, (r.status, r.body)
    _no_absolute_paths(server, r.body)
    assert http("GET", base + "/userdata/src.json").json() == {"b": 2}  # nothing moved


@pytest.mark.parametrize("name, status", [("workflows", 409), ("x2.json%2Fy.json", 409), ("workflows%2F", 400)])
def test_userdata_store_onto_a_folder_is_refused(server, name, status):
    assert http("POST", server.url + "/userdata/x2.json", {"a": 1}).status == 200
    r = http("POST", f"{server.url}/userdata/{name}", {"z": 1})
    assert r.status == status, (r.status, r.body)
    _no_absolute_paths(server, r.body)


@pytest.mark.parametrize("origin", ["http://[::1", "http://localhost:99999", "http://localhost:abc", "http://[zz]",
                                    "http://", "://x", "http://a b"])
def test_malformed_origin_headers_are_a_403(base, origin):
    r = http("POST", base + "/settings/k", raw="1", headers={**JSON, "Origin": origin})
    assert r.status == 403, (r.status, r.body)


@pytest.mark.parametrize("filename", ["", ".", "sub/", "  ", "sub/.", "a\\"])
def test_savetext_names_that_are_no_file_are_a_400(base, filename):
    r = http("POST", base + "/prompt", {"prompt": {"1": {"class_type": "SaveText",
                                                         "inputs": {"text": "t", "filename": filename}}}})
    assert r.status == 400, r.body
    err = r.json()["node_errors"]["1"]["errors"][0]
    assert err["extra_info"]["input_name"] == "filename"


def test_savetext_name_from_a_link_fails_the_node_without_paths(server):
    base = server.url
    (server.config.paths.output / "taken").mkdir(exist_ok=True)
    (server.config.paths.output / "afile.txt").write_text("x")
    for name, expected in (("sub/", "names a folder"), ("taken", "is a folder"), ("afile.txt/x.txt", "cannot write")):
        pid = submit(base, {"1": {"class_type": "StringFormat", "inputs": {"template": name}},
                            "2": {"class_type": "SaveText", "inputs": {"text": "t", "filename": ["1", 0]}}})["prompt_id"]
        entry = wait_history(base, pid)
        assert entry["status"]["status_str"] == "error"
        err = http("GET", f"{base}/jobs/{pid}").json()["execution_error"]
        assert expected in err["exception_message"] and err["node_id"] == "2", err
        _no_absolute_paths(server, http("GET", f"{base}/history/{pid}").body)


def test_unexpected_errors_reach_the_client_without_paths_or_traceback(server):
    base = server.url
    (server.config.paths.output / "plain.txt").write_text("x")
    cid = new_id()
    with ws_connect(base, cid) as ws:
        json.loads(ws.recv(timeout=5))
        pid = submit(base, {"1": {"class_type": "SaveTestImage", "inputs": {"filename_prefix": "plain.txt/x"}}},
                     cid)["prompt_id"]
        msgs = collect_until_done(ws, pid)
    err = next(d for k, d in msgs if k == "execution_error")
    assert err["traceback"] == [] and "plain.txt" in err["exception_message"], err
    _no_absolute_paths(server, json.dumps(err).encode())
    _no_absolute_paths(server, http("GET", f"{base}/history/{pid}").body)
    _no_absolute_paths(server, http("GET", f"{base}/jobs/{pid}").body)


@pytest.mark.parametrize("name, content", [("evil.svg", b"<svg onload='alert(1)'/>"),
                                           ("evil.html", b"<script>alert(1)</script>"),
                                           ("evil.xml", b"<x/>"), ("evil.js", b"alert(1)")])
def test_active_userdata_is_downloaded_never_rendered(server, name, content):
    (server.config.user_dir / name).write_bytes(content)
    r = http("GET", f"{server.url}/userdata/{name}")
    assert r.status == 200 and r.body == content
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Content-Disposition"].startswith("attachment")
    assert "sandbox" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_half_written_temp_files_are_removed_at_start(tmp_path):
    (tmp_path / "input" / "sub").mkdir(parents=True)
    (tmp_path / "user" / "default").mkdir(parents=True)
    stale = [tmp_path / "input" / ".upload-abc123", tmp_path / "input" / "sub" / ".upload-x",
             tmp_path / "user" / "default" / ".tmp-settings"]
    for p in stale:
        p.write_bytes(b"\0" * 1024)
    keep = [tmp_path / "input" / "pic.png", tmp_path / "input" / ".hidden"]
    for p in keep:
        p.write_bytes(b"x")
    srv = start_server(tmp_path)
    try:
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in keep)
    finally:
        srv.stop()


# -- (d) /history and /jobs: one page, read in SQL -------------------------------------------------------------


def _fill_history(store, n: int, start: int = 0) -> list[str]:
    from web.store import HistoryEntry, QueueItem

    ids = []
    for i in range(start, start + n):
        pid = f"h{i:05d}"
        extra = {"create_time": 1_700_000_000_000 + i * 1000,
                 "extra_pnginfo": {"workflow": {"id": "wf-a" if i % 2 else "wf-b"}}}
        item = QueueItem(number=i, prompt_id=pid, prompt={"1": {"class_type": "PrimitiveInt", "inputs": {}}},
                         extra_data=extra, outputs=["1"], client_id=None, created=1_700_000_000 + i, seq=i)
        ok = i % 3 != 0
        store.add(item)
        store.finish(HistoryEntry(item=item, outputs={"1": {"images": [{"filename": f"{i}.png"}]}}, meta={},
                                  status={"status_str": "success" if ok else "error", "completed": ok,
                                          "messages": []}, started=1.0, finished=1.0 + (i % 7)))
        ids.append(pid)
    return ids


@pytest.fixture(scope="module")
def paged(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("paged"), history_page=5, max_history_page=8)
    ids = _fill_history(srv.state.store, 30)
    yield srv, ids
    srv.stop()


def test_history_answers_one_page_by_default(paged):
    srv, ids = paged
    assert list(http("GET", srv.url + "/history").json()) == ids[-5:]
    assert list(http("GET", srv.url + "/history?max_items=100").json()) == ids[-8:]  # capped
    assert list(http("GET", srv.url + "/history?max_items=3&offset=2").json()) == ids[2:5]
    assert list(http("GET", srv.url + "/history?offset=10").json()) == ids[10:15]
    assert list(http("GET", srv.url + "/history/" + ids[0]).json()) == [ids[0]]


def _all_jobs(base: str, query: str) -> tuple[list[dict], int]:
    jobs, offset = [], 0
    while True:
        page = http("GET", f"{base}/jobs?{query}&offset={offset}").json()
        jobs += page["jobs"]
        offset += len(page["jobs"])
        if not page["pagination"]["has_more"]:
            return jobs, page["pagination"]["total"]
        assert len(page["jobs"]) == page["pagination"]["limit"]


@pytest.mark.parametrize("query", ["", "sort_order=asc", "status=failed", "status=completed,pending",
                                   "sort_by=execution_duration", "sort_by=execution_duration&sort_order=asc",
                                   "workflow_id=wf-a&status=failed", "limit=7", "status=pending"])
def test_jobs_pages_cover_the_history_in_order(paged, query):
    srv, ids = paged
    page = http("GET", f"{srv.url}/jobs?{query}").json()
    assert len(page["jobs"]) <= (7 if "limit=7" in query else 5)
    jobs, total = _all_jobs(srv.url, query)
    statuses = {pid: ("failed" if int(pid[1:]) % 3 == 0 else "completed") for pid in ids}
    expected = [p for p in ids if ("status=" not in query or statuses[p] in query)
                and ("workflow_id=wf-a" not in query or int(p[1:]) % 2)]
    if "execution_duration" in query:
        expected.sort(key=lambda p: (int(p[1:]) % 7, int(p[1:])), reverse="asc" not in query)
    elif "asc" not in query:
        expected.reverse()
    assert [j["id"] for j in jobs] == expected and total == len(expected)
    for j in jobs:
        assert j["status"] == statuses[j["id"]]
        assert j["preview_output"]["filename"] == f"{int(j['id'][1:])}.png"
        assert j["workflow_id"] == ("wf-a" if int(j["id"][1:]) % 2 else "wf-b")


def test_jobs_put_the_queue_before_the_history(paged, tmp_path):
    srv, ids = paged
    gate = tmp_path / "gate"
    running = submit(srv.url, gated_prompt(gate, 1))["prompt_id"]
    waiting = submit(srv.url, gated_prompt(gate, 2))["prompt_id"]
    try:
        deadline = time.monotonic() + 10
        while http("GET", srv.url + "/queue").json()["queue_running"] == [] and time.monotonic() < deadline:
            time.sleep(0.02)
        jobs = http("GET", srv.url + "/jobs?limit=4").json()
        assert [j["id"] for j in jobs["jobs"][:2]] == [waiting, running]
        assert [j["status"] for j in jobs["jobs"][:3]] == ["pending", "in_progress", "completed"]
        assert jobs["pagination"]["total"] == len(ids) + 2
        assert http("GET", f"{srv.url}/jobs/{waiting}").json()["status"] == "pending"
        assert http("GET", f"{srv.url}/jobs?status=in_progress").json()["jobs"][0]["id"] == running
    finally:
        gate.write_text("go")
        wait_history(srv.url, waiting)


OLD_SCHEMA = """
CREATE TABLE queue (prompt_id TEXT PRIMARY KEY, number REAL NOT NULL, seq INTEGER NOT NULL, prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL, outputs TEXT NOT NULL, client_id TEXT, created REAL NOT NULL);
CREATE TABLE history (seq INTEGER PRIMARY KEY AUTOINCREMENT, prompt_id TEXT UNIQUE NOT NULL, number REAL NOT NULL,
    prompt TEXT NOT NULL, extra_data TEXT NOT NULL, outputs_to_execute TEXT NOT NULL, created REAL NOT NULL,
    started REAL, finished REAL, status TEXT NOT NULL, outputs TEXT NOT NULL, meta TEXT NOT NULL, error TEXT);
"""


def test_a_database_of_the_previous_version_is_upgraded(tmp_path):
    db_path = tmp_path / "user" / "queue.sqlite3"
    db_path.parent.mkdir(parents=True)
    db = sqlite3.connect(str(db_path))
    db.executescript(OLD_SCHEMA)
    for i, status in enumerate(["success", "error"]):
        db.execute("INSERT INTO history (prompt_id, number, prompt, extra_data, outputs_to_execute, created, "
                   "started, finished, status, outputs, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (f"old{i}", i, "{}", json.dumps({"create_time": 1000 + i}), "[]", 1.0, 1.0, 2.0 + i,
                    json.dumps({"status_str": status, "messages": []}), "{}", "{}"))
    db.execute("INSERT INTO queue VALUES (?,?,?,?,?,?,?,?)", ("waiting", 5, 5, json.dumps(ARITHMETIC), "{}",
                                                             '["6"]', None, 5.0))
    db.commit()
    db.close()
    srv = start_server(tmp_path)
    try:
        assert wait_history(srv.url, "waiting")["status"]["status_str"] == "success"  # the old queue runs
        jobs = http("GET", srv.url + "/jobs").json()["jobs"]
        assert [(j["id"], j["status"], j["create_time"]) for j in jobs] == [
            ("waiting", "completed", 5000), ("old1", "failed", 1001), ("old0", "completed", 1000)]
        assert [j["id"] for j in http("GET", srv.url + "/jobs?status=completed").json()["jobs"]] == ["waiting", "old0"]
    finally:
        srv.stop()


def test_a_page_of_a_10000_entry_history_is_fast(tmp_path):
    srv = start_server(tmp_path)
    try:
        store = srv.state.store
        with store._lock:  # 10,000 rows in one transaction (the public path commits each: slow to set up)
            store._db.execute("BEGIN")
            rows = [(f"p{i}", i, '{"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}}',
                     json.dumps({"create_time": i, "pad": "x" * 2000}), '["1"]', float(i), 0.0, 1.0,
                     '{"status_str": "success", "messages": []}', '{"1": {"text": ["1"]}}', "{}", "completed", i,
                     None, 1.0) for i in range(10_000)]
            store._db.executemany("INSERT INTO history (prompt_id, number, prompt, extra_data, outputs_to_execute, "
                                  "created, started, finished, status, outputs, meta, job_status, create_time, "
                                  "workflow_id, duration) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            store._db.execute("COMMIT")
        for path in ("/jobs?limit=20", "/jobs?status=completed&limit=20&sort_order=asc", "/history",
                     "/jobs/p5000", "/history?max_items=64"):
            http("GET", srv.url + path)
            started = time.perf_counter()
            r = http("GET", srv.url + path)
            elapsed = time.perf_counter() - started
            assert r.status == 200 and elapsed < 0.5, (path, elapsed)  # was 1.6-3.5 s; ~5-20 ms measured
            assert len(r.body) < 2_000_000, (path, len(r.body))
        assert http("GET", srv.url + "/jobs?limit=20").json()["pagination"]["total"] == 10_000
    finally:
        srv.stop()


# -- (e) cost limits, in graph_runtime/limits.py, reported in /system_stats -------------------------------------


def test_system_stats_reports_the_limits(base):
    from graph_runtime.limits import LIMITS

    limits = http("GET", base + "/system_stats").json()["limits"]
    assert limits["max_format_width"] == LIMITS.max_format_width and limits["max_image_frames"] > 0
    assert limits["max_nodes"] > 0 and limits["history_page"] > 0 and limits["max_prompt_bytes"] > 0


def test_limits_come_from_the_environment():
    from graph_runtime.limits import Limits

    assert Limits.from_env({"GRAPH_RUNTIME_LIMIT_MAX_IMAGE_FRAMES": "12"}).max_image_frames == 12
    with pytest.raises(ValueError, match="GRAPH_RUNTIME_LIMIT_MAX_STRING_CHARS"):
        Limits.from_env({"GRAPH_RUNTIME_LIMIT_MAX_STRING_CHARS": "lots"})


def _run_failing(base: str, prompt: dict) -> dict:
    pid = submit(base, prompt)["prompt_id"]
    entry = wait_history(base, pid)
    assert entry["status"]["status_str"] == "error"
    return http("GET", f"{base}/jobs/{pid}").json()["execution_error"]


@pytest.mark.parametrize("template, fields, limit", [
    ("{a:>300000000}", {}, "max_format_width"), ("{a:>{b}}", {"b": "10000000000"}, "max_format_width"),
    ("{a:.99999}", {"a": "x"}, "max_format_width"), ("{a}" * 600, {"a": "x" * 2000}, "max_string_chars"),
    ("{a.__class__}", {}, "can be filled"), ("{a:>1e9}", {}, "can be filled"),
])
def test_string_format_cost_is_refused_before_it_is_paid(server, template, fields, limit):
    base = server.url
    size = server.config.db_path.stat().st_size
    err = _run_failing(base, {"1": {"class_type": "StringFormat", "inputs": {"template": template, **fields}},
                              "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}})
    assert err["node_id"] == "1" and limit in err["exception_message"], err
    assert len(err["exception_message"]) < 400
    assert server.config.db_path.stat().st_size - size < 1_000_000


def test_string_format_within_the_limits_still_works(base):
    pid = submit(base, {"1": {"class_type": "StringFormat", "inputs": {"template": "{a:>8}|{b:.2}|{c!r}", "a": "x",
                                                                       "b": "abc", "c": "q"}},
                        "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}})["prompt_id"]
    assert wait_history(base, pid)["outputs"]["2"]["text"] == ["       x|ab|'q'"]


def test_a_long_cycle_is_named_once_per_node(base):
    n = 3000
    prompt = {str(i): {"class_type": "IntMath", "inputs": {"a": [str((i + 1) % n), 0], "b": 1}} for i in range(n)}
    prompt["out"] = {"class_type": "ShowValue", "inputs": {"value": ["0", 0]}}
    started = time.perf_counter()
    r = http("POST", base + "/prompt", {"prompt": prompt})
    assert r.status == 400 and time.perf_counter() - started < 10
    errors = r.json()["node_errors"]
    assert len(errors) == n
    assert errors["0"]["errors"][0]["extra_info"]["cycle"] == [str(i) for i in range(n)]
    assert errors["1"]["errors"][0]["extra_info"] == {"cycle_of": "0"}
    assert len(r.body) < 400 * n  # was n x n names (a 4,999-node cycle: 300 MB)


@pytest.fixture
def input_images(server):
    from nodes import images

    images.set_input_folder(server.config.paths.input)
    yield server.config.paths.input
    images.set_input_folder(None)


@pytest.fixture
def small_limits():
    from graph_runtime.limits import LIMITS

    saved = LIMITS.as_dict()
    LIMITS.max_image_pixels, LIMITS.max_image_frames, LIMITS.max_image_total_pixels = 10_000, 8, 20_000
    yield LIMITS
    for k, v in saved.items():
        setattr(LIMITS, k, v)


def _animated_png(path, frames: int, size: int) -> None:
    from PIL import Image

    imgs = [Image.new("RGB", (size, size), (i * 7 % 255, 0, 0)) for i in range(frames)]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=10)


@pytest.mark.parametrize("frames, size, limit", [(1, 120, "max_image_pixels"), (9, 10, "max_image_frames"),
                                                 (6, 60, "max_image_total_pixels")])
def test_load_image_refuses_what_would_decode_too_large(server, input_images, small_limits, frames, size, limit):
    name = f"big_{frames}_{size}.png"
    _animated_png(input_images / name, frames, size)
    err = _run_failing(server.url, {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
                                    "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 1]}}})
    assert err["node_id"] == "1" and limit in err["exception_message"] and name in err["exception_message"], err
    r = http("GET", f"{server.url}/view?filename={name}&type=input&preview=webp")
    assert r.status == (400 if limit == "max_image_pixels" else 200)


def test_load_image_within_the_limits_reads_every_frame(server, input_images, small_limits):
    _animated_png(input_images / "ok.png", 4, 10)
    pid = submit(server.url, {"1": {"class_type": "LoadImage", "inputs": {"image": "ok.png"}},
                              "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}})["prompt_id"]
    entry = wait_history(server.url, pid)
    assert entry["status"]["status_str"] == "success", entry["status"]


def test_validation_lists_the_input_folder_once_per_prompt(server, input_images):
    from PIL import Image

    for i in range(300):
        (input_images / "many").mkdir(exist_ok=True)
        Image.new("RGB", (2, 2)).save(input_images / "many" / f"{i}.png")
    n = 2000
    prompt = {str(i): {"class_type": "LoadImage", "inputs": {"image": "many/1.png"}} for i in range(n)}
    prompt["show"] = {"class_type": "ShowValue", "inputs": {"value": ["0", 1]}}
    started = time.perf_counter()
    r = http("POST", server.url + "/prompt", {"prompt": prompt})
    elapsed = time.perf_counter() - started
    assert r.status == 200, r.body[:300]
    assert elapsed < 3, elapsed  # listing 300 files once per node: ~10 s
    wait_history(server.url, r.json()["prompt_id"])


# -- (f) websocket connections ---------------------------------------------------------------------------------


def test_the_websocket_cap_closes_with_a_code_and_reason(tmp_path):
    from websockets.exceptions import ConnectionClosed

    srv = start_server(tmp_path, max_ws_clients=2)
    try:
        held = [ws_connect(srv.url, new_id()) for _ in range(2)]
        for ws in held:
            json.loads(ws.recv(timeout=5))
        for _ in range(3):
            with ws_connect(srv.url, new_id()) as extra, pytest.raises(ConnectionClosed) as closed:
                extra.recv(timeout=5)
            assert closed.value.rcvd.code == 1013
            assert "2 websocket clients" in closed.value.rcvd.reason
        held.pop().close()
        deadline = time.monotonic() + 5
        while len(srv.state.hub.clients) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        with ws_connect(srv.url, new_id()) as again:  # a place is free again
            assert json.loads(again.recv(timeout=5))["type"] == "status"
        for ws in held:
            ws.close()
    finally:
        srv.stop()


def test_a_client_id_stays_with_its_first_connection(base):
    owner_id = new_id()
    with ws_connect(base, owner_id) as owner:
        assert json.loads(owner.recv(timeout=5))["data"]["sid"] == owner_id
        with ws_connect(base, owner_id) as intruder:
            sid = json.loads(intruder.recv(timeout=5))["data"]["sid"]
            assert sid != owner_id
            pid = submit(base, ARITHMETIC, owner_id)["prompt_id"]
            msgs = collect_until_done(owner, pid)  # the owner is still connected and hears its prompt
            assert "execution_success" in [k for k, _ in msgs]
            seen = []
            try:
                while True:
                    seen.append(json.loads(intruder.recv(timeout=0.5))["type"])
            except TimeoutError:
                pass
            assert set(seen) <= {"status"}, seen
    # once the owner has gone, the id can be used again (a browser tab reconnecting)
    deadline = time.monotonic() + 5
    while True:
        with ws_connect(base, owner_id) as back:
            if json.loads(back.recv(timeout=5))["data"]["sid"] == owner_id:
                break
        assert time.monotonic() < deadline
        time.sleep(0.05)


# -- (g) a prompt running when the server died ------------------------------------------------------------------


def _kill(proc) -> None:
    import signal

    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()


def _running(base: str, pid: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = http("GET", base + "/queue").json()["queue_running"]
        if running and running[0][1] == pid:
            return
        time.sleep(0.05)
    raise AssertionError(f"{pid} did not start running")


def _stop(proc) -> None:
    """End a launched server politely (kill it if it does not stop) and close its output."""
    proc.terminate()
    try:
        proc.wait(15)
    except Exception:
        proc.kill()
    proc.stdout.close()


def _output_recorded(home, pid: str, attempt: int, timeout: float = 30) -> None:
    """Wait until the server's queue row holds node 1's output for run ``attempt`` (the server writes it as
    the node finishes; killing the server before that would lose it by design)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{home / 'user' / 'queue.sqlite3'}?mode=ro", uri=True, timeout=1) as db:
                row = db.execute("SELECT partial FROM queue WHERE prompt_id = ?", (pid,)).fetchone()
        except sqlite3.Error:
            row = None
        runs = json.loads(row[0]) if row else []
        if len(runs) >= attempt and runs[attempt - 1] and "1" in runs[attempt - 1]:
            return
        time.sleep(0.05)
    raise AssertionError(f"{pid}: run {attempt} recorded no output")


def test_a_prompt_running_at_a_crash_is_rerun_once_then_failed(tmp_path):
    from test_web_persistence import free_port, launch

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    never = tmp_path / "never-opens"  # the 'crashing' prompt: it runs until the server is killed
    gate = tmp_path / "gate"
    proc = launch(tmp_path, port)
    try:
        doomed_prompt = {"1": {"class_type": "SaveTestImage", "inputs": {"red": 9, "filename_prefix": "partial"}},
                         **{"2": gated_prompt(never, 1)["1"]}}
        doomed = submit(base, doomed_prompt)["prompt_id"]
        behind = submit(base, gated_prompt(gate, 2))["prompt_id"]
        _running(base, doomed)
        _output_recorded(tmp_path, doomed, 1)
    finally:
        _kill(proc)
    proc = launch(tmp_path, port)  # first restart: it runs again (once)
    try:
        _running(base, doomed)
        _output_recorded(tmp_path, doomed, 2)
        assert [p[1] for p in http("GET", base + "/queue").json()["queue_pending"]] == [behind]
    finally:
        _kill(proc)
    gate.write_text("open")
    proc = launch(tmp_path, port)  # second restart: recorded as failed, the queue behind it runs
    try:
        entry = wait_history(base, doomed)
        assert entry["status"]["status_str"] == "error"
        job = http("GET", f"{base}/jobs/{doomed}").json()
        assert job["status"] == "failed"
        assert "the server stopped while running this prompt (2 times)" in job["execution_error"]["exception_message"]
        # the file each cut-short run wrote is recorded, not orphaned
        saved = {"filename": "partial_009.png", "subfolder": "", "type": "output"}
        assert entry["outputs"]["1"]["images"] == [saved]
        assert [a["outputs"]["1"]["images"] for a in entry["status"]["previous_attempts"]] == [[saved], [saved]]
        assert job["preview_output"]["filename"] == "partial_009.png"
        assert wait_history(base, behind)["status"]["status_str"] == "success"
        assert http("GET", base + "/queue").json() == {"queue_running": [], "queue_pending": []}
    finally:
        _stop(proc)


# -- database faults: busy, damaged, held by another process ---------------------------------------------------


def test_a_busy_database_delays_the_result_never_loses_it(tmp_path):
    srv = start_server(tmp_path / "srv", db_busy_timeout=0.2)
    gate = tmp_path / "gate"
    cid = new_id()
    try:
        with ws_connect(srv.url, cid) as ws:
            json.loads(ws.recv(timeout=5))
            pid = submit(srv.url, gated_prompt(gate, 5), cid)["prompt_id"]
            _running(srv.url, pid)
            other = sqlite3.connect(str(srv.config.db_path), isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")  # another process holds the database
            try:
                gate.write_text("go")
                r = http("POST", srv.url + "/prompt", {"prompt": ARITHMETIC})
                assert r.status == 503 and "database" in r.json()["error"]["message"], r.body
                seen = []
                deadline = time.monotonic() + 1.5
                while time.monotonic() < deadline:
                    try:
                        seen.append(json.loads(ws.recv(timeout=0.2))["type"])
                    except TimeoutError:
                        pass
                assert "execution_success" not in seen, seen  # not before the result is recorded
                assert pid not in http("GET", f"{srv.url}/history/{pid}").json()
            finally:
                other.execute("COMMIT")
                other.close()
            msgs = collect_until_done(ws, pid)
            assert "execution_success" in [k for k, _ in msgs]
        entry = wait_history(srv.url, pid)
        assert entry["status"]["status_str"] == "success" and entry["outputs"]["1"]["text"] == ["5"]
        assert http("GET", srv.url + "/queue").json()["queue_pending"] == []
    finally:
        srv.stop()


def test_a_database_held_by_another_process_is_one_clear_error(tmp_path):
    from web.store import Store, StoreError

    path = tmp_path / "queue.sqlite3"
    Store(path).close()
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("PRAGMA journal_mode=DELETE")
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError) as err:
            Store(path, busy_timeout=0.1)
        assert str(path) in str(err.value) and "another process" in str(err.value)
    finally:
        other.execute("COMMIT")
        other.close()


def test_a_damaged_database_stops_the_server_with_one_line(tmp_path):
    import subprocess
    import sys

    user = tmp_path / "user"
    user.mkdir()
    (user / "queue.sqlite3").write_bytes(b"this is not a database" * 100)
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "graph_runtime", "serve", "--port", "0", "--no-frontend",
                           "--user-dir", str(user), "--output-dir", str(tmp_path / "out")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(user / "queue.sqlite3") in lines[0] and "move it aside" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


# -- slow clients and too many connections ---------------------------------------------------------------------


def _raw(port: int):
    import socket

    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def _closed_within(sock, seconds: float) -> bool:
    """True when the server closes the socket within ``seconds`` (reading whatever it sends first)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except (TimeoutError, OSError) as exc:
        return not isinstance(exc, TimeoutError)


def test_a_request_head_that_never_completes_is_cut_off(tmp_path):
    srv = start_server(tmp_path, header_timeout=0.5)
    try:
        silent = _raw(srv.config.port)
        partial = _raw(srv.config.port)
        partial.sendall(b"GET /api/users HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        dribble = _raw(srv.config.port)
        started = time.monotonic()
        for byte in b"GET /api/users HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa":  # a byte every 50 ms
            try:
                dribble.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
            if time.monotonic() - started > 3:
                break
        assert time.monotonic() - started < 2.5  # the server closed it: sending failed or stopped early
        for sock in (silent, partial, dribble):
            assert _closed_within(sock, 3)
            sock.close()
        # a client that keeps its connection alive between requests is fine, and so is a slow server answer
        kept = _raw(srv.config.port)
        for _ in range(2):
            kept.sendall(b"GET /api/users HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            reply = b""
            while not reply.endswith(b"true}"):  # the head and the body may come in separate reads
                chunk = kept.recv(4096)
                assert chunk, reply
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 200")
            time.sleep(0.2)
        kept.close()
        assert http("GET", srv.url + "/api/users").status == 200
    finally:
        srv.stop()


def test_connections_beyond_the_cap_get_a_503_and_the_server_keeps_answering(tmp_path):
    srv = start_server(tmp_path, max_connections=20, header_timeout=30)
    try:
        held = [_raw(srv.config.port) for _ in range(20)]
        time.sleep(0.2)
        extra = _raw(srv.config.port)
        extra.sendall(b"GET /api/users HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        extra.settimeout(5)
        assert extra.recv(4096).startswith(b"HTTP/1.1 503")
        extra.close()
        for s in held:
            s.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if http("GET", srv.url + "/api/users", timeout=2).status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        assert http("GET", srv.url + "/api/users").status == 200
    finally:
        srv.stop()


def test_a_rerun_after_a_crash_records_what_the_cut_short_run_wrote(tmp_path):
    from test_web_persistence import free_port, launch

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gate = tmp_path / "gate"
    proc = launch(tmp_path, port)
    try:
        pid = submit(base, {"1": {"class_type": "SaveTestImage", "inputs": {"red": 3, "filename_prefix": "cut"}},
                            "2": gated_prompt(gate, 7)["1"]})["prompt_id"]
        _running(base, pid)
        deadline = time.monotonic() + 10
        while not (tmp_path / "out" / "cut_003.png").exists():  # the first output is on disk
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        _kill(proc)
    gate.write_text("open")
    proc = launch(tmp_path, port)
    try:
        entry = wait_history(base, pid)
        assert entry["status"]["status_str"] == "success" and entry["outputs"]["2"]["text"] == ["7"]
        assert entry["status"]["previous_attempts"] == [
            {"outputs": {"1": {"images": [{"filename": "cut_003.png", "subfolder": "", "type": "output"}]}}}]
    finally:
        _stop(proc)


def test_with_a_token_no_reply_names_a_client_id(tmp_path):
    srv = start_server(tmp_path, token="tok-123")
    auth = {"Authorization": "Bearer tok-123"}
    gate = tmp_path / "gate"
    cid = new_id()
    try:
        r = http("POST", srv.url + "/prompt", {"prompt": gated_prompt(gate, 1), "client_id": cid}, headers=auth)
        running = r.json()["prompt_id"]
        waiting = http("POST", srv.url + "/prompt", {"prompt": ARITHMETIC, "client_id": cid}, headers=auth)
        _running_auth = time.monotonic() + 10
        while not http("GET", srv.url + "/queue", headers=auth).json()["queue_running"]:
            assert time.monotonic() < _running_auth
            time.sleep(0.05)
        for path in ("/queue", f"/jobs/{running}", f"/jobs/{waiting.json()['prompt_id']}"):
            body = http("GET", srv.url + path, headers=auth).body
            assert cid.encode() not in body, path
        gate.write_text("go")
        deadline = time.monotonic() + 10
        while waiting.json()["prompt_id"] not in http("GET", srv.url + "/history", headers=auth).json():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for path in ("/history", f"/history/{running}", f"/jobs/{running}", "/jobs"):
            body = http("GET", srv.url + path, headers=auth).body
            assert cid.encode() not in body, path
    finally:
        srv.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(mutated_ui(), api_prompt))
def test_the_cli_exits_0_or_2_for_any_fuzzed_workflow(tmp_path_factory, doc):
    import contextlib
    import io

    from graph_runtime.cli import main

    path = tmp_path_factory.mktemp("cli") / "wf.json"
    path.write_text(json.dumps(doc))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", str(path)])
    assert code in (0, 2), (code, err.getvalue()[-500:])
    assert "Traceback" not in err.getvalue()
