"""The editor's saved format ("UI format": nodes, links, widgets_values) converted to the API format.

The editor keeps widget values as a positional list; their meaning comes from the node declaration's input
order (required inputs, then optional ones, widgets only), exactly the order the editor built the widgets in.
Like the editor's own conversion: an extra "control after generate" value follows seed inputs and is
dropped; muted nodes are left out; bypassed nodes pass a matching-typed input through; Reroute nodes are
followed; PrimitiveNode values become literals; Note nodes are ignored.

Subgraphs (``definitions.subgraphs``) are flattened as the editor's graphToPrompt flattens them: each inner
node becomes a node of its own, its id prefixed with its instances' ids (``56:52``; nested ``48:35:43``),
links cross subgraph inputs and outputs, and a subgraph input no link feeds takes the value the instance
saved for it (else each inner widget keeps its own). A node type that is not installed is converted from the
widget slots its file lists; validation names it only where an output needs it.
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


SUBGRAPH_INPUT_NODE = -10  # the editor's id for a subgraph's input node (links from it are subgraph inputs)
MAX_SUBGRAPH_DEPTH = 32
MAX_EXPANDED_NODES = 100_000  # subgraphs used inside subgraphs multiply: bound what one file can expand to


class _Graph:
    """One level of the editor's graph: the workflow itself, or a subgraph's definition as seen by one of its
    instances (inner node ids are prefixed with the instances' ids, ``19:13``, as the editor numbers them)."""

    def __init__(self, nodes: dict[int, dict], links: dict, path: tuple[str, ...] = (), where: str = "",
                 parent: _Graph | None = None, instance: dict | None = None, definition: dict | None = None):
        self.nodes, self.links, self.path, self.where = nodes, links, path, where
        self.parent, self.instance, self.definition = parent, instance, definition

    def exec_id(self, nid: int) -> str:
        return ":".join((*self.path, str(nid)))

    def name(self, nid: int, node: dict | None = None) -> str:
        """How errors name a node: its id (with the instance path), its type, and the subgraph it is in."""
        node = node if node is not None else self.nodes.get(nid)
        text = f"node {self.exec_id(nid)}" + (f" ({node.get('type')})" if node else "")
        return text + (f" {self.where}" if self.where else "")


def _parse_nodes(entries: list, where: str) -> dict[int, dict]:
    nodes: dict[int, dict] = {}
    for node in entries:
        if not isinstance(node, dict) or "id" not in node or "type" not in node:
            raise UIFormatError(f"malformed node entry {_short(node)}{where}: expected an object with 'id' and 'type'")
        nid = _as_id(node["id"], f"node id{where}")
        if nid in nodes:
            raise UIFormatError(f"node id {nid} is used by two nodes{where}")
        _check_node(node, nid)
        nodes[nid] = node
    return nodes


class _Converter:
    def __init__(self, doc: dict, registry: NodeRegistry | dict):
        self.registry = registry
        self._info: dict[str, dict | None] = {}
        self.root = _Graph(_parse_nodes(doc["nodes"], ""), _links(doc))
        definitions = doc.get("definitions")
        if definitions and not isinstance(definitions, dict):  # an empty list or null is no definitions
            raise UIFormatError(f"'definitions' must be an object, got {type(definitions).__name__}")
        subgraphs = _list_field(definitions or {}, "subgraphs", "definitions")
        self.definitions = {s["id"]: s for s in subgraphs if isinstance(s, dict) and isinstance(s.get("id"), str)}
        self._children: dict[tuple[str, ...], _Graph] = {}
        self._promoted: dict[tuple[str, ...], dict[int, Any]] = {}
        self.expanded = 0

    # -- subgraphs ----------------------------------------------------------------------------------------

    def child(self, graph: _Graph, nid: int, node: dict) -> _Graph:
        """The inside of the subgraph instance ``nid`` of ``graph``."""
        path = (*graph.path, str(nid))
        found = self._children.get(path)
        if found is not None:
            return found
        definition = self.definitions[node["type"]]
        label = definition.get("name") if isinstance(definition.get("name"), str) else definition["id"]
        where = f"in subgraph '{_clip(label)}' (node {':'.join(path)})"
        if len(path) > MAX_SUBGRAPH_DEPTH:
            raise UIFormatError(f"{where}: subgraphs are nested more than {MAX_SUBGRAPH_DEPTH} deep "
                                "(a subgraph that contains itself?)")
        for key in ("nodes", "links", "inputs", "outputs"):
            _list_field(definition, key, f"subgraph '{_clip(label)}'")
        try:
            nodes = _parse_nodes(definition.get("nodes") or [], f" {where}")
            links = _links(definition)
        except UIFormatError as exc:
            raise UIFormatError(f"{exc}" if where in str(exc) else f"{where}: {exc}") from None
        self.expanded += len(nodes)
        if self.expanded > MAX_EXPANDED_NODES:
            raise UIFormatError(f"{where}: expanding the subgraphs gives more than {MAX_EXPANDED_NODES} nodes")
        found = _Graph(nodes, links, path, where, graph, node, definition)
        self._children[path] = found
        return found

    def subgraph_slot(self, graph: _Graph, kind: str, slot: int) -> tuple[int, dict]:
        """The definition's input or output behind slot ``slot`` of the instance: matched by name (the saved
        instance may list fewer slots than its definition), else by position."""
        declared = [s for s in graph.definition.get(kind) or [] if isinstance(s, dict)]
        own = graph.instance.get(kind) or []
        name = own[slot].get("name") if 0 <= slot < len(own) and isinstance(own[slot], dict) else None
        for i, entry in enumerate(declared):
            if name is not None and entry.get("name") == name:
                return i, entry
        if 0 <= slot < len(declared):
            return slot, declared[slot]
        raise UIFormatError(f"{kind[:-1]} {slot} of subgraph node {graph.path[-1]} is not in its definition "
                            f"{graph.where}")

    def instance_input_link(self, graph: _Graph, index: int) -> int | None:
        """The link feeding the instance's input for the definition's input ``index`` (matched by name)."""
        entry = (graph.definition.get("inputs") or [])[index]
        own = [i for i in graph.instance.get("inputs") or [] if isinstance(i, dict)]
        for inp in own:
            if inp.get("name") == entry.get("name"):
                return inp.get("link")
        return None

    def promoted_value(self, graph: _Graph, index: int) -> tuple[str, Any] | None:
        """The value of a subgraph input no link feeds, shown as a widget on the instance: from the instance's
        widgets_values (one per input that feeds a widget, in the subgraph's order). None leaves each inner
        widget its own value: the newer editor saves none on the instance, whose widgets show the inner ones
        (proxyWidgets), each keeping its own, as the editor's graphToPrompt does."""
        values = self._promoted.get(graph.path)
        if values is None:
            values = self._promoted[graph.path] = self.promoted_values(graph)
        return ("value", values[index]) if index in values else None

    def promoted_values(self, graph: _Graph) -> dict[int, Any]:
        targets: dict[int, list[tuple[int, str]]] = {}
        for i, entry in enumerate(graph.definition.get("inputs") or []):
            for lid in (entry.get("linkIds") or []) if isinstance(entry, dict) else []:
                link = graph.links.get(lid) if isinstance(lid, int) else None
                if link is None or link[2] not in graph.nodes:
                    continue
                inputs = graph.nodes[link[2]].get("inputs") or []
                slot = inputs[link[3]] if 0 <= link[3] < len(inputs) and isinstance(inputs[link[3]], dict) else {}
                if slot.get("widget"):
                    targets.setdefault(i, []).append((link[2], slot["widget"].get("name") or slot.get("name")))
        saved = graph.instance.get("widgets_values")
        if isinstance(saved, list):
            return {i: saved[k] for k, i in enumerate(sorted(targets)) if k < len(saved)}
        return {}

    # -- links --------------------------------------------------------------------------------------------

    def input_link(self, node: dict, slot: int) -> int | None:
        inputs = node.get("inputs") or []
        if 0 <= slot < len(inputs) and isinstance(inputs[slot], dict):
            return inputs[slot].get("link")
        return None

    def resolve(self, graph: _Graph, link_id: int, want_type: str) -> tuple[str, Any] | None:
        """Follow a link back through reroutes, bypassed nodes and subgraph boundaries:
        ("link", [id, slot]), ("value", v) or None."""
        for _ in range(MAX_REROUTE_DEPTH):
            link = graph.links.get(link_id)
            if link is None:
                return None
            src_id, src_slot = link[0], link[1]
            if src_id == SUBGRAPH_INPUT_NODE and graph.instance is not None:
                declared = graph.definition.get("inputs") or []
                if not 0 <= src_slot < len(declared) or not isinstance(declared[src_slot], dict):
                    raise UIFormatError(f"link {link_id} {graph.where} comes from subgraph input {src_slot}, "
                                        f"which the subgraph does not have")
                outer_link = self.instance_input_link(graph, src_slot)
                if outer_link is None:
                    return self.promoted_value(graph, src_slot)
                graph, link_id = graph.parent, outer_link
                continue
            src = graph.nodes.get(src_id)
            if src is None:
                raise UIFormatError(f"link {link_id} {graph.where + ' ' if graph.where else ''}comes from node "
                                    f"{graph.exec_id(src_id)}, which is not in the graph")
            mode = src.get("mode", 0)
            if src["type"] == "Reroute":
                next_link = self.input_link(src, 0)
            elif mode == MODE_MUTED:
                return None
            elif src["type"] == "PrimitiveNode":
                values = src.get("widgets_values") or []
                if not values:
                    raise UIFormatError(f"{graph.name(src_id, src)} has no value")
                return "value", values[0]
            elif mode == MODE_BYPASS:
                next_link = self.bypass_input(src, src_slot, want_type)
            elif src["type"] in self.definitions:
                inner = self.child(graph, src_id, src)
                _, output = self.subgraph_slot(inner, "outputs", src_slot)
                ids = output.get("linkIds") or []
                if not ids:
                    return None
                graph, link_id = inner, _as_id(ids[0], f"{inner.where}: output link")
                continue
            else:
                return "link", [graph.exec_id(src_id), src_slot]
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

    # -- nodes --------------------------------------------------------------------------------------------

    def convert(self) -> dict[str, dict]:
        api: dict[str, dict] = {}
        self.convert_graph(self.root, api)
        return api

    def convert_graph(self, graph: _Graph, api: dict[str, dict]) -> None:
        for nid, node in sorted(graph.nodes.items()):
            ntype = node["type"]
            if ntype in VIRTUAL_TYPES or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
                continue  # a muted or bypassed subgraph runs nothing inside
            if ntype in self.definitions:
                self.convert_graph(self.child(graph, nid, node), api)
                continue
            try:
                entry = self.convert_node(graph, nid, node)
            except UIFormatError:
                raise
            except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError) as exc:
                # a shape _check_node does not foresee: still a named refusal, never a crash
                raise UIFormatError(f"{graph.name(nid, node)}: malformed entry ({type(exc).__name__}: "
                                    f"{_short(str(exc))})") from None
            api[graph.exec_id(nid)] = entry

    def convert_node(self, graph: _Graph, nid: int, node: dict) -> dict:
        ntype = node["type"]
        # A type that is not installed keeps the widget names its file records; validation names it if an
        # output needs it (a spare one on the canvas does no harm, as in ComfyUI).
        info = self.info(ntype) or _info_from_slots(node)
        inputs = self.widget_inputs(graph, nid, node, info)
        for inp in node.get("inputs") or []:
            if not isinstance(inp, dict):
                continue
            name = (inp.get("widget") or {}).get("name") or inp.get("name")
            link = inp.get("link")
            if link is None or not name:
                continue
            resolved = self.resolve(graph, link, str(inp.get("type", "*")))
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

    def widget_inputs(self, graph: _Graph, nid: int, node: dict, info: dict) -> dict[str, Any]:
        values = node.get("widgets_values")
        widgets = _widget_names(info)
        if values is None:
            return {}
        if isinstance(values, dict):  # some nodes save their widgets by name
            return {k: v for k, v in values.items() if k in widgets}
        if not isinstance(values, list):
            raise UIFormatError(f"{graph.name(nid, node)}: widgets_values must be a list")
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


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _info_from_slots(node: dict) -> dict:
    """An /object_info stand-in for a node type that is not installed: the widget inputs its saved slots list,
    in their order (the editor saves a slot for every widget)."""
    required: dict[str, list] = {}
    for inp in node.get("inputs") or []:
        if isinstance(inp, dict) and isinstance(inp.get("widget"), dict):
            name = inp["widget"].get("name") or inp.get("name")
            io_type = str(inp.get("type") or "")
            if isinstance(name, str) and io_type in WIDGET_IO:
                required[name] = [io_type, {}]
    return {"input": {"required": required}, "input_order": {"required": list(required)}}


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
