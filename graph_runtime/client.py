"""A client of the server's ComfyUI protocol, the one both ``run --server`` and ``batch --server`` speak through.

HTTP with urllib; the websocket (to follow a run as it happens) with the ``websockets`` sync client, imported
only when a connection is opened. A server started with ``serve --token`` wants the token on every request:
it comes from a ``?token=`` in the URL, else from ``$GRAPH_RUNTIME_TOKEN``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

TOKEN_ENV = "GRAPH_RUNTIME_TOKEN"
OUTPUT_KINDS = ("images", "files", "gifs", "video", "audio")


class RemoteError(Exception):
    """The server could not be reached or answered something unexpected."""


class PromptRejected(RemoteError):
    """``POST /prompt`` refused the workflow; ``lines`` name node, class and input where the server did."""

    def __init__(self, status: int, reply: Any):
        self.status = status
        self.reply = reply
        self.lines = rejection_lines(reply)
        self.invalid = status == 400 and isinstance(reply, dict) and "node_errors" in reply
        super().__init__(f"the server refused the prompt: {'; '.join(self.lines) or f'HTTP {status}'}")


def rejection_lines(reply: Any) -> list[str]:
    """Readable lines of a ComfyUI 400 answer (``{"error": ..., "node_errors": ...}``), tolerant of its shape."""
    if not isinstance(reply, dict):
        return []
    lines = []
    node_errors = reply.get("node_errors") if isinstance(reply.get("node_errors"), dict) else {}
    for nid, entry in node_errors.items():
        entry = entry if isinstance(entry, dict) else {}
        for e in entry.get("errors") or []:
            if not isinstance(e, dict):
                continue
            where = f"node {nid} ({entry.get('class_type')})"
            inp = (e.get("extra_info") or {}).get("input_name")
            if inp:
                where += f" input '{inp}'"
            lines.append(f"{where}: {e.get('message')}" + (f" - {e['details']}" if e.get("details") else ""))
    err = reply.get("error")
    if not lines and err:
        if isinstance(err, dict):
            lines.append(str(err.get("message")) + (f": {err['details']}" if err.get("details") else ""))
        else:
            lines.append(str(err))
    return lines


def loads(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


class Server:
    """One server: ``ws://host:port``, ``http://host:port``, ``host:port`` (a trailing ``/ws`` is dropped)."""

    def __init__(self, url: str, timeout: float = 30.0):
        parts = urllib.parse.urlsplit(url.strip() if "://" in url else "ws://" + url.strip())
        scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme)
        if scheme is None or not parts.netloc:
            raise RemoteError(f"--server {url!r}: expected ws://host:port (or http://host:port)")
        query = urllib.parse.parse_qs(parts.query)
        self.token = (query.get("token") or [None])[0] or os.environ.get(TOKEN_ENV) or None
        path = parts.path.rstrip("/").removesuffix("/ws")
        self.http = f"{scheme}://{parts.netloc}{path}"
        self.ws = f"{'wss' if scheme == 'https' else 'ws'}://{parts.netloc}{path}/ws"
        self.timeout = timeout
        self.warnings: list[dict] = []  # what the server said of the last prompt it accepted (ignored inputs)

    def __str__(self) -> str:
        return self.http

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, route: str, body: Any = None, timeout: float | None = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.http + route, data=data, method=method, headers=self._headers())
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise RemoteError(f"{self.http} wants a token: put ?token=... in the URL or set ${TOKEN_ENV}"
                                  + (" (the one given was refused)" if self.token else "")) from None
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteError(f"cannot reach the server at {self.http}: {reason}") from None

    def get_json(self, route: str) -> Any:
        status, body = self.request("GET", route)
        if status != 200:
            raise RemoteError(f"GET {route} answered {status}: {body[:200].decode(errors='replace')}")
        value = loads(body)
        if value is None:
            raise RemoteError(f"GET {route} did not answer JSON: is {self.http} a graph-runtime server?")
        return value

    def object_info(self) -> dict:
        """The server's node declarations; also the check that it answers and accepts our token."""
        return self.get_json("/object_info")

    def connect(self, client_id: str):
        """The websocket for ``client_id``'s events (a context manager)."""
        from websockets.sync.client import connect

        headers = self._headers()
        try:
            return connect(f"{self.ws}?clientId={client_id}", additional_headers=headers or None,
                           open_timeout=self.timeout, max_size=64 * 1024 * 1024, close_timeout=2)
        except Exception as exc:
            raise RemoteError(f"cannot reach the server at {self.ws}: {exc}") from None

    def submit(self, document: dict, client_id: str, targets: list[str] | None = None) -> str:
        """Queue a prompt; its id, or :class:`PromptRejected`."""
        body: dict[str, Any] = {"prompt": document, "client_id": client_id}
        if targets:
            body["partial_execution_targets"] = list(targets)
        status, raw = self.request("POST", "/prompt", body)
        reply = loads(raw)
        if status != 200 or not isinstance(reply, dict) or "prompt_id" not in reply:
            if reply is None and raw:
                reply = {"error": raw[:300].decode(errors="replace")}
            raise PromptRejected(status, reply)
        warnings = reply.get("warnings")
        self.warnings = [w for w in warnings if isinstance(w, dict)] if isinstance(warnings, list) else []
        return str(reply["prompt_id"])

    def history(self, prompt_id: str) -> dict | None:
        """The prompt's history entry, or None while it has none."""
        status, raw = self.request("GET", f"/history/{urllib.parse.quote(prompt_id)}")
        if status != 200:
            raise RemoteError(f"GET /history/{prompt_id} answered {status}")
        history = loads(raw)
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        return entry if isinstance(entry, dict) else None

    def wait(self, prompt_id: str, *, timeout: float, poll: float = 0.1,
             stopped: Callable[[], bool] = lambda: False) -> dict | None:
        """Poll the history until the prompt completes; None when ``stopped()`` says to give up."""
        deadline = time.monotonic() + timeout
        delay = poll
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry is not None:
                state = entry.get("status") or {}
                if state.get("completed") or state.get("status_str") in ("success", "error"):
                    return entry
            if stopped():
                return None
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        raise RemoteError(f"prompt {prompt_id} did not finish within {timeout:.0f}s")

    def interrupt(self, prompt_id: str | None = None) -> None:
        self.request("POST", "/interrupt", {"prompt_id": prompt_id} if prompt_id else {}, timeout=5)

    def download(self, item: dict) -> tuple[str, bytes]:
        """One output file named in a history entry: (its path relative to the output folder, its bytes)."""
        name, sub = str(item.get("filename", "")), str(item.get("subfolder") or "").strip("/")
        query = urllib.parse.urlencode({"filename": name, "subfolder": sub, "type": item.get("type", "output")})
        status, data = self.request("GET", f"/view?{query}", timeout=max(self.timeout, 300))
        if status != 200:
            raise RemoteError(f"downloading {name!r} failed: /view answered {status}")
        return (f"{sub}/{name}" if sub else name), data


def output_items(outputs: dict, types: tuple[str, ...] | None = None) -> Iterator[dict]:
    """The file entries in a history entry's outputs (optionally only those of the given folder types)."""
    for node_outputs in outputs.values():
        if not isinstance(node_outputs, dict):
            continue
        for kind in OUTPUT_KINDS:
            for item in node_outputs.get(kind) or []:
                if isinstance(item, dict) and (types is None or item.get("type", "output") in types):
                    yield item


def history_messages(entry: dict, kind: str) -> list[dict]:
    """The data of every ``kind`` message a history entry's status recorded."""
    messages = (entry.get("status") or {}).get("messages") or []
    return [m[1] for m in messages if isinstance(m, list) and len(m) == 2 and m[0] == kind
            and isinstance(m[1], dict)]
