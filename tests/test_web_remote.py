"""``graph-runtime run --server``: a workflow submitted to a real server, followed, and its outputs downloaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_web_support import ROOT, gated_prompt, http, start_server

from graph_runtime.cli import main as cli_main

ARITHMETIC = str(ROOT / "workflows" / "arithmetic.json")
UI_ARITHMETIC = str(ROOT / "tests" / "data" / "arithmetic.ui.json")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("remote"))
    yield srv
    srv.stop()


def ws(server) -> str:
    return server.url.replace("http://", "ws://")


def test_remote_run_downloads_outputs(server, tmp_path, capsys):
    code = cli_main(["run", "--server", ws(server), ARITHMETIC, "--set", "1.value=5", "--output-dir", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert (tmp_path / "tiles.txt").read_text() == "6 x 7 = 35 tiles"
    assert str(tmp_path / "tiles.txt") in out.out and "[6] 6 x 7 = 35 tiles" in out.out
    assert "[3] Tiles" in out.err  # progress names the nodes as they run


def test_remote_set_is_typed_by_the_servers_declarations(server, tmp_path, capsys):
    code = cli_main(["run", "--server", ws(server), ARITHMETIC, "--set", "5.a=42", "--output-dir", str(tmp_path),
                     "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "tiles.txt").read_text() == "42 x 7 = 42 tiles"


def test_remote_run_of_an_editor_file_as_json(server, tmp_path, capsys):
    code = cli_main(["run", "--server", ws(server) + "/ws", UI_ARITHMETIC, "--output-dir", str(tmp_path), "--json",
                     "--quiet"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["status"] == "success"
    assert report["outputs"]["6"]["text"] == ["6 x 7 = 42 tiles"]
    assert report["files"] == [str(tmp_path / "tiles.txt")]


def test_remote_run_prints_the_servers_warnings(server, tmp_path, capsys):
    doc = json.loads(open(ARITHMETIC).read())
    doc["2"]["inputs"]["vaule"] = 9  # not an input of PrimitiveInt: the server ignores it and says so
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(doc))
    assert cli_main(["run", "--server", ws(server), str(path), "--output-dir", str(tmp_path), "--quiet"]) == 0
    assert "warning: node 2 (PrimitiveInt): input 'vaule' is not an input of PrimitiveInt" in capsys.readouterr().err
    assert (tmp_path / "tiles.txt").read_text() == "6 x 7 = 42 tiles"


def test_remote_invalid_workflow_exits_2(server, tmp_path, capsys):
    bad = json.loads(open(ARITHMETIC).read())
    bad["3"]["inputs"]["op"] = "explode"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert cli_main(["run", "--server", ws(server), str(path)]) == 2
    err = capsys.readouterr().err
    assert "node 3 (IntMath) input 'op'" in err and "Traceback" not in err


def test_remote_failure_and_interrupt_exit_1(server, tmp_path, capsys):
    failing = {"1": {"class_type": "IntMath", "inputs": {"a": 1, "b": 0, "op": "divide"}},
               "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    path = tmp_path / "div.json"
    path.write_text(json.dumps(failing))
    assert cli_main(["run", "--server", ws(server), str(path), "--quiet"]) == 1
    assert "error in node 1 (IntMath): cannot divide by zero" in capsys.readouterr().err

    # interrupted on the server (another client presses cancel): the remote run reports it and exits 1
    gate = tmp_path / "never"
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(gated_prompt(gate)))
    proc = subprocess.Popen([sys.executable, "-m", "graph_runtime", "run", "--server", ws(server), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PATH": "/usr/bin:/bin",
                                 "HF_HUB_OFFLINE": "1"})
    import time

    deadline = time.monotonic() + 60
    while not http("GET", server.url + "/queue").json()["queue_running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    http("POST", server.url + "/interrupt", {})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "interrupted" in err


def test_unreachable_server_exits_1(tmp_path, capsys):
    assert cli_main(["run", "--server", "ws://127.0.0.1:9", ARITHMETIC]) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_remote_with_token(tmp_path, monkeypatch, capsys):
    srv = start_server(tmp_path / "srv", token="tok-123")
    try:
        monkeypatch.delenv("GRAPH_RUNTIME_TOKEN", raising=False)
        url = srv.url.replace("http://", "ws://")
        assert cli_main(["run", "--server", url, ARITHMETIC, "--output-dir", str(tmp_path / "a")]) == 1
        capsys.readouterr()
        monkeypatch.setenv("GRAPH_RUNTIME_TOKEN", "tok-123")
        assert cli_main(["run", "--server", url, ARITHMETIC, "--output-dir", str(tmp_path / "b"), "--quiet"]) == 0
        assert (tmp_path / "b" / "tiles.txt").exists()
    finally:
        srv.stop()


def test_one_client_for_run_and_batch():
    """``run --server`` and ``batch --server`` speak through graph_runtime.client; cli and remote do not import
    each other (the shared command pieces live in graph_runtime.arguments)."""
    import ast

    def imports(path):
        tree = ast.parse((ROOT / path).read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names.add("." * node.level + (node.module or ""))
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    remote, backend, cli = (imports(p) for p in ("graph_runtime/remote.py", "graph_runtime/batch/server_backend.py",
                                                 "graph_runtime/cli.py"))
    assert ".client" in remote and "..client" in backend
    assert "urllib.request" not in remote | backend  # no second HTTP client
    assert ".cli" not in remote and "graph_runtime.cli" not in remote
