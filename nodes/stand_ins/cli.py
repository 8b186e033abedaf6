"""``graph-runtime stand-ins WORKFLOW... --models-dir DIR``: tiny random-weight files under every model name
the workflows load, so ``GRAPH_RUNTIME_MODELS=DIR graph-runtime run WORKFLOW`` runs them in seconds on a CPU.

Exit codes: 0 written (or nothing needed), 2 a name that cannot be placed, a file that is no stand-in in the
way, or an unreadable workflow (each named with its workflow, node, input and why; nothing is written then),
1 the files could not be written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def add_command(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "stand-ins", help="write tiny stand-in models for the model files workflows load",
        description="Write tiny random-weight model files of the right family and layout under every model "
                    "name the workflows load (checkpoints, diffusion models, text encoders, VAEs), so that "
                    "GRAPH_RUNTIME_MODELS=DIR graph-runtime run WORKFLOW runs in seconds on a CPU.")
    p.add_argument("workflows", nargs="+", metavar="WORKFLOW", help="workflow JSON (API or editor format)")
    p.add_argument("--models-dir", required=True, metavar="DIR", help="the models folder to write into")
    p.add_argument("--dry-run", action="store_true", help="say what would be written, write nothing")
    p.set_defaults(func=run)


def run(args: Any) -> int:
    from .placement import WorkflowReadError, plan, read_workflow

    try:
        docs = {str(w): read_workflow(w) for w in args.workflows}
    except WorkflowReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    result = plan(docs)
    models_dir = Path(args.models_dir)
    if result.refusals:
        return _refuse(f"{len(result.refusals)} model name(s) cannot be given stand-ins",
                       [r.message() for r in result.refusals])
    if models_dir.exists() and not models_dir.is_dir():
        print(f"error: --models-dir {models_dir} is not a folder", file=sys.stderr)
        return EXIT_INVALID
    from .write import occupied

    busy = occupied(result, models_dir)
    if busy:
        return _refuse(f"{len(busy)} file(s) would replace what is no stand-in", busy)
    for ref in result.shipped:
        print(f"{ref.name}: shipped with the runtime, no stand-in needed ({ref.where()})")
    if args.dry_run:
        for p in result.placements.values():
            print(f"would write {models_dir / p.path}: {p.describe()}")
        return EXIT_OK
    if not result.placements:
        if not result.shipped:
            print("the workflows load no model files: nothing to write")
        return EXIT_OK
    from .write import write

    try:
        written = write(result, models_dir)
    except OSError as exc:
        print(f"error: cannot write the stand-ins into {models_dir}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for p, target in written:
        users = ", ".join(f"node {r.node_id} {r.input}" for r in p.refs[:3])
        print(f"{target}: {p.describe()} (for {p.refs[0].workflow}: {users})")
    print(f"run with: GRAPH_RUNTIME_MODELS={models_dir} graph-runtime run WORKFLOW")
    return EXIT_OK


def _refuse(what: str, lines: list[str]) -> int:
    print(f"error: {what}; nothing written:", file=sys.stderr)
    for line in lines:
        print(f"  - {line}", file=sys.stderr)
    return EXIT_INVALID
