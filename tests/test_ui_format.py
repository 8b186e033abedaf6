"""Editor-saved workflows (UI format) converted to the API format, and run headless."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from graph_runtime import Executor, Node, NodeInputs, Output, RuntimePaths, Widget, default_registry
from graph_runtime.ui_format import UIFormatError, ui_to_api

ROOT = Path(__file__).resolve().parents[1]
# written by hand: the arithmetic workflow as the editor saves it
UI_ARITHMETIC = ROOT / "tests" / "data" / "arithmetic.ui.json"
# saved by the editor: the txt2img workflow, as a file and as the editor's default graph
UI_TXT2IMG = (ROOT / "workflows" / "txt2img.ui.json", ROOT / "web" / "default_graph.json")


class Sampler(Node):
    """Stands in for a sampler: seed (with the editor's control value after it), steps, a combo."""

    CATEGORY = "testing"

    class Inputs(NodeInputs):
        value: int = Widget(0)
        seed: int = Widget(0, ge=0)
        steps: int = Widget(20, ge=1)
        mode: str = Widget("fast", choices=["fast", "slow"])
        note: str = Widget("", optional=True)

    OUTPUTS = (Output("INT", "INT"),)

    def execute(self, inputs, ctx):
        return (inputs.value + inputs.seed * 1000 + inputs.steps,)


@pytest.fixture(scope="module")
def registry():
    reg = default_registry(with_entry_points=False)
    reg.register(Sampler)
    return reg


def test_arithmetic_ui_file_matches_the_api_file(registry):
    api = ui_to_api(json.loads(UI_ARITHMETIC.read_text()), registry)
    expected = json.loads((ROOT / "workflows" / "arithmetic.json").read_text())
    assert {k: v["inputs"] for k, v in api.items()} == {k: v["inputs"] for k, v in expected.items()}
    assert {k: v["class_type"] for k, v in api.items()} == {k: v["class_type"] for k, v in expected.items()}
    assert api["3"]["_meta"]["title"] == "Tiles"
    result = Executor(registry, paths=RuntimePaths(base=Path("/nonexistent"))).validate(api)
    assert result.ok, result.messages()


@pytest.mark.parametrize("path", UI_TXT2IMG, ids=lambda p: p.name)
def test_txt2img_ui_files_match_the_api_file(path):
    """Same nodes, links and values as workflows/txt2img.json; the inputs that file leaves out hold their
    declared defaults (the editor saves every widget)."""
    registry = default_registry()
    api = ui_to_api(json.loads(path.read_text()), registry)
    expected = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    assert {k: v["class_type"] for k, v in api.items()} == {k: v["class_type"] for k, v in expected.items()}
    info = registry.object_info()
    for nid, want in expected.items():
        got = dict(api[nid]["inputs"])
        for name, value in want["inputs"].items():
            assert got.pop(name) == value, (nid, name)
        declared = {**info[want["class_type"]]["input"]["required"], **info[want["class_type"]]["input"]["optional"]}
        assert got == {name: declared[name][1]["default"] for name in got}, nid
        assert api[nid]["_meta"]["title"] == want.get("_meta", {}).get("title", api[nid]["_meta"]["title"])
    result = Executor(registry, paths=RuntimePaths(base=Path("/nonexistent"))).validate(api)
    assert result.ok, result.messages()


def node(nid, type_, inputs=(), outputs=(), widgets=None, mode=0, title=None):
    n = {"id": nid, "type": type_, "pos": [0, 0], "size": [200, 100], "flags": {}, "order": nid, "mode": mode,
         "inputs": list(inputs), "outputs": list(outputs), "properties": {}}
    if widgets is not None:
        n["widgets_values"] = widgets
    if title:
        n["title"] = title
    return n


def inp(name, type_, link=None, widget=False):
    d = {"name": name, "type": type_, "link": link}
    if widget:
        d["widget"] = {"name": name}
    return d


def out(type_, links):
    return {"name": type_, "type": type_, "links": links}


def doc(nodes, links):
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def test_seed_control_value_is_dropped(registry):
    d = doc([node(1, "Sampler", outputs=[out("INT", [])], widgets=[5, 42, "randomize", 30, "slow", "hi"])], [])
    assert ui_to_api(d, registry)["1"]["inputs"] == {"value": 5, "seed": 42, "steps": 30, "mode": "slow",
                                                     "note": "hi"}
    # files that saved the control as a boolean (ComfyUI's own templates) do not shift the later widgets
    d = doc([node(1, "Sampler", outputs=[out("INT", [])], widgets=[5, 42, True, 30, "slow", "hi"])], [])
    assert ui_to_api(d, registry)["1"]["inputs"] == {"value": 5, "seed": 42, "steps": 30, "mode": "slow",
                                                     "note": "hi"}
    # older files without the control value convert the same
    d = doc([node(1, "Sampler", outputs=[out("INT", [])], widgets=[5, 42, 30, "slow"])], [])
    assert ui_to_api(d, registry)["1"]["inputs"] == {"value": 5, "seed": 42, "steps": 30, "mode": "slow"}
    # widgets saved by name
    d = doc([node(1, "Sampler", outputs=[out("INT", [])], widgets={"seed": 7, "bogus": 1})], [])
    assert ui_to_api(d, registry)["1"]["inputs"] == {"seed": 7}


def chain(mid_type, mid_mode=0, mid_widgets=None):
    """PrimitiveInt(1) -> MID(2) -> ShowValue(3)."""
    mid_inputs = [inp("value", "INT", 1)] if mid_type != "PrimitiveNode" else []
    return doc([
        node(1, "PrimitiveInt", [inp("value", "INT", widget=True)], [out("INT", [1])], [11]),
        node(2, mid_type, mid_inputs, [out("INT", [2])], mid_widgets, mode=mid_mode),
        node(3, "ShowValue", [inp("value", "*", 2)], [], []),
    ], [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]])


def test_reroute_is_followed(registry):
    api = ui_to_api(chain("Reroute"), registry)
    assert set(api) == {"1", "3"} and api["3"]["inputs"]["value"] == ["1", 0]


def test_bypassed_node_passes_its_matching_input_through(registry):
    reg = registry
    from test_web_support import AnyPassthrough

    if reg.get("AnyPassthrough") is None:
        reg.register(AnyPassthrough)
    api = ui_to_api(chain("AnyPassthrough", mid_mode=4), reg)
    assert set(api) == {"1", "3"} and api["3"]["inputs"]["value"] == ["1", 0]
    api = ui_to_api(chain("AnyPassthrough", mid_mode=0), reg)
    assert api["3"]["inputs"]["value"] == ["2", 0] and api["2"]["inputs"]["value"] == ["1", 0]


def test_bypass_uses_the_validators_type_rule(registry):
    """A bypassed node passes an input through when validation would accept the link: a STRING feeds a
    COMBO input (as a primitive string feeds a choice), the same rule as validation's types_compatible."""
    d = doc([
        node(1, "ToString", [inp("value", "*")], [out("STRING", [1])]),
        node(2, "PickScheduler", [inp("name", "STRING", 1)], [out("COMBO", [2])], mode=4),
        node(3, "Sampler", [inp("mode", "COMBO", 2, widget=True)], [out("INT", [])], [5, 42, "fixed", 30, "fast"]),
    ], [[1, 1, 0, 2, 0, "STRING"], [2, 2, 0, 3, 0, "COMBO"]])
    assert ui_to_api(d, registry)["3"]["inputs"]["mode"] == ["1", 0]


def test_ui_format_is_detected_in_one_place():
    """cli, remote, batch and the server ask ui_format.is_ui_format; nobody else spells the test out."""
    spelled = [p.relative_to(ROOT).as_posix() for top in ("graph_runtime", "web", "nodes")
               for p in (ROOT / top).rglob("*.py") if '.get("nodes"), list)' in p.read_text()]
    assert spelled == ["graph_runtime/ui_format.py"]


def test_muted_node_is_left_out_and_its_consumers_lose_the_link(registry):
    from test_web_support import AnyPassthrough

    if registry.get("AnyPassthrough") is None:
        registry.register(AnyPassthrough)
    api = ui_to_api(chain("AnyPassthrough", mid_mode=2), registry)
    assert "2" not in api and "value" not in api["3"]["inputs"]
    result = Executor(registry).validate(api)
    assert not result.ok and "3" in result.node_errors  # the user is told which node lost its input


def test_primitive_node_value_becomes_a_literal(registry):
    d = doc([
        node(1, "PrimitiveNode", [], [{"name": "INT", "type": "INT", "links": [1], "widget": {"name": "seed"}}],
             [1234, "fixed"]),
        node(2, "Sampler", [inp("seed", "INT", 1, widget=True)], [out("INT", [])], [1, 0, "fixed", 20, "fast"]),
        node(3, "Note", [], [], ["a note"]),
        node(4, "MarkdownNote", [], [], ["# note"]),
    ], [[1, 1, 0, 2, 0, "INT"]])
    api = ui_to_api(d, registry)
    assert set(api) == {"2"}
    assert api["2"]["inputs"] == {"value": 1, "seed": 1234, "steps": 20, "mode": "fast"}


def test_a_node_type_not_installed_is_converted_and_validation_names_it_where_needed(registry):
    api = ui_to_api({"nodes": [{"id": 5, "type": "NoSuchNode", "mode": 0}], "links": []}, registry)
    assert api == {"5": {"class_type": "NoSuchNode", "inputs": {}, "_meta": {"title": "NoSuchNode"}}}
    result = Executor(registry).validate(api)
    assert [e["type"] for e in result.node_errors["5"]["errors"]] == ["missing_node_type"]


@pytest.mark.parametrize("bad,needle", [
    ({"nodes": [{"id": 1, "type": "ShowValue", "inputs": [{"name": "value", "type": "*", "link": 9}]}],
      "links": [[9, 77, 0, 1, 0, "INT"]]}, "node 77"),
    ({"nodes": [{"id": 3, "type": "IntMath", "widgets_values": "x"}], "links": []}, "node 3"),
    ({"nodes": [{"type": "IntMath"}], "links": []}, "malformed node"),
    ({"nodes": [], "links": [["a", 1]]}, "malformed link"),
])
def test_errors_name_the_node(registry, bad, needle):
    with pytest.raises(UIFormatError) as exc:
        ui_to_api(bad, registry)
    assert needle in str(exc.value)


def test_cli_runs_an_editor_file(tmp_path):
    env_path = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "graph_runtime", "run", str(UI_ARITHMETIC), "--output-dir",
                           str(tmp_path), "--quiet"], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": env_path, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "6 x 7 = 42 tiles" in proc.stdout
    assert (tmp_path / "tiles.txt").read_text() == "6 x 7 = 42 tiles"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nodes": [{"id": 4, "type": "Nope"}], "links": []}))
    proc = subprocess.run([sys.executable, "-m", "graph_runtime", "run", str(bad)], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": env_path, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert proc.returncode == 2 and "node 4" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_renders_the_txt2img_editor_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "graph_runtime", "run", str(UI_TXT2IMG[0]), "--set", "5.steps=4",
                           "--output-dir", str(tmp_path), "--json"], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                               "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["status"] == "success"
    (image,) = result["outputs"]["8"]["images"]
    from PIL import Image

    with Image.open(tmp_path / image["filename"]) as img:
        assert img.format == "PNG" and img.size == (64, 64)
