"""``graph-runtime stand-ins WORKFLOW... --models-dir DIR``: tiny random-weight files under every model name
the workflows load, so ``GRAPH_RUNTIME_MODELS=DIR graph-runtime run WORKFLOW`` runs them in seconds on a CPU.

Exit codes: 0 written (or nothing needed), 2 a name that cannot be placed or an unreadable workflow (each one
named with its workflow, node, input and why; nothing is written then).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_INVALID = 0, 2


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
    if not result.refusals and not args.dry_run:
        from .write import occupied

        if models_dir.exists() and not models_dir.is_dir():
            print(f"error: --models-dir {models_dir} is not a folder", file=sys.stderr)
            return EXIT_INVALID
        busy = occupied(result, models_dir)
        if busy:
            for line in busy:
                print(f"  - {line}", file=sys.stderr)
            print("error: nothing written", file=sys.stderr)
            return EXIT_INVALID
    if result.refusals:
        print(f"error: {len(result.refusals)} model name(s) cannot be given stand-ins; nothing written:",
              file=sys.stderr)
        for refusal in result.refusals:
            print(f"  - {refusal.message()}", file=sys.stderr)
        return EXIT_INVALID
    for ref in result.shipped:
        print(f"{ref.name}: shipped with the runtime, no stand-in needed ({ref.where()})")
    if args.dry_run:
        for p in result.placements.values():
            print(f"would write {models_dir / p.path}: {p.describe()}")
        return EXIT_OK
    if result.placements:
        from .write import write

        for p, target in write(result, models_dir):
            users = ", ".join(f"node {r.node_id} {r.input}" for r in p.refs[:3])
            print(f"{target}: {p.describe()} (for {p.refs[0].workflow}: {users})")
        print(f"run with: GRAPH_RUNTIME_MODELS={models_dir} graph-runtime run WORKFLOW")
    elif not result.shipped:
        print("the workflows load no model files: nothing to write")
    return EXIT_OK
