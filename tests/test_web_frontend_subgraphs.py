"""The editor (ComfyUI's frontend, in Chromium) and our headless conversion flatten subgraphs alike: on
ComfyUI's official templates with subgraphs whose every node type is ours, the editor's own graphToPrompt and
ui_to_api give the same prompt. Needs what tests/test_web_frontend.py needs (Chromium and playwright)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_web_frontend import editor, server  # noqa: F401  (the fixtures: one server, one editor page)

from graph_runtime.ui_format import ui_to_api

TEMPLATES = ["flux_dev_checkpoint_example.json", "image_kandinsky5_t2i.json", "flux1_krea_dev.json"]


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_editor_flattens_subgraphs_as_we_do(editor, server, name):  # noqa: F811
    pkg = pytest.importorskip("comfyui_workflow_templates_json")
    doc = json.loads((Path(pkg.__file__).parent / "templates" / name).read_text(encoding="utf-8"))
    editor.page.evaluate("async (graph) => { await window.app.loadGraphData(graph); }", doc)
    theirs = editor.page.evaluate("async () => (await window.app.graphToPrompt()).output")
    ours = ui_to_api(doc, server.state.registry)
    assert any(":" in nid for nid in ours)  # inner nodes, named by their instance
    assert {k: v["class_type"] for k, v in ours.items()} == {k: v["class_type"] for k, v in theirs.items()}
    assert {k: v["inputs"] for k, v in ours.items()} == {k: v["inputs"] for k, v in theirs.items()}


@pytest.mark.parametrize("variant", ["saved widgets", "shown widgets", "bypassed", "shared shown widget",
                                     "shared saved widget"])
def test_the_editor_agrees_on_nested_subgraphs_widgets_and_bypass(editor, server, variant):  # noqa: F811
    from test_ui_subgraphs import area_doc, shared_widget_doc

    doc = {"saved widgets": lambda: area_doc(),
           "shown widgets": lambda: area_doc((), proxy=[["3", "b"]]),
           "bypassed": lambda: area_doc(mode=4), "shared shown widget": shared_widget_doc,
           "shared saved widget": lambda: shared_widget_doc(9)}[variant]()
    for graph in [doc, *doc["definitions"]["subgraphs"]]:
        for node in graph["nodes"]:
            node.setdefault("pos", [0, 0])
            node.setdefault("size", [200, 100])
    for sub in doc["definitions"]["subgraphs"]:
        sub.update({"version": 1, "state": {"lastGroupId": 0, "lastNodeId": 20, "lastLinkId": 60,
                                            "lastRerouteId": 0}, "revision": 0, "config": {},
                    "inputNode": {"id": -10, "bounding": [0, 0, 120, 60]},
                    "outputNode": {"id": -20, "bounding": [600, 0, 120, 60]}, "widgets": [], "groups": []})
    editor.page.evaluate("async (graph) => { await window.app.loadGraphData(graph); }", doc)
    theirs = editor.page.evaluate("async () => (await window.app.graphToPrompt()).output")
    ours = ui_to_api(doc, server.state.registry)
    assert {k: v["inputs"] for k, v in ours.items()} == {k: v["inputs"] for k, v in theirs.items()}
