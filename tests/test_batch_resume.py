"""A batch killed mid-way (SIGKILL, Ctrl-C) continues where it stopped: no finished output lost, none re-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from graph_runtime.batch.manifest import file_digest, iter_records

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys, time
from graph_runtime import Node, NodeInputs, NodeRegistry, Output, Widget, builtin_nodes
from graph_runtime.batch.cli import main

class Slow(Node):
    class Inputs(NodeInputs):
        seed: int = Widget(0)
        log: str = Widget("")
    OUTPUTS = (Output("STRING", "text"),)
    def execute(self, inputs, ctx):
        with open(inputs.log, "a") as f:
            f.write(f"{inputs.seed}\\n")
        time.sleep(0.1)
        return (f"seed {inputs.seed}",)

def registry():
    reg = NodeRegistry()
    builtin_nodes.register(reg)
    reg.register(Slow)
    return reg

sys.exit(main(sys.argv[1:], registry_factory=registry))
"""

JOBS = 16


def start(tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "wf.json"),
                             "--sweep", f"1.seed=1..{JOBS}", "--output-dir", str(tmp_path / "out"), "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "run.py").write_text(SCRIPT)
    (tmp_path / "wf.json").write_text(json.dumps({
        "1": {"class_type": "Slow", "inputs": {"seed": 0, "log": str(tmp_path / "runs.log")}},
        "2": {"class_type": "SaveText", "inputs": {"text": ["1", 0], "filename": "out.txt"}},
    }))
    return tmp_path


def wait_for_records(path: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the batch made no progress")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_batch_resumes_without_losing_or_rerunning_jobs(setup, sig):
    tmp_path = setup
    manifest = tmp_path / "out" / "manifest.jsonl"
    proc = start(tmp_path)
    wait_for_records(manifest, 4, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), err
    before = [r for r in iter_records(manifest) if r["status"] == "ok"]
    assert 4 <= len(before) < JOBS
    for rec in before:  # every recorded job's file is there, intact
        item = rec["outputs"][0]
        assert file_digest(tmp_path / "out" / item["path"]) == {"sha256": item["sha256"], "size": item["size"]}

    proc = start(tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"{len(before)} already done" in err
    records = list(iter_records(manifest))
    ok = Counter(r["params"]["1.seed"] for r in records if r["status"] == "ok")
    assert ok == Counter(range(1, JOBS + 1))  # every job finished, each recorded once
    runs = Counter(int(line) for line in (tmp_path / "runs.log").read_text().split())
    assert all(runs[r["params"]["1.seed"]] == 1 for r in before)  # finished jobs never ran again
    for seed in range(1, JOBS + 1):
        rec = next(r for r in records if r["params"]["1.seed"] == seed and r["status"] == "ok")
        assert (tmp_path / "out" / rec["outputs"][0]["path"]).read_text() == f"seed {seed}"
