"""What the commands share: exit codes, usage errors, ``NODE_ID.INPUT=VALUE`` assignments (``run/validate
--set``, ``batch --set``) and reading a workflow file in either format."""

from __future__ import annotations

import json
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: printed without a traceback, exit 2."""


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """``NODE_ID.INPUT=VALUE`` -> (node id, input, value); VALUE is JSON when it parses, else a string."""
    key, sep, raw = text.partition("=")
    node_id, dot, name = key.rpartition(".")
    if not sep or not dot or not node_id or not name:
        raise UsageError(f"--set {text!r}: expected NODE_ID.INPUT=VALUE, e.g. 3.seed=42")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return node_id, name, value


def apply_assignments(document: dict, assignments: list[str]) -> None:
    for text in assignments:
        node_id, name, value = parse_assignment(text)
        node = document.get(node_id)
        if not isinstance(node, dict):
            raise UsageError(f"--set {text!r}: the workflow has no node {node_id!r}")
        node.setdefault("inputs", {})[name] = value
