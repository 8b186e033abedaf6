"""``batch --server``: the same batch against a running ``graph-runtime serve`` gives the same files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from graph_runtime.batch import cli as batch_cli  # noqa: E402
from graph_runtime.batch.manifest import iter_records  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "GRAPH_RUNTIME_HOME": str(tmp_path / "srv")}
    help_text = subprocess.run([sys.executable, "-m", "graph_runtime", "serve", "--help"], env=env,
                               capture_output=True, text=True, timeout=60).stdout
    assert "--port" in help_text, help_text
    port = free_port()
    cmd = [sys.executable, "-m", "graph_runtime", "serve", "--port", str(port)]
    if "--output-dir" in help_text:
        cmd += ["--output-dir", str(tmp_path / "srv-out")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/object_info", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the server did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def hashes(out: Path) -> dict[str, str]:
    result = {}
    for rec in iter_records(out / "manifest.jsonl"):
        assert rec["status"] == "ok", rec
        result[rec["job_id"]] = sorted(item["sha256"] for item in rec["outputs"])
    return result


def test_server_batch_matches_the_local_run(server, tmp_path):
    wf = str(REPO / "workflows/arithmetic.json")
    sweep = ["--sweep", "1.value=2..4", "--quiet"]
    assert batch_cli.main([wf, *sweep, "--output-dir", str(tmp_path / "local")]) == 0
    assert batch_cli.main([wf, *sweep, "--output-dir", str(tmp_path / "remote"), "--server", server]) == 0
    local, remote = hashes(tmp_path / "local"), hashes(tmp_path / "remote")
    assert len(local) == 3 and local == remote
    # a job that fails on the server is recorded as failed, and the batch goes on
    assert batch_cli.main([wf, "--set", "2.value=0", "--sweep", "3.op=add,divide", "--output-dir",
                           str(tmp_path / "r2"), "--server", server, "--quiet"]) == 1
    status = {r["params"]["3.op"]: r["status"] for r in iter_records(tmp_path / "r2" / "manifest.jsonl")}
    assert status == {"add": "ok", "divide": "error"}
