"""What the commands share: exit codes, usage errors, ``NODE_ID.INPUT=VALUE`` assignments (``run/validate
--set``, ``batch --set/--sweep`` and params files) and reading a workflow file in either format.

An assigned value is typed by the node's declaration: an input declared as text (STRING, or a choice list)
takes VALUE as written, so ``--set 2.text=42`` is the prompt "42" (``2.text='"42"'`` too: a JSON string
literal is decoded); any other input takes VALUE as JSON when it
parses (``3.seed=42`` is the number 42, ``3.cfg=7.5`` a float), else as a string. The declarations come from
the local node registry, or from a server's ``/object_info`` for ``run --server``; a node neither knows
gets JSON-or-string.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
TEXT_TYPES = ("STRING", "COMBO")

# A NodeRegistry, a server's /object_info answer, or None (nothing known: JSON-or-string everywhere)
Declarations = Any


class UsageError(ValueError):
    """Bad command-line input: printed without a traceback, exit 2."""


def split_target(key: str, where: str) -> tuple[str, str]:
    """``NODE_ID.INPUT`` -> (node id, input name)."""
    node_id, dot, name = key.strip().rpartition(".")
    if not dot or not node_id or not name:
        raise UsageError(f"{where}: {key.strip()!r} is not NODE_ID.INPUT (e.g. 3.seed)")
    return node_id, name


def _declared_inputs(nodes: Declarations, class_type: Any) -> dict[str, str] | None:
    """{input name: declared type} of a node class (hidden inputs left out), or None when it is not known."""
    if nodes is None or not isinstance(class_type, str):
        return None
    if isinstance(nodes, Mapping):  # /object_info
        entry = nodes.get(class_type)
        if not isinstance(entry, dict):
            return None
        out: dict[str, str] = {}
        for section in ("required", "optional"):
            for name, decl in ((entry.get("input") or {}).get(section) or {}).items():
                first = decl[0] if isinstance(decl, list | tuple) and decl else decl
                out[name] = "COMBO" if isinstance(first, list | tuple) else str(first)
        return out
    cls = nodes.get(class_type)
    if cls is None:
        return None
    return {name: spec.io_type for name, spec in cls.input_specs().items() if not spec.hidden}


def check_target(document: dict, nodes: Declarations, key: str, where: str) -> str | None:
    """Refuse a key naming a node or input the workflow does not have; the input's declared type if known."""
    node_id, name = split_target(key, where)
    node = document.get(node_id)
    if not isinstance(node, dict):
        known = ", ".join(sorted(document, key=_id_key)[:30])
        raise UsageError(f"{where}: the workflow has no node {node_id!r} (nodes: {known})")
    declared = _declared_inputs(nodes, node.get("class_type"))
    if declared is None:
        return None  # validation reports the unknown class itself
    if name not in declared:
        raise UsageError(f"{where}: node {node_id} ({node.get('class_type')}) has no input {name!r} "
                         f"(inputs: {', '.join(declared)})")
    return declared[name]


def parse_value(raw: str, io_type: str | None) -> Any:
    """Text inputs take the raw string (a JSON string literal, ``"..."``, decoded); any other value is JSON
    when it parses, else the string."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if io_type in TEXT_TYPES and not isinstance(value, str):
        return raw
    return value


def parse_assignment(text: str, document: dict, nodes: Declarations,
                     option: str = "--set") -> tuple[str, str, Any]:
    """``NODE_ID.INPUT=VALUE`` -> (node id, input, value typed by the declaration)."""
    where = f"{option} {text!r}"
    key, sep, raw = text.partition("=")
    if not sep:
        raise UsageError(f"{where}: expected NODE_ID.INPUT=VALUE, e.g. 3.seed=42")
    node_id, name = split_target(key, where)
    return node_id, name, parse_value(raw, check_target(document, nodes, key, where))


def apply_assignments(document: dict, assignments: list[str], nodes: Declarations) -> None:
    for text in assignments:
        node_id, name, value = parse_assignment(text, document, nodes)
        document[node_id].setdefault("inputs", {})[name] = value


def load_document(path: str, nodes: Declarations) -> dict:
    """Read a workflow file; an editor-saved one (UI format) is converted with the node declarations."""
    from .ui_format import is_ui_format, ui_to_api
    from .workflow import load_workflow_document

    doc = load_workflow_document(path)
    return ui_to_api(doc, nodes) if is_ui_format(doc) else doc


def _id_key(nid: str) -> tuple:
    return (0, int(nid), "") if nid.isdigit() else (1, 0, nid)
