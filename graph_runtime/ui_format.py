"""The editor's saved format ("UI format": nodes, links, widgets_values) converted to the API format.

The editor keeps widget values as a positional list; their meaning comes from the node declaration's input
order (required inputs, then optional ones, widgets only), exactly the order the editor built the widgets in.
Like the editor's own conversion: an extra "control after generate" value follows seed inputs and is
dropped; muted nodes are left out; bypassed nodes pass a matching-typed input through; Reroute nodes are
followed; PrimitiveNode values become literals; Note nodes are ignored.
"""

from __future__ import annotations

from typing import Any

from .registry import NodeRegistry
from .validation import types_compatible
from .workflow import WorkflowFormatError

MODE_MUTED = 2
MODE_BYPASS = 4
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
SEED_NAMES = ("seed", "noise_seed")
VIRTUAL_TYPES = ("Reroute", "PrimitiveNode", "Note", "MarkdownNote")
MAX_REROUTE_DEPTH = 1000


class UIFormatError(WorkflowFormatError):
    """The editor file cannot be converted; the message names the node."""


def is_ui_format(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("nodes"), list) and "links" in doc


MAX_ID = 2**53  # the editor's ids are JavaScript numbers: integers up to 2**53


def _as_id(value: Any, what: str) -> int:
    """An editor id (node, link, slot): an integer, or a float or digit string holding one; else UIFormatError."""
    if isinstance(value, bool):
        raise UIFormatError(f"{what} must be a number, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 20:
        value = int(value)
    if not isinstance(value, int):
        raise UIFormatError(f"{what} must be an integer, got {_short(value)}")
    if not -MAX_ID <= value <= MAX_ID:
        raise UIFormatError(f"{what} {value} is out of range")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _list_field(entry: dict, key: str, what: str) -> list:
    value = entry.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise UIFormatError(f"{what}: '{key}' must be a list, got {type(value).__name__}")
    return value


def _links(doc: dict) -> dict[int, tuple[int, int, int, int, str]]:
    """link id -> (from node, from slot, to node, to slot, type); accepts the list and the object forms."""
    out: dict[int, tuple[int, int, int, int, str]] = {}
    for link in _list_field(doc, "links", "the workflow"):
        if isinstance(link, list) and len(link) >= 6:
            lid, a, a_slot, b, b_slot, typ = link[:6]
        elif isinstance(link, dict):
            lid, a, a_slot = link.get("id"), link.get("origin_id"), link.get("origin_slot")
            b, b_slot, typ = link.get("target_id"), link.get("target_slot"), link.get("type")
        else:
            raise UIFormatError(f"malformed link {_short(link)}: expected [id, from, slot, to, slot, type]")
        try:
            out[_as_id(lid, "link id")] = (_as_id(a, "link origin"), _as_id(a_slot, "link origin slot"),
                                           _as_id(b, "link target"), _as_id(b_slot, "link target slot"),
                                           typ if isinstance(typ, str) else str(typ)[:80])
        except UIFormatError as exc:
            raise UIFormatError(f"malformed link {_short(link)}: {exc}") from None
    return out


def _check_node(node: dict, nid: int) -> None:
    """The shape of one node entry, so that converting it can only fail with a message naming it."""
    ntype = node["type"]
    if not isinstance(ntype, str) or not ntype:
        raise UIFormatError(f"node {nid}: 'type' must be a node type name, got {_short(ntype)}")
    where = f"node {nid} ({ntype})"
    mode = node.get("mode", 0)
    if mode is not None and (isinstance(mode, bool) or not isinstance(mode, int | float)):
        raise UIFormatError(f"{where}: 'mode' must be a number, got {_short(mode)}")
    for key in ("inputs", "outputs"):
        for i, slot in enumerate(_list_field(node, key, where)):
            if slot is None:
                continue
            if not isinstance(slot, dict):
                raise UIFormatError(f"{where}: {key}[{i}] must be an object, got {_short(slot)}")
            if key == "inputs":
                if slot.get("link") is not None:
                    slot["link"] = _as_id(slot["link"], f"{where}: inputs[{i}].link")
                widget = slot.get("widget")
                if widget is not None and not isinstance(widget, dict):
                    raise UIFormatError(f"{where}: inputs[{i}].widget must be an object, got {_short(widget)}")
                name = (widget or {}).get("name") or slot.get("name")
                if name is not None and not isinstance(name, str):
                    raise UIFormatError(f"{where}: inputs[{i}] has a name that is not a string: {_short(name)}")
    values = node.get("widgets_values")
    if values is not None and not isinstance(values, list | dict):
        raise UIFormatError(f"{where}: widgets_values must be a list, got {type(values).__name__}")


class _Converter:
    def __init__(self, doc: dict, registry: NodeRegistry | dict):
        self.registry = registry
        self._info: dict[str, dict | None] = {}
        self.links = _links(doc)
        self.nodes: dict[int, dict] = {}
        for node in doc["nodes"]:
            if not isinstance(node, dict) or "id" not in node or "type" not in node:
                raise UIFormatError(f"malformed node entry {_short(node)}: expected an object with 'id' and 'type'")
            nid = _as_id(node["id"], "node id")
            if nid in self.nodes:
                raise UIFormatError(f"node id {nid} is used by two nodes")
            _check_node(node, nid)
            self.nodes[nid] = node
        definitions = doc.get("definitions")
        if definitions and not isinstance(definitions, dict):  # an empty list or null is no definitions
            raise UIFormatError(f"'definitions' must be an object, got {type(definitions).__name__}")
        subgraphs = _list_field(definitions or {}, "subgraphs", "definitions")
        self.subgraph_ids = {s.get("id") for s in subgraphs if isinstance(s, dict) and isinstance(s.get("id"), str)}

    def input_link(self, node: dict, slot: int) -> int | None:
        inputs = node.get("inputs") or []
        if 0 <= slot < len(inputs) and isinstance(inputs[slot], dict):
            return inputs[slot].get("link")
        return None

    def resolve(self, link_id: int, want_type: str) -> tuple[str, Any] | None:
        """Follow a link back through reroutes and bypassed nodes: ("link", [id, slot]), ("value", v) or None."""
        for _ in range(MAX_REROUTE_DEPTH):
            link = self.links.get(link_id)
            if link is None:
                return None
            src_id, src_slot = link[0], link[1]
            src = self.nodes.get(src_id)
            if src is None:
                raise UIFormatError(f"link {link_id} comes from node {src_id}, which is not in the graph")
            mode = src.get("mode", 0)
            if src["type"] == "Reroute":
                next_link = self.input_link(src, 0)
            elif mode == MODE_MUTED:
                return None
            elif src["type"] == "PrimitiveNode":
                values = src.get("widgets_values") or []
                if not values:
                    raise UIFormatError(f"node {src_id} (PrimitiveNode) has no value")
                return "value", values[0]
            elif mode == MODE_BYPASS:
                next_link = self.bypass_input(src, src_slot, want_type)
            else:
                return "link", [str(src_id), src_slot]
            if next_link is None:
                return None
            link_id = next_link
        raise UIFormatError(f"link {link_id}: reroutes form a loop")

    def bypass_input(self, node: dict, slot: int, want_type: str) -> int | None:
        """The input a bypassed node passes through for output ``slot``: same slot first, then the same type."""
        outputs = node.get("outputs") or []
        out_type = outputs[slot].get("type") if 0 <= slot < len(outputs) and isinstance(outputs[slot], dict) \
            else want_type
        inputs = [i for i in node.get("inputs") or [] if isinstance(i, dict)]
        candidates = ([inputs[slot]] if 0 <= slot < len(inputs) else []) + inputs
        for inp in candidates:
            if inp.get("link") is not None and types_compatible(str(inp.get("type", "")), str(out_type)):
                return inp["link"]
        return None

    def convert(self) -> dict[str, dict]:
        api: dict[str, dict] = {}
        for nid, node in sorted(self.nodes.items()):
            try:
                entry = self.convert_node(nid, node)
            except UIFormatError:
                raise
            except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError) as exc:
                # a shape _check_node does not foresee: still a named refusal, never a crash
                raise UIFormatError(f"node {nid} ({node.get('type')}): malformed entry ({type(exc).__name__}: "
                                    f"{_short(str(exc))})") from None
            if entry is not None:
                api[str(nid)] = entry
        return api

    def convert_node(self, nid: int, node: dict) -> dict | None:
        ntype = node["type"]
        mode = node.get("mode", 0)
        if ntype in VIRTUAL_TYPES or mode in (MODE_MUTED, MODE_BYPASS):
            return None
        if ntype in self.subgraph_ids:
            raise UIFormatError(f"node {nid} is a subgraph; unpack it in the editor before running headless")
        info = self.info(ntype)
        if info is None:
            raise UIFormatError(f"node {nid}: node type '{ntype}' is not installed")
        inputs = self.widget_inputs(nid, node, info)
        for inp in node.get("inputs") or []:
            if not isinstance(inp, dict):
                continue
            name = (inp.get("widget") or {}).get("name") or inp.get("name")
            link = inp.get("link")
            if link is None or not name:
                continue
            resolved = self.resolve(link, str(inp.get("type", "*")))
            if resolved is None:
                if name not in _widget_names(info):
                    inputs.pop(name, None)  # an unconnected link input: validation says what is missing
                continue
            inputs[name] = resolved[1]
        entry: dict[str, Any] = {"class_type": ntype, "inputs": inputs}
        title = node.get("title")
        entry["_meta"] = {"title": title if isinstance(title, str) and title else ntype}
        return entry

    def info(self, ntype: str) -> dict | None:
        """The node's /object_info entry, from a registry or from a server's /object_info answer."""
        if ntype not in self._info:
            if isinstance(self.registry, dict):
                self._info[ntype] = self.registry.get(ntype)
            else:
                cls = self.registry.get(ntype)
                self._info[ntype] = cls.describe() if cls is not None else None
        return self._info[ntype]

    def widget_inputs(self, nid: int, node: dict, info: dict) -> dict[str, Any]:
        values = node.get("widgets_values")
        widgets = _widget_names(info)
        if values is None:
            return {}
        if isinstance(values, dict):  # some nodes save their widgets by name
            return {k: v for k, v in values.items() if k in widgets}
        if not isinstance(values, list):
            raise UIFormatError(f"node {nid} ({node['type']}): widgets_values must be a list")
        out: dict[str, Any] = {}
        i = 0
        items = list(widgets.items())
        for k, (name, (io_type, opts)) in enumerate(items):
            if i >= len(values):
                break
            out[name] = values[i]
            i += 1
            if io_type == DYNAMIC_COMBO:  # the chosen option's own widgets follow it
                for child in _option_widgets(opts, out[name]):
                    if i >= len(values):
                        break
                    out[f"{name}.{child}"] = values[i]
                    i += 1
                continue
            has_control = (io_type == "INT" and name in SEED_NAMES) or opts.get("control_after_generate")
            if has_control and i < len(values) and _is_control_value(values[i], items[k + 1:]):
                i += 1
        return out


def _is_control_value(value: Any, rest: list) -> bool:
    """Whether ``value`` is a seed widget's saved control (``randomize`` & co.; some files save it as true /
    false), not the next widget's value: a boolean counts only where the next widget is no BOOLEAN."""
    if isinstance(value, str):
        return value in CONTROL_VALUES
    return isinstance(value, bool) and not (rest and rest[0][1][0] == "BOOLEAN")


WIDGET_IO = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # a combo whose chosen option adds its own inputs (name.input)


def _option_widgets(opts: dict, key: Any) -> list[str]:
    """The widget inputs of DynamicCombo option ``key``, in the editor's order."""
    for option in opts.get("options") or []:
        if isinstance(option, dict) and option.get("key") == key:
            return list(_widget_names({"input": option.get("inputs") or {}}))
    return []


def _widget_names(info: dict) -> dict[str, tuple[str, dict]]:
    """Widget inputs in the editor's order (required, then optional): name -> (type, options)."""
    out: dict[str, tuple[str, dict]] = {}
    inputs = info.get("input") or {}
    order = info.get("input_order") or {}
    for group in ("required", "optional"):
        declared = inputs.get(group) or {}
        for name in order.get(group) or list(declared):
            spec = declared.get(name)
            if not isinstance(spec, list | tuple) or not spec:
                continue
            io_type = "COMBO" if isinstance(spec[0], list | tuple) else str(spec[0])
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if io_type in WIDGET_IO or io_type == DYNAMIC_COMBO:
                out[name] = (io_type, opts)
    return out


def ui_to_api(doc: dict, registry: NodeRegistry | dict) -> dict[str, dict]:
    """Convert an editor-saved workflow to the API format (raises UIFormatError naming the node).

    ``registry`` is a NodeRegistry, or a server's /object_info answer (converting for a remote server).
    """
    if not is_ui_format(doc):
        raise UIFormatError("not an editor workflow: expected 'nodes' and 'links'")
    return _Converter(doc, registry).convert()
