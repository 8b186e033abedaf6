"""Small test-only nodes for exercising the engine: they count executions, fail, sleep or wait."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from graph_runtime import (
    Link,
    Node,
    NodeError,
    NodeInputs,
    NodeRegistry,
    NodeResult,
    Output,
    Widget,
    builtin_nodes,
)

CALLS: Counter = Counter()


class CountingAdd(Node):
    """Adds its input to a literal and counts how often it really ran."""

    class Inputs(NodeInputs):
        x: int = Widget(0)
        add: int = Widget(1)
        tag: str = Widget("")

    OUTPUTS = (Output("INT", "sum"),)

    def execute(self, inputs, ctx):
        CALLS[("CountingAdd", ctx.node_id)] += 1
        return (inputs.x + inputs.add,)


class Fails(Node):
    """Raises when ``fail`` is true."""

    class Inputs(NodeInputs):
        x: int = Widget(0)
        fail: bool = Widget(True)
        crash: bool = Widget(False)

    OUTPUTS = (Output("INT", "x"),)

    def execute(self, inputs, ctx):
        CALLS[("Fails", ctx.node_id)] += 1
        if inputs.crash:
            raise RuntimeError("unexpected crash")
        if inputs.fail:
            raise NodeError("asked to fail")
        return (inputs.x,)


class Steps(Node):
    """Reports progress over ``steps`` steps; waits on a gate at ``block_at`` (for interrupt tests)."""

    gate: threading.Event | None = None
    reached: threading.Event | None = None

    class Inputs(NodeInputs):
        x: int = Widget(0)
        steps: int = Widget(5, ge=1, le=1000)
        block_at: int = Widget(-1)

    OUTPUTS = (Output("INT", "x"),)

    def execute(self, inputs, ctx):
        CALLS[("Steps", ctx.node_id)] += 1
        for i in range(inputs.steps):
            if i == inputs.block_at and Steps.reached is not None:
                Steps.reached.set()
                Steps.gate.wait(5)
            ctx.progress(i + 1, inputs.steps)
        return (inputs.x,)


class Collect(Node):
    """An output node that records its input in the UI data."""

    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        value: Any = Link("*")

    OUTPUTS = ()

    def execute(self, inputs, ctx):
        CALLS[("Collect", ctx.node_id)] += 1
        return NodeResult(ui={"value": [inputs.value]})


class FileStamp(Node):
    """Reads a file; its fingerprint is the file's content, so edits invalidate the cache."""

    class Inputs(NodeInputs):
        path: str = Widget("")

    OUTPUTS = (Output("STRING", "text"),)

    @classmethod
    def fingerprint(cls, literals, ctx):
        with open(literals["path"]) as fh:
            return fh.read()

    def execute(self, inputs, ctx):
        CALLS[("FileStamp", ctx.node_id)] += 1
        with open(inputs.path) as fh:
            return (fh.read(),)


class NeedsModel(Node):
    """Has a link-only MODEL input (to test literals given to link inputs)."""

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")

    OUTPUTS = (Output("INT", "x"),)

    def execute(self, inputs, ctx):
        return (0,)


def engine_registry() -> NodeRegistry:
    reg = NodeRegistry()
    builtin_nodes.register(reg)
    reg.register_all([CountingAdd, Fails, Steps, Collect, FileStamp, NeedsModel])
    return reg


def chain(n: int, *, first: int = 0) -> dict[str, Any]:
    """A chain of n CountingAdd nodes ending in a Collect output node."""
    doc: dict[str, Any] = {"1": {"class_type": "CountingAdd", "inputs": {"x": first, "add": 1}}}
    for i in range(2, n + 1):
        doc[str(i)] = {"class_type": "CountingAdd", "inputs": {"x": [str(i - 1), 0], "add": 1}}
    doc["out"] = {"class_type": "Collect", "inputs": {"value": [str(n), 0]}}
    return doc
