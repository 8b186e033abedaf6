"""``graph-runtime batch``: render many variants of one workflow headless, resumable, locally or on Ray.

    graph-runtime batch txt2img.json --sweep 3.seed=1..100 --sweep 6.text=@prompts.txt --output-dir out/
    graph-runtime batch txt2img.json --from-file params.csv --ray            # a local Ray cluster
    graph-runtime batch txt2img.json --sweep 3.seed=1..8 --server http://127.0.0.1:8188

Jobs are the product of the sweeps (times the lines of a params file). Each job writes into
``OUTPUT_DIR/jobs/<job_id>/`` and gets one line in ``OUTPUT_DIR/manifest.jsonl``. Running the same command
again skips the jobs already finished, so an interrupted batch continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ..arguments import EXIT_FAILED, EXIT_INVALID, EXIT_OK, UsageError, apply_assignments, load_document
from ..client import RemoteError
from ..registry import NodeRegistry, default_registry
from ..workflow import WorkflowFormatError
from .runner import BatchAborted, BatchInvalid, BatchRunner, LocalBackend
from .sweep import SweepError, expand_jobs, parse_sweep, read_params_file

EXIT_INTERRUPTED = 130


def add_command(subparsers) -> None:
    p = subparsers.add_parser("batch", help="run a workflow many times: sweeps, params files, resume, Ray",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_batch)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="workflow JSON (API format, or as saved by the editor)")
    p.add_argument("--sweep", action="append", default=[], metavar="NODE.INPUT=VALUES",
                   help="values to sweep: V1,V2,...  |  A..B[:STEP] (inclusive)  |  @file (one per line)  |  "
                        "a JSON list; several --sweep make their product")
    p.add_argument("--from-file", metavar="PARAMS", help="one job per line: JSONL objects or CSV with a "
                                                         "NODE.INPUT header")
    p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="a fixed override for every job (repeatable)")
    p.add_argument("--output-dir", help="where jobs and the manifest go (default ./output/batch-<workflow name>)")
    p.add_argument("--input-dir", help="where LoadImage reads (default ./input)")
    p.add_argument("--cache", help="executor cache policy (default: an LRU holding two jobs' nodes)")
    p.add_argument("--no-resume", action="store_true", help="run every job again, even those already finished")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="spread jobs over a Ray cluster (no ADDRESS: the one in RAY_ADDRESS or a new local one)")
    p.add_argument("--workers", type=int, metavar="N", help="Ray actors (default: one per GPU, else per CPU)")
    p.add_argument("--server", metavar="URL", help="run the jobs on a running server (http://host:port)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the jobs, run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def cmd_batch(args: argparse.Namespace, registry_factory: Callable[[], NodeRegistry] | None = None) -> int:
    """The command; ``registry_factory`` replaces the installed nodes (tests, embedding applications)."""
    factory = registry_factory or default_registry
    from ..paths import RuntimePaths

    try:
        if args.ray is not None and args.server:
            raise UsageError("--ray and --server exclude each other")
        registry = factory()
        document = load_document(args.file, registry)
        apply_assignments(document, args.set, registry)
        known = all(isinstance(n, dict) and n.get("class_type") in registry for n in document.values())
        base_dir = Path(args.file).resolve().parent
        sweeps = [parse_sweep(text, document, registry, base_dir) for text in args.sweep]
        rows = read_params_file(args.from_file, document, registry) if args.from_file else None
        jobs = expand_jobs(document, sweeps, rows)
    except (UsageError, SweepError, WorkflowFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    output_dir = Path(args.output_dir or Path("output") / f"batch-{Path(args.file).stem}")
    paths = RuntimePaths(output=output_dir, input=args.input_dir)

    if args.server:
        from .server_backend import ServerBackend

        try:
            backend = ServerBackend(args.server, validator=LocalBackend(factory, cache="none") if known else None)
        except RemoteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_INVALID
    elif args.ray is not None:
        from .ray_backend import RayBackend

        backend = RayBackend(args.ray, factory if registry_factory else None, workers=args.workers,
                             cache=args.cache, paths=paths)
    else:
        backend = LocalBackend(factory, cache=args.cache, paths=paths)
    runner = BatchRunner(document, jobs, output_dir, backend, resume=not args.no_resume,
                         progress=not (args.quiet or args.json or args.dry_run))
    if args.dry_run:
        try:
            runner.dry_run()
        except BatchInvalid as exc:
            return refuse(exc)
        except BatchAborted as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        for job in jobs:
            print(job.id, json.dumps(job.params, ensure_ascii=False))
        return EXIT_OK
    try:
        summary = runner.run(handle_sigint=True)
    except BatchInvalid as exc:
        return refuse(exc)
    except BatchAborted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"total": summary.total, "ok": summary.ok, "failed": summary.failed,
                          "skipped": summary.skipped, "interrupted": summary.interrupted, "files": summary.files,
                          "seconds": round(summary.seconds, 3), "files_per_second": summary.files_per_second,
                          "manifest": str(summary.manifest),
                          "failures": [{"job_id": j, "error": m} for j, m in summary.failures]}, indent=2))
    else:
        if args.quiet:  # the progress bar shows failures as they happen; quiet runs list them here
            for jid, message in summary.failures[:20]:
                print(f"job {jid} failed: {message}", file=sys.stderr)
            if len(summary.failures) > 20:
                print(f"... and {len(summary.failures) - 20} more failures (see the manifest)", file=sys.stderr)
        print(f"{summary.total} jobs: {summary.ok} done, {summary.skipped} already done, {summary.failed} failed"
              f"{', interrupted' if summary.interrupted else ''} in {summary.seconds:.1f}s "
              f"({summary.files_per_second:.2f} img/s); manifest: {summary.manifest}", file=sys.stderr)
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if summary.failed else EXIT_OK


def refuse(exc: BatchInvalid) -> int:
    print(f"error: {exc}", file=sys.stderr)
    for line in exc.lines:
        print(f"  - {line}", file=sys.stderr)
    return EXIT_INVALID


def main(argv: list[str] | None = None, registry_factory: Callable[[], NodeRegistry] | None = None) -> int:
    """``graph-runtime batch`` as a function (for embedding, and for tests with their own nodes)."""
    parser = argparse.ArgumentParser(prog="graph-runtime batch")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_batch(args, registry_factory)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
