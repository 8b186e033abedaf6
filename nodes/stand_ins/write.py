"""Writing a :class:`~.placement.Plan`: one tiny pipeline per family, each file from it, so the parts of one
family fit each other; the pipeline itself is saved under ``.stand-ins/`` of the models folder, where the
single-file loaders find their configuration (hidden from the model lists).

A file already there is replaced only when it is a stand-in itself (its metadata says so; a folder holds a
``.stand-in`` marker): real models are never overwritten.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .placement import Placement, Plan, writer_kind
from .registry import FAMILIES

CONFIG_FOLDER = ".stand-ins"
METADATA_KEY = "graph_runtime_stand_in"
FOLDER_MARKER = ".stand-in"


class NotAStandIn(ValueError):
    """A file or folder to be written already holds something else."""


def is_stand_in(path: Path) -> bool:
    if path.is_dir():
        return (path / FOLDER_MARKER).is_file()
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return METADATA_KEY in (f.metadata() or {})
    except Exception:  # not a safetensors file at all
        return False


def occupied(plan: Plan, models_dir: Path) -> list[str]:
    """Targets that exist and are no stand-ins (messages naming them and who wants them)."""
    out = []
    for p in plan.placements.values():
        target = models_dir / p.path
        if target.exists() and not is_stand_in(target):
            out.append(f"{p.refs[0].where()}: {target} exists and is no stand-in; it is left as it is")
    return out


def write(plan: Plan, models_dir: Path) -> list[tuple[Placement, Path]]:
    """Write every placement of ``plan`` under ``models_dir``; returns what was written where."""
    busy = occupied(plan, models_dir)
    if busy:
        raise NotAStandIn("; ".join(busy))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import shutil

    from .layouts import save

    written = []
    with tempfile.TemporaryDirectory(prefix="stand-ins-") as work:
        pipes = {}
        for family in plan.families:
            pipes[family] = FAMILIES[family].build(Path(work) / family)
            if pipes[family] is None:  # a family of free-standing files (upscale models): no pipeline
                continue
            config = models_dir / CONFIG_FOLDER / f"tiny-{family}"
            shutil.rmtree(config, ignore_errors=True)
            pipes[family].save_pretrained(config)
        for p in plan.placements.values():
            fam, pipe, target = FAMILIES[p.family], pipes[p.family], models_dir / p.path
            kind = writer_kind(p.part, target.name)
            if kind == "folder":
                shutil.rmtree(target, ignore_errors=True)
                pipe.save_pretrained(target)
                (target / FOLDER_MARKER).write_text(f"{p.describe()}\n", encoding="utf-8")
            else:
                if kind == "text_encoder":
                    tensors = fam.text_encoders[p.role](pipe)
                else:
                    tensors = fam.parts[kind](pipe, p.role) if p.role else fam.parts[kind](pipe)
                save(tensors, target, metadata={METADATA_KEY: f"{p.family} {kind} {p.role or ''}".strip()})
                if kind in fam.configs:
                    config = target.parent / f".stand-in-{p.family}"
                    config.mkdir(parents=True, exist_ok=True)
                    (config / "config.json").write_text(json.dumps(fam.configs[kind](pipe), default=list),
                                                        encoding="utf-8")
                    (config / FOLDER_MARKER).write_text(f"{p.describe()} config\n", encoding="utf-8")
            written.append((p, target))
    return written
