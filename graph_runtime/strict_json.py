"""JSON as every other program reads it: no NaN or Infinity, bounded nesting, and values that always write.

Python's ``json`` reads and writes ``NaN``, ``Infinity`` and ``-Infinity``, which are not JSON: a browser's
``JSON.parse`` rejects them, and a strict writer (Starlette's JSONResponse) raises on them. So a request that
carries one is refused at the door (:func:`loads`), and whatever is stored is written so that a later read can
always answer (:func:`dumps` turns a non-finite float into the string ``"NaN"``/``"Infinity"``/``"-Infinity"``,
and :func:`loads_stored` reads old rows that still hold the bare constants the same way).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 100  # nesting of arrays and objects in one request body (an editor workflow needs about 10)


class StrictJSONError(ValueError):
    """The text is not strict JSON; the message says why."""


def _refuse_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON value (send a finite number, a string or null)")


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((c, level) for c in children if isinstance(c, dict | list))
    return deepest


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"the number {text[:40]} is too large for a 64-bit float")
    return value


def loads(raw: str | bytes, what: str = "the body", max_depth: int = MAX_DEPTH) -> Any:
    """Parse strict JSON; raises StrictJSONError naming ``what`` for NaN/Infinity, bad syntax or deep nesting."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except StrictJSONError as exc:
        raise StrictJSONError(f"{what}: {exc}") from None
    except RecursionError:
        raise StrictJSONError(f"{what} nests too deeply (more than {max_depth} levels)") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise StrictJSONError(f"{what} is not valid JSON ({exc})") from None
    brackets = raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes) else raw.count("[") + raw.count("{")
    if brackets > max_depth and depth(value) > max_depth:  # fewer brackets than levels cannot nest too deeply
        raise StrictJSONError(f"{what} nests too deeply (more than {max_depth} levels)")
    return value


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its name as a string (copies only what changes)."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kw: Any) -> str:
    """JSON text that any reader accepts: non-finite floats become strings, unknown objects ``str()``."""
    kw.setdefault("default", str)
    try:
        return json.dumps(value, allow_nan=False, **kw)
    except ValueError:
        return json.dumps(finite(value), allow_nan=False, **kw)


def loads_stored(raw: str | bytes) -> Any:
    """Read JSON this program stored earlier; a bare NaN/Infinity (written by an older version) becomes a string."""
    return json.loads(raw, parse_constant=lambda name: name)
