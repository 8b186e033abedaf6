"""Batch throughput: one process with one cached Executor vs one `graph-runtime run` per image, and Ray.

    python bench/bench_batch.py                                   # workflows/txt2img.json, seed sweep, 32 jobs
    python bench/bench_batch.py workflows/arithmetic.json --sweep 1.value=1..32
    python bench/bench_batch.py --no-ray --no-subprocess

Prints images (output files) per second for each way and the ratios against the local batch measured in
this same process, and whether every way produced byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from graph_runtime.arguments import load_document  # noqa: E402
from graph_runtime.batch.manifest import iter_records  # noqa: E402
from graph_runtime.batch.runner import BatchRunner, LocalBackend  # noqa: E402
from graph_runtime.batch.sweep import expand_jobs, parse_sweep  # noqa: E402
from graph_runtime.paths import RuntimePaths  # noqa: E402
from graph_runtime.registry import default_registry  # noqa: E402

SEED_INPUTS = ("seed", "noise_seed")


def default_sweep(document: dict, jobs: int) -> str:
    for nid, node in document.items():
        for name in SEED_INPUTS:
            if name in node.get("inputs", {}) and not isinstance(node["inputs"][name], list):
                return f"{nid}.{name}=1..{jobs}"
    for nid, node in document.items():  # no seed: sweep the first integer literal
        for name, value in node.get("inputs", {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                return f"{nid}.{name}=1..{jobs}"
    raise SystemExit("no seed or integer input to sweep: pass --sweep NODE.INPUT=A..B")


def file_hashes(out: Path) -> dict[str, list[str]]:
    result = {}
    for rec in iter_records(out / "manifest.jsonl"):
        if rec.get("status") == "ok":
            result[rec["job_id"]] = sorted(i["sha256"] for i in rec["outputs"])
    return result


def run_batch(document, jobs, out: Path, backend) -> tuple[float, int]:
    runner = BatchRunner(document, jobs, out, backend, resume=False, progress=False)
    started = time.perf_counter()
    summary = runner.run()
    took = time.perf_counter() - started
    if summary.failed:
        raise SystemExit(f"{summary.failed} jobs failed: {summary.failures[:3]}")
    return took, summary.files


def run_subprocesses(workflow: str, jobs, out: Path) -> tuple[float, int, dict[str, list[str]]]:
    import hashlib

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    started = time.perf_counter()
    hashes, files = {}, 0
    for job in jobs:
        job_out = out / job.id
        sets = [a for k, v in job.params.items() for a in ("--set", f"{k}={json.dumps(v)}")]
        proc = subprocess.run([sys.executable, "-m", "graph_runtime", "run", workflow, *sets,
                               "--output-dir", str(job_out), "--quiet"], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"graph-runtime run failed: {proc.stderr[-2000:]}")
        produced = sorted(p for p in job_out.rglob("*") if p.is_file())
        files += len(produced)
        hashes[job.id] = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in produced)
    return time.perf_counter() - started, files, hashes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", nargs="?", default=str(REPO / "workflows/txt2img.json"))
    ap.add_argument("--sweep", action="append", help="NODE.INPUT=VALUES (default: a 32-seed sweep)")
    ap.add_argument("--jobs", type=int, default=32, help="jobs of the default seed sweep")
    ap.add_argument("--workers", type=int, default=2, help="Ray workers")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--no-subprocess", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    registry = default_registry()
    document = load_document(args.workflow, registry)
    sweeps = args.sweep or [default_sweep(document, args.jobs)]
    jobs = expand_jobs(document, [parse_sweep(s, document, registry) for s in sweeps])
    print(f"workflow {args.workflow}: {len(jobs)} jobs ({' x '.join(sweeps)})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        tmp = Path(tmp)
        took, files = run_batch(document, jobs, tmp / "local",
                                LocalBackend(paths=RuntimePaths(output=tmp / "local")))
        local_rate = files / took
        reference = file_hashes(tmp / "local")
        rows.append(("local batch (1 process, cached executor)", took, files, True))

        if not args.no_subprocess:
            took, files, hashes = run_subprocesses(args.workflow, jobs, tmp / "runs")
            rows.append((f"{len(jobs)} x graph-runtime run (subprocesses)", took, files, hashes == reference))

        if not args.no_ray:
            try:
                import ray
            except ImportError:
                print("ray is not installed: skipping the Ray run")
            else:
                from graph_runtime.batch.ray_backend import RayBackend

                os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
                os.environ["PYTHONPATH"] = os.pathsep.join(
                    p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
                started = time.perf_counter()
                ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="ERROR",
                         log_to_driver=False)
                print(f"ray {ray.__version__}: local cluster up in {time.perf_counter() - started:.1f}s "
                      f"(not counted below)")
                try:
                    took, files = run_batch(document, jobs, tmp / "ray",
                                            RayBackend(workers=args.workers, paths=RuntimePaths(output=tmp / "ray")))
                finally:
                    ray.shutdown()
                rows.append((f"ray, {args.workers} local workers", took, files, file_hashes(tmp / "ray") == reference))

    print(f"{'way':<44} {'seconds':>8} {'images':>7} {'img/s':>8} {'vs local batch':>15}  same files")
    for name, took, files, same in rows:
        rate = files / took
        print(f"{name:<44} {took:8.2f} {files:7d} {rate:8.2f} {rate / local_rate:14.2f}x  {same}")


if __name__ == "__main__":
    main()
