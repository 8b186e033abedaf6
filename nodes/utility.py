"""ComfyUI's utility nodes that workflows use between the diffusion nodes: joining strings, showing any value
as text, an image's size, and a math expression over numbers from other nodes (ComfyMathExpression).

The primitives (PrimitiveInt, PrimitiveString, ...) need no torch and live with the engine
(:mod:`graph_runtime.builtin_nodes`).
"""

from __future__ import annotations

import json
import math
import string
from typing import Any, Literal

from pydantic import create_model

from graph_runtime import Link, Node, NodeError, NodeInputs, NodeResult, Output, Widget
from graph_runtime.limits import LIMITS
from graph_runtime.node import autogrow_fields

from .types import IMAGE


def _bounded(text: str, what: str) -> str:
    if len(text) > LIMITS.max_string_chars:
        raise NodeError(f"{what}: the text would be {len(text):,} characters, over the limit of "
                        f"{LIMITS.max_string_chars:,} (max_string_chars)")
    return text


class StringConcatenate(Node):
    """string_a, the delimiter, then string_b."""

    CATEGORY = "text"
    DISPLAY_NAME = "Concatenate Text"

    class Inputs(NodeInputs):
        string_a: str = Widget("", multiline=True)
        string_b: str = Widget("", multiline=True)
        delimiter: str = Widget("", multiline=False)

    OUTPUTS = (Output("STRING", "STRING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        size = len(inputs.string_a) + len(inputs.delimiter) + len(inputs.string_b)
        if size > LIMITS.max_string_chars:
            raise NodeError(f"string_a / string_b: the joined text would be {size:,} characters, over the limit "
                            f"of {LIMITS.max_string_chars:,} (max_string_chars)")
        return (inputs.delimiter.join((inputs.string_a, inputs.string_b)),)


class StringSubstring(Node):
    """string[start:end], Python's slice (negative positions count from the end)."""

    CATEGORY = "text"
    DISPLAY_NAME = "Substring"

    class Inputs(NodeInputs):
        string: str = Widget("", multiline=True)
        start: int = Widget(0)
        end: int = Widget(0)

    OUTPUTS = (Output("STRING", "STRING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (inputs.string[inputs.start:inputs.end],)


class StringLength(Node):
    """The number of characters."""

    CATEGORY = "text"
    DISPLAY_NAME = "Text Length"

    class Inputs(NodeInputs):
        string: str = Widget("", multiline=True)

    OUTPUTS = (Output("INT", "length"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (len(inputs.string),)


CASES = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize, "Title Case": str.title}


class CaseConverter(Node):
    """UPPERCASE, lowercase, Capitalize (the first letter) or Title Case (each word)."""

    CATEGORY = "text"
    DISPLAY_NAME = "Convert Text Case"

    class Inputs(NodeInputs):
        string: str = Widget("", multiline=True)
        mode: Literal[tuple(CASES)] = Widget("UPPERCASE")  # type: ignore[valid-type]

    OUTPUTS = (Output("STRING", "STRING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (_bounded(CASES[inputs.mode](inputs.string), "string"),)  # a few characters grow (ß -> SS)


TRIMS = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}


class StringTrim(Node):
    """Whitespace removed from both ends, the left or the right."""

    CATEGORY = "text"
    DISPLAY_NAME = "Trim Text"

    class Inputs(NodeInputs):
        string: str = Widget("", multiline=True)
        mode: Literal[tuple(TRIMS)] = Widget("Both")  # type: ignore[valid-type]

    OUTPUTS = (Output("STRING", "STRING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return (TRIMS[inputs.mode](inputs.string),)


class StringReplace(Node):
    """Every occurrence of ``find`` replaced (an empty ``find`` inserts between every character, as Python)."""

    CATEGORY = "text"
    DISPLAY_NAME = "Replace Text"

    class Inputs(NodeInputs):
        string: str = Widget("", multiline=True)
        find: str = Widget("", multiline=True)
        replace: str = Widget("", multiline=True)

    OUTPUTS = (Output("STRING", "STRING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        text, find, new = inputs.string, inputs.find, inputs.replace
        count = text.count(find)  # len(text) + 1 for an empty find
        size = len(text) + count * (len(new) - len(find))
        if size > LIMITS.max_string_chars:
            raise NodeError(f"replace: the text would be {size:,} characters, over the limit of "
                            f"{LIMITS.max_string_chars:,} (max_string_chars)")
        return (text.replace(find, new),)


class StringContains(Node):
    """Whether ``substring`` occurs in ``string``."""

    CATEGORY = "text"
    DISPLAY_NAME = "Contains Text"

    class Inputs(NodeInputs):
        string: str = Widget("", multiline=True)
        substring: str = Widget("", multiline=True)
        case_sensitive: bool = Widget(True, advanced=True)

    OUTPUTS = (Output("BOOLEAN", "contains"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        if inputs.case_sensitive:
            return (inputs.substring in inputs.string,)
        return (inputs.substring.lower() in inputs.string.lower(),)


class StringCompare(Node):
    """Whether string_a starts with, ends with or equals string_b."""

    CATEGORY = "text"
    DISPLAY_NAME = "Compare Text"

    class Inputs(NodeInputs):
        string_a: str = Widget("", multiline=True)
        string_b: str = Widget("", multiline=True)
        mode: Literal["Starts With", "Ends With", "Equal"] = Widget("Starts With")
        case_sensitive: bool = Widget(True, advanced=True)

    OUTPUTS = (Output("BOOLEAN", "BOOLEAN"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        a, b = inputs.string_a, inputs.string_b
        if not inputs.case_sensitive:
            a, b = a.lower(), b.lower()
        if inputs.mode == "Equal":
            return (a == b,)
        return (a.startswith(b) if inputs.mode == "Starts With" else a.endswith(b),)


REGEX_SECONDS = 2.0  # a pattern may backtrack without end: each search stops after this long


def _regex_flags(inputs: Any) -> int:
    import regex

    flags = 0
    if inputs.case_insensitive:
        flags |= regex.IGNORECASE
    if inputs.multiline:
        flags |= regex.MULTILINE
    if inputs.dotall:
        flags |= regex.DOTALL
    return flags


def _timed_out(pattern: str) -> NodeError:
    return NodeError(f"regex_pattern: {pattern[:100]!r} took more than {REGEX_SECONDS:g} s on this text "
                     "(a pattern that backtracks without end?)")


class RegexMatch(Node):
    """Whether the pattern matches anywhere in the text (an invalid pattern matches nothing)."""

    CATEGORY = "text"
    DISPLAY_NAME = "Match Text"

    class Inputs(NodeInputs):
        string: str = Widget("", multiline=True)
        regex_pattern: str = Widget("", multiline=True)
        case_insensitive: bool = Widget(True, advanced=True)
        multiline: bool = Widget(False, advanced=True)
        dotall: bool = Widget(False, advanced=True)

    OUTPUTS = (Output("BOOLEAN", "matches"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import regex

        try:
            found = regex.search(inputs.regex_pattern, inputs.string, _regex_flags(inputs), timeout=REGEX_SECONDS)
        except regex.error:
            return (False,)
        except TimeoutError:
            raise _timed_out(inputs.regex_pattern) from None
        return (found is not None,)


EXTRACT_MODES = ("First Match", "All Matches", "First Group", "All Groups")


class RegexExtract(Node):
    """Text the pattern finds: the first match, all matches (one per line), or group ``group_index`` of the
    first or of every match; empty for no match or an invalid pattern."""

    CATEGORY = "text"
    DISPLAY_NAME = "Extract Text"

    class Inputs(NodeInputs):
        string: str = Widget("", multiline=True)
        regex_pattern: str = Widget("", multiline=True)
        mode: Literal[EXTRACT_MODES] = Widget("First Match")  # type: ignore[valid-type]
        case_insensitive: bool = Widget(True, advanced=True)
        multiline: bool = Widget(False, advanced=True)
        dotall: bool = Widget(False, advanced=True)
        group_index: int = Widget(1, ge=0, le=100, advanced=True)

    OUTPUTS = (Output("STRING", "STRING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import regex

        pattern, text, flags, g = inputs.regex_pattern, inputs.string, _regex_flags(inputs), inputs.group_index
        try:
            if inputs.mode == "First Match":
                m = regex.search(pattern, text, flags, timeout=REGEX_SECONDS)
                return (m.group(0) if m else "",)
            if inputs.mode == "All Matches":
                found = regex.findall(pattern, text, flags, timeout=REGEX_SECONDS)
                return (_bounded("\n".join(f[0] if isinstance(f, tuple) else f for f in found), "regex_pattern"),)

            def group(m: Any) -> str | None:
                return m.group(g) if m and len(m.groups()) >= g and m.group(g) is not None else None

            if inputs.mode == "First Group":
                return (group(regex.search(pattern, text, flags, timeout=REGEX_SECONDS)) or "",)
            groups = [group(m) for m in regex.finditer(pattern, text, flags, timeout=REGEX_SECONDS)]
            return (_bounded("\n".join(x for x in groups if x is not None), "regex_pattern"),)
        except regex.error:
            return ("",)
        except TimeoutError:
            raise _timed_out(pattern) from None


class _TooLong(Exception):
    pass


class RegexReplace(Node):
    """Replace what the pattern matches (``count`` 0: every match), with \\1 / \\g<name> group references."""

    CATEGORY = "text"
    DISPLAY_NAME = "Replace Text (Regex)"

    class Inputs(NodeInputs):
        string: str = Widget("", multiline=True)
        regex_pattern: str = Widget("", multiline=True)
        replace: str = Widget("", multiline=True)
        case_insensitive: bool = Widget(True, optional=True, advanced=True)
        multiline: bool = Widget(False, optional=True, advanced=True)
        dotall: bool = Widget(False, optional=True, advanced=True, tooltip="When enabled, the dot (.) character "
                              "will match any character including newline characters. When disabled, dots won't "
                              "match newlines.")
        count: int = Widget(0, ge=0, le=100, optional=True, advanced=True, tooltip="Maximum number of replacements "
                            "to make. Set to 0 to replace all occurrences (default). Set to 1 to replace only the "
                            "first match, 2 for the first two matches, etc.")

    OUTPUTS = (Output("STRING", "STRING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        import regex

        size = len(inputs.string)

        def expand(m: Any) -> str:  # the growth is counted as it happens, so a huge result is never built
            nonlocal size
            piece = m.expand(inputs.replace)
            size += len(piece) - (m.end() - m.start())
            if size > LIMITS.max_string_chars:
                raise _TooLong
            return piece

        flags = _regex_flags(inputs)
        try:
            return (regex.sub(inputs.regex_pattern, expand, inputs.string, count=inputs.count or 0, flags=flags,
                              timeout=REGEX_SECONDS),)
        except regex.error as exc:
            raise NodeError(f"regex_pattern: {inputs.regex_pattern[:100]!r} is not a valid pattern ({exc})") from None
        except TimeoutError:
            raise _timed_out(inputs.regex_pattern) from None
        except _TooLong:
            raise NodeError(f"replace: the text would be over the limit of {LIMITS.max_string_chars:,} characters "
                            "(max_string_chars)") from None


MAX_JSON_STARTS = 1000  # "{" positions tried before giving up: each try may read far, so the work is bounded


class JsonExtractString(Node):
    """The value of ``key`` in the first JSON object found in the text (e.g. inside a Markdown code block of
    a language model's answer); empty when the key is absent."""

    CATEGORY = "text"
    DISPLAY_NAME = "Extract Text from JSON"

    class Inputs(NodeInputs):
        json_string: str = Widget("", multiline=True)
        key: str = Widget("", multiline=False)

    OUTPUTS = (Output("STRING", "STRING"),)

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        text = inputs.json_string
        decoder = json.JSONDecoder()
        start, tries = text.find("{"), 0
        while start != -1:
            tries += 1
            if tries > MAX_JSON_STARTS:
                raise NodeError(f"json_string: no JSON object at the first {MAX_JSON_STARTS} '{{' of the text")
            try:
                data, _ = decoder.raw_decode(text, start)
            except (ValueError, RecursionError):
                start = text.find("{", start + 1)
                continue
            value = data.get(inputs.key) if isinstance(data, dict) else None
            return ("" if value is None else str(value),)
        return ("",)


def preview_text(value: Any) -> str:
    """ComfyUI's PreviewAny text: strings as they are, numbers and booleans with str(), anything else as
    indented JSON where it can be, else its str() (tensors with six items at each edge)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    if value is None:
        return "None"
    try:
        return json.dumps(value, indent=4)
    except (TypeError, ValueError):
        pass
    import torch

    torch.set_printoptions(edgeitems=6)
    try:
        return str(value)
    except Exception:  # a value whose str() fails is still shown as existing
        return "source exists, but could not be serialized."
    finally:
        torch.set_printoptions(edgeitems=3)  # torch's default


class PreviewAny(Node):
    """Show any value as text on the node (an output node); the text is also an output."""

    CATEGORY = "utilities"
    DISPLAY_NAME = "Preview as Text"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        source: Any = Link("*")

    OUTPUTS = (Output("STRING", "STRING"),)

    def execute(self, inputs: Any, ctx: Any) -> NodeResult:
        text = preview_text(inputs.source)
        if len(text) > LIMITS.max_string_chars:
            text = text[: LIMITS.max_string_chars] + f"\n... ({len(text):,} characters in all)"
        return NodeResult(outputs=(text,), ui={"text": [text]})


def check_image(image: Any, what: str = "image") -> Any:
    """An IMAGE tensor [batch, height, width, channels], or a NodeError naming the input."""
    import torch

    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise NodeError(f"{what}: expected an IMAGE tensor [batch, height, width, channels], got {shape}")
    return image


class GetImageSize(Node):
    """Width, height and batch size of an image batch."""

    CATEGORY = "image"
    DISPLAY_NAME = "Get Image Size"

    class Inputs(NodeInputs):
        image: Any = Link(IMAGE)

    OUTPUTS = (Output("INT", "width"), Output("INT", "height"), Output("INT", "batch_size"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        b, h, w, _ = check_image(inputs.image).shape
        if ctx is not None:  # shown on the node, as ComfyUI shows it
            ctx.progress_text(f"width: {w}, height: {h}\n batch size: {b}")
        return (int(w), int(h), int(b))


# --- ResolutionSelector ---------------------------------------------------------------------------------

ASPECT_RATIOS = {
    "1:1 (Square)": (1, 1),
    "3:2 (Photo)": (3, 2),
    "4:3 (Standard)": (4, 3),
    "16:9 (Widescreen)": (16, 9),
    "21:9 (Ultrawide)": (21, 9),
    "2:3 (Portrait Photo)": (2, 3),
    "3:4 (Portrait Standard)": (3, 4),
    "9:16 (Portrait Widescreen)": (9, 16),
}


def resolution_for(aspect_ratio: str, megapixels: float, multiple: int, minimum: int) -> tuple[int, int]:
    """ComfyUI's ResolutionSelector: about ``megapixels`` x 2**20 pixels in the ratio, each side rounded to a
    multiple; where a side would fall below ``minimum``, the smallest exact multiple of the ratio that keeps both
    sides multiples of ``multiple`` and at least ``minimum``."""
    rw, rh = ASPECT_RATIOS[aspect_ratio]
    scale = math.sqrt(megapixels * 1024 * 1024 / (rw * rh))
    width, height = round(rw * scale / multiple) * multiple, round(rh * scale / multiple) * multiple
    if width < minimum or height < minimum:
        step_w, step_h = multiple // math.gcd(rw, multiple), multiple // math.gcd(rh, multiple)
        step = math.lcm(step_w, step_h)
        k = math.ceil(math.ceil(max(minimum / rw, minimum / rh)) / step) * step
        width, height = rw * k, rh * k
    return width, height


class ResolutionSelector(Node):
    """Width and height for an aspect ratio and a number of megapixels (e.g. for an empty latent)."""

    CATEGORY = "utilities"
    DISPLAY_NAME = "Resolution Selector"

    class Inputs(NodeInputs):
        aspect_ratio: str = Widget("1:1 (Square)", choices=tuple(ASPECT_RATIOS),
                                   tooltip="The aspect ratio for the output dimensions.")
        megapixels: float = Widget(1.0, ge=0.1, le=16.0, step=0.1,
                                   tooltip="Target total megapixels. 1.0 MP ≈ 1024x1024 for square.")
        multiple: int = Widget(8, ge=8, le=128, step=4, advanced=True,
                               tooltip="Nearest multiple of the result to set the selected resolution to.")
        minimum: int = Widget(256, ge=32, le=4096, step=32, advanced=True,
                              tooltip="Set minimum resolution for any side to be used")

    OUTPUTS = (Output("INT", "width", "Calculated width in pixels (multiple of 8)."),
               Output("INT", "height", "Calculated height in pixels (multiple of 8)."))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return resolution_for(inputs.aspect_ratio, inputs.megapixels, inputs.multiple, inputs.minimum)


def convert_number(value: Any) -> tuple[float, int]:
    """ComfyUI's ComfyNumberConvert: a bool, int, float or numeric text as (float, int); text is parsed as an
    integer where it is one, else truncated from its float."""
    if isinstance(value, bool):
        as_float, as_int = float(value), int(value)
    elif isinstance(value, int):
        as_float, as_int = float(value), value
    elif isinstance(value, float):
        as_float, as_int = value, int(value) if math.isfinite(value) else 0
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise NodeError("value: cannot convert empty text to a number")
        try:
            as_float = float(text)
        except ValueError:
            raise NodeError(f"value: cannot convert {value[:100]!r} to a number") from None
        if not math.isfinite(as_float):
            raise NodeError(f"value: {value[:100]!r} is not a finite number")
        try:
            as_int = int(text)
        except ValueError:
            as_int = int(as_float)
    else:
        raise NodeError(f"value: expected INT, FLOAT, STRING or BOOLEAN, got {type(value).__name__}")
    if not math.isfinite(as_float):
        raise NodeError(f"value: {as_float} is not a finite number")
    return as_float, as_int


class ComfyNumberConvert(Node):
    """A number, boolean or numeric text as FLOAT and INT."""

    CATEGORY = "math"
    DISPLAY_NAME = "Number Convert"

    class Inputs(NodeInputs):
        value: Any = Link("INT,FLOAT,STRING,BOOLEAN")

    OUTPUTS = (Output("FLOAT", "FLOAT"), Output("INT", "INT"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        return convert_number(inputs.value)


# --- ComfyMathExpression ---------------------------------------------------------------------------------

VALUE_NAMES = tuple(string.ascii_lowercase)
MAX_EXPONENT = 4000  # pow() as a function, as ComfyUI caps it (the ** operator has simpleeval's own cap)


def _sum(*args: Any) -> Any:
    """sum(values) and sum(a, b, c) both work."""
    if len(args) == 1 and hasattr(args[0], "__iter__"):
        return sum(args[0])
    return sum(args)


# An integer past this many bits cannot become a finite FLOAT, and building one costs time that nothing can
# interrupt (4000000 ** 4000000, which simpleeval allows, takes 38 s here): such results are refused first.
MAX_INT_BITS = 65_536


def _check_int_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise ValueError(f"{what} would be an integer of about {bits:,} bits (at most {MAX_INT_BITS:,})")


def _power_bits(base: Any, exp: Any) -> None:
    if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
        _check_int_bits(math.ceil(exp * math.log2(abs(base))), "the power")


def _pow(base: Any, exp: Any) -> Any:
    if abs(exp) > MAX_EXPONENT:
        raise ValueError(f"exponent {exp} is over the maximum of {MAX_EXPONENT}")
    _power_bits(base, exp)
    return pow(base, exp)


def _operators() -> dict:
    """simpleeval's operators, with the integer ones that can grow without bound checked first."""
    import ast

    import simpleeval

    def power(a: Any, b: Any) -> Any:
        _power_bits(a, b)
        return simpleeval.safe_power(a, b)

    def multiply(a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int):
            _check_int_bits(abs(a).bit_length() + abs(b).bit_length(), "the product")
        return simpleeval.safe_mult(a, b)

    def shift_left(a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int) and b > 0:
            _check_int_bits(abs(a).bit_length() + b, "the shift")
        return simpleeval.safe_lshift(a, b)

    return {**simpleeval.DEFAULT_OPERATORS, ast.Pow: power, ast.Mult: multiply, ast.LShift: shift_left}


MATH_FUNCTIONS = {
    "sum": _sum, "min": min, "max": max, "abs": abs, "round": round, "pow": _pow, "sqrt": math.sqrt,
    "ceil": math.ceil, "floor": math.floor, "log": math.log, "log2": math.log2, "log10": math.log10,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "int": int, "float": float,
}


def evaluate_expression(expression: str, values: dict[str, Any]) -> tuple[float, int, bool]:
    """ComfyUI's ComfyMathExpression: evaluate with simpleeval (no Python eval: only arithmetic, comparisons,
    the names a..z and ``values``, and the functions above), then give the result as float, int and bool."""
    from simpleeval import InvalidExpression, simple_eval

    if not expression.strip():
        raise NodeError("expression: the expression is empty")
    _bounded(expression, "expression")
    names: dict[str, Any] = dict(values)
    names["values"] = list(values.values())
    try:
        result = simple_eval(expression, operators=_operators(), names=names, functions=MATH_FUNCTIONS)
    except (InvalidExpression, SyntaxError, ArithmeticError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, RecursionError, MemoryError) as exc:
        given = ", ".join(values) or "none"
        raise NodeError(f"expression: {expression!r} cannot be evaluated: {type(exc).__name__}: {exc} "
                        f"(values given: {given})") from None
    if not isinstance(result, (int, float)):  # bool is an int, as in ComfyUI
        raise NodeError(f"expression: {expression!r} must give a number, got {type(result).__name__}: "
                        f"{str(result)[:100]!r}")
    try:
        as_float = float(result)
    except OverflowError:
        raise NodeError(f"expression: {expression!r} gives a number too large for a float") from None
    if not math.isfinite(as_float):
        raise NodeError(f"expression: {expression!r} gives a non-finite result: {result}")
    return as_float, int(result), bool(result)


class ComfyMathExpression(Node):
    """Evaluate a math expression over values a, b, c, ... linked from other nodes (numbers or booleans);
    the result as FLOAT, INT (truncated) and BOOL (non-zero)."""

    CATEGORY = "utilities"
    DISPLAY_NAME = "Math Expression"

    Inputs = create_model(
        "ComfyMathExpressionInputs", __base__=NodeInputs,
        expression=(str, Widget("a + b", multiline=True)),
        **autogrow_fields("values", "FLOAT,INT,BOOLEAN", VALUE_NAMES, min=1),
    )

    OUTPUTS = (Output("FLOAT", "FLOAT"), Output("INT", "INT"), Output("BOOLEAN", "BOOL"))

    def execute(self, inputs: Any, ctx: Any) -> tuple:
        values: dict[str, Any] = {}
        for name in VALUE_NAMES:
            value = getattr(inputs, f"values_{name}")
            if value is None:
                continue
            if not isinstance(value, (int, float)):
                raise NodeError(f"values.{name}: expected a number or a boolean, got {type(value).__name__}")
            values[name] = value
        return evaluate_expression(inputs.expression, values)


NODES = [StringConcatenate, StringSubstring, StringLength, CaseConverter, StringTrim, StringReplace, StringContains,
         StringCompare, RegexMatch, RegexExtract, RegexReplace, JsonExtractString, PreviewAny, GetImageSize,
         ResolutionSelector, ComfyNumberConvert, ComfyMathExpression]
