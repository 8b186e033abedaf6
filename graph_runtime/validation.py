"""Validation of a workflow before anything runs, collecting every error rather than the first.

Errors come in ComfyUI's ``node_errors`` shape so that the editor highlights the right node and input:
``{node_id: {"class_type", "dependent_outputs", "errors": [{"type", "message", "details", "extra_info"}]}}``.
A valid workflow compiles into a :class:`Plan`: the nodes to run in topological order, with their literal
inputs already checked and defaults filled, so the executor does no second pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any

import networkx as nx
from pydantic import ConfigDict, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from .node import ANY, INT_LIMIT, InputSpec, Node
from .registry import NodeRegistry
from .workflow import link_parts

_STRICT = ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)


def error(type_: str, message: str, details: str = "", **extra_info: Any) -> dict[str, Any]:
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info}


@dataclass
class PlannedNode:
    id: str
    class_type: str
    cls: type[Node]
    literals: dict[str, Any]  # checked literal inputs, defaults filled in
    links: dict[str, tuple[str, int]]  # input name -> (source id, output index)


@dataclass
class Plan:
    nodes: dict[str, PlannedNode]
    order: list[str]  # every node to run, parents before children
    targets: list[str]


@dataclass
class ValidationResult:
    error: dict[str, Any] | None = None
    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    plan: Plan | None = None
    # Problems that do not block the run (an input the node does not declare is ignored, as ComfyUI does):
    # [{"node_id", "class_type", "type", "message", "details", "extra_info"}]
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.node_errors

    def to_comfy(self) -> dict[str, Any]:
        """The body of ComfyUI's 400 answer to POST /prompt (``warnings`` is ours; clients ignore it)."""
        return {"error": self.error, "node_errors": self.node_errors, "warnings": self.warnings}

    def messages(self) -> list[str]:
        """One readable line per problem, for terminals."""
        lines = []
        if self.error and not self.node_errors:
            lines.append(f"{self.error['message']}" + (f": {self.error['details']}" if self.error["details"] else ""))
        for nid, entry in self.node_errors.items():
            for e in entry["errors"]:
                where = f"node {nid} ({entry['class_type']})"
                inp = e["extra_info"].get("input_name")
                if inp:
                    where += f" input '{inp}'"
                lines.append(f"{where}: {e['message']}" + (f" - {e['details']}" if e["details"] else ""))
        return lines


def warning_line(warning: dict[str, Any]) -> str:
    """A warning as one readable line, for terminals."""
    return f"node {warning.get('node_id')} ({warning.get('class_type')}): {warning.get('message')}"


class WorkflowValidationError(Exception):
    """Raised by the executor when a workflow does not validate; carries the full result."""

    def __init__(self, result: ValidationResult):
        self.result = result
        super().__init__("\n".join(result.messages()) or "invalid workflow")


def types_compatible(output_type: str, input_type: str) -> bool:
    """ComfyUI's rule: equal, a wildcard on either side, or a match inside comma-separated unions."""
    if output_type == input_type or ANY in (output_type, input_type):
        return True
    if input_type == "COMBO" and output_type in ("STRING", "COMBO"):
        return True
    outs, ins = set(output_type.split(",")), set(input_type.split(","))
    return bool(outs & ins)


@cache
def _adapter(model: type, name: str) -> TypeAdapter:
    info = model.model_fields.get(name) or next(f for f in model.model_fields.values() if f.alias == name)
    if not info.metadata:
        return TypeAdapter(info.annotation, config=_STRICT)
    return TypeAdapter(Annotated[(info.annotation, *info.metadata)], config=_STRICT)  # bounds and validators


# During one validate() call, each input's list of choices (files on disk for LoadImage) is built once, not
# once per node: 4,999 LoadImage nodes took 86 s when every one listed the input folder again.
_CHOICE_CACHE: ContextVar[dict | None] = ContextVar("graph_runtime_choices", default=None)


def _choices(spec: InputSpec) -> tuple[list[str], set[str] | list[str]]:
    cache = _CHOICE_CACHE.get()
    key = id(spec.choices)
    if cache is not None and key in cache:
        return cache[key]
    choices = spec.choice_list()
    try:
        found: tuple[list[str], set[str] | list[str]] = (choices, set(choices))
    except TypeError:  # unhashable choices: look them up in the list
        found = (choices, choices)
    if cache is not None:
        cache[key] = found
    return found


def check_literal(cls: type[Node], spec: InputSpec, value: Any) -> tuple[Any, dict | None]:
    """Validate one literal widget value; returns (coerced value, error or None)."""
    name = spec.name
    if spec.io_type == "COMBO":
        if not isinstance(value, str):
            return value, error("invalid_input_type", f"'{name}' expects one of a list of strings",
                                f"got {type(value).__name__}", input_name=name, received_value=_short(value))
        choices, members = _choices(spec)
        accept = spec.extra.get("accept")
        if value not in members and not (accept is not None and accept(value)):
            shown = ", ".join(choices[:20]) + (" ..." if len(choices) > 20 else "")
            return value, error("value_not_in_list", f"Value not in list: {name}: '{value}' not in [{shown}]",
                                "", input_name=name, received_value=_short(value), input_config=choices[:200])
        return value, None
    if spec.io_type == "INT" and isinstance(value, int) and not isinstance(value, bool):
        lo = spec.ge if spec.ge is not None else -INT_LIMIT
        hi = spec.le if spec.le is not None else INT_LIMIT - 1
        if value < lo:
            return value, error("value_smaller_than_min", f"Value {value} smaller than min of {lo}: {name}",
                                "", input_name=name, received_value=_short(value))
        if value > hi:
            return value, error("value_bigger_than_max", f"Value {value} bigger than max of {hi}: {name}",
                                "", input_name=name, received_value=_short(value))
    if spec.io_type == "FLOAT" and isinstance(value, float) and not math.isfinite(value):
        return value, error("invalid_input_type", f"'{name}' must be a finite number", f"got {value}",
                            input_name=name, received_value=_short(value))
    try:
        return _adapter(cls.Inputs, name).validate_python(value), None
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        kind = first.get("type", "")
        ctx = first.get("ctx") or {}
        if kind in ("greater_than_equal", "greater_than"):
            bound = ctx.get("ge", ctx.get("gt"))
            return value, error("value_smaller_than_min", f"Value {value} smaller than min of {bound}: {name}",
                                "", input_name=name, received_value=_short(value))
        if kind in ("less_than_equal", "less_than"):
            bound = ctx.get("le", ctx.get("lt"))
            return value, error("value_bigger_than_max", f"Value {value} bigger than max of {bound}: {name}",
                                "", input_name=name, received_value=_short(value))
        return value, error("invalid_input_type", f"'{name}' expects {spec.io_type}: {first.get('msg', kind)}",
                            f"got {type(value).__name__} {_short(value)}", input_name=name, received_value=_short(value))


def _short(value: Any, limit: int = 200) -> Any:
    """A JSON-safe, bounded echo of a received value (NaN and Inf become text, long values are cut)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value if not isinstance(value, str) or len(value) <= limit else value[:limit] + "..."
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _Collector:
    def __init__(self, document: dict):
        self.document = document
        self.node_errors: dict[str, dict[str, Any]] = {}
        self.warnings: list[dict[str, Any]] = []

    def warn(self, node_id: str, class_type: str, warning: dict[str, Any]) -> None:
        self.warnings.append({"node_id": node_id, "class_type": class_type, **warning})

    def add(self, node_id: str, err: dict[str, Any]) -> None:
        spec = self.document.get(node_id)
        class_type = spec.get("class_type") if isinstance(spec, dict) else None
        entry = self.node_errors.setdefault(
            node_id, {"errors": [], "dependent_outputs": [], "class_type": class_type if isinstance(class_type, str) else None}
        )
        entry["errors"].append(err)


def validate(document: Any, registry: NodeRegistry, targets: Iterable[str] | None = None) -> ValidationResult:
    """Check a workflow (API format, unwrapped) against the registry; compile a Plan when it is valid."""
    token = _CHOICE_CACHE.set({})
    try:
        return _validate(document, registry, targets)
    finally:
        _CHOICE_CACHE.reset(token)


def _validate(document: Any, registry: NodeRegistry, targets: Iterable[str] | None) -> ValidationResult:
    if not isinstance(document, dict):
        return ValidationResult(error=error("invalid_prompt", "A workflow must be a JSON object of nodes",
                                            f"got {type(document).__name__}"))
    if not document:
        return ValidationResult(error=error("prompt_no_outputs", "Prompt has no outputs", "the workflow is empty"))
    if any(not isinstance(k, str) for k in document):
        document = {str(k): v for k, v in document.items()}
    out = _Collector(document)
    classes: dict[str, type[Node]] = {}
    unusable: dict[str, dict] = {}  # reported only where a requested output needs the node (ComfyUI's rule)
    for nid, spec in document.items():
        if not isinstance(spec, dict):
            unusable[nid] = error("invalid_node", f"node {nid} must be an object with class_type and inputs",
                                  f"got {type(spec).__name__}")
            continue
        ct = spec.get("class_type")
        if not isinstance(ct, str):
            unusable[nid] = error("invalid_node", f"node {nid} has no class_type string", f"got {_short(ct)}")
            continue
        if not isinstance(spec.get("inputs", {}), dict):
            unusable[nid] = error("invalid_node", f"node {nid}: inputs must be an object",
                                  f"got {type(spec.get('inputs')).__name__}")
            continue
        cls = registry.get(ct)
        if cls is None:
            unusable[nid] = error("missing_node_type", f"Node type '{ct}' is not known",
                                  "no installed node pack provides it", class_type=ct)
            continue
        classes[nid] = cls

    # The dependency graph, from every link whose source exists (broken links are reported per node below).
    graph = nx.DiGraph()
    graph.add_nodes_from(document)
    edges = []
    unknown = [nid for nid, e in unusable.items() if e["type"] == "missing_node_type"]
    for nid in [*classes, *unknown]:  # an unknown node's links too: what feeds it is part of the graph
        for value in document[nid].get("inputs", {}).values():
            if isinstance(value, list):
                parts = link_parts(value)
                if parts and parts[0] in document:
                    edges.append((parts[0], nid))
    graph.add_edges_from(edges)

    top_error = None
    partial = targets is not None
    if partial:
        targets = [str(t) for t in targets]
        for t in targets:
            if t not in document:
                top_error = error("invalid_prompt", f"Requested output node {t} is not in the workflow", "",
                                  node_id=t)
        targets = [t for t in targets if t in document]
    else:
        targets = [nid for nid, cls in classes.items() if cls.OUTPUT_NODE]
    if not targets and top_error is None:
        if unusable:  # e.g. the only output node is of an unknown type: name it, not "no outputs"
            for nid, e in unusable.items():
                out.add(nid, e)
        else:
            top_error = error("prompt_no_outputs", "Prompt has no outputs",
                              "add an output node (for example one that saves or shows a result)")
    # An unknown node wired into the graph that nothing consumes may be the graph's output (a SaveVideo): what
    # it needs is checked too, so one run names every node type the workflow lacks, not one layer at a time.
    maybe_outputs = [] if partial else [n for n in unknown if graph.in_degree(n) and not graph.out_degree(n)]
    needed = _ancestors_and_self(graph, [*targets, *maybe_outputs])
    # Only what the outputs need is checked and run (ComfyUI's rule): a spare node on the canvas, or a
    # half-built branch that feeds no output, does not block the run.
    checked = needed
    for nid, e in unusable.items():
        if nid in needed:
            out.add(nid, e)

    try:
        topo_order = list(nx.topological_sort(graph))
    except nx.NetworkXUnfeasible:  # only now pay for finding which nodes form the cycles
        topo_order = []
        _report_cycles(graph, checked, out)

    plan_nodes: dict[str, PlannedNode] = {}
    for nid in checked:
        cls = classes.get(nid)
        if cls is None:
            continue
        planned = _check_node(nid, cls, document, classes, out)
        if planned is not None:
            plan_nodes[nid] = planned

    out.warnings.sort(key=lambda w: _id_sort_key(w["node_id"]))
    if out.node_errors:
        out.node_errors = dict(sorted(out.node_errors.items(), key=lambda kv: _id_sort_key(kv[0])))
        _fill_dependent_outputs(graph, targets, out.node_errors)
        return ValidationResult(
            error=top_error or error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                     f"{sum(len(e['errors']) for e in out.node_errors.values())} error(s)"),
            node_errors=out.node_errors, warnings=out.warnings,
        )
    if top_error is not None:
        return ValidationResult(error=top_error, warnings=out.warnings)
    order = [n for n in topo_order if n in needed]
    return ValidationResult(plan=Plan(nodes=plan_nodes, order=order, targets=targets), warnings=out.warnings)


def _report_cycles(graph: nx.DiGraph, checked: set[str], out: _Collector) -> None:
    for comp in nx.strongly_connected_components(graph):
        if len(comp) == 1:
            (n,) = comp
            if not graph.has_edge(n, n):
                continue
        if not comp <= checked:
            continue  # a cycle is either wholly needed or not needed at all
        members = sorted(comp, key=_id_sort_key)
        # each node is named once: the first lists the cycle, the others point to it (not n x n names)
        first = members[0]
        out.add(first, error("dependency_cycle", "Dependency cycle detected",
                             f"the {len(members)} nodes in the cycle: " + ", ".join(members), cycle=members))
        for n in members[1:]:
            out.add(n, error("dependency_cycle", "Dependency cycle detected",
                             f"in the cycle listed on node {first}", cycle_of=first))


def _fill_dependent_outputs(graph: nx.DiGraph, targets: list[str], node_errors: dict, budget: int = 2_000_000) -> None:
    """Which requested outputs each failing node blocks; bounded work, so huge broken graphs stay cheap."""
    for t in targets:
        for nid in _ancestors_and_self(graph, [t]):
            if nid in node_errors:
                node_errors[nid]["dependent_outputs"].append(t)
        budget -= len(graph)
        if budget < 0:
            break


def _ancestors_and_self(graph: nx.DiGraph, targets: list[str]) -> set[str]:
    """Everything the targets depend on, in one walk (not one walk per target)."""
    seen = set(targets)
    stack = list(targets)
    pred = graph.pred
    while stack:
        for parent in pred[stack.pop()]:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _id_sort_key(nid: str) -> tuple:
    nid = str(nid)
    return (0, int(nid), "") if nid.isascii() and nid.isdecimal() else (1, 0, nid)


@cache
def _visible_specs(cls: type[Node]) -> dict[str, InputSpec]:
    return {name: spec for name, spec in cls.input_specs().items() if not spec.hidden}


_LITERAL_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING"}


def _union_literal_error(spec: InputSpec, value: Any) -> dict | None:
    """None if ``value`` is a literal of one of the types of a union input such as ``FLOAT,INT,BOOLEAN``."""
    kind = ("BOOLEAN" if isinstance(value, bool) else "INT" if isinstance(value, int)
            else "FLOAT" if isinstance(value, float) else "STRING" if isinstance(value, str) else None)
    if kind == "INT" and not -INT_LIMIT <= value < INT_LIMIT:
        kind = None
    if kind == "FLOAT" and not math.isfinite(value):
        kind = None
    if kind in spec.io_type.split(","):
        return None
    return error("invalid_input_type", f"'{spec.name}' expects a {spec.io_type.replace(',', ' or ')} value or a link",
                 f"got {_short(value)}", input_name=spec.name, received_value=_short(value))


def _check_node(nid: str, cls: type[Node], document: dict, classes: dict, out: _Collector) -> PlannedNode | None:
    inputs: dict[str, Any] = document[nid].get("inputs", {})
    visible = _visible_specs(cls)
    literals: dict[str, Any] = {}
    links: dict[str, tuple[str, int]] = {}
    ok = True
    if not inputs.keys() <= visible.keys():
        # ComfyUI ignores what a node does not declare (a file saved by a newer or older version of the node);
        # the user still hears of it, since a misspelt name silently falls back to the default.
        for name in inputs:
            if name not in visible:
                out.warn(nid, cls.type_name, error(
                    "undeclared_input", f"input '{name}' is not an input of {cls.type_name} and is ignored",
                    "declared inputs: " + (", ".join(visible) or "none"), input_name=name))
    for name, spec in visible.items():
        if spec.extra.get("editor_widget"):
            literals[name] = None  # the editor's display state: never a value for the node
            continue
        if name not in inputs:
            if spec.required:
                ok = False
                out.add(nid, error("required_input_missing", f"Required input is missing: {name}",
                                   f"expects {spec.io_type}", input_name=name))
            else:
                literals[name] = spec.default
            continue
        value = inputs[name]
        if isinstance(value, list):
            parts = link_parts(value)
            if parts is None:
                ok = False
                out.add(nid, error("bad_linked_input", f"Bad linked input '{name}': expected [source_node_id, output_index]",
                                   f"got {_short(value)}", input_name=name, received_value=_short(value)))
                continue
            src, idx = parts
            if src not in document:
                ok = False
                out.add(nid, error("link_to_missing_node", f"Input '{name}' links to node {src}, which does not exist",
                                   "", input_name=name, linked_node=[src, idx]))
                continue
            src_cls = classes.get(src)
            if src_cls is None:
                ok = False  # the source's own error says why
                continue
            if not 0 <= idx < len(src_cls.OUTPUTS):
                ok = False
                out.add(nid, error("output_index_out_of_range",
                                   f"Input '{name}' links to output {idx} of node {src} ({src_cls.type_name}), "
                                   f"which has {len(src_cls.OUTPUTS)} output(s)", "", input_name=name,
                                   linked_node=[src, idx]))
                continue
            out_type = src_cls.OUTPUTS[idx].type
            if not types_compatible(out_type, spec.io_type):
                ok = False
                out.add(nid, error("return_type_mismatch",
                                   f"Return type mismatch between linked nodes: {name}, received_type({out_type}) "
                                   f"mismatch input_type({spec.io_type})", f"from node {src} output {idx}",
                                   input_name=name, received_type=out_type, linked_node=[src, idx]))
                continue
            links[name] = (src, idx)
            continue
        if "," in spec.io_type and set(spec.io_type.split(",")) <= _LITERAL_TYPES:
            err = _union_literal_error(spec, value)  # "FLOAT,INT,BOOLEAN": a literal of one of them
            if err is None:
                literals[name] = value
            else:
                ok = False
                out.add(nid, err)
            continue
        if not spec.is_widget and spec.io_type != ANY:
            ok = False
            out.add(nid, error("invalid_input_type", f"'{name}' is a {spec.io_type} input and needs a link",
                               f"got the literal {_short(value)}", input_name=name, received_value=_short(value)))
            continue
        if spec.io_type == ANY:
            literals[name] = value
            continue
        coerced, err = check_literal(cls, spec, value)
        if err is not None:
            ok = False
            out.add(nid, err)
        else:
            literals[name] = coerced
    if not ok:
        return None
    return PlannedNode(id=nid, class_type=cls.type_name, cls=cls, literals=literals, links=links)
