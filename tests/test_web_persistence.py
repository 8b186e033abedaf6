"""Queue and history survive a killed server: SIGKILL mid-queue, restart, the waiting prompts run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from test_web_support import ARITHMETIC, ROOT, gated_prompt, http, submit, wait_history

TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "graph_runtime", "serve", "--port", str(port), "--output-dir", str(home / "out"),
         "--user-dir", str(home / "user"), "--no-frontend", "--node-module", "test_web_support"],
        cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read().decode()}")
        try:
            if http("GET", base + "/api/users", timeout=2).status == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


def test_killed_server_keeps_queue_and_history(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gate = tmp_path / "gate"
    proc = launch(tmp_path, port)
    try:
        done = submit(base, ARITHMETIC)["prompt_id"]
        wait_history(base, done)
        running = submit(base, gated_prompt(gate, 1))["prompt_id"]
        waiting = [submit(base, gated_prompt(gate, v))["prompt_id"] for v in (2, 3)]
        waiting.append(submit(base, gated_prompt(gate, 4), front=True)["prompt_id"])
        q = http("GET", base + "/queue").json()
        assert q["queue_running"][0][1] == running and len(q["queue_pending"]) == 3
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()

    gate.write_text("open")
    proc = launch(tmp_path, port)
    try:
        assert wait_history(base, done)["outputs"]["6"]["text"] == ["6 x 7 = 42 tiles"]
        results = {pid: wait_history(base, pid) for pid in [running, *waiting]}
        assert all(r["status"]["status_str"] == "success" for r in results.values())
        assert [results[p]["outputs"]["1"]["text"] for p in [running, *waiting]] == [["1"], ["2"], ["3"], ["4"]]
        order = list(http("GET", base + "/history").json())
        # order by number, as before the crash: the one sent to the front first, then the rest as queued
        assert order == [done, waiting[2], running, waiting[0], waiting[1]]
        assert http("GET", base + "/queue").json() == {"queue_running": [], "queue_pending": []}
        again = submit(base, ARITHMETIC)  # numbering goes on after the restart
        assert again["number"] > 4
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.stdout.close()
