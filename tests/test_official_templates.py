"""How far ComfyUI's official local templates (PyPI comfyui-workflow-templates-json, pinned) are from running
here: the templates whose every node type is registered (subgraphs looked into; notes and reroutes are the
editor's own). A floor that rises as families and core nodes land; the missing types are listed on failure."""

import collections
import json
from pathlib import Path

import pytest
from nodes_support import make_registry

from graph_runtime.ui_format import is_ui_format

EDITOR_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
#: templates whose node types are all registered (of 309 local ones in 0.1.123); were 3 before the families
FLOOR = 10


def templates() -> list[Path]:
    pkg = pytest.importorskip("comfyui_workflow_templates_json")
    folder = Path(pkg.__file__).parent / "templates"
    return [p for p in sorted(folder.glob("*.json")) if not p.name.startswith(("api_", "index"))]


def node_types(doc: dict) -> set[str]:
    subgraphs = (doc.get("definitions") or {}).get("subgraphs") or []
    ids = {sg.get("id") for sg in subgraphs}
    found = {n.get("type") for n in doc.get("nodes", [])}
    for sg in subgraphs:
        found |= {n.get("type") for n in sg.get("nodes", [])}
    return found - ids - EDITOR_ONLY


def test_official_templates_whose_nodes_all_exist():
    known = set(make_registry())
    complete, missing = [], collections.Counter()
    for path in templates():
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(doc, dict) and is_ui_format(doc)):
            continue
        unknown = node_types(doc) - known
        missing.update(unknown)
        if not unknown:
            complete.append(path.stem)
    assert len(complete) >= FLOOR, f"{len(complete)} complete: {complete}; most missing: {missing.most_common(10)}"
    assert {"sdxl_simple_example", "sd3.5_simple_example", "image_sdxl_simple"} <= set(complete)
