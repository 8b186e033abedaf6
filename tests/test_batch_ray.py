"""Batch on a local Ray cluster with 2 workers: the same files, byte for byte, as the local run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import ray  # a test dependency: the batch runner is tested on a real local Ray cluster

from graph_runtime.batch import cli as batch_cli
from graph_runtime.batch.manifest import iter_records

REPO = Path(__file__).resolve().parent.parent
SWEEP = ["--sweep", "1.value=1..4", "--sweep", "5.template={a}-{b}-{c},{c}!"]


@pytest.fixture(scope="module")
def cluster():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # the workers import this checkout's code
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def outputs(out: Path) -> dict[str, tuple[str, str]]:
    """job id -> (file name, sha256) of its one output."""
    result = {}
    for rec in iter_records(out / "manifest.jsonl"):
        assert rec["status"] == "ok", rec
        [item] = rec["outputs"]
        result[rec["job_id"]] = (Path(item["path"]).name, item["sha256"])
        assert (out / item["path"]).is_file()
    return result


def test_ray_two_workers_match_the_local_run(cluster, tmp_path):
    wf = str(REPO / "workflows/arithmetic.json")
    assert batch_cli.main([wf, *SWEEP, "--output-dir", str(tmp_path / "local"), "--quiet"]) == 0
    assert batch_cli.main([wf, *SWEEP, "--output-dir", str(tmp_path / "ray"), "--quiet", "--ray"]) == 0
    local, remote = outputs(tmp_path / "local"), outputs(tmp_path / "ray")
    assert len(local) == 8 and local == remote
    workers = {r["backend"] for r in iter_records(tmp_path / "ray" / "manifest.jsonl")}
    assert len(workers) == 2 and all(w.startswith("ray:") for w in workers)  # both actors took jobs
    # resume works the same over Ray: nothing left to do
    assert batch_cli.main([wf, *SWEEP, "--output-dir", str(tmp_path / "ray"), "--quiet", "--ray", "--json"]) == 0


def test_ray_failed_job_is_recorded(cluster, tmp_path, capsys):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({
        "1": {"class_type": "IntMath", "inputs": {"a": 12, "b": 0, "op": "divide"}},
        "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
    }))
    assert batch_cli.main([str(wf), "--sweep", "1.b=3,0,4", "--output-dir", str(tmp_path / "o"), "--quiet",
                           "--ray", "--workers", "2"]) == 1
    records = {r["params"]["1.b"]: r for r in iter_records(tmp_path / "o" / "manifest.jsonl")}
    assert records[3]["status"] == records[4]["status"] == "ok"
    assert records[0]["status"] == "error" and records[0]["error"]["node_id"] == "1"
    assert "divide by zero" in records[0]["error"]["message"]


def test_ray_renders_the_same_images_as_the_local_run(cluster, tmp_path):
    """The embedded model on two Ray workers: byte-identical PNGs to the local batch for the same seeds."""
    wf = str(REPO / "workflows/txt2img.json")
    sweep = ["--sweep", "6.seed=1..2", "--set", "5.steps=6"]
    assert batch_cli.main([wf, *sweep, "--output-dir", str(tmp_path / "local"), "--quiet"]) == 0
    assert batch_cli.main([wf, *sweep, "--output-dir", str(tmp_path / "ray"), "--quiet", "--ray"]) == 0
    local, remote = outputs(tmp_path / "local"), outputs(tmp_path / "ray")
    assert len(local) == 2 and local == remote
