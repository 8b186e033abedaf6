"""The workflow format: ComfyUI's API format, read into plain dicts (validation.py checks them).

``{"<id>": {"class_type": ..., "inputs": {name: literal | [source_id, output_index]}, "_meta": {...}}}``,
also accepted wrapped as ``{"prompt": {...}}`` the way clients POST it. Unknown keys are kept, so a file
loaded and saved again is unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MAX_WORKFLOW_BYTES = 32 * 1024 * 1024


class WorkflowFormatError(ValueError):
    """The document is not a workflow at all (not JSON, too large, not an object of nodes)."""


def link_parts(value: list) -> tuple[str, int] | None:
    """``[source_id, output_index]`` -> (id, index), or None when malformed (wrong length, index not an int)."""
    if len(value) != 2:
        return None
    src, idx = value
    if isinstance(src, bool) or not isinstance(src, str | int):
        return None
    if isinstance(idx, bool) or not isinstance(idx, int):
        return None
    return str(src), idx


def unwrap(document: Any) -> Any:
    """Accept both a bare API-format workflow and the ``{"prompt": {...}}`` envelope clients POST."""
    if isinstance(document, dict) and isinstance(document.get("prompt"), dict) and "class_type" not in document:
        return document["prompt"]
    return document


def read_json_file(path: str | os.PathLike, max_bytes: int = MAX_WORKFLOW_BYTES) -> Any:
    """Read a JSON file, refusing oversized files before reading them into memory."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise WorkflowFormatError(f"cannot read {p}: {exc.strerror or exc}") from None
    if size > max_bytes:
        raise WorkflowFormatError(
            f"{p} is {size / 2**20:.1f} MiB; workflows larger than {max_bytes / 2**20:.0f} MiB are refused"
        )
    from . import strict_json

    try:
        with p.open("rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise WorkflowFormatError(f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        return strict_json.loads(raw, str(p))
    except strict_json.StrictJSONError as exc:
        raise WorkflowFormatError(str(exc)) from None


def load_workflow_document(path: str | os.PathLike) -> dict[str, Any]:
    """Read a workflow file (API format, possibly wrapped) into a plain dict, not yet validated."""
    doc = unwrap(read_json_file(path))
    if not isinstance(doc, dict):
        raise WorkflowFormatError(f"{path}: a workflow is a JSON object of nodes, got {type(doc).__name__}")
    return doc
