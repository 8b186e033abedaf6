"""``graph-runtime run --server ws://host:port FILE``: run a workflow on a running server.

Submits over HTTP (urllib), follows the run on the websocket (the ``websockets`` sync client), then downloads
what the output nodes wrote (via /view) into the local output folder. Exit codes as for local runs: 0 ok,
2 invalid workflow, 1 failed (or interrupted, or the server could not be reached). A token for a server that
requires one comes from ``$GRAPH_RUNTIME_TOKEN`` or a ``?token=`` in the URL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from .paths import UnsafePathError, resolve_inside
from .validation import ValidationResult
from .workflow import WorkflowFormatError, load_workflow_document

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
TOKEN_ENV = "GRAPH_RUNTIME_TOKEN"
DOWNLOAD_KINDS = ("images", "files", "gifs", "video", "audio")


class RemoteError(Exception):
    """The server could not be reached or answered something unexpected."""


class Server:
    def __init__(self, url: str, timeout: float = 30.0):
        parts = urllib.parse.urlsplit(url if "://" in url else "ws://" + url)
        scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme)
        if scheme is None or not parts.netloc:
            raise RemoteError(f"--server {url!r}: expected ws://host:port (or http://host:port)")
        query = urllib.parse.parse_qs(parts.query)
        self.token = (query.get("token") or [None])[0] or os.environ.get(TOKEN_ENV) or None
        path = parts.path.rstrip("/")
        if path.endswith("/ws"):
            path = path[:-3]
        self.http = f"{scheme}://{parts.netloc}{path}"
        self.ws = f"{'wss' if scheme == 'https' else 'ws'}://{parts.netloc}{path}/ws"
        self.timeout = timeout

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, route: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.http + route, data=data, method=method, headers=self._headers())
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteError(f"cannot reach the server at {self.http}: {reason}") from None

    def get_json(self, route: str) -> Any:
        status, body = self.request("GET", route)
        if status != 200:
            raise RemoteError(f"GET {route} answered {status}: {body[:200].decode(errors='replace')}")
        return json.loads(body)

    def connect(self, client_id: str):
        from websockets.sync.client import connect

        headers = self._headers()
        try:
            return connect(f"{self.ws}?clientId={client_id}", additional_headers=headers or None,
                           open_timeout=self.timeout, max_size=64 * 1024 * 1024, close_timeout=2)
        except Exception as exc:
            raise RemoteError(f"cannot reach the server at {self.ws}: {exc}") from None


def load_for_remote(path: str, server: Server) -> dict:
    doc = load_workflow_document(path)
    if isinstance(doc.get("nodes"), list) and "links" in doc:
        from .ui_format import ui_to_api  # converted with the server's node declarations

        return ui_to_api(doc, server.get_json("/object_info"))
    return doc


def run_remote(args: argparse.Namespace) -> int:
    from .cli import UsageError, apply_assignments

    quiet = getattr(args, "quiet", False)
    try:
        server = Server(args.server)
        document = load_for_remote(args.file, server)
        apply_assignments(document, getattr(args, "set", None) or [])
    except (RemoteError, UsageError, WorkflowFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID if not isinstance(exc, RemoteError) else EXIT_FAILED
    client_id = uuid.uuid4().hex
    try:
        ws = server.connect(client_id)
    except RemoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    prompt_id = None
    with ws:
        body: dict[str, Any] = {"prompt": document, "client_id": client_id}
        if getattr(args, "only", None):
            body["partial_execution_targets"] = list(args.only)
        try:
            status, raw = server.request("POST", "/prompt", body)
        except RemoteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        reply = _loads(raw)
        if status == 400 and isinstance(reply, dict) and "node_errors" in reply:
            print(f"{args.file}: invalid workflow", file=sys.stderr)
            result = ValidationResult(error=reply.get("error"), node_errors=reply.get("node_errors") or {})
            for line in result.messages():
                print(f"  - {line}", file=sys.stderr)
            return EXIT_INVALID
        if status != 200 or not isinstance(reply, dict) or "prompt_id" not in reply:
            print(f"error: the server refused the prompt ({status}): {raw[:300].decode(errors='replace')}",
                  file=sys.stderr)
            return EXIT_FAILED
        prompt_id = reply["prompt_id"]
        try:
            outcome = _follow(ws, prompt_id, document, quiet)
        except KeyboardInterrupt:
            server.request("POST", "/interrupt", {"prompt_id": prompt_id})
            print("interrupted", file=sys.stderr)
            return 130
        except RemoteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
    return _finish(server, prompt_id, outcome, args)


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _titles(document: dict) -> dict[str, str]:
    out = {}
    for nid, node in document.items():
        if isinstance(node, dict):
            meta = node.get("_meta") if isinstance(node.get("_meta"), dict) else {}
            out[nid] = str(meta.get("title") or node.get("class_type") or nid)
    return out


def _follow(ws, prompt_id: str, document: dict, quiet: bool) -> dict:
    """Read events until the prompt ends; returns {status, error}."""
    titles = _titles(document)
    outcome: dict[str, Any] = {"status": "success", "error": None}
    last_progress = 0.0
    while True:
        try:
            message = ws.recv(timeout=3600)
        except TimeoutError:
            raise RemoteError("no word from the server for an hour") from None
        except Exception as exc:
            raise RemoteError(f"the websocket closed: {exc}") from None
        if isinstance(message, bytes):
            continue  # preview images
        msg = _loads(message)
        if not isinstance(msg, dict):
            continue
        kind, data = msg.get("type"), msg.get("data") or {}
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        if kind == "executing":
            if data.get("node") is None and data.get("prompt_id") == prompt_id:
                return outcome
            if not quiet:
                nid = str(data.get("node"))
                print(f"[{nid}] {titles.get(nid, nid)}", file=sys.stderr)
        elif kind == "progress" and not quiet:
            now = time.monotonic()
            if now - last_progress > 0.5 or data.get("value") == data.get("max"):
                last_progress = now
                print(f"  {data.get('value')}/{data.get('max')}", file=sys.stderr)
        elif kind == "execution_error":
            outcome = {"status": "error", "error": data}
        elif kind == "execution_interrupted":
            outcome = {"status": "interrupted", "error": data}
        elif kind == "logs" and not quiet:
            for entry in data.get("entries") or []:
                print(f"warning: {entry.get('m')}", file=sys.stderr)


def _finish(server: Server, prompt_id: str, outcome: dict, args: argparse.Namespace) -> int:
    try:
        history = server.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id) or {}
    except RemoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    outputs = history.get("outputs") or {}
    out_dir = Path(getattr(args, "output_dir", None) or "output").resolve()
    saved: list[Path] = []
    problems: list[str] = []
    for ui in outputs.values():
        for kind in DOWNLOAD_KINDS:
            for item in ui.get(kind, []) if isinstance(ui, dict) else []:
                try:
                    saved.append(_download(server, item, out_dir))
                except (RemoteError, UnsafePathError, OSError) as exc:
                    problems.append(f"{item.get('filename')}: {exc}")
    if getattr(args, "json", False):
        print(json.dumps({"prompt_id": prompt_id, "status": outcome["status"], "outputs": outputs,
                          "files": [str(p) for p in saved], "error": outcome["error"]}, indent=2, default=str))
    else:
        for path in saved:
            print(path)
        for nid, ui in outputs.items():
            for text in ui.get("text", []) if isinstance(ui, dict) else []:
                print(f"[{nid}] {text}")
    for p in problems:
        print(f"error: could not download {p}", file=sys.stderr)
    if outcome["status"] == "error":
        err = outcome["error"] or {}
        print(f"error in node {err.get('node_id')} ({err.get('node_type')}): {err.get('exception_message')}",
              file=sys.stderr)
        return EXIT_FAILED
    if outcome["status"] == "interrupted":
        print("interrupted", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if problems else EXIT_OK


def _download(server: Server, item: dict, out_dir: Path) -> Path:
    name, sub, kind = str(item.get("filename", "")), str(item.get("subfolder") or ""), item.get("type", "output")
    target = resolve_inside(out_dir, f"{sub}/{name}" if sub else name)  # a server cannot write outside out_dir
    query = urllib.parse.urlencode({"filename": name, "subfolder": sub, "type": kind})
    status, body = server.request("GET", f"/view?{query}")
    if status != 200:
        raise RemoteError(f"/view answered {status}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)
    return target
