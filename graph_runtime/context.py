"""The small facade a node's ``execute`` receives: progress, cancel check, folders, shared services.

Keeping this surface small is what makes nodes easy to test: a test builds a context with
:meth:`ExecutionContext.standalone` and calls ``execute`` directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from . import events
from .paths import RuntimePaths

T = TypeVar("T")


class Interrupted(Exception):
    """Raised inside a node when the user interrupts the run."""


class NodeError(Exception):
    """An error a node raises for bad input or missing files: shown to the user without a traceback."""


class Services:
    """Long-lived objects shared across runs (the model store, the device choice), created on first use."""

    def __init__(self) -> None:
        self._items: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: type[T] | str, factory: Callable[[], T] | None = None) -> T:
        with self._lock:
            if key not in self._items:
                if factory is None:
                    if not isinstance(key, type):
                        raise KeyError(f"no service {key!r} and no factory to make it")
                    factory = key
                self._items[key] = factory()
            return self._items[key]

    def set(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value

    def values(self) -> list[Any]:
        with self._lock:
            return list(self._items.values())


class ExecutionContext:
    def __init__(
        self,
        *,
        node_id: str,
        class_type: str,
        prompt_id: str,
        paths: RuntimePaths,
        services: Services,
        emit: Callable[[str, dict], None],
        cancel: threading.Event,
        extra_data: dict[str, Any] | None = None,
    ) -> None:
        self.node_id = node_id
        self.class_type = class_type
        self.prompt_id = prompt_id
        self.paths = paths
        self.services = services
        self.extra_data = extra_data or {}
        self._emit = emit
        self._cancel = cancel

    @classmethod
    def standalone(cls, paths: RuntimePaths | None = None, services: Services | None = None,
                   node_id: str = "0", class_type: str = "", emit=None) -> ExecutionContext:
        """A context outside any run: for tests and for calling nodes as plain functions."""
        return cls(node_id=node_id, class_type=class_type, prompt_id="standalone", paths=paths or RuntimePaths(),
                   services=services or Services(), emit=emit or (lambda e, d: None), cancel=threading.Event())

    def service(self, key: type[T] | str, factory: Callable[[], T] | None = None) -> T:
        return self.services.get(key, factory)

    @property
    def interrupted(self) -> bool:
        return self._cancel.is_set()

    def check_interrupted(self) -> None:
        if self._cancel.is_set():
            raise Interrupted()

    def progress(self, value: int, total: int) -> None:
        """Report progress (value of total) and stop here if the run was interrupted."""
        self._emit(events.PROGRESS, {"value": value, "max": total, "prompt_id": self.prompt_id,
                                     "node": self.node_id})
        self.check_interrupted()

    def preview(self, image: bytes, fmt: str = "JPEG", *, keep: bool = False) -> None:
        """An image for the editor (a sampling preview); ``keep`` marks a result that a slow client must still
        get (SaveImageWebsocket's images), where a plain preview may be skipped."""
        self._emit(events.PREVIEW, {"node": self.node_id, "prompt_id": self.prompt_id, "format": fmt,
                                    "image": image, "keep": keep})

    def progress_text(self, text: str) -> None:
        """A short text the editor shows on the running node (ComfyUI's progress text, e.g. an image's size)."""
        self._emit(events.PROGRESS_TEXT, {"node": self.node_id, "prompt_id": self.prompt_id, "text": text})

    def warn(self, message: str) -> None:
        self._emit(events.LOG, {"node": self.node_id, "prompt_id": self.prompt_id, "level": "warning",
                                "message": message, "timestamp": int(time.time() * 1000)})
