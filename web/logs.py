"""The server's own log for the editor's Logs panel, as ComfyUI serves it.

A logging handler on the root logger keeps the last lines in a bounded ring buffer; the editor reads them
(``GET /internal/logs`` as text, ``/internal/logs/raw`` as entries) and subscribes
(``PATCH /internal/logs/subscribe {enabled, clientId}``) to get new lines as ``logs`` websocket messages.
Only records that pass their logger's level reach the buffer (the server's log level decides, as on the
terminal).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from graph_runtime import strict_json

from .replies import error

MAX_ENTRIES = 2000
MAX_MESSAGE = 8192  # characters of one entry; longer ones are cut
MAX_SUBSCRIBERS = 64
TERMINAL_SIZE = {"cols": 120, "rows": 50}
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogBuffer(logging.Handler):
    """The last ``capacity`` log lines, and the websocket clients that want new ones."""

    def __init__(self, capacity: int = MAX_ENTRIES, level: int = logging.INFO):
        super().__init__(level)
        self.entries: deque[dict[str, str]] = deque(maxlen=capacity)
        self.subscribers: set[str] = set()
        self.hub = None
        self._mutex = threading.Lock()
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record), record.created)
        except Exception:  # never let the log panel break logging
            self.handleError(record)

    def write(self, message: str, created: float | None = None) -> None:
        """Add one line (a newline is added: the panel is a terminal) and send it to the subscribers."""
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + " [...]"
        stamp = datetime.fromtimestamp(created, timezone.utc) if created else datetime.now(timezone.utc)
        entry = {"t": stamp.isoformat(), "m": message.replace("\n", "\r\n") + "\r\n"}
        with self._mutex:
            self.entries.append(entry)
            sids = list(self.subscribers)
        hub = self.hub
        if hub is None or not sids:
            return
        data = {"entries": [entry], "size": TERMINAL_SIZE}
        for sid in sids:
            if sid in hub.clients:
                hub.send(sid, "logs", data, droppable=True)
            else:  # gone (a reconnecting editor subscribes again)
                with self._mutex:
                    self.subscribers.discard(sid)

    def snapshot(self) -> list[dict[str, str]]:
        with self._mutex:
            return list(self.entries)

    def subscribe(self, sid: str, enabled: bool) -> bool:
        with self._mutex:
            if not enabled:
                self.subscribers.discard(sid)
                return True
            if sid not in self.subscribers and len(self.subscribers) >= MAX_SUBSCRIBERS:
                return False
            self.subscribers.add(sid)
            return True

    def attach(self) -> None:
        logging.getLogger().addHandler(self)

    def detach(self) -> None:
        logging.getLogger().removeHandler(self)


def _buffer(request: Request) -> LogBuffer:
    return request.app.state.server.logs


async def get_logs(request: Request) -> Response:
    return PlainTextResponse("".join(e["m"] for e in _buffer(request).snapshot()))


async def get_raw_logs(request: Request) -> Response:
    return JSONResponse({"entries": _buffer(request).snapshot(), "size": TERMINAL_SIZE})


async def subscribe(request: Request) -> Response:
    try:
        body: Any = strict_json.loads(await request.body() or b"null", "the request body")
    except ValueError as exc:
        return error(400, str(exc))
    if not isinstance(body, dict) or not isinstance(body.get("enabled"), bool):
        return error(400, "expected {\"enabled\": true|false, \"clientId\": \"...\"}")
    sid = body.get("clientId")
    if not isinstance(sid, str) or not sid or len(sid) > 128:
        return error(400, "clientId must be the editor's websocket client id")
    if not _buffer(request).subscribe(sid, body["enabled"]):
        return error(429, f"at most {MAX_SUBSCRIBERS} clients can follow the log")
    return Response(status_code=200)


def routes() -> list:
    out = []
    for prefix in ("/internal", "/api/internal"):
        out += [Route(prefix + "/logs", get_logs, methods=["GET"]),
                Route(prefix + "/logs/raw", get_raw_logs, methods=["GET"]),
                Route(prefix + "/logs/subscribe", subscribe, methods=["PATCH"])]
    return out
