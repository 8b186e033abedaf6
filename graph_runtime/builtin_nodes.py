"""Utility nodes that need no torch: primitives, arithmetic, string formatting and text outputs.

They make the engine usable and testable on its own, and serve as primitives in diffusion graphs
(one seed feeding several samplers, a prompt built from parts).
"""

from __future__ import annotations

import math
import random
import re
import string
from typing import Annotated, Any, Literal

from pydantic import AfterValidator

from .context import NodeError
from .limits import LIMITS
from .node import Hidden, Link, Node, NodeInputs, NodeResult, Output, Widget
from .paths import check_file_name, resolve_inside

CATEGORY = "utils"


# ComfyUI's primitive nodes (comfy_extras/nodes_primitive.py): the same names, bounds and widgets, so a
# workflow's widget values and links land where ComfyUI puts them.
PRIMITIVE_LIMIT = 2**63 - 1  # ComfyUI's sys.maxsize bounds on Int and Float


class PrimitiveInt(Node):
    """An integer constant."""

    CATEGORY = "utils/primitive"
    DISPLAY_NAME = "Int"

    class Inputs(NodeInputs):
        value: int = Widget(0, ge=-PRIMITIVE_LIMIT, le=PRIMITIVE_LIMIT, control_after_generate=True)

    OUTPUTS = (Output("INT", "INT"),)

    def execute(self, inputs, ctx):
        return (inputs.value,)


class PrimitiveFloat(Node):
    """A floating-point constant."""

    CATEGORY = "utils/primitive"
    DISPLAY_NAME = "Float"

    class Inputs(NodeInputs):
        value: float = Widget(0.0, ge=-PRIMITIVE_LIMIT, le=PRIMITIVE_LIMIT, step=0.1)

    OUTPUTS = (Output("FLOAT", "FLOAT"),)

    def execute(self, inputs, ctx):
        return (inputs.value,)


class PrimitiveString(Node):
    """A one-line text constant."""

    CATEGORY = "utils/primitive"
    DISPLAY_NAME = "String"

    class Inputs(NodeInputs):
        value: str = Widget("")

    OUTPUTS = (Output("STRING", "STRING"),)

    def execute(self, inputs, ctx):
        return (inputs.value,)


class PrimitiveStringMultiline(Node):
    """A text constant edited in a text box (prompts)."""

    CATEGORY = "utils/primitive"
    DISPLAY_NAME = "String (Multiline)"

    class Inputs(NodeInputs):
        value: str = Widget("", multiline=True)

    OUTPUTS = (Output("STRING", "STRING"),)

    def execute(self, inputs, ctx):
        return (inputs.value,)


class PrimitiveBoolean(Node):
    """A boolean constant."""

    CATEGORY = "utils/primitive"
    DISPLAY_NAME = "Boolean"

    class Inputs(NodeInputs):
        value: bool = Widget(False)

    OUTPUTS = (Output("BOOLEAN", "BOOLEAN"),)

    def execute(self, inputs, ctx):
        return (inputs.value,)


class RandomInt(Node):
    """A fresh random integer on every run (never cached), e.g. a new seed each time."""

    CATEGORY = "utils/primitive"
    NOT_CACHED = True

    class Inputs(NodeInputs):
        min: int = Widget(0)
        max: int = Widget(2**32 - 1)

    OUTPUTS = (Output("INT", "INT"),)

    def execute(self, inputs, ctx):
        if inputs.max < inputs.min:
            raise NodeError(f"max ({inputs.max}) is smaller than min ({inputs.min})")
        return (random.randint(inputs.min, inputs.max),)


_INT_OPS = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a // b,
    "modulo": lambda a, b: a % b,
    "min": min,
    "max": max,
}
_FLOAT_OPS = {**_INT_OPS, "divide": lambda a, b: a / b, "power": lambda a, b: a**b}


class IntMath(Node):
    """Integer arithmetic: a <op> b (divide is floor division)."""

    CATEGORY = "utils/math"

    class Inputs(NodeInputs):
        a: int = Widget(0)
        b: int = Widget(0)
        op: Literal["add", "subtract", "multiply", "divide", "modulo", "min", "max"] = Widget("add")

    OUTPUTS = (Output("INT", "INT"),)

    def execute(self, inputs, ctx):
        if inputs.op in ("divide", "modulo") and inputs.b == 0:
            raise NodeError(f"cannot {inputs.op} by zero")
        value = _INT_OPS[inputs.op](inputs.a, inputs.b)
        if not -(2**63) <= value < 2**63:
            raise NodeError(f"result {value} does not fit a 64-bit integer")
        return (value,)


class FloatMath(Node):
    """Floating-point arithmetic: a <op> b."""

    CATEGORY = "utils/math"

    class Inputs(NodeInputs):
        a: float = Widget(0.0, step=0.01)
        b: float = Widget(0.0, step=0.01)
        op: Literal["add", "subtract", "multiply", "divide", "modulo", "min", "max", "power"] = Widget("add")

    OUTPUTS = (Output("FLOAT", "FLOAT"),)

    def execute(self, inputs, ctx):
        if inputs.op in ("divide", "modulo") and inputs.b == 0:
            raise NodeError(f"cannot {inputs.op} by zero")
        try:
            value = float(_FLOAT_OPS[inputs.op](inputs.a, inputs.b))
        except (OverflowError, ValueError, TypeError) as exc:
            raise NodeError(f"{inputs.op}({inputs.a}, {inputs.b}) failed: {exc}") from None
        if not math.isfinite(value):
            raise NodeError(f"{inputs.op}({inputs.a}, {inputs.b}) is not a finite number")
        return (value,)


class StringFormat(Node):
    """Fills {a}, {b}, {c} in a template: builds prompts and file names from parts."""

    CATEGORY = "utils/string"

    class Inputs(NodeInputs):
        template: str = Widget("{a}", multiline=True)
        a: str = Widget("", optional=True)
        b: str = Widget("", optional=True)
        c: str = Widget("", optional=True)

    OUTPUTS = (Output("STRING", "STRING"),)

    def execute(self, inputs, ctx):
        fields = {k: "" if v is None else v for k, v in (("a", inputs.a), ("b", inputs.b), ("c", inputs.c))}
        try:
            return (_BoundedFormatter().format(inputs.template, **fields),)
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
            if isinstance(exc, LimitExceeded):
                raise NodeError(f"template: {exc}") from None
            raise NodeError(f"template {_clip(inputs.template)}: only {{a}}, {{b}} and {{c}} can be filled "
                            f"({_clip(str(exc))})") from None


class LimitExceeded(ValueError):
    pass


_SPEC_NUMBERS = re.compile(r"(\d+)")


def _clip(text: str, n: int = 120) -> str:
    return repr(text) if len(text) <= n else repr(text[:n]) + f"... ({len(text)} characters)"


class _BoundedFormatter(string.Formatter):
    """str.format with the cost bounded before it is paid: a width or precision above max_format_width is
    refused, and so is output beyond max_string_chars (counted field by field, as it is built)."""

    def __init__(self) -> None:
        self.built = 0

    def get_field(self, field_name, args, kwargs):
        if field_name not in ("a", "b", "c"):  # no attribute walks ({a.__class__}) or indexing
            raise KeyError(field_name)
        return kwargs[field_name], field_name

    def format_field(self, value, format_spec):
        for number in _SPEC_NUMBERS.findall(format_spec):
            if len(number) > 9 or int(number) > LIMITS.max_format_width:
                raise LimitExceeded(f"format width or precision {number[:20]} is over the limit of "
                                    f"{LIMITS.max_format_width} (max_format_width)")
        return self._count(super().format_field(value, format_spec))

    def _count(self, text: str) -> str:
        self.built += len(text)
        if self.built > LIMITS.max_string_chars:
            raise LimitExceeded(f"the text would be longer than {LIMITS.max_string_chars} characters "
                                f"(max_string_chars)")
        return text

    def parse(self, format_string):
        for literal, field_name, spec, conversion in super().parse(format_string):
            self._count(literal)
            yield literal, field_name, spec, conversion


class ToString(Node):
    """Any value as text."""

    CATEGORY = "utils/string"

    class Inputs(NodeInputs):
        value: Any = Link("*")

    OUTPUTS = (Output("STRING", "STRING"),)

    def execute(self, inputs, ctx):
        return (str(inputs.value),)


class ShowValue(Node):
    """Shows any value in the editor and on the terminal (an output node)."""

    CATEGORY = "utils"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        value: Any = Link("*")

    OUTPUTS = ()

    def execute(self, inputs, ctx):
        return NodeResult(ui={"text": [str(inputs.value)]})


class SaveText(Node):
    """Writes text to a file in the output folder (an output node)."""

    CATEGORY = "utils"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        text: str = Widget("", multiline=True)
        filename: Annotated[str, AfterValidator(check_file_name)] = Widget("result.txt")
        unique_id: Any = Hidden("UNIQUE_ID")

    OUTPUTS = ()

    def execute(self, inputs, ctx):
        try:  # checked again here: a linked file name is only known now
            path = resolve_inside(ctx.paths.output, check_file_name(inputs.filename))
        except ValueError as exc:
            raise NodeError(f"filename: {exc}") from None
        if path.is_dir():
            raise NodeError(f"filename: {inputs.filename!r} is a folder in the output folder")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(inputs.text, encoding="utf-8")
        except OSError as exc:
            raise NodeError(f"filename: cannot write {inputs.filename!r} ({exc.strerror or type(exc).__name__})") from None
        rel = path.relative_to(ctx.paths.output)
        return NodeResult(ui={"text": [inputs.text], "files": [{"filename": rel.name, "subfolder": str(rel.parent)
                                                                if str(rel.parent) != "." else "", "type": "output"}]})


def register(registry) -> None:
    registry.register_all([
        PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline, PrimitiveBoolean, RandomInt,
        IntMath, FloatMath, StringFormat, ToString, ShowValue, SaveText,
    ])
