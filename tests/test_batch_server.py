"""``batch --server``: the same batch against a running ``graph-runtime serve`` gives the same files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from graph_runtime.batch import cli as batch_cli  # noqa: E402
from graph_runtime.batch.manifest import iter_records  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = str(REPO / "workflows/arithmetic.json")
TOKEN = "s3cret-batch-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(home: Path, *extra: str):
    """``graph-runtime serve`` in a subprocess on a free loopback port; (process, http URL)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "GRAPH_RUNTIME_HOME": str(home / "srv")}
    env.pop("GRAPH_RUNTIME_TOKEN", None)
    port = free_port()
    cmd = [sys.executable, "-m", "graph_runtime", "serve", "--port", str(port), "--no-frontend",
           "--output-dir", str(home / "srv-out"), "--user-dir", str(home / "srv-user"), *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/object_info", timeout=2).read()
            break
        except urllib.error.HTTPError:  # 401: up, and wants a token
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the server did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.2)
    return proc, url


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def server(tmp_path):
    proc, url = start_serve(tmp_path)
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    proc, url = start_serve(tmp_path_factory.mktemp("token-server"), "--token", TOKEN)
    yield url
    stop(proc)


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


def test_batch_against_a_token_server(token_server, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GRAPH_RUNTIME_TOKEN", raising=False)
    sweep = [WORKFLOW, "--sweep", "1.value=2,3", "--quiet"]
    assert batch_cli.main([*sweep, "--output-dir", str(tmp_path / "local")]) == 0
    # the token in the URL, as run --server takes it
    assert batch_cli.main([*sweep, "--output-dir", str(tmp_path / "url"),
                           "--server", f"{token_server}?token={TOKEN}"]) == 0
    assert hashes(tmp_path / "url") == hashes(tmp_path / "local")
    # the token from the environment
    monkeypatch.setenv("GRAPH_RUNTIME_TOKEN", TOKEN)
    assert batch_cli.main([*sweep, "--output-dir", str(tmp_path / "env"), "--server", token_server]) == 0
    assert hashes(tmp_path / "env") == hashes(tmp_path / "local")
    capsys.readouterr()
    # no token, or a wrong one: one clear line, exit 1, no job recorded
    monkeypatch.delenv("GRAPH_RUNTIME_TOKEN")
    for url in (token_server, f"{token_server}?token=wrong"):
        assert batch_cli.main([*sweep, "--output-dir", str(tmp_path / "none"), "--server", url]) == 1
        err = capsys.readouterr().err
        assert "wants a token" in err and "GRAPH_RUNTIME_TOKEN" in err and "Traceback" not in err, err
    assert not (tmp_path / "none" / "manifest.jsonl").exists()


def test_dry_run_against_a_server(token_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GRAPH_RUNTIME_TOKEN", TOKEN)
    out = tmp_path / "dry"
    assert batch_cli.main([WORKFLOW, "--sweep", "1.value=2..4", "--output-dir", str(out), "--server", token_server,
                           "--dry-run"]) == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert len(listed) == 3 and all('"1.value"' in line for line in listed)
    assert not out.exists()  # nothing ran
    # an invalid job is refused before anything runs, as without --dry-run
    assert batch_cli.main([WORKFLOW, "--sweep", "3.op=add,explode", "--output-dir", str(out), "--server",
                           token_server, "--dry-run"]) == 2
    assert "node 3 (IntMath) input 'op'" in capsys.readouterr().err
    # a server nobody answers at: one line, exit 1
    dead = f"http://127.0.0.1:{free_port()}"
    assert batch_cli.main([WORKFLOW, "--sweep", "1.value=2,3", "--output-dir", str(out), "--server", dead,
                           "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the server" in err and "Traceback" not in err
