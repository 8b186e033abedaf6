"""The node base class: a node declares its inputs and outputs once, and everything else is derived.

A node is a class with a pydantic ``Inputs`` model (types, defaults, bounds, choices), a tuple of typed
``OUTPUTS`` and one ``execute``. Validation, ``/object_info`` and the CLI's node listing all read the same
declaration through :func:`input_specs` and :meth:`Node.describe`, so they cannot drift apart.

ComfyUI's run semantics are declared here too: lazy inputs (``Link(..., lazy=True)`` with
:meth:`Node.check_lazy_status`), list outputs (``Output(..., is_list=True)``) and ``INPUT_IS_LIST``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

# Port types whose values are plain JSON literals (an editor shows them as widgets).
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
ANY = "*"
INT_LIMIT = 2**63  # an INT without declared bounds must fit a signed 64-bit integer
HIDDEN_KINDS = ("PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "PROMPT_ID")


class NodeInputs(BaseModel):
    """Base of every node's input model: strict types, no NaN/Inf, runtime objects allowed for links."""

    model_config = ConfigDict(
        strict=True, allow_inf_nan=False, arbitrary_types_allowed=True, extra="forbid", frozen=True,
        defer_build=True,
    )


def Link(io_type: str, *, optional: bool = False, lazy: bool = False, tooltip: str | None = None) -> Any:
    """An input that only a link fills (MODEL, LATENT, ...). ``optional`` ones may stay unconnected (None).

    ``lazy`` ones are evaluated only when the node's :meth:`Node.check_lazy_status` asks for them (a switch
    pulls only the branch it takes).
    """
    extra: dict[str, Any] = {"io_type": io_type, "optional": optional}
    if lazy:
        extra["lazy"] = True
    if tooltip:
        extra["tooltip"] = tooltip
    return Field(None if optional else ..., description=tooltip, json_schema_extra=extra)


def Widget(
    default: Any = ...,
    *,
    ge: float | None = None,
    le: float | None = None,
    step: float | None = None,
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
    accept: Callable[[str], bool] | None = None,
    multiline: bool | None = None,
    optional: bool = False,
    lazy: bool = False,
    tooltip: str | None = None,
    **ui: Any,
) -> Any:
    """A literal input (an editor widget) that may also be fed by a link of the same type.

    ``choices`` makes a combo; a callable is evaluated when the node is described or validated, so lists of
    files on disk stay current. ``accept`` lets a combo take a value outside its list when it says yes (a
    file named another way, as ComfyUI's VALIDATE_INPUTS lets LoadImage take ``x.png [output]``). ``lazy``:
    as for :func:`Link`, when a link feeds the widget. Extra keyword
    arguments pass through to the editor (e.g. ``round=0.01``).
    """
    extra: dict[str, Any] = {"optional": optional, **ui}
    if lazy:
        extra["lazy"] = True
    if step is not None:
        extra["step"] = step
    if multiline is not None:
        extra["multiline"] = multiline
    if tooltip:
        extra["tooltip"] = tooltip
    if choices is not None:
        extra["choices"] = choices
    if accept is not None:
        extra["accept"] = accept
    if optional and default is ...:
        default = None
    return Field(default, ge=ge, le=le, description=tooltip, json_schema_extra=extra)


def autogrow_fields(group: str, io_type: str, names: Sequence[str] = (), *, min: int = 0, prefix: str | None = None,
                    max: int = 10, template: str = "value", required: bool = False,
                    tooltip: str | None = None) -> dict[str, tuple]:
    """ComfyUI's Autogrow input: a group of links that the editor adds one at a time, sent in a workflow as
    ``{group}.{name}`` (``values.a``, ``images.image0``, ...). The names are given (``names``) or numbered
    (``prefix`` + 0 .. max - 1); with ``required`` the first ``min`` slots must be linked. Returns pydantic
    ``create_model`` fields, each reachable on the inputs object as ``{group}_{name}``; ``/object_info`` shows the
    group as one ``COMFY_AUTOGROW_V3`` input (its template input named ``template``), validation sees each slot
    as an input of ``io_type``."""
    if prefix is not None:
        names = [f"{prefix}{i}" for i in range(max)]
    grow = {"group": group, "names": list(names), "min": min, "prefix": prefix, "max": max, "template": template,
            "required": required, "tooltip": tooltip}
    fields = {}
    for i, n in enumerate(names):
        needed = required and i < min
        extra = {"io_type": io_type, "optional": not needed, "autogrow": grow}
        fields[f"{group}_{n}"] = (Any, Field(... if needed else None, alias=f"{group}.{n}", json_schema_extra=extra))
    return fields


def dynamic_combo_fields(name: str, options: dict[str, dict[str, tuple]], *,
                         tooltip: str | None = None) -> dict[str, tuple]:
    """ComfyUI's DynamicCombo: a combo whose chosen option brings its own inputs, sent in a workflow as
    ``{name}`` (the option) and ``{name}.{input}`` (its inputs). ``options`` maps each option to its inputs as
    ``create_model`` fields (``Widget``/``Link``, with that option's defaults). Returns the fields of the combo and
    of each option input (declared once, optional, reachable as ``{name}_{input}``); read the chosen option and
    its inputs with :func:`dynamic_combo_choice`. ``/object_info`` shows one ``COMFY_DYNAMICCOMBO_V3`` input."""
    from pydantic import create_model

    models = {key: create_model(f"{name}.{key}", __base__=NodeInputs, **fields) for key, fields in options.items()}
    keys = tuple(options)
    out: dict[str, tuple] = {name: (Literal[keys], Widget(keys[0], tooltip=tooltip, dynamic_combo=models))}
    children: dict[str, list[InputSpec]] = {}
    for model in models.values():
        for child, spec in _input_specs(model).items():
            children.setdefault(child, []).append(spec)
    for child, specs in children.items():
        first = specs[0]
        lows, highs = [s.ge for s in specs], [s.le for s in specs]
        extra = {**first.extra, "optional": True, "dynamic_child": name}
        annotation = next(models[k] for k in keys if child in models[k].model_fields).model_fields[child].annotation
        out[f"{name}_{child}"] = (annotation | None, Field(None, alias=f"{name}.{child}", json_schema_extra=extra,
                                                    ge=None if None in lows else min(lows),
                                                    le=None if None in highs else max(highs)))
    return out


def dynamic_combo_choice(inputs: Any, name: str) -> tuple[str, dict[str, Any]]:
    """The option chosen in DynamicCombo ``name`` and its inputs, with the option's defaults for widgets the
    workflow left out; a missing link raises NodeError naming ``{name}.{input}``."""
    from .context import NodeError

    key = getattr(inputs, name)
    model = type(inputs).model_fields[name].json_schema_extra["dynamic_combo"][key]
    values: dict[str, Any] = {}
    for child, spec in _input_specs(model).items():
        value = getattr(inputs, f"{name}_{child}")
        if value is None and spec.is_widget:
            value = spec.default
        if value is None:
            raise NodeError(f"{name}.{child}: {key!r} needs this input ({spec.io_type})")
        values[child] = value
    return key, values


def EditorWidget(io_type: str, *, tooltip: str | None = None) -> Any:
    """An input that is one of the editor's own display widgets (IMAGECOMPARE): listed in ``/object_info`` so
    the editor draws it, its value (whatever the editor sends) taken and not used; it may be left out."""
    extra: dict[str, Any] = {"io_type": io_type, "optional": False, "editor_widget": True}
    if tooltip:
        extra["tooltip"] = tooltip
    return Field(None, description=tooltip, json_schema_extra=extra)


def Hidden(kind: Literal["PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "PROMPT_ID"]) -> Any:
    """An input the executor fills from the run itself (the whole prompt, PNG metadata, the node's id)."""
    return Field(None, json_schema_extra={"hidden": kind})


@dataclass(frozen=True)
class Output:
    """One typed, named output slot. ``is_list``: ``execute`` returns a list of values for it (ComfyUI's
    OUTPUT_IS_LIST); a node downstream that does not take whole lists runs once per item."""

    type: str
    name: str | None = None
    tooltip: str | None = None
    is_list: bool = False

    @property
    def label(self) -> str:
        return self.name or self.type


@dataclass(frozen=True)
class InputSpec:
    """What validation and the editor need to know about one declared input."""

    name: str
    io_type: str  # INT, FLOAT, STRING, BOOLEAN, COMBO or a link type such as MODEL
    required: bool  # must appear in the workflow (no default)
    optional: bool  # listed under "optional" (may be left unconnected)
    hidden: str | None
    default: Any
    ge: float | None
    le: float | None
    gt: float | None
    lt: float | None
    choices: Sequence[str] | Callable[[], Sequence[str]] | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_widget(self) -> bool:
        return self.io_type in WIDGET_TYPES

    @property
    def lazy(self) -> bool:
        return bool(self.extra.get("lazy"))

    def choice_list(self) -> list[str]:
        c = self.choices
        return list(c() if callable(c) else c or [])


@dataclass
class NodeResult:
    """What ``execute`` may return instead of a bare tuple: outputs plus data for the UI (images, text)."""

    outputs: tuple = ()
    ui: dict[str, Any] | None = None


class Node:
    """Base class of all nodes. Subclasses set ``Inputs``, ``OUTPUTS`` and implement ``execute``.

    ``NOT_CACHED`` marks nodes whose result must never be reused (a random source); ``fingerprint`` lets a
    node mix outside state (a file's mtime) into its cache key.
    """

    Inputs: ClassVar[type[NodeInputs]] = NodeInputs
    OUTPUTS: ClassVar[tuple[Output, ...]] = ()
    CATEGORY: ClassVar[str] = "utils"
    DISPLAY_NAME: ClassVar[str | None] = None
    OUTPUT_NODE: ClassVar[bool] = False
    NOT_CACHED: ClassVar[bool] = False
    DEPRECATED: ClassVar[bool] = False
    # ComfyUI's INPUT_IS_LIST: the node runs once with every input as a whole list (each item checked against
    # the declared type), instead of once per item of the longest list fed to it.
    INPUT_IS_LIST: ClassVar[bool] = False
    # Set by the registry: the name workflows use in class_type.
    type_name: ClassVar[str] = ""

    def execute(self, inputs: Any, ctx: Any) -> tuple | NodeResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_lazy_status(self, inputs: Any, ctx: Any) -> Sequence[str]:
        """Which lazy inputs this run needs, given the values known so far (ComfyUI's hook of that name).

        ``inputs`` holds every input; a lazy one whose link is not evaluated yet is None. The executor
        evaluates the named ones and asks again, until nothing new is named; then ``execute`` runs, with the
        lazy inputs never asked for left at None. By default every lazy input is needed.
        """
        return [spec.name for spec in self.input_specs().values() if spec.lazy]

    @classmethod
    def fingerprint(cls, literals: dict[str, Any], ctx: Any) -> Any:
        """Outside state that should invalidate the cached result (None: nothing outside matters)."""
        return None

    @classmethod
    def input_specs(cls) -> dict[str, InputSpec]:
        return _input_specs(cls.Inputs)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The ComfyUI ``/object_info`` entry, derived from the declaration."""
        required: dict[str, list] = {}
        optional: dict[str, list] = {}
        hidden: dict[str, str] = {}
        for spec in cls.input_specs().values():
            if spec.hidden:
                hidden[spec.name] = spec.hidden
                continue
            grow = spec.extra.get("autogrow")
            if grow:
                required.setdefault(grow["group"], _describe_autogrow(spec, grow))
                continue
            if spec.extra.get("dynamic_child"):
                continue  # shown inside its DynamicCombo's options
            if "dynamic_combo" in spec.extra:
                (optional if spec.optional else required)[spec.name] = _describe_dynamic_combo(spec)
                continue
            (optional if spec.optional else required)[spec.name] = _describe_input(spec)
        doc = (cls.__doc__ or "").strip()
        name = cls.type_name or cls.__name__
        return {
            "input": {"required": required, "optional": optional, "hidden": hidden},
            "input_order": {"required": list(required), "optional": list(optional)},
            "output": [o.type for o in cls.OUTPUTS],
            "is_input_list": cls.INPUT_IS_LIST,
            "output_is_list": [o.is_list for o in cls.OUTPUTS],
            "output_name": [o.label for o in cls.OUTPUTS],
            "output_tooltips": [o.tooltip for o in cls.OUTPUTS],
            "name": name,
            "display_name": cls.DISPLAY_NAME or name,
            "description": doc.split("\n\n")[0].replace("\n", " ") if doc else "",
            "python_module": cls.__module__,
            "category": cls.CATEGORY,
            "output_node": cls.OUTPUT_NODE,
            "deprecated": cls.DEPRECATED,
        }


def _describe_autogrow(spec: InputSpec, grow: dict) -> list:
    """One ``COMFY_AUTOGROW_V3`` entry for a group of slots (ComfyUI's shape: a template input, and its names or
    its prefix and maximum)."""
    kind = "required" if grow["required"] else "optional"
    template: dict[str, Any] = {"input": {kind: {grow["template"]: [spec.io_type, {}]}}}
    if grow["prefix"] is None:
        template.update(names=grow["names"], min=grow["min"])
    else:
        template.update(prefix=grow["prefix"], min=grow["min"], max=grow["max"])
    opts: dict[str, Any] = {"template": template}
    if grow.get("tooltip"):
        opts["tooltip"] = grow["tooltip"]
    return ["COMFY_AUTOGROW_V3", opts]


def _describe_dynamic_combo(spec: InputSpec) -> list:
    """One ``COMFY_DYNAMICCOMBO_V3`` entry: each option with its own inputs (ComfyUI's shape)."""
    options = []
    for key, model in spec.extra["dynamic_combo"].items():
        required: dict[str, list] = {}
        optional: dict[str, list] = {}
        for child in _input_specs(model).values():
            (optional if child.optional else required)[child.name] = _describe_input(child)
        inputs: dict[str, Any] = {"required": required}
        if optional:
            inputs["optional"] = optional
        options.append({"key": key, "inputs": inputs})
    opts: dict[str, Any] = {"options": options}
    if spec.extra.get("tooltip"):
        opts["tooltip"] = spec.extra["tooltip"]
    return ["COMFY_DYNAMICCOMBO_V3", opts]


def _describe_input(spec: InputSpec) -> list:
    opts: dict[str, Any] = {}
    if spec.default is not None and spec.default is not ...:
        opts["default"] = spec.default
    lo = spec.ge if spec.ge is not None else spec.gt
    hi = spec.le if spec.le is not None else spec.lt
    if lo is not None:
        opts["min"] = lo
    if hi is not None:
        opts["max"] = hi
    for k, v in spec.extra.items():
        if k not in ("io_type", "optional", "choices", "accept", "hidden", "editor_widget"):
            opts[k] = v
    if spec.io_type == "COMBO":
        return [spec.choice_list(), opts]
    if spec.io_type == "INT":
        opts.setdefault("min", -INT_LIMIT)
        opts.setdefault("max", INT_LIMIT - 1)
    return [spec.io_type, opts] if opts else [spec.io_type]


_PY_TO_IO = {bool: "BOOLEAN", int: "INT", float: "FLOAT", str: "STRING"}


def _widget_type(annotation: Any) -> tuple[str | None, list[str] | None]:
    """INT/FLOAT/STRING/BOOLEAN from a Python annotation, COMBO from a Literal; None if not a widget type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _widget_type(typing.get_args(annotation)[0])
    if origin is Literal:
        return "COMBO", [str(a) for a in typing.get_args(annotation)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _widget_type(args[0])
        return None, None
    return _PY_TO_IO.get(annotation), None


@cache
def _input_specs(model: type[BaseModel]) -> dict[str, InputSpec]:
    specs = {}
    for name, info in model.model_fields.items():
        spec = _spec_from_field(model, name, info)
        specs[spec.name] = spec  # a workflow names an input by its alias where it has one (values.a)
    return specs


def _spec_from_field(model: type[BaseModel], name: str, info: FieldInfo) -> InputSpec:
    extra = dict(info.json_schema_extra or {}) if isinstance(info.json_schema_extra, dict) else {}
    bounds: dict[str, float | None] = {"ge": None, "le": None, "gt": None, "lt": None}
    for m in info.metadata:
        for kind, cls in (("ge", annotated_types.Ge), ("le", annotated_types.Le),
                          ("gt", annotated_types.Gt), ("lt", annotated_types.Lt)):
            if isinstance(m, cls):
                bounds[kind] = getattr(m, kind)
    hidden = extra.get("hidden")
    choices = extra.get("choices")
    io_type = extra.get("io_type")
    if io_type is None:
        io_type, literal_choices = _widget_type(info.annotation)
        if choices is None:
            choices = literal_choices
        if choices is not None:
            io_type = "COMBO"
    if io_type is None and not hidden:
        raise TypeError(
            f"{model.__qualname__}.{name}: cannot tell the port type of {info.annotation!r}; "
            "declare it with Link('TYPE') or use int/float/str/bool/Literal"
        )
    default = None if info.is_required() else info.default
    return InputSpec(
        name=info.alias or name,
        io_type=io_type or "",
        required=info.is_required(),
        optional=bool(extra.get("optional")),
        hidden=hidden,
        default=default,
        choices=choices,
        extra=extra,
        **bounds,
    )
