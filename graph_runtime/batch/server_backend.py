"""Run a batch on a running server, through the same client as ``run --server`` (:mod:`graph_runtime.client`).

Each job is ``POST /prompt {prompt, client_id}``; the client polls ``GET /history/{prompt_id}`` until the
prompt completes, then downloads every output file through ``GET /view`` into the job's folder. The server
validates each prompt itself; a 400 answer becomes the job's error. A server started with ``--token`` takes
the token from ``?token=`` in the URL or ``$GRAPH_RUNTIME_TOKEN``, as for ``run --server``.
"""

from __future__ import annotations

import threading
import time
import uuid

from ..client import RemoteError, Server, history_messages, output_items
from ..validation import ValidationResult
from .runner import LocalBackend, OneAtATime, Outcome, WorkItem


class ServerBackend(OneAtATime):
    name = "server"

    def __init__(self, url: str, *, validator: LocalBackend | None = None, timeout: float = 24 * 3600,
                 poll: float = 0.1):
        self.server = Server(url, timeout=60)
        self.validator = validator  # a LocalBackend that knows the nodes, when this machine has them
        self.timeout = timeout
        self.poll = poll
        self.client_id = uuid.uuid4().hex
        self._stop = threading.Event()
        self._current: str | None = None

    def open(self, document: dict, *, dry_run: bool = False) -> None:
        if self.validator is not None:
            self.validator.open(document, dry_run=dry_run)
        self.server.object_info()  # it answers, speaks the protocol and takes our token

    def validate(self, document: dict) -> ValidationResult | None:
        return self.validator.validate(document) if self.validator is not None else None

    def run_one(self, item: WorkItem) -> Outcome:
        started = time.perf_counter()

        def done(status: str, error: dict | None = None, **kw) -> Outcome:
            return Outcome(status, error, seconds=time.perf_counter() - started, worker=self.server.http, **kw)

        try:
            prompt_id = self.server.submit(item.document, self.client_id)
            self._current = prompt_id
            entry = self.server.wait(prompt_id, timeout=self.timeout, poll=self.poll, stopped=self._stop.is_set)
            if entry is None:
                return done("interrupted", {"message": "interrupted"})
            state = entry.get("status") or {}
            if state.get("status_str") != "success":
                return done(*_failure(entry))
            blobs = [self.server.download(i) for i in output_items(entry.get("outputs") or {}, types=("output",))]
            executed = [m.get("node") for m in history_messages(entry, "executed")]
            cached = next((m.get("nodes", []) for m in history_messages(entry, "execution_cached")), [])
            return done("ok", executed=[n for n in executed if n], cached=list(cached), blobs=blobs)
        except RemoteError as exc:  # PromptRejected too: the server names the node and input
            return done("error", {"message": str(exc)})
        finally:
            self._current = None

    def stop(self) -> None:
        self._stop.set()
        if self._current:
            try:
                self.server.interrupt(self._current)
            except RemoteError:
                pass

    def close(self) -> None:
        pass


def _failure(entry: dict) -> tuple[str, dict]:
    """(status, error) of a prompt that did not succeed, from its history messages."""
    for kind in ("execution_error", "execution_interrupted"):
        for data in history_messages(entry, kind):
            return ("error" if kind == "execution_error" else "interrupted"), {
                "message": data.get("exception_message") or kind.replace("execution_", ""),
                "type": data.get("exception_type"), "node_id": data.get("node_id"),
                "node_type": data.get("node_type")}
    return "error", {"message": f"the server reports status {(entry.get('status') or {}).get('status_str')!r}"}
