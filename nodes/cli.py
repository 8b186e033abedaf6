"""The commands of the diffusion side (``graph-runtime stand-ins``: :mod:`nodes.stand_ins.cli`).

``graph-runtime schedulers``: every registered scheduler, what it supports, which ones a model's own
scheduler lists as compatible (diffusers' ``pipeline.scheduler.compatibles``) and which fit the model at all
(flow-matching schedulers for flow models, the others for DDPM-trained ones)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def add_command(subparsers: Any) -> None:
    """The diffusion side's commands: ``schedulers`` and ``stand-ins``."""
    from .stand_ins.cli import add_command as add_stand_ins

    add_stand_ins(subparsers)
    p = subparsers.add_parser(
        "schedulers", help="list the schedulers and which ones fit a model",
        description="List every registered scheduler (name, label, diffusers class, stochastic, custom sigmas, "
                    "sigma spacings), mark those in the model scheduler's compatibles and those that fit the "
                    "model (discrete or flow-matching).")
    p.add_argument("--model", default=None, help="model name in the models folders (default: the embedded one)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _model_scheduler_config(name: str | None) -> tuple[str, dict]:
    from graph_runtime import NodeError

    from .models import EMBEDDED_NAME, find_model

    name = name or EMBEDDED_NAME
    try:
        path = find_model(name)
    except NodeError as exc:
        raise LookupError(str(exc)) from None
    cfg = Path(path) / "scheduler" / "scheduler_config.json"
    if Path(path).is_file() or not cfg.is_file():
        from . import families

        family = families.for_file(Path(path)) if Path(path).is_file() else families.by_name("sd1")
        return name, dict(family.default_scheduler)  # a single file brings no scheduler: its family's
    return name, json.loads(cfg.read_text())


def scheduler_rows(scheduler_config: dict) -> list[dict]:
    from schedulers import registry

    model_class = scheduler_config.get("_class_name")
    compatible: set[str] = set()
    if model_class:
        try:
            compatible = set(registry.compatible_names(registry.load_class(model_class)))
        except (registry.MissingDependencyError, AttributeError):
            compatible = set()
    rows = []
    for name, e in registry.REGISTRY.items():
        row: dict[str, Any] = {"name": name, "label": e.label, "class": e.class_name,
                               "stochastic": e.stochastic, "compatible": name in compatible,
                               "fits": e.fits(scheduler_config)}
        try:
            row.update(accepts_sigmas=e.accepts_sigmas, sigma_spacings=list(e.sigma_spacings),
                       timestep_spacing=e.supports_timestep_spacing, available=True)
        except registry.MissingDependencyError as exc:
            row.update(accepts_sigmas=False, sigma_spacings=[], timestep_spacing=False, available=False,
                       missing=str(exc))
        rows.append(row)
    return rows


def run(args: Any) -> int:
    try:
        model, config = _model_scheduler_config(args.model)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = scheduler_rows(config)
    if args.json:
        print(json.dumps({"model": model, "model_scheduler": config.get("_class_name"), "schedulers": rows},
                         indent=2))
        return 0
    yes = lambda b: "yes" if b else "-"  # noqa: E731
    head = ("name", "label", "class", "stochastic", "custom sigmas", "spacings", "compatible", "fits")
    table = [head] + [(r["name"], r["label"], r["class"], yes(r["stochastic"]), yes(r["accepts_sigmas"]),
                       ",".join(r["sigma_spacings"]) or "-", yes(r["compatible"]), yes(r["fits"])) for r in rows]
    widths = [max(len(str(t[i])) for t in table) for i in range(len(head))]
    print(f"model {model}: scheduler {config.get('_class_name')}")
    for i, t in enumerate(table):
        print("  ".join(str(c).ljust(w) for c, w in zip(t, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    missing = [r for r in rows if not r["available"]]
    for r in missing:
        print(f"note: {r['missing']}")
    return 0
