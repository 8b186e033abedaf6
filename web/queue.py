"""The prompt queue: accepted prompts wait here, one worker thread runs them in order with one Executor.

Order is ComfyUI's: by ``number`` (``front`` gives a negative number, so it runs next), then by arrival. The
single Executor lives as long as the server, so its cache carries over: re-queueing a workflow with only the
seed changed re-runs only the sampler and what follows it.
"""

from __future__ import annotations

import heapq
import logging
import os
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from graph_runtime import Executor, WorkflowValidationError
from graph_runtime import events as ev

from .hub import Hub
from .progress import ProgressState, node_ids
from .store import HistoryEntry, QueueItem, Store

log = logging.getLogger(__name__)

# Events recorded into a history entry's status.messages (ComfyUI keeps these, not progress).
_STATUS_EVENTS = (ev.EXECUTION_START, ev.EXECUTION_CACHED, ev.EXECUTION_SUCCESS, ev.EXECUTION_ERROR,
                  ev.EXECUTION_INTERRUPTED)


# A prompt that was running when the server died runs again once; if the server dies during that run as
# well, the prompt is recorded as failed rather than taking the server down on every start.
RERUNS_AFTER_CRASH = 1
SERVER_STOPPED = "the server stopped while running this prompt"


class QueueFull(Exception):
    pass


def merge_outputs(attempts: list[dict]) -> dict:
    """The ui outputs of several runs as one: per node and kind, every item of every run (no file is lost)."""
    merged: dict[str, dict] = {}
    for attempt in attempts:
        for node, ui in attempt.items():
            if not isinstance(ui, dict):
                continue
            into = merged.setdefault(node, {})
            for kind, items in ui.items():
                if isinstance(items, list):
                    into.setdefault(kind, []).extend(i for i in items if i not in into.get(kind, []))
                else:
                    into[kind] = items
    return merged


def _note_previous_attempts(entry: HistoryEntry, item: QueueItem) -> None:
    """Record what runs cut short by a dying server wrote (files included), so nothing they left is orphaned."""
    previous = [p for p in item.partial if p]
    if previous:
        entry.status["previous_attempts"] = [{"outputs": p} for p in previous]


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:])(?:/[^\s'\"/:]+)+/?")


def scrub_error(data: dict, roots: dict[str, os.PathLike]) -> None:
    """What a client sees of an unexpected exception: the message with this machine's folders named by
    their role (``output/x.png``), any other absolute path cut to its last part, and no traceback (the
    server's log keeps it)."""
    message = str(data.get("exception_message") or "")
    for name, root in sorted(roots.items(), key=lambda kv: -len(str(kv[1]))):
        message = message.replace(str(root), name)
    data["exception_message"] = _ABSOLUTE_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "/",
                                                   message)
    if data.get("traceback"):
        data["traceback"] = []


class PromptQueue:
    def __init__(self, executor: Executor, store: Store, hub: Hub, max_pending: int = 10000):
        self.executor = executor
        self.store = store
        self.hub = hub
        self.max_pending = max_pending
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str]] = []
        self._items: dict[str, QueueItem] = {}
        self.running: QueueItem | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self._free_request: dict[str, bool] | None = None
        self.number, self._seq = store.counters()
        for item in store.pending():  # prompts left over from the last run (a crash included) run again
            if item.attempts > RERUNS_AFTER_CRASH:
                self._give_up(item)
            else:
                self._push(item)
        hub.status_provider = self.status

    # -- submitting --------------------------------------------------------------------------------------------

    def put(self, prompt: dict, *, prompt_id: str | None = None, number: float | None = None, front: bool = False,
            extra_data: dict | None = None, outputs: list[str] | None = None,
            client_id: str | None = None) -> QueueItem:
        with self._cond:
            if len(self._items) >= self.max_pending:
                raise QueueFull(f"the queue already holds {len(self._items)} prompts")
            if number is None:
                self.number += 1
                number = -self.number if front else self.number
            self._seq += 1
            item = QueueItem(number=number, prompt_id=prompt_id or str(uuid.uuid4()), prompt=prompt,
                             extra_data=extra_data or {}, outputs=list(outputs or []), client_id=client_id,
                             created=time.time(), seq=self._seq)
            self.store.add(item)
            self._push(item)
            self._cond.notify_all()
        self.hub.broadcast_status()
        return item

    def _push(self, item: QueueItem) -> None:
        self._items[item.prompt_id] = item
        heapq.heappush(self._heap, (item.number, item.seq, item.prompt_id))
        self._seq = max(self._seq, item.seq)

    # -- reading -----------------------------------------------------------------------------------------------

    def pending(self) -> list[QueueItem]:
        with self._cond:
            return sorted(self._items.values(), key=lambda i: (i.number, i.seq))

    def remaining(self) -> int:
        with self._cond:
            return len(self._items) + (1 if self.running is not None else 0)

    def status(self) -> dict:
        return {"exec_info": {"queue_remaining": self.remaining()}}

    def has(self, prompt_id: str) -> bool:
        with self._cond:
            return prompt_id in self._items or (self.running is not None and self.running.prompt_id == prompt_id)

    # -- changing ----------------------------------------------------------------------------------------------

    def delete(self, prompt_ids: list[str]) -> int:
        with self._cond:
            gone = [p for p in prompt_ids if p in self._items]
            for p in gone:
                del self._items[p]  # its heap entry is skipped when popped
            self.store.remove(gone)
        if gone:
            self.hub.broadcast_status()
        return len(gone)

    def clear(self) -> int:
        with self._cond:
            ids = list(self._items)
        return self.delete(ids)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        return self.executor.interrupt(prompt_id)

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        with self._cond:
            req = self._free_request or {"unload_models": False, "free_memory": False}
            req["unload_models"] |= unload_models
            req["free_memory"] |= free_memory
            self._free_request = req
            self._cond.notify_all()

    # -- the worker --------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._work, name="prompt-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self.executor.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)

    def _next(self) -> QueueItem | None:
        with self._cond:
            while True:
                if self._stop:
                    return None
                if self._free_request is not None:
                    req, self._free_request = self._free_request, None
                    self._cond.release()
                    try:
                        self._free(req)
                    finally:
                        self._cond.acquire()
                    continue
                while self._heap:
                    _, _, pid = heapq.heappop(self._heap)
                    item = self._items.pop(pid, None)
                    if item is not None:
                        self.running = item
                        return item
                self._cond.wait()

    def _give_up(self, item: QueueItem) -> None:
        runs = item.attempts
        log.warning("prompt %s was running when the server stopped, %d times; recording it as failed",
                    item.prompt_id, runs)
        now = time.time()
        data = {"prompt_id": item.prompt_id, "node_id": None, "node_type": None, "executed": [],
                "exception_message": f"{SERVER_STOPPED} ({runs} times); it is not run again",
                "exception_type": "ServerStopped", "traceback": [], "current_inputs": {}, "current_outputs": [],
                "timestamp": int(now * 1000)}
        entry = HistoryEntry(item=item, started=None, finished=now, outputs=merge_outputs(item.partial), meta={},
                             error=data, status={"status_str": "error", "completed": False,
                                                 "messages": [[ev.EXECUTION_ERROR, data]]})
        _note_previous_attempts(entry, item)
        self.store.finish(entry)

    def _work(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            try:
                item.attempts = self.store.started(item.prompt_id)
                self.hub.broadcast_status()
                entry = self._run(item)
                self.store.finish(entry)
                # success is told only once the history row is committed (a client reads it right after)
                for event, data in entry.extra.get("held", []):
                    self.hub.send(item.client_id, event, data)
            except Exception as exc:  # never let one prompt take the worker down
                log.exception("prompt %s failed outside its nodes", item.prompt_id)
                data = {"prompt_id": item.prompt_id, "node_id": None, "node_type": None, "executed": [],
                        "exception_message": f"the prompt's result could not be recorded: {exc}",
                        "exception_type": type(exc).__name__, "traceback": [], "current_inputs": {},
                        "current_outputs": [], "timestamp": int(time.time() * 1000)}
                self.hub.send(item.client_id, ev.EXECUTION_ERROR, data)
                try:
                    self.store.finish(HistoryEntry(item=item, status={"status_str": "error", "completed": False,
                                                                      "messages": [[ev.EXECUTION_ERROR, data]]},
                                                   outputs={}, meta={}, error=data))
                except Exception:
                    log.exception("could not record prompt %s", item.prompt_id)
            finally:
                with self._cond:
                    self.running = None
                # ComfyUI ends every prompt this way, after its history entry exists, whatever the outcome
                self.hub.send(item.client_id, ev.EXECUTING, {"node": None, "display_node": None,
                                                              "prompt_id": item.prompt_id})
                self.hub.broadcast_status()

    def _run(self, item: QueueItem) -> HistoryEntry:
        sid = item.client_id
        messages: list[list[Any]] = []
        held: list[tuple[str, dict]] = []
        hub = self.hub
        progress = ProgressState(item.prompt_id, lambda event, data, droppable: hub.send(sid, event, data, droppable))

        def forward(event: str, data: dict) -> None:
            if event == ev.PROGRESS_TEXT:
                hub.send_progress_text(sid, str(data.get("node")), str(data.get("text", "")))
                return
            if event == ev.PREVIEW:
                hub.send_preview(sid, data.get("image", b""), data.get("format", "JPEG"),
                                 node_ids(str(data.get("node")), item.prompt_id) if data.get("node") else None,
                                 keep=bool(data.get("keep")))
                return
            progress(event, data)
            if event == ev.LOG:  # a node's warning, as a line of the editor's Logs panel (a terminal)
                stamp = datetime.fromtimestamp((data.get("timestamp") or time.time() * 1000) / 1000, timezone.utc)
                line = f"node {data.get('node')}: {data.get('message')}".replace("\n", "\r\n") + "\r\n"
                hub.send(sid, "logs", {"entries": [{"t": stamp.isoformat(), "m": line}],
                                       "node": data.get("node"), "prompt_id": data.get("prompt_id")})
                return
            if event == ev.EXECUTING and data.get("node") is None:
                return  # sent once the history entry is written (clients read it right after)
            if event == ev.EXECUTION_ERROR and data.get("traceback"):
                log.error("prompt %s: node %s (%s) failed:\n%s", data.get("prompt_id"), data.get("node_id"),
                          data.get("node_type"), "".join(data["traceback"]))
                scrub_error(data, self._roots())
            if event in _STATUS_EVENTS:
                messages.append([event, data])
            if event == ev.EXECUTION_SUCCESS:
                held.append((event, data))  # sent after the history row is committed
                return
            if event == ev.EXECUTED and isinstance(data.get("output"), dict):
                try:  # if the server dies now, the next start knows which files this run wrote
                    self.store.record_output(item.prompt_id, str(data.get("node")), data["output"])
                except Exception:
                    log.exception("could not note the output of node %s", data.get("node"))
            hub.send(sid, event, data)

        started = time.time()
        try:
            result = self.executor.run(item.prompt, targets=item.outputs or None, prompt_id=item.prompt_id,
                                       extra_data=item.extra_data, handlers=[forward])
        except WorkflowValidationError as exc:
            # Valid when queued, no longer (a file it names was removed): report it like a failed node.
            body = exc.result.to_comfy()
            first = next(iter(body["node_errors"].items()), (None, {}))
            data = {"prompt_id": item.prompt_id, "node_id": first[0], "node_type": first[1].get("class_type"),
                    "executed": [], "exception_message": "\n".join(exc.result.messages()),
                    "exception_type": "ValidationError", "traceback": [], "current_inputs": {},
                    "current_outputs": [], "timestamp": int(time.time() * 1000)}
            forward(ev.EXECUTION_ERROR, data)
            return HistoryEntry(item=item, started=started, finished=time.time(), outputs={}, meta={},
                                status={"status_str": "error", "completed": False, "messages": messages},
                                error=data)
        meta = {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                for nid in result.outputs}
        status = {"status_str": "success" if result.ok else "error", "completed": result.ok, "messages": messages}
        entry = HistoryEntry(item=item, started=started, finished=time.time(), outputs=result.outputs, meta=meta,
                             status=status, error=result.error, extra={"held": held})
        if result.status == "interrupted":
            entry.status["interrupted"] = True
        _note_previous_attempts(entry, item)
        return entry

    def _roots(self) -> dict[str, os.PathLike]:
        paths = self.executor.paths
        roots = {"output": paths.output, "input": paths.input, "temp": paths.temp, "user": paths.user}
        return {**{f"models{i or ''}": m for i, m in enumerate(paths.models)}, **roots, "": paths.base}

    def _free(self, req: dict[str, bool]) -> None:
        if req.get("unload_models") or req.get("free_memory"):
            for service in self.executor.services.values():
                unload = getattr(service, "unload", None)
                if callable(unload):
                    try:
                        unload()
                    except Exception:
                        log.exception("unload() of %r failed", service)
        if req.get("free_memory"):
            self.executor.cache.clear()
