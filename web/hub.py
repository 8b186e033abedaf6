"""The websocket hub: who is connected, and a bounded outbox per client.

The worker thread hands messages to the hub with ``send``/``broadcast``/``send_preview`` (thread-safe); each
client has its own sender task draining a bounded outbox. A slow reader therefore never stalls the queue:
when its outbox is full, previews are dropped first, then progress messages, and a client that still cannot
keep up is disconnected (it reconnects and gets a fresh status).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from graph_runtime import strict_json

log = logging.getLogger(__name__)

BINARY_PREVIEW_IMAGE = 1
BINARY_TEXT = 3  # uint32 length, node id, UTF-8 text: shown on that node (ComfyUI's progress text)
BINARY_PREVIEW_IMAGE_WITH_METADATA = 4  # uint32 length, JSON {node_id, display_node_id, prompt_id, ...}, image
IMAGE_TYPES = {"JPEG": 1, "PNG": 2}
MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
DROPPABLE = ("progress",)
BINARY_KINDS = ("preview", "image")
CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455: the server is overloaded
# Events for a client id that is not connected are held this long, this many, for this many client ids.
PARKED_SECONDS = 60.0
PARKED_MESSAGES = 256
PARKED_CLIENTS = 64  # JSON messages that may be dropped (after previews) for a slow client


class Client:
    def __init__(self, sid: str, ws: WebSocket, cap: int):
        self.sid = sid
        self.ws = ws
        self.cap = cap
        # (kind, payload): kind "json", "progress", "preview" (binary, may be skipped) or "image" (binary, kept)
        self.outbox: deque[tuple[str, Any]] = deque()
        self.wakeup = asyncio.Event()
        self.closed = False
        self.dropped = 0

    def offer(self, kind: str, payload: Any) -> bool:
        """Queue a message; False if the client is hopelessly behind and should be dropped."""
        if self.closed:
            return True
        if len(self.outbox) >= self.cap:
            if kind == "preview":
                self.dropped += 1
                return True
            if not self._evict("preview") and not self._evict("progress"):
                if kind == "progress":
                    self.dropped += 1
                    return True
                return False
        self.outbox.append((kind, payload))
        self.wakeup.set()
        return True

    def _evict(self, kind: str) -> bool:
        for i, (k, _) in enumerate(self.outbox):
            if k == kind:
                del self.outbox[i]
                self.dropped += 1
                return True
        return False


class Hub:
    def __init__(self, max_clients: int = 256, max_queue: int = 1024):
        self.max_clients = max_clients
        self.max_queue = max_queue
        self.clients: dict[str, Client] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.status_provider: Callable[[], dict] = lambda: {"exec_info": {"queue_remaining": 0}}
        self.feature_flags: dict[str, Any] = {}
        self.client_flags: dict[str, dict] = {}
        self._status_pending = False
        self._parked: dict[str, deque] = {}
        self._connecting = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    # -- thread-safe entry points --------------------------------------------------------------------------

    def _call(self, fn, *args) -> bool:
        """Run ``fn`` on the event loop (now if already on it); False if there is no loop to run it."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return False
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
            return True
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed while shutting down
            return False
        return True

    def send(self, sid: str | None, event: str, data: dict, droppable: bool | None = None) -> None:
        """A JSON event to one client (nothing if it is not connected). A droppable one (progress, by default)
        may be left out for a client that cannot keep up: a later one says the same, newer."""
        if sid is None:
            return
        text = strict_json.dumps({"type": event, "data": data})
        if droppable is None:
            droppable = event in DROPPABLE
        self._call(self._offer, sid, "progress" if droppable else "json", text)

    def broadcast(self, event: str, data: dict) -> None:
        text = strict_json.dumps({"type": event, "data": data})
        self._call(self._offer_all, "json", text)

    def send_preview(self, sid: str | None, image: bytes, fmt: str = "JPEG", metadata: dict | None = None,
                     keep: bool = False) -> None:
        """A preview image to one client: with ``metadata`` (which node, which prompt) as a type-4 frame to a
        client that announced ``supports_preview_metadata``, else as a plain type-1 frame. A preview may be
        skipped for a client that cannot keep up; a ``keep`` one (a result sent as an image) is not."""
        if sid is None:
            return
        self._call(self._offer_preview, sid, bytes(image), fmt.upper(), metadata, keep)

    def send_progress_text(self, sid: str | None, node_id: str, text: str) -> None:
        """A line of text for the editor to show on a node, as ComfyUI's binary text frame (may be skipped for a
        client that cannot keep up, like a preview)."""
        if sid is None:
            return
        nid = str(node_id).encode()
        frame = struct.pack(">II", BINARY_TEXT, len(nid)) + nid + str(text).encode()
        self._call(self._offer, sid, "preview", frame)

    def _offer_preview(self, sid: str, image: bytes, fmt: str, metadata: dict | None, keep: bool = False) -> None:
        if metadata is not None and self.client_flags.get(sid, {}).get("supports_preview_metadata") is True:
            meta = strict_json.dumps({**metadata, "image_type": MIME_TYPES.get(fmt, "image/jpeg")}).encode()
            frame = struct.pack(">II", BINARY_PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + image
        else:
            frame = struct.pack(">II", BINARY_PREVIEW_IMAGE, IMAGE_TYPES.get(fmt, 1)) + image
        self._offer(sid, "image" if keep else "preview", frame)

    def broadcast_status(self) -> None:
        """Queue status to everyone; a burst of changes becomes one message with the latest count."""
        if self._status_pending:
            return
        self._status_pending = True
        if not self._call(self._broadcast_status):
            self._status_pending = False

    # -- on the event loop ---------------------------------------------------------------------------------

    def _broadcast_status(self) -> None:
        self._status_pending = False
        text = strict_json.dumps({"type": "status", "data": {"status": self.status_provider()}})
        self._offer_all("json", text)

    def _offer(self, sid: str, kind: str, payload: Any) -> None:
        client = self.clients.get(sid)
        if client is None:
            self._keep_for_later(sid, kind, payload)
        elif not client.offer(kind, payload):
            self._drop(client, "too slow")

    def _keep_for_later(self, sid: str, kind: str, payload: Any) -> None:
        """Hold a few recent events of a client that is not connected (yet, or reconnecting): a client that
        submits before its socket is up, or whose socket dropped for a moment, still sees its prompt end."""
        if kind in BINARY_KINDS:  # images are not held for a client that is away
            return
        now = time.monotonic()
        box = self._parked.get(sid)
        if box is None:
            if len(self._parked) >= PARKED_CLIENTS:
                oldest = min(self._parked, key=lambda k: self._parked[k][-1][0] if self._parked[k] else 0)
                del self._parked[oldest]
            box = self._parked[sid] = deque(maxlen=PARKED_MESSAGES)
        box.append((now, kind, payload))

    def _take_parked(self, sid: str) -> list[tuple[str, Any]]:
        box = self._parked.pop(sid, None)
        if not box:
            return []
        fresh = time.monotonic() - PARKED_SECONDS
        return [(kind, payload) for t, kind, payload in box if t >= fresh]

    def _offer_all(self, kind: str, payload: Any) -> None:
        for client in list(self.clients.values()):
            if not client.offer(kind, payload):
                self._drop(client, "too slow")

    def _drop(self, client: Client, reason: str) -> None:
        log.info("dropping websocket client %s: %s", client.sid, reason)
        client.closed = True
        client.outbox.clear()
        client.wakeup.set()
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]

    async def serve(self, ws: WebSocket) -> None:
        """Run one websocket connection until it closes."""
        if len(self.clients) + self._connecting >= self.max_clients:
            # Accepted, then closed with a reason: a refused upgrade would read as HTTP 403 "forbidden".
            await ws.accept()
            await ws.close(code=CLOSE_TRY_AGAIN_LATER,
                           reason=f"server full: {self.max_clients} websocket clients connected; retry later")
            return
        self._connecting += 1
        try:
            await ws.accept()
        finally:
            self._connecting -= 1
        sid = ws.query_params.get("clientId") or ""
        if not sid or len(sid) > 128:
            sid = uuid.uuid4().hex
        elif sid in self.clients:
            # The id belongs to a live connection (the first to use it). A second socket does not take it over
            # (it would receive that client's progress, previews and results); it gets an id of its own,
            # which the status message below tells it (a duplicated browser tab simply carries on with it).
            log.info("websocket client id %s is in use; the new connection gets a fresh id", sid)
            sid = uuid.uuid4().hex
        client = Client(sid, ws, self.max_queue)
        self.clients[sid] = client
        client.offer("json", strict_json.dumps({"type": "status", "data": {"status": self.status_provider(), "sid": sid}}))
        for kind, payload in self._take_parked(sid):
            client.offer(kind, payload)
        sender = asyncio.create_task(self._sender(client))
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text:
                    self._on_client_message(client, text)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if self.clients.get(sid) is client:
                del self.clients[sid]
            self.client_flags.pop(sid, None)
            client.closed = True
            client.wakeup.set()
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, Exception):
                pass

    def _on_client_message(self, client: Client, text: str) -> None:
        if len(text) > 65536:
            return
        try:
            msg = json.loads(text)
        except ValueError:
            return
        if isinstance(msg, dict) and msg.get("type") == "feature_flags":
            if isinstance(msg.get("data"), dict):
                self.client_flags[client.sid] = msg["data"]
            client.offer("json", strict_json.dumps({"type": "feature_flags", "data": self.feature_flags}))

    async def _sender(self, client: Client) -> None:
        ws = client.ws
        try:
            while True:
                while not client.outbox:
                    if client.closed:
                        raise _Closed
                    client.wakeup.clear()
                    await client.wakeup.wait()
                kind, payload = client.outbox.popleft()
                if kind in BINARY_KINDS:
                    await ws.send_bytes(payload)
                else:
                    await ws.send_text(payload)
        except _Closed:
            pass
        except Exception:  # the peer went away mid-send
            client.closed = True
        if client.closed:
            try:
                await ws.close(code=1008)
            except Exception:
                pass

    async def close_all(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client, "server shutting down")
            try:
                await client.ws.close(code=1001)
            except Exception:
                pass


class _Closed(Exception):
    pass
