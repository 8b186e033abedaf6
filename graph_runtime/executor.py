"""The executor: validates, then runs the needed nodes in topological order with a cross-run cache.

A node's cache key is a hash of its class, its literal inputs, its fingerprint and its parents' keys (a
Merkle key), computed once per node in topological order: bookkeeping is linear in the size of the graph.
Changing the seed of a sampler changes its key and its descendants' keys only, so only they re-run.

ComfyUI's run semantics: only what the outputs need runs; a lazy input is evaluated only when its node asks
for it (``check_lazy_status``), so a switch runs only the branch it takes; every output is a list of values,
and a node fed a list runs once per item unless it takes whole lists (``INPUT_IS_LIST``).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import threading
import time
import traceback
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any

from pydantic import ConfigDict, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from . import events
from .cache import CacheEntry, OutputCache, make_cache
from .context import ExecutionContext, Interrupted, NodeError, Services
from .limits import LIMITS
from .node import Node, NodeResult
from .paths import RuntimePaths, using_paths
from .registry import NodeRegistry
from .validation import Plan, PlannedNode, ValidationResult, WorkflowValidationError, validate
from .workflow import unwrap


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class RunResult:
    prompt_id: str
    status: str  # "success", "error" or "interrupted"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id -> UI data (images, text)
    values: dict[str, tuple] = field(default_factory=dict)  # node id -> output values of this run
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)  # from validation (see ValidationResult)

    @property
    def ok(self) -> bool:
        return self.status == "success"


def _json_default(value: Any) -> Any:
    return repr(value)


def _has_fingerprint(cls: type[Node]) -> bool:
    return cls.fingerprint.__func__ is not Node.fingerprint.__func__  # type: ignore[attr-defined]


class Executor:
    """Runs workflows against a registry. One run at a time; ``interrupt`` may be called from any thread."""

    def __init__(
        self,
        registry: NodeRegistry,
        *,
        cache: str | OutputCache | None = "last",
        paths: RuntimePaths | None = None,
        services: Services | None = None,
        handlers: Iterable[events.Handler] = (),
    ) -> None:
        self.registry = registry
        self.cache = make_cache(cache)
        self.paths = paths or RuntimePaths()
        self.services = services or Services()
        self.handlers = list(handlers)
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._current: str | None = None

    # -- public API -----------------------------------------------------------------------------------------

    def validate(self, workflow: Any, targets: Iterable[str] | None = None) -> ValidationResult:
        with using_paths(self.paths):
            return validate(_as_document(workflow), self.registry, targets)

    def run(
        self,
        workflow: Any,
        *,
        targets: Iterable[str] | None = None,
        prompt_id: str | None = None,
        extra_data: dict[str, Any] | None = None,
        handlers: Iterable[events.Handler] = (),
    ) -> RunResult:
        """Validate and run. Raises WorkflowValidationError if invalid; failures while running are in the result."""
        document = _as_document(workflow)
        with using_paths(self.paths):
            checked = validate(document, self.registry, targets)
        if not checked.ok:
            raise WorkflowValidationError(checked)
        with self._lock, using_paths(self.paths):
            self._cancel.clear()
            self._current = prompt_id = prompt_id or str(uuid.uuid4())
            try:
                result = self._run(checked.plan, document, prompt_id, extra_data or {},
                                   events.EventBus([*self.handlers, *handlers]))
                result.warnings = checked.warnings
                return result
            finally:
                self._current = None

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Stop the running prompt at its next check (all prompts, or only ``prompt_id``)."""
        current = self._current
        if current is None or (prompt_id is not None and prompt_id != current):
            return False
        self._cancel.set()
        return True

    @property
    def running(self) -> str | None:
        return self._current

    # -- internals ------------------------------------------------------------------------------------------

    def node_keys(self, plan: Plan, ctx_factory) -> dict[str, str]:
        keys: dict[str, str] = {}
        for nid in plan.order:
            keys[nid] = self._key(plan.nodes[nid], keys, ctx_factory)
        return keys

    def _key(self, pn: PlannedNode, keys: dict[str, str], ctx_factory) -> str:
        cls = pn.cls
        if cls.NOT_CACHED:
            return "uncached:" + uuid.uuid4().hex
        fp = None
        if _has_fingerprint(cls):
            try:
                fp = cls.fingerprint(pn.literals, ctx_factory(pn))
            except Exception:
                return "uncached:" + uuid.uuid4().hex  # let execute() report the real problem
        # repr of plain literals is exact and deterministic (floats round-trip); objects fall back to JSON.
        payload = repr((pn.class_type, sorted(pn.literals.items()),
                        sorted((name, keys[src], idx) for name, (src, idx) in pn.links.items()), fp))
        if " at 0x" in payload:  # an object without a stable repr: use its JSON form instead
            payload = json.dumps([pn.class_type, sorted(pn.literals.items()), fp], default=_json_default)
            payload += repr(sorted((name, keys[src], idx) for name, (src, idx) in pn.links.items()))
        return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()

    def _run(self, plan: Plan, document: dict, prompt_id: str, extra_data: dict, bus: events.EventBus) -> RunResult:
        """Run what the targets need, pulling lazy inputs only when their node asks for them.

        Nodes wait in a heap ordered by their place in the topological order: whatever a node needs sits
        before it, so it always runs first, also when a lazy input adds it after the node was reached. A
        cached node needs nothing above it; lazy branches never asked for never run.
        """
        result = RunResult(prompt_id=prompt_id, status="success")
        emit = bus.emit

        def make_ctx(pn: PlannedNode) -> ExecutionContext:
            return ExecutionContext(node_id=pn.id, class_type=pn.class_type, prompt_id=prompt_id, paths=self.paths,
                                    services=self.services, emit=emit, cancel=self._cancel, extra_data=extra_data)

        emit(events.EXECUTION_START, {"prompt_id": prompt_id, "timestamp": _now_ms()})
        keys = self.node_keys(plan, make_ctx)
        hits: dict[str, CacheEntry] = {}
        for nid in plan.order:
            entry = self.cache.get(keys[nid])
            if entry is not None:
                hits[nid] = entry
        result.cached = [nid for nid in plan.order if nid in hits]
        emit(events.EXECUTION_CACHED, {"nodes": result.cached, "prompt_id": prompt_id, "timestamp": _now_ms()})

        lists: dict[str, tuple[list, ...]] = {}  # node id -> one list of values per output (ComfyUI's form)
        used: set[str] = set()
        for nid, entry in hits.items():  # every cached node of this prompt stays cached, as in ComfyUI
            lists[nid] = entry.outputs
            result.values[nid] = _public_values(plan.nodes[nid].cls, entry.outputs)
            used.add(keys[nid])
        place = {nid: i for i, nid in enumerate(plan.order)}
        waiting: list[tuple[int, str]] = []
        active: set[str] = set()

        def activate(roots: Iterable[str]) -> None:
            stack = [r for r in roots if r not in active]
            while stack:
                nid = stack.pop()
                if nid in active:
                    continue
                active.add(nid)
                heapq.heappush(waiting, (place[nid], nid))
                if nid in hits:
                    continue
                lazy = _lazy_inputs(plan.nodes[nid].cls)
                stack.extend(src for name, (src, _) in plan.nodes[nid].links.items()
                             if name not in lazy and src not in active)

        activate(plan.targets)
        finished: set[str] = set()
        while waiting:
            _, nid = heapq.heappop(waiting)
            if nid in finished:
                continue
            pn = plan.nodes[nid]
            entry = hits.get(nid)
            if entry is not None:
                finished.add(nid)
                if entry.ui is not None:
                    result.outputs[nid] = entry.ui
                    emit(events.EXECUTED, {"node": nid, "display_node": nid, "output": entry.ui,
                                           "prompt_id": prompt_id})
                continue
            if self._cancel.is_set():
                self._interrupted(result, pn, emit)
                break
            node = pn.cls()
            given: dict[str, list] = {name: [value] for name, value in pn.literals.items()}
            pending: dict[str, str] = {}  # lazy input -> its source node, not evaluated yet
            for name, (src, idx) in pn.links.items():
                if src in lists:
                    given[name] = lists[src][idx]
                else:
                    given[name] = [None]
                    pending[name] = src
            for name, kind in _hidden_inputs(pn.cls):
                given[name] = [_hidden_value(kind, document, extra_data, nid, prompt_id)]
            run = _NodeRun(pn, node, make_ctx(pn), given, self._cancel)
            try:
                if pending:
                    wanted = run.lazy_status()
                    needed = [pending[name] for name in wanted if name in pending]
                    if needed:
                        activate(needed)
                        heapq.heappush(waiting, (place[nid], nid))  # asked again once they ran
                        continue
                emit(events.EXECUTING, {"node": nid, "display_node": nid, "prompt_id": prompt_id})
                started = time.perf_counter()
                entry = run.execute()
            except Interrupted:
                self._interrupted(result, pn, emit)
                break
            except Exception as exc:
                self._failed(result, pn, exc, run.current, emit)
                break
            result.timings[nid] = time.perf_counter() - started
            result.executed.append(nid)
            finished.add(nid)
            lists[nid] = entry.outputs
            result.values[nid] = _public_values(pn.cls, entry.outputs)
            self.cache.put(keys[nid], entry)
            used.add(keys[nid])
            if entry.ui is not None:
                result.outputs[nid] = entry.ui
                emit(events.EXECUTED, {"node": nid, "display_node": nid, "output": entry.ui, "prompt_id": prompt_id})
        self.cache.end_run(used)
        if result.status == "success":
            # ComfyUI's order: success, then "executing" with no node, which clients read as "prompt done".
            emit(events.EXECUTION_SUCCESS, {"prompt_id": prompt_id, "timestamp": _now_ms()})
            emit(events.EXECUTING, {"node": None, "display_node": None, "prompt_id": prompt_id})
        return result

    def _interrupted(self, result: RunResult, pn: PlannedNode, emit) -> None:
        result.status = "interrupted"
        result.error = {"prompt_id": result.prompt_id, "node_id": pn.id, "node_type": pn.class_type,
                        "executed": list(result.executed), "timestamp": _now_ms()}
        emit(events.EXECUTION_INTERRUPTED, result.error)

    def _failed(self, result: RunResult, pn: PlannedNode, exc: Exception, kwargs: dict, emit) -> None:
        result.status = "error"
        user_error = isinstance(exc, NodeError)
        result.error = {
            "prompt_id": result.prompt_id,
            "node_id": pn.id,
            "node_type": pn.class_type,
            "executed": list(result.executed),
            "exception_message": str(exc) or type(exc).__name__,
            "exception_type": type(exc).__name__ if not user_error else "NodeError",
            "traceback": [] if user_error else traceback.format_exception(exc),
            "current_inputs": {k: _preview_value(v) for k, v in kwargs.items() if k not in ("prompt", "extra_pnginfo")},
            "current_outputs": list(result.values),
            "timestamp": _now_ms(),
        }
        emit(events.EXECUTION_ERROR, result.error)


def _as_document(workflow: Any) -> Any:
    return unwrap(workflow)


@cache
def _lazy_inputs(cls: type[Node]) -> frozenset[str]:
    return frozenset(s.name for s in cls.input_specs().values() if s.lazy)


@cache
def _hidden_inputs(cls: type[Node]) -> tuple[tuple[str, str], ...]:
    return tuple((s.name, s.hidden) for s in cls.input_specs().values() if s.hidden)


def _hidden_value(kind: str, document: dict, extra_data: dict, nid: str, prompt_id: str) -> Any:
    if kind == "PROMPT":
        return document
    if kind == "EXTRA_PNGINFO":
        return extra_data.get("extra_pnginfo")
    if kind == "UNIQUE_ID":
        return nid
    if kind == "PROMPT_ID":
        return prompt_id
    return None


class _NodeRun:
    """One node's run over its inputs, ComfyUI's way: every input is a list; a node that does not take whole
    lists (INPUT_IS_LIST) runs once per item of the longest one, shorter lists repeating their last item; its
    outputs collect one item per run, and a list output's items are joined."""

    def __init__(self, pn: PlannedNode, node: Node, ctx: ExecutionContext, given: dict[str, list], cancel) -> None:
        self.pn, self.node, self.ctx, self.given, self.cancel = pn, node, ctx, given, cancel
        self.current: dict[str, Any] = {}  # the inputs of the run under way (shown when it fails)

    def _items(self) -> Iterable[dict[str, Any]]:
        given = self.given
        if self.pn.cls.INPUT_IS_LIST:
            self.current = given
            yield given
            return
        count = 1
        for name, items in given.items():
            if len(items) != 1:
                if not items:
                    raise NodeError(f"input '{name}' received an empty list: there is nothing to run this node on")
                count = max(count, len(items))
        if count == 1:
            self.current = {name: items[0] for name, items in given.items()}
            yield self.current
            return
        for i in range(count):
            if i and self.cancel.is_set():
                raise Interrupted()
            self.current = {name: items[min(i, len(items) - 1)] for name, items in given.items()}
            yield self.current

    def lazy_status(self) -> list[str]:
        wanted: list[str] = []
        for kwargs in self._items():
            names = self.node.check_lazy_status(self.pn.cls.Inputs.model_construct(**kwargs), self.ctx) or ()
            for name in [names] if isinstance(names, str) else names:
                if name not in wanted:
                    wanted.append(name)
        return wanted

    def execute(self) -> CacheEntry:
        cls = self.pn.cls
        declared = cls.OUTPUTS
        outputs: list[list] = [[] for _ in declared]
        ui: dict[str, Any] | None = None
        for kwargs in self._items():
            inputs = _whole_lists(cls, kwargs) if cls.INPUT_IS_LIST else _checked(cls, kwargs)
            values, run_ui = _normalize(cls, self.node.execute(inputs, self.ctx))
            for slot, (out, value) in enumerate(zip(declared, values, strict=True)):
                if out.is_list:
                    if not isinstance(value, list | tuple):
                        raise TypeError(f"{cls.type_name}.execute: output {slot} ({out.label}) is declared a list, "
                                        f"got {type(value).__name__}")
                    outputs[slot].extend(value)
                else:
                    outputs[slot].append(value)
                if len(outputs[slot]) > LIMITS.max_list_items:
                    raise NodeError(f"output {out.label} holds more than {LIMITS.max_list_items} items "
                                    f"(max_list_items)")
            if run_ui is not None:
                ui = _merge_ui(ui, run_ui)
        return CacheEntry(outputs=tuple(outputs), ui=ui)


def _checked(cls: type[Node], kwargs: dict[str, Any]) -> Any:
    try:
        return cls.Inputs.model_validate(kwargs)
    except PydanticValidationError as exc:
        raise NodeError(_linked_input_message(exc)) from None


def _whole_lists(cls: type[Node], kwargs: dict[str, list]) -> Any:
    """The inputs of an INPUT_IS_LIST node: each input a list, each item checked against the declared type."""
    lazy = _lazy_inputs(cls)
    hidden = {name for name, _ in _hidden_inputs(cls)}
    checked: dict[str, list] = {}
    for name, items in kwargs.items():
        if name in hidden or (name in lazy and items == [None]):
            checked[name] = list(items)
            continue
        adapter = _item_adapter(cls.Inputs, name)
        try:
            checked[name] = [adapter.validate_python(item) for item in items]
        except PydanticValidationError as exc:
            raise NodeError(f"input '{name}': an item is not valid here: {exc.errors()[0].get('msg')}") from None
    return cls.Inputs.model_construct(**checked)


@cache
def _item_adapter(model: type, name: str) -> TypeAdapter:
    info = model.model_fields[name]
    return TypeAdapter(Annotated[info.annotation, info], config=_ITEM_CONFIG)


_ITEM_CONFIG = ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)


def _merge_ui(ui: dict[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    """UI data of several runs of one node: lists are joined (images of every item), other values replaced."""
    if ui is None:
        return dict(more)
    for key, value in more.items():
        if isinstance(value, list) and isinstance(ui.get(key), list):
            ui[key] = ui[key] + value
        else:
            ui[key] = value
    return ui


def _public_values(cls: type[Node], outputs: tuple[list, ...]) -> tuple:
    """RunResult.values' form: an output's one value, or the list where it is declared a list or the node
    ran other than once."""
    return tuple(items if out.is_list or len(items) != 1 else items[0] for out, items in zip(cls.OUTPUTS, outputs, strict=True))


def _normalize(cls: type[Node], out: Any) -> tuple[tuple, dict[str, Any] | None]:
    if isinstance(out, NodeResult):
        outputs, ui = tuple(out.outputs), out.ui
    elif isinstance(out, tuple | list):
        outputs, ui = tuple(out), None
    elif out is None and not cls.OUTPUTS:
        outputs, ui = (), None
    else:
        raise TypeError(f"{cls.type_name}.execute must return a tuple or NodeResult, got {type(out).__name__}")
    if len(outputs) != len(cls.OUTPUTS):
        raise TypeError(f"{cls.type_name}.execute returned {len(outputs)} output(s), declares {len(cls.OUTPUTS)}")
    return outputs, ui


def _linked_input_message(exc: PydanticValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"input '{loc}': {e.get('msg')}")
    return "a linked value is not valid here: " + "; ".join(parts)


def _preview_value(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__}{tuple(shape)}"
    text = repr(value)
    return text if len(text) < 200 else text[:200] + "..."
