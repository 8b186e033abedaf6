"""Lazy inputs: a node evaluates only the branches it asks for (ComfyUI's check_lazy_status), with the
Merkle cache and the run's bookkeeping kept right; ComfySwitchNode is the switch ComfyUI has."""

from __future__ import annotations

import time
from typing import Any

import pytest
from engine_helpers import CALLS, engine_registry

from graph_runtime import Executor, Link, Node, NodeInputs, Output, Widget, WorkflowValidationError
from nodes import logic


class FirstPositive(Node):
    """Returns a if it is positive, else b: asks for a first, and for b only when a is not enough."""

    class Inputs(NodeInputs):
        a: Any = Link("INT", lazy=True)
        b: Any = Link("INT", lazy=True)

    OUTPUTS = (Output("INT", "x"),)

    def check_lazy_status(self, inputs, ctx):
        CALLS[("asked", ctx.node_id)] += 1
        if inputs.a is None:
            return ["a"]
        return [] if inputs.a > 0 else ["b"]

    def execute(self, inputs, ctx):
        return (inputs.a if inputs.a > 0 else inputs.b,)


class SumAll(Node):
    """Declares lazy inputs without a check_lazy_status of its own: every one is needed."""

    class Inputs(NodeInputs):
        a: Any = Link("INT", lazy=True)
        b: int = Widget(0, lazy=True)

    OUTPUTS = (Output("INT", "x"),)

    def execute(self, inputs, ctx):
        return (inputs.a + inputs.b,)


class TakeA(Node):
    """Names the one input it needs as a bare string, not a list."""

    class Inputs(NodeInputs):
        a: Any = Link("INT", lazy=True)
        b: Any = Link("INT", lazy=True)

    OUTPUTS = (Output("INT", "x"),)

    def check_lazy_status(self, inputs, ctx):
        return "a"

    def execute(self, inputs, ctx):
        return (inputs.a if inputs.b is None else -1,)


REG = engine_registry()
REG.register_all([*logic.NODES, FirstPositive, SumAll, TakeA])


@pytest.fixture(autouse=True)
def reset_calls():
    CALLS.clear()


def ran():
    return sorted(nid for (kind, nid), n in CALLS.items() if kind in ("CountingAdd", "Fails") for _ in range(n))


def add(x, n=1):
    return {"class_type": "CountingAdd", "inputs": {"x": x, "add": n}}


def switch_doc(switch):
    return {
        "src": add(0, 1),
        "t": add(["src", 0], 10),
        "f": add(["src", 0], 100),
        "f2": add(["f", 0], 1000),
        "b": {"class_type": "PrimitiveBoolean", "inputs": {"value": switch}},
        "sw": {"class_type": "ComfySwitchNode", "inputs": {"switch": ["b", 0], "on_true": ["t", 0],
                                                             "on_false": ["f2", 0]}},
        "out": {"class_type": "Collect", "inputs": {"value": ["sw", 0]}},
    }


def test_switch_runs_only_the_branch_it_takes():
    ex = Executor(REG, cache="none")
    res = ex.run(switch_doc(True))
    assert res.outputs["out"] == {"value": [11]}
    assert ran() == ["src", "t"]
    assert "f" not in res.values and "f2" not in res.values
    CALLS.clear()
    res = ex.run(switch_doc(False))
    assert res.outputs["out"] == {"value": [1101]}
    assert ran() == ["f", "f2", "src"]
    assert res.executed.index("f") < res.executed.index("f2") < res.executed.index("sw")


def test_the_branch_not_taken_may_fail_when_run():
    doc = switch_doc(True)
    doc["f"] = {"class_type": "Fails", "inputs": {"x": 1, "fail": True}}
    res = Executor(REG).run(doc)
    assert res.ok and res.outputs["out"] == {"value": [11]}
    assert CALLS[("Fails", "f")] == 0
    doc["b"]["inputs"]["value"] = False
    res = Executor(REG).run(doc)
    assert res.status == "error" and res.error["node_id"] == "f"


def test_validation_still_covers_the_branch_not_taken():
    # ComfyUI validates every node an output links to, lazily or not; so does this runtime
    doc = switch_doc(True)
    doc["f"]["inputs"]["add"] = "many"
    with pytest.raises(WorkflowValidationError) as err:
        Executor(REG).run(doc)
    assert set(err.value.result.node_errors) == {"f"}


def test_cache_keys_cover_both_branches_and_each_branch_stays_cached():
    ex = Executor(REG)
    ex.run(switch_doc(True))
    CALLS.clear()
    res = ex.run(switch_doc(False))
    assert ran() == ["f", "f2"] and res.outputs["out"] == {"value": [1101]}  # src came from the cache
    CALLS.clear()
    res = ex.run(switch_doc(True))  # t is still cached: the last run's prompt held it
    assert ran() == [] and res.outputs["out"] == {"value": [11]}
    assert "sw" in res.executed and "t" in res.cached
    CALLS.clear()
    doc = switch_doc(True)
    doc["f2"]["inputs"]["add"] = 5  # the branch not taken changed: the switch's key changes with it ...
    res = ex.run(doc)
    assert "sw" in res.executed and ran() == []  # ... but that branch still does not run


def test_a_node_asks_again_after_each_answer():
    doc = {"one": add(-5, 1), "two": add(1, 1),
           "fp": {"class_type": "FirstPositive", "inputs": {"a": ["one", 0], "b": ["two", 0]}},
           "out": {"class_type": "Collect", "inputs": {"value": ["fp", 0]}}}
    res = Executor(REG).run(doc)
    assert res.outputs["out"] == {"value": [2]} and ran() == ["one", "two"]
    assert CALLS[("asked", "fp")] == 2  # nothing known, then a known (with both known there is nothing to ask)
    CALLS.clear()
    doc["one"]["inputs"]["x"] = 5
    res = Executor(REG).run(doc)
    assert res.outputs["out"] == {"value": [6]} and ran() == ["one"]


def test_lazy_inputs_are_all_needed_without_a_check_of_the_nodes_own():
    doc = {"one": add(1, 1), "two": add(2, 1),
           "s": {"class_type": "SumAll", "inputs": {"a": ["one", 0], "b": ["two", 0]}},
           "out": {"class_type": "Collect", "inputs": {"value": ["s", 0]}}}
    assert Executor(REG).run(doc).outputs["out"] == {"value": [5]}


def test_one_name_as_a_string_is_one_name():
    doc = {"one": add(1, 1), "two": add(2, 1),
           "t": {"class_type": "TakeA", "inputs": {"a": ["one", 0], "b": ["two", 0]}},
           "out": {"class_type": "Collect", "inputs": {"value": ["t", 0]}}}
    assert Executor(REG).run(doc).outputs["out"] == {"value": [2]} and ran() == ["one"]


def test_object_info_marks_lazy_inputs():
    info = REG.get("ComfySwitchNode").describe()
    assert info["input"]["required"]["on_false"] == ["*", {"lazy": True}]
    assert info["input"]["required"]["on_true"] == ["*", {"lazy": True}]
    assert info["input"]["required"]["switch"] == ["BOOLEAN"]
    assert info["input_order"]["required"] == ["switch", "on_false", "on_true"]
    assert info["output"] == ["*"] and info["output_name"] == ["output"]
    assert info["display_name"] == "Switch" and info["category"] == "logic"
    assert REG.get("SumAll").describe()["input"]["required"]["b"][1] == {"default": 0, "lazy": True,
                                                                         "min": -(2**63), "max": 2**63 - 1}
    assert "lazy" not in REG.get("CountingAdd").describe()["input"]["required"]["x"][1]


def test_a_long_chain_of_switches_stays_linear():
    n = 3000
    doc: dict[str, Any] = {"v": add(0, 1), "b": {"class_type": "PrimitiveBoolean", "inputs": {"value": True}}}
    prev = "v"
    for i in range(n):  # each switch takes the chain, and leaves a spare node untaken
        doc[f"x{i}"] = add(i, 1)
        doc[f"s{i}"] = {"class_type": "ComfySwitchNode",
                        "inputs": {"switch": ["b", 0], "on_true": [prev, 0], "on_false": [f"x{i}", 0]}}
        prev = f"s{i}"
    doc["out"] = {"class_type": "Collect", "inputs": {"value": [prev, 0]}}
    started = time.perf_counter()
    res = Executor(REG).run(doc)
    elapsed = time.perf_counter() - started
    assert res.outputs["out"] == {"value": [1]} and ran() == ["v"]
    assert len(res.executed) == n + 3
    assert elapsed < 20, elapsed
