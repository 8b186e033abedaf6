"""Control-flow nodes under ComfyUI's names: a switch that evaluates only the branch it takes."""

from __future__ import annotations

from typing import Any

from graph_runtime import Link, Node, NodeInputs, Output, Widget


class ComfySwitchNode(Node):
    """Passes on_true or on_false on, as the switch says; only that branch is evaluated (the other never runs)."""

    CATEGORY = "logic"
    DISPLAY_NAME = "Switch"

    class Inputs(NodeInputs):
        switch: bool = Widget()
        on_false: Any = Link("*", lazy=True)
        on_true: Any = Link("*", lazy=True)

    OUTPUTS = (Output("*", "output"),)

    def check_lazy_status(self, inputs, ctx):
        return ["on_true" if inputs.switch else "on_false"]

    def execute(self, inputs, ctx):
        return (inputs.on_true if inputs.switch else inputs.on_false,)


NODES = [ComfySwitchNode]
