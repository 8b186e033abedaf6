"""Hostile and unlucky input against a real server on loopback: every answer is a named 4xx, never a 500, and
nothing a request stores can break a later read."""

from __future__ import annotations

import json
import sqlite3

import pytest
from test_web_support import (
    ARITHMETIC,
    collect_until_done,
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
        assert "JSON" in r.json()["error"]["message"] or "deeper" in r.json()["error"]["message"]
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
