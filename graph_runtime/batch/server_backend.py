"""Run a batch on a running server over ComfyUI's HTTP protocol.

Each job is ``POST /prompt {prompt, client_id}``; the client polls ``GET /history/{prompt_id}`` until the
prompt completes, then downloads every output file through ``GET /view`` into the job's folder. The server
validates each prompt itself; a 400 answer becomes the job's error.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from ..validation import ValidationResult
from .runner import Outcome, WorkItem

FILE_KINDS = ("images", "files", "gifs", "audio", "video")


class ServerError(Exception):
    pass


def http_base(url: str) -> str:
    """``ws://host:port``, ``http://host:port/`` or ``host:port`` -> ``http://host:port``."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    scheme, rest = url.split("://", 1)
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    rest = rest.removesuffix("/ws")
    return f"{scheme}://{rest}"


class ServerBackend:
    name = "server"

    def __init__(self, url: str, *, validator: Any = None, timeout: float = 24 * 3600, poll: float = 0.1):
        self.base = http_base(url)
        self.validator = validator  # a LocalBackend that knows the nodes, when this machine has them
        self.timeout = timeout
        self.poll = poll
        self.client_id = uuid.uuid4().hex
        self._stop = False
        self._current: str | None = None

    # -- HTTP -----------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ServerError(f"cannot reach the server at {self.base}: {getattr(exc, 'reason', exc)}") from None

    def _json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, raw = self._request(method, path, body)
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, {"error": {"message": raw[:300].decode("utf-8", "replace")}}

    # -- backend --------------------------------------------------------------------------------------------

    def open(self, document: dict) -> None:
        if self.validator is not None:
            self.validator.open(document)
        status, _ = self._json("GET", "/object_info")
        if status != 200:
            raise ServerError(f"{self.base}/object_info answered {status}: is this a graph-runtime server?")

    def validate(self, document: dict) -> ValidationResult | None:
        return self.validator.validate(document) if self.validator is not None else None

    def run_one(self, job_id: str, document: dict) -> Outcome:
        started = time.perf_counter()

        def done(status: str, error: dict | None = None, **kw) -> Outcome:
            return Outcome(status, error, seconds=time.perf_counter() - started, worker=self.base, **kw)

        try:
            status, answer = self._json("POST", "/prompt", {"prompt": document, "client_id": self.client_id})
            if status != 200 or not isinstance(answer, dict) or "prompt_id" not in answer:
                return done("error", _rejection(status, answer))
            prompt_id = answer["prompt_id"]
            self._current = prompt_id
            entry = self._wait(prompt_id)
            if entry is None:
                return done("interrupted", {"message": "interrupted"})
            state = entry.get("status") or {}
            outputs = entry.get("outputs") or {}
            messages = state.get("messages") or []
            if state.get("status_str") != "success":
                return done(_failure_status(messages), _failure(messages, state))
            blobs = []
            for node_outputs in outputs.values():
                for kind in FILE_KINDS:
                    for item in (node_outputs or {}).get(kind, []) or []:
                        if isinstance(item, dict) and item.get("type", "output") == "output":
                            blobs.append(self._download(item))
            executed = [m[1].get("node") for m in messages
                        if isinstance(m, list) and len(m) == 2 and m[0] == "executed" and isinstance(m[1], dict)]
            cached = next((m[1].get("nodes", []) for m in messages
                           if isinstance(m, list) and len(m) == 2 and m[0] == "execution_cached"), [])
            return done("ok", executed=[n for n in executed if n], cached=list(cached), blobs=blobs)
        except ServerError as exc:
            return done("error", {"message": str(exc)})
        finally:
            self._current = None

    def _wait(self, prompt_id: str) -> dict | None:
        deadline = time.monotonic() + self.timeout
        delay = self.poll
        while time.monotonic() < deadline:
            status, history = self._json("GET", f"/history/{urllib.parse.quote(prompt_id)}")
            entry = history.get(prompt_id) if status == 200 and isinstance(history, dict) else None
            if isinstance(entry, dict):
                state = entry.get("status") or {}
                if state.get("completed") or state.get("status_str") in ("success", "error"):
                    return entry
            if self._stop:
                return None
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        raise ServerError(f"prompt {prompt_id} did not finish within {self.timeout:.0f}s")

    def _download(self, item: dict) -> tuple[str, bytes]:
        query = urllib.parse.urlencode({"filename": item.get("filename", ""), "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        status, data = self._request("GET", f"/view?{query}", timeout=300)
        if status != 200:
            raise ServerError(f"downloading {item.get('filename')!r} failed: HTTP {status}")
        sub = str(item.get("subfolder") or "").strip("/")
        return (f"{sub}/{item['filename']}" if sub else str(item["filename"])), data

    def run(self, items: Iterable[WorkItem]) -> Iterator[tuple[WorkItem, Outcome]]:
        for item in items:
            if self._stop:
                return
            yield item, self.run_one(item.job.id, item.document)

    def stop(self) -> None:
        self._stop = True
        if self._current:
            try:
                self._request("POST", "/interrupt", {"prompt_id": self._current}, timeout=5)
            except ServerError:
                pass

    def close(self) -> None:
        pass


def _rejection(status: int, answer: Any) -> dict:
    if isinstance(answer, dict):
        lines = []
        for nid, entry in (answer.get("node_errors") or {}).items():
            for e in entry.get("errors", []):
                inp = (e.get("extra_info") or {}).get("input_name")
                lines.append(f"node {nid} ({entry.get('class_type')})" + (f" input '{inp}'" if inp else "")
                             + f": {e.get('message')}")
        err = answer.get("error") or {}
        msg = "; ".join(lines) or (err.get("message") if isinstance(err, dict) else str(err)) or f"HTTP {status}"
        return {"message": f"the server refused the prompt: {msg}"}
    return {"message": f"the server refused the prompt: HTTP {status}"}


def _failure_status(messages: list) -> str:
    kinds = {m[0] for m in messages if isinstance(m, list) and m}
    return "interrupted" if "execution_interrupted" in kinds and "execution_error" not in kinds else "error"


def _failure(messages: list, state: dict) -> dict:
    for m in messages:
        if isinstance(m, list) and len(m) == 2 and m[0] in ("execution_error", "execution_interrupted"):
            data = m[1] if isinstance(m[1], dict) else {}
            return {"message": data.get("exception_message") or m[0].replace("execution_", ""),
                    "type": data.get("exception_type"), "node_id": data.get("node_id"),
                    "node_type": data.get("node_type")}
    return {"message": f"the server reports status {state.get('status_str')!r}"}
