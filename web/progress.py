"""Per-node execution state as ComfyUI's current server reports it: ``progress_state`` messages.

The editor takes the running node (its outline, its progress bar, "Current node" in the top bar) from these
messages, not from ``executing``/``progress``; those are still sent for older clients. A message carries every
node that has started in this run, each with its state (running, finished) and its value of max:

    {"prompt_id": p, "nodes": {"6": {"value": 3, "max": 20, "state": "running", "node_id": "6",
                                     "prompt_id": p, "display_node_id": "6", "parent_node_id": null,
                                     "real_node_id": "6"}}}

Nodes that have not started (pending) are left out, as ComfyUI does.
"""

from __future__ import annotations

from typing import Any

from graph_runtime import events as ev

RUNNING, FINISHED, ERROR = "running", "finished", "error"


def node_ids(node_id: str, prompt_id: str) -> dict[str, Any]:
    """The ids a node is known by in messages and preview metadata (no subgraph expansion here: all the same)."""
    return {"node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id, "parent_node_id": None,
            "real_node_id": node_id}


class ProgressState:
    """Follows one run's events and tells ``send(event, data, droppable)`` the state after each change."""

    def __init__(self, prompt_id: str, send):
        self.prompt_id = prompt_id
        self.send = send
        self.nodes: dict[str, dict[str, Any]] = {}
        self.current: str | None = None

    def __call__(self, event: str, data: dict) -> None:
        if data.get("prompt_id") not in (None, self.prompt_id):
            return
        if event == ev.EXECUTING:
            node = data.get("node")
            if self.current is not None and self.current != node:
                self._finish(self.current, notify=node is None)
            if node is not None:
                self.current = str(node)
                self.nodes[self.current] = {"value": 0.0, "max": 1.0, "state": RUNNING}
                self._notify()
        elif event == ev.PROGRESS:
            node = str(data.get("node") or self.current or "")
            if not node:
                return
            self.nodes[node] = {"value": float(data.get("value") or 0), "max": float(data.get("max") or 1),
                                "state": RUNNING}
            self._notify(droppable=True)
        elif event == ev.EXECUTED:
            node = str(data.get("node"))
            if node == self.current or node not in self.nodes:
                self._finish(node)
        elif event == ev.EXECUTION_ERROR:
            if self.current is not None:
                self.nodes[self.current]["state"] = ERROR
                self.current = None
                self._notify()
        elif event in (ev.EXECUTION_SUCCESS, ev.EXECUTION_INTERRUPTED):
            if self.current is not None:
                self._finish(self.current)

    def _finish(self, node: str, notify: bool = True) -> None:
        entry = self.nodes.setdefault(node, {"value": 1.0, "max": 1.0, "state": FINISHED})
        entry["state"] = FINISHED
        entry["value"] = entry["max"]
        if self.current == node:
            self.current = None
        if notify:
            self._notify()

    def message(self) -> dict:
        return {"prompt_id": self.prompt_id,
                "nodes": {nid: {**state, **node_ids(nid, self.prompt_id)} for nid, state in self.nodes.items()}}

    def _notify(self, droppable: bool = False) -> None:
        self.send("progress_state", self.message(), droppable)
