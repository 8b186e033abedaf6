"""Editor files with subgraphs (definitions.subgraphs) expanded for headless runs, as the editor flattens them:
inner nodes get ids prefixed by their instances' ids (``56:52``), links cross subgraph inputs and outputs, and
an input no outer link feeds takes the value of the widget the instance shows. Real inputs: ComfyUI's official
templates (comfyui-workflow-templates-json, pinned), a third of which use subgraphs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from graph_runtime import Executor, default_registry
from graph_runtime.ui_format import MODE_BYPASS, MODE_MUTED, VIRTUAL_TYPES, UIFormatError, ui_to_api


@pytest.fixture(scope="module")
def registry():
    return default_registry(with_entry_points=False)


@pytest.fixture(scope="module")
def comfy_registry():
    from nodes_support import make_registry

    return make_registry()


def template(name: str) -> dict:
    pkg = pytest.importorskip("comfyui_workflow_templates_json")
    return json.loads((Path(pkg.__file__).parent / "templates" / name).read_text(encoding="utf-8"))


def subgraph_templates() -> list[tuple[str, dict]]:
    pkg = pytest.importorskip("comfyui_workflow_templates_json")
    found = []
    for path in sorted((Path(pkg.__file__).parent / "templates").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and (doc.get("definitions") or {}).get("subgraphs"):
            found.append((path.name, doc))
    return found


# -- a small graph written the way the editor saves one -------------------------------------------------------

def link(lid, a, a_slot, b, b_slot, typ="INT"):
    return {"id": lid, "origin_id": a, "origin_slot": a_slot, "target_id": b, "target_slot": b_slot, "type": typ}


def widget_input(name, lnk=None):
    return {"name": name, "type": "INT", "widget": {"name": name}, "link": lnk}


DOUBLE = {  # y = x + x
    "id": "sg-double", "name": "Double",
    "inputs": [{"id": "i-x", "name": "x", "type": "INT", "linkIds": [51, 52]}],
    "outputs": [{"id": "o-y", "name": "y", "type": "INT", "linkIds": [53]}],
    "nodes": [{"id": 5, "type": "IntMath", "mode": 0,
               "inputs": [widget_input("a", 51), widget_input("b", 52)],
               "outputs": [{"name": "INT", "type": "INT", "links": [53]}], "widgets_values": [0, 0, "add"]}],
    "links": [link(51, -10, 0, 5, 0), link(52, -10, 0, 5, 1), link(53, 5, 0, -20, 0)],
}

AREA = {  # area = double(a * b), through a bypassed node
    "id": "sg-area", "name": "Area",
    "inputs": [{"id": "i-a", "name": "a", "type": "INT", "linkIds": [31]},
               {"id": "i-b", "name": "b", "type": "INT", "linkIds": [32]}],
    "outputs": [{"id": "o-area", "name": "area", "type": "INT", "linkIds": [35]}],
    "nodes": [
        {"id": 3, "type": "IntMath", "mode": 0, "inputs": [widget_input("a", 31), widget_input("b", 32)],
         "outputs": [{"name": "INT", "type": "INT", "links": [33]}], "widgets_values": [0, 5, "multiply"]},
        {"id": 4, "type": "sg-double", "mode": 0, "inputs": [{"name": "x", "type": "INT", "link": 33}],
         "outputs": [{"name": "y", "type": "INT", "links": [34]}], "widgets_values": []},
        {"id": 6, "type": "IntMath", "mode": MODE_BYPASS, "inputs": [widget_input("a", 34)],
         "outputs": [{"name": "INT", "type": "INT", "links": [35]}], "widgets_values": [0, 1000, "add"]},
    ],
    "links": [link(31, -10, 0, 3, 0), link(32, -10, 1, 3, 1), link(33, 3, 0, 4, 0), link(34, 4, 0, 6, 0),
              link(35, 6, 0, -20, 0)],
}


def area_doc(instance_widgets=(0, 7), proxy=None, mode=0):
    instance = {"id": 10, "type": "sg-area", "mode": mode,
                "inputs": [{"name": "a", "type": "INT", "link": 1}, widget_input("b")],
                "outputs": [{"name": "area", "type": "INT", "links": [2]}],
                "properties": {"proxyWidgets": proxy} if proxy else {}, "widgets_values": list(instance_widgets)}
    return {"nodes": [
        {"id": 1, "type": "PrimitiveInt", "mode": 0, "inputs": [], "outputs": [{"name": "INT", "type": "INT",
                                                                                "links": [1]}], "widgets_values": [6]},
        instance,
        {"id": 20, "type": "ShowValue", "mode": 0, "inputs": [{"name": "value", "type": "*", "link": 2}],
         "outputs": [], "widgets_values": []},
    ], "links": [[1, 1, 0, 10, 0, "INT"], [2, 10, 0, 20, 0, "INT"]],
        "definitions": {"subgraphs": [copy.deepcopy(AREA), copy.deepcopy(DOUBLE)]}, "version": 0.4}


def shown(registry, api):
    result = Executor(registry).run(api)
    assert result.ok, result.error
    return result.outputs["20"]["text"]


def test_nested_subgraphs_expand_to_their_inner_nodes_and_run(registry):
    api = ui_to_api(area_doc(), registry)
    assert {k: v["class_type"] for k, v in api.items()} == {
        "1": "PrimitiveInt", "10:3": "IntMath", "10:4:5": "IntMath", "20": "ShowValue"}  # bypassed 6 is gone
    # the instance saves one value per subgraph input that feeds a widget (a's is unused: a link feeds it)
    assert api["10:3"]["inputs"] == {"a": ["1", 0], "b": 7, "op": "multiply"}
    assert api["10:4:5"]["inputs"] == {"a": ["10:3", 0], "b": ["10:3", 0], "op": "add"}
    assert api["20"]["inputs"] == {"value": ["10:4:5", 0]}
    assert shown(registry, api) == [str(6 * 7 * 2)]


def test_an_unfed_subgraph_input_without_saved_widgets_keeps_the_inner_widget(registry):
    # the newer editor saves no widgets_values on the instance; its widgets show the inner ones (proxyWidgets)
    api = ui_to_api(area_doc((), proxy=[["3", "b"]]), registry)
    assert api["10:3"]["inputs"]["b"] == 5 and shown(registry, api) == [str(6 * 5 * 2)]
    assert ui_to_api(area_doc(()), registry)["10:3"]["inputs"]["b"] == 5


def shared_widget_doc(saved=None):
    """Area's nested Double gets no link for x, which feeds two inner widgets; the instance shows one of them,
    or saves its own value for x (``saved``)."""
    doc = area_doc(())
    area, double = doc["definitions"]["subgraphs"]
    double["nodes"][0]["widgets_values"] = [3, 4, "add"]
    area["nodes"][1]["inputs"][0]["link"] = None
    area["links"] = [lk for lk in area["links"] if lk["id"] != 33]
    area["nodes"][0]["outputs"][0]["links"] = []
    if saved is None:
        area["nodes"][1]["properties"] = {"proxyWidgets": [["5", "b"]]}
    else:
        area["nodes"][1]["widgets_values"] = [saved]
    return doc


def test_a_subgraph_input_feeding_two_inner_widgets(registry):
    # the editor's graphToPrompt (tests/test_web_frontend_subgraphs.py): shown widgets keep their own values,
    # a value saved on the instance goes to every widget the input feeds
    assert ui_to_api(shared_widget_doc(), registry)["10:4:5"]["inputs"] == {"a": 3, "b": 4, "op": "add"}
    assert ui_to_api(shared_widget_doc(9), registry)["10:4:5"]["inputs"] == {"a": 9, "b": 9, "op": "add"}


def test_muted_and_bypassed_subgraph_instances(registry):
    api = ui_to_api(area_doc(mode=MODE_MUTED), registry)
    assert set(api) == {"1", "20"} and "value" not in api["20"]["inputs"]
    api = ui_to_api(area_doc(mode=MODE_BYPASS), registry)
    assert set(api) == {"1", "20"} and api["20"]["inputs"] == {"value": ["1", 0]}
    assert shown(registry, api) == ["6"]


def test_a_subgraph_used_twice_gets_distinct_ids(registry):
    doc = area_doc()
    second = copy.deepcopy(doc["nodes"][1])
    second["id"], second["inputs"][0]["link"], second["outputs"][0]["links"] = 11, 2, [3]
    doc["nodes"].insert(2, second)
    doc["nodes"][3]["inputs"][0]["link"] = 3
    doc["links"] = [[1, 1, 0, 10, 0, "INT"], [2, 10, 0, 11, 0, "INT"], [3, 11, 0, 20, 0, "INT"]]
    api = ui_to_api(doc, registry)
    assert api["11:3"]["inputs"]["a"] == ["10:4:5", 0] and api["20"]["inputs"] == {"value": ["11:4:5", 0]}
    assert shown(registry, api) == [str(6 * 7 * 2 * 7 * 2)]


def test_broken_subgraphs_are_named():
    reg = default_registry(with_entry_points=False)
    doc = area_doc()
    doc["definitions"]["subgraphs"][0]["links"][2]["origin_id"] = 99  # 3 -> 4 now comes from nowhere
    with pytest.raises(UIFormatError, match=r"subgraph 'Area' \(node 10\).*node 10:99"):
        ui_to_api(doc, reg)
    doc = area_doc()
    doc["links"][1] = [2, 10, 3, 20, 0, "INT"]  # the instance has no output 3
    with pytest.raises(UIFormatError, match=r"output 3 of subgraph node 10 .*subgraph 'Area'"):
        ui_to_api(doc, reg)
    doc = area_doc()
    doc["definitions"]["subgraphs"][0]["links"][0]["origin_slot"] = 5  # no subgraph input 5
    with pytest.raises(UIFormatError, match=r"subgraph 'Area'.*subgraph input 5"):
        ui_to_api(doc, reg)
    doc = area_doc()
    double = doc["definitions"]["subgraphs"][1]
    double["nodes"].append({"id": 7, "type": "sg-double", "mode": 0, "inputs": [], "outputs": []})
    with pytest.raises(UIFormatError, match="nested more than"):
        ui_to_api(doc, reg)
    doc = area_doc()
    doc["definitions"]["subgraphs"][1]["nodes"][0]["widgets_values"] = "x"
    with pytest.raises(UIFormatError, match=r"subgraph 'Double' \(node 10:4\): node 5 \(IntMath\)"):
        ui_to_api(doc, reg)


def test_an_unknown_node_type_is_converted_and_only_matters_where_needed(registry):
    doc = area_doc()
    doc["nodes"].append({"id": 30, "type": "NotInstalledHere", "mode": 0,
                         "inputs": [widget_input("strength")], "outputs": [], "widgets_values": [3]})
    api = ui_to_api(doc, registry)
    assert api["30"] == {"class_type": "NotInstalledHere", "inputs": {"strength": 3},
                         "_meta": {"title": "NotInstalledHere"}}
    assert shown(registry, api) == [str(6 * 7 * 2)]  # a spare node: not needed, no harm
    doc["nodes"][2]["inputs"][0]["link"] = 9
    doc["links"].append([9, 30, 0, 20, 0, "INT"])
    doc["nodes"][3]["outputs"] = [{"name": "INT", "type": "INT", "links": [9]}]
    result = Executor(registry).validate(ui_to_api(doc, registry))
    assert [e["type"] for e in result.node_errors["30"]["errors"]] == ["missing_node_type"]


# -- ComfyUI's own templates ----------------------------------------------------------------------------------

def test_flux_template_expands_as_the_editor_does(comfy_registry):
    api = ui_to_api(template("flux_dev_checkpoint_example.json"), comfy_registry)
    assert set(api) == {"9", *(f"56:{n}" for n in range(47, 55))}
    assert api["9"]["inputs"] == {"filename_prefix": "Flux.1_Dev", "images": ["56:53", 0]}
    assert api["56:52"]["inputs"] == {"seed": 53943644181156, "steps": 20, "cfg": 1, "sampler_name": "euler",
                                      "scheduler": "simple", "denoise": 1, "model": ["56:48", 0],
                                      "positive": ["56:51", 0], "negative": ["56:54", 0], "latent_image": ["56:50", 0]}
    assert api["56:50"]["inputs"] == {"width": 1024, "height": 1024, "batch_size": 1}
    assert api["56:51"]["inputs"]["clip"] == ["56:49", 0]
    assert api["56:51"]["inputs"]["text"].startswith("Beautiful photography of a gorgeous-haired female artist")
    assert api["56:49"]["inputs"] == {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors",
                                      "type": "flux", "device": "default"}
    # links and types check out; only the model files (not on this machine) are refused
    result = Executor(comfy_registry).validate(api)
    kinds = {(nid, e["type"]) for nid, entry in result.node_errors.items() for e in entry["errors"]}
    assert kinds == {("56:47", "value_not_in_list"), ("56:48", "value_not_in_list"),
                     ("56:49", "value_not_in_list")}, result.messages()


def test_a_template_whose_instance_saves_its_widgets(comfy_registry):
    # 3d_hunyuan3d-v2.1: the instance's widgets_values hold its nine promoted inputs, in the subgraph's order
    api = ui_to_api(template("3d_hunyuan3d-v2.1.json"), comfy_registry)
    sampler = api["19:7"]["inputs"]
    assert {k: sampler[k] for k in ("steps", "cfg", "sampler_name", "scheduler")} == {
        "steps": 30, "cfg": 5, "sampler_name": "euler", "scheduler": "normal"}
    assert api["19:13"]["inputs"]["image"] == ["2", 0]  # an outer link into the subgraph
    assert api["19:9"]["inputs"] == {"algorithm": "surface net", "threshold": 0.6, "voxel": ["19:8", 0]}
    assert api["10"]["inputs"] == {"mesh": ["19:9", 0]}  # a subgraph output to an outer node


def test_a_template_with_a_subgraph_inside_a_subgraph(comfy_registry):
    api = ui_to_api(template("image_netayume_lumina_t2i.json"), comfy_registry)
    assert api["9"]["inputs"]["images"] == ["48:36", 0]
    assert api["48:33"]["inputs"]["negative"] == ["48:35:43", 0]
    assert api["48:35:43"]["inputs"] == {"text": ["48:35:40", 0], "clip": ["48:34", 1]}  # clip enters twice
    assert api["48:35:40"]["inputs"] == {"string_a": ["48:35:41", 0], "string_b": ["48:35:42", 0], "delimiter": ""}


def _leaf_ids(graph: dict, definitions: dict, prefix: str = "") -> set[str]:
    """The ids the editor gives the nodes that run: active, not editor-only, inside every active instance."""
    ids = set()
    for node in graph["nodes"]:
        if node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS) or node["type"] in VIRTUAL_TYPES:
            continue
        nid = f"{prefix}{node['id']}"
        if node["type"] in definitions:
            ids |= _leaf_ids(definitions[node["type"]], definitions, nid + ":")
        else:
            ids.add(nid)
    return ids


def test_every_subgraph_template_expands_with_links_inside_the_prompt(comfy_registry):
    docs = subgraph_templates()
    assert len(docs) >= 200  # of 660 files in 0.1.123, 214 use subgraphs (16 nest them)
    nested = 0
    for name, doc in docs:
        definitions = {s["id"]: s for s in doc["definitions"]["subgraphs"]}
        api = ui_to_api(doc, comfy_registry)
        assert set(api) == _leaf_ids(doc, definitions), name
        nested += any(nid.count(":") > 1 for nid in api)
        for nid, entry in api.items():
            assert entry["class_type"] not in definitions, (name, nid)
            for value in entry["inputs"].values():
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                    assert value[0] in api, (name, nid, value)
    assert nested >= 10
