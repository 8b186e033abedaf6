"""Execution events, ComfyUI's names, delivered to pluggable handlers.

A handler is any callable ``handler(event, data)``: a terminal progress bar, the websocket hub, a batch log.
A handler that raises is dropped from that run rather than allowed to break it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

EXECUTION_START = "execution_start"
EXECUTION_CACHED = "execution_cached"
EXECUTING = "executing"
PROGRESS = "progress"
PREVIEW = "preview"  # data: {node, prompt_id, format, image: bytes, keep: never skipped for a slow client}
PROGRESS_TEXT = "progress_text"  # data: {node, prompt_id, text}: a line the editor shows on the node
EXECUTED = "executed"
EXECUTION_ERROR = "execution_error"
EXECUTION_INTERRUPTED = "execution_interrupted"
EXECUTION_SUCCESS = "execution_success"
LOG = "log"  # data: {node, prompt_id, level, message}: warnings from nodes, shown to the user

Handler = Callable[[str, dict[str, Any]], None]


class EventBus:
    """Fans events out to handlers; isolates the run from a failing handler."""

    def __init__(self, handlers: list[Handler] | tuple[Handler, ...] = ()):
        self._handlers = list(handlers)

    def emit(self, event: str, data: dict[str, Any]) -> None:
        for h in list(self._handlers):
            try:
                h(event, data)
            except Exception:  # a broken display must not cost the user their render
                log.exception("event handler %r failed on %s; dropping it", h, event)
                self._handlers.remove(h)


class Recorder:
    """A handler that keeps every event in order (for history, tests and the batch manifest)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        self.events.append((event, data))

    def of(self, event: str) -> list[dict[str, Any]]:
        return [d for e, d in self.events if e == event]
