"""List outputs and list inputs, ComfyUI's OUTPUT_IS_LIST / INPUT_IS_LIST: a node fed a list runs once per
item (the longest list sets the count, shorter ones repeat their last item) and its outputs become lists."""

from __future__ import annotations

from typing import Any

import pytest
from engine_helpers import CALLS, engine_registry

from graph_runtime import Executor, Link, Node, NodeInputs, NodeResult, Output, Widget
from graph_runtime.limits import LIMITS


class Range(Node):
    """start, start+1, ... as a list output."""

    class Inputs(NodeInputs):
        start: int = Widget(0)
        count: int = Widget(3, ge=0)

    OUTPUTS = (Output("INT", "values", is_list=True), Output("INT", "count"))

    def execute(self, inputs, ctx):
        CALLS[("Range", ctx.node_id)] += 1
        return (list(range(inputs.start, inputs.start + inputs.count)), inputs.count)


class Items(Node):
    """Comma-separated text as a list of untyped items."""

    class Inputs(NodeInputs):
        text: str = Widget("")

    OUTPUTS = (Output("*", "items", is_list=True),)

    def execute(self, inputs, ctx):
        return ([t.strip() for t in inputs.text.split(",")],)


class Total(Node):
    """Takes whole lists: the sum of all values, times a factor."""

    INPUT_IS_LIST = True

    class Inputs(NodeInputs):
        values: int = Link("INT")
        factor: int = Widget(1)

    OUTPUTS = (Output("INT", "total"),)

    def execute(self, inputs, ctx):
        CALLS[("Total", ctx.node_id)] += 1
        assert isinstance(inputs.values, list) and isinstance(inputs.factor, list)
        return (sum(inputs.values) * inputs.factor[0],)


class NotAList(Node):
    """Declares a list output and returns a single value (a broken node)."""

    class Inputs(NodeInputs):
        pass

    OUTPUTS = (Output("INT", "x", is_list=True),)

    def execute(self, inputs, ctx):
        return (3,)


class ShowEach(Node):
    """An output node whose UI data is one text per run."""

    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        value: Any = Link("*")
        label: str = Widget("v")

    def execute(self, inputs, ctx):
        return NodeResult(ui={"text": [f"{inputs.label}={inputs.value}"]})


REG = engine_registry()
REG.register_all([Range, Items, Total, NotAList, ShowEach])


@pytest.fixture(autouse=True)
def reset_calls():
    CALLS.clear()


def add(x, n=1):
    return {"class_type": "CountingAdd", "inputs": {"x": x, "add": n}}


def test_a_node_fed_a_list_runs_once_per_item_and_its_outputs_become_lists():
    doc = {"r": {"class_type": "Range", "inputs": {"start": 10, "count": 3}},
           "a": add(["r", 0], 1),
           "s": {"class_type": "ShowEach", "inputs": {"value": ["a", 0]}}}
    res = Executor(REG).run(doc)
    assert CALLS[("CountingAdd", "a")] == 3 and CALLS[("Range", "r")] == 1
    assert res.values["r"] == ([10, 11, 12], 3) and res.values["a"] == ([11, 12, 13],)
    assert res.outputs["s"] == {"text": ["v=11", "v=12", "v=13"]}  # UI data of every run, joined


def test_the_longest_list_sets_the_count_and_shorter_ones_repeat_their_last_item():
    doc = {"r3": {"class_type": "Range", "inputs": {"start": 0, "count": 3}},
           "r2": {"class_type": "Range", "inputs": {"start": 100, "count": 2}},
           "a": {"class_type": "CountingAdd", "inputs": {"x": ["r3", 0], "add": ["r2", 0]}},
           "s": {"class_type": "ShowEach", "inputs": {"value": ["a", 0], "label": "sum"}}}
    res = Executor(REG).run(doc)
    assert res.values["a"] == ([100, 102, 103],)
    # a single value next to a list is repeated for every item, like a widget
    doc["a"]["inputs"]["add"] = ["r2", 1]
    assert Executor(REG).run(doc).values["a"] == ([2, 3, 4],)


def test_an_input_is_list_node_takes_whole_lists_once():
    doc = {"r": {"class_type": "Range", "inputs": {"start": 1, "count": 4}},
           "a": add(["r", 0], 10),
           "t": {"class_type": "Total", "inputs": {"values": ["a", 0], "factor": 2}},
           "s": {"class_type": "ShowEach", "inputs": {"value": ["t", 0]}}}
    res = Executor(REG).run(doc)
    assert CALLS[("Total", "t")] == 1
    assert res.values["t"] == (2 * (11 + 12 + 13 + 14),) and res.outputs["s"] == {"text": ["v=100"]}


def test_items_of_a_whole_list_are_checked_against_the_declared_type():
    doc = {"i": {"class_type": "Items", "inputs": {"text": "1, 2"}},
           "t": {"class_type": "Total", "inputs": {"values": ["i", 0]}},
           "s": {"class_type": "ShowEach", "inputs": {"value": ["t", 0]}}}
    res = Executor(REG).run(doc)
    assert res.status == "error" and res.error["node_id"] == "t"
    assert "input 'values'" in res.error["exception_message"] and res.error["exception_type"] == "NodeError"


def test_an_empty_list_is_refused_naming_the_input():
    doc = {"r": {"class_type": "Range", "inputs": {"count": 0}}, "a": add(["r", 0]),
           "s": {"class_type": "ShowEach", "inputs": {"value": ["a", 0]}}}
    res = Executor(REG).run(doc)
    assert res.status == "error" and res.error["node_id"] == "a"
    assert "input 'x' received an empty list" in res.error["exception_message"]
    doc["t"] = {"class_type": "Total", "inputs": {"values": ["r", 0]}}  # a whole-list node may take it
    doc["s"]["inputs"]["value"] = ["t", 0]
    assert Executor(REG).run(doc).values["t"] == (0,)


def test_a_list_output_must_be_a_list_and_is_bounded(monkeypatch):
    doc = {"n": {"class_type": "NotAList", "inputs": {}}, "s": {"class_type": "ShowEach", "inputs": {"value": ["n", 0]}}}
    res = Executor(REG).run(doc)
    assert res.status == "error" and "declared a list" in res.error["exception_message"]
    monkeypatch.setattr(LIMITS, "max_list_items", 5)
    doc = {"r": {"class_type": "Range", "inputs": {"count": 6}}, "s": {"class_type": "ShowEach", "inputs": {"value": ["r", 0]}}}
    res = Executor(REG).run(doc)
    assert res.status == "error" and "max_list_items" in res.error["exception_message"]


def test_lists_come_back_from_the_cache_whole():
    doc = {"r": {"class_type": "Range", "inputs": {"start": 5, "count": 2}}, "a": add(["r", 0]),
           "s": {"class_type": "ShowEach", "inputs": {"value": ["a", 0]}},
           "t": {"class_type": "Total", "inputs": {"values": ["a", 0]}},
           "u": {"class_type": "ShowEach", "inputs": {"value": ["t", 0], "label": "t"}}}
    ex = Executor(REG)
    ex.run(doc)
    doc["u"]["inputs"]["label"] = "total"
    CALLS.clear()
    res = ex.run(doc)
    assert CALLS[("CountingAdd", "a")] == 0 and CALLS[("Total", "t")] == 0
    assert res.values["a"] == ([6, 7],) and res.outputs["u"] == {"text": ["total=13"]}


def test_object_info_declares_list_outputs_and_list_inputs():
    assert REG.get("Range").describe()["output_is_list"] == [True, False]
    assert REG.get("Total").describe()["is_input_list"] is True
    assert REG.get("CountingAdd").describe()["is_input_list"] is False
    assert REG.get("CountingAdd").describe()["output_is_list"] == [False]


class Bools(Node):
    """A list of booleans from text such as "1,0,1"."""

    class Inputs(NodeInputs):
        text: str = Widget("1")

    OUTPUTS = (Output("BOOLEAN", "values", is_list=True),)

    def execute(self, inputs, ctx):
        return ([t.strip() == "1" for t in inputs.text.split(",")],)


def test_a_switch_fed_a_list_asks_per_item_and_runs_per_item():
    from nodes.logic import NODES

    reg = engine_registry()
    reg.register_all([Range, Bools, ShowEach, *NODES])
    doc = {"b": {"class_type": "Bools", "inputs": {"text": "1,1"}},
           "t": add(10, 1), "f": add(20, 1),
           "sw": {"class_type": "ComfySwitchNode", "inputs": {"switch": ["b", 0], "on_true": ["t", 0],
                                                              "on_false": ["f", 0]}},
           "s": {"class_type": "ShowEach", "inputs": {"value": ["sw", 0]}}}
    res = Executor(reg).run(doc)
    assert res.outputs["s"] == {"text": ["v=11", "v=11"]} and CALLS[("CountingAdd", "f")] == 0
    doc["b"]["inputs"]["text"] = "1,0,1"  # one item takes the other branch: both are evaluated, each item picks
    res = Executor(reg).run(doc)
    assert res.outputs["s"] == {"text": ["v=11", "v=21", "v=11"]} and CALLS[("CountingAdd", "f")] == 1


def test_an_interrupt_stops_between_the_items_of_a_list():
    ex = Executor(REG)
    seen = []

    def stop_after_first(event, data):
        if event == "executing" and data["node"] == "a":
            seen.append(data)
            ex.interrupt()  # while the node runs: it stops before its second item

    doc = {"r": {"class_type": "Range", "inputs": {"count": 5}},
           "a": add(["r", 0]),  # checks nothing itself: the executor stops it between items
           "s": {"class_type": "ShowEach", "inputs": {"value": ["a", 0]}}}
    res = ex.run(doc, handlers=[stop_after_first])
    assert res.status == "interrupted" and res.error["node_id"] == "a"
    assert CALLS[("CountingAdd", "a")] == 1 and len(seen) == 1
