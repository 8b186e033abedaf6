"""``graph-runtime``: run and validate workflow files headless, list nodes.

Exit codes: 0 ok, 2 invalid workflow or arguments (errors printed, readable), 1 failed while running.
More commands (serve, batch, schedulers) come from installed packages through the
``graph_runtime.commands`` entry-point group, so the engine does not import the server or the models.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from importlib.metadata import entry_points
from pathlib import Path

from .arguments import EXIT_FAILED, EXIT_INVALID, EXIT_OK, UsageError, apply_assignments, load_document
from .executor import Executor, RunResult
from .paths import RuntimePaths
from .registry import NodeRegistry, default_registry
from .validation import ValidationResult, WorkflowValidationError, warning_line
from .workflow import WorkflowFormatError

COMMANDS_GROUP = "graph_runtime.commands"


def titles_of(document: dict) -> dict[str, str]:
    out = {}
    for nid, node in document.items():
        if isinstance(node, dict):
            meta = node.get("_meta") if isinstance(node.get("_meta"), dict) else {}
            out[nid] = str(meta.get("title") or node.get("class_type") or "")
    return out


def print_validation(result: ValidationResult, path: str) -> None:
    print_warnings(result.warnings)
    print(f"{path}: invalid workflow", file=sys.stderr)
    for line in result.messages():
        print(f"  - {line}", file=sys.stderr)


def print_warnings(warnings: list[dict]) -> None:
    for w in warnings:
        print(f"warning: {warning_line(w)}", file=sys.stderr)


def make_executor(args: argparse.Namespace, registry: NodeRegistry) -> Executor:
    paths = RuntimePaths(output=getattr(args, "output_dir", None), input=getattr(args, "input_dir", None))
    return Executor(registry, cache=getattr(args, "cache", "last"), paths=paths)


def cmd_run(args: argparse.Namespace) -> int:
    if getattr(args, "server", None):
        from .remote import run_remote  # the websocket client, only needed for remote runs

        return run_remote(args)
    registry = default_registry()
    document = load_document(args.file, registry)
    apply_assignments(document, args.set or [], registry)
    executor = make_executor(args, registry)
    from .progress import TerminalProgress

    progress = TerminalProgress(titles_of(document), quiet=args.quiet)
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):  # first Ctrl-C stops the run cleanly, a second one kills
        executor.interrupt()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        result = executor.run(document, targets=args.only or None, handlers=[progress])
    except WorkflowValidationError as exc:
        print_validation(exc.result, args.file)
        return EXIT_INVALID
    finally:
        signal.signal(signal.SIGINT, previous)
    print_warnings(result.warnings)
    report(result, executor, args)
    return EXIT_OK if result.ok else EXIT_FAILED


def report(result: RunResult, executor: Executor, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps({"prompt_id": result.prompt_id, "status": result.status, "outputs": result.outputs,
                          "executed": result.executed, "cached": result.cached, "error": result.error,
                          "warnings": result.warnings},
                         default=str, indent=2))
        return
    for nid, ui in result.outputs.items():
        for kind in ("images", "files"):
            for item in ui.get(kind, []):
                folder = executor.paths.folder(item.get("type", "output"))
                print(Path(folder, item.get("subfolder", ""), item["filename"]))
        for text in ui.get("text", []):
            print(f"[{nid}] {text}")
    if result.status == "error":
        err = result.error or {}
        print(f"error in node {err.get('node_id')} ({err.get('node_type')}): {err.get('exception_message')}",
              file=sys.stderr)
    elif result.status == "interrupted":
        print("interrupted", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    registry = default_registry()
    document = load_document(args.file, registry)
    apply_assignments(document, args.set or [], registry)
    result = Executor(registry).validate(document, targets=args.only or None)
    if not result.ok:
        print_validation(result, args.file)
        return EXIT_INVALID
    print_warnings(result.warnings)
    print(f"{args.file}: valid ({len(result.plan.order)} nodes to run)")
    return EXIT_OK


def cmd_nodes(args: argparse.Namespace) -> int:
    registry = default_registry()
    info = registry.object_info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return EXIT_OK
    if args.markdown:
        print(nodes_table(info))
        return EXIT_OK
    for name, entry in sorted(info.items(), key=lambda kv: (kv[1]["category"], kv[0])):
        ins = ", ".join(list(entry["input"]["required"]) + [f"{n}?" for n in entry["input"]["optional"]])
        outs = ", ".join(entry["output"]) or "-"
        print(f"{entry['category']:<24} {name:<26} ({ins}) -> {outs}")
    for pack, err in registry.load_errors.items():
        print(f"warning: node pack {pack!r} failed to load: {err}", file=sys.stderr)
    return EXIT_OK


def nodes_table(info: dict) -> str:
    """A Markdown table of the nodes by category (the README's node list is this output)."""
    rows = ["| category | nodes |", "|---|---|"]
    by_category: dict[str, list[str]] = {}
    for name, entry in info.items():
        by_category.setdefault(entry["category"], []).append(name)
    for category in sorted(by_category):
        rows.append(f"| {category} | {', '.join(sorted(by_category[category]))} |")
    return "\n".join(rows)


def quiet_threads() -> None:
    """Idle OpenMP threads sleep instead of spinning (set before torch loads its OpenMP runtime).

    With spinning threads, any other busy process on a small machine stalls every parallel region: a 20-step
    render of the embedded model measured 66 s instead of 0.9 s on 2 cores with one core busy.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graph-runtime", description="Run diffusion node-graph workflows.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (and tracebacks) to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    def workflow_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", help="workflow JSON (API format, or as saved by the editor)")
        p.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE", help="override an input (repeatable)")
        p.add_argument("--only", action="append", metavar="NODE_ID", help="run only this output node (repeatable)")

    p = sub.add_parser("run", help="run a workflow file")
    workflow_args(p)
    p.add_argument("--output-dir", help="where output nodes write (default ./output)")
    p.add_argument("--input-dir", help="where LoadImage reads (default ./input)")
    p.add_argument("--cache", default="last", help="cache policy: last, none, lru or lru:N")
    p.add_argument("--server", metavar="URL", help="submit to a running server (ws://host:port) instead")
    p.add_argument("--quiet", action="store_true", help="no per-node progress lines")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a workflow file without running it")
    workflow_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("nodes", help="list the installed nodes")
    p.add_argument("--json", action="store_true", help="print /object_info JSON")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table of the nodes by category")
    p.set_defaults(func=cmd_nodes)

    for ep in entry_points(group=COMMANDS_GROUP):
        try:
            ep.load()(sub)
        except ModuleNotFoundError as exc:  # an optional part that is not installed
            logging.getLogger(__name__).debug("command %r unavailable: %s", ep.name, exc)
        except Exception as exc:  # a broken add-on command must not break the others
            logging.getLogger(__name__).warning("command %r failed to load: %s", ep.name, exc)
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_threads()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        return int(args.func(args) or 0)
    except (UsageError, WorkflowFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
