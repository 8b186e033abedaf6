"""``graph-runtime run --server ws://host:port FILE``: run a workflow on a running server.

Submits over HTTP (urllib), follows the run on the websocket (the ``websockets`` sync client), then downloads
what the output nodes wrote (via /view) into the local output folder. Exit codes as for local runs: 0 ok,
2 invalid workflow, 1 failed (or interrupted, or the server could not be reached). A token for a server that
requires one comes from ``$GRAPH_RUNTIME_TOKEN`` or a ``?token=`` in the URL.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from .arguments import EXIT_FAILED, EXIT_INVALID, EXIT_OK, UsageError, apply_assignments
from .client import PromptRejected, RemoteError, Server, loads, output_items
from .paths import UnsafePathError, resolve_inside
from .ui_format import is_ui_format, ui_to_api
from .validation import warning_line
from .workflow import WorkflowFormatError, load_workflow_document


def load_for_remote(path: str, server: Server, assignments: list[str]) -> dict:
    """The workflow in API format with ``--set`` applied, both by the server's node declarations."""
    doc = load_workflow_document(path)
    info = server.object_info() if is_ui_format(doc) or assignments else None
    doc = ui_to_api(doc, info) if is_ui_format(doc) else doc
    apply_assignments(doc, assignments, info)
    return doc


def run_remote(args: argparse.Namespace) -> int:
    quiet = getattr(args, "quiet", False)
    try:
        server = Server(args.server)
        document = load_for_remote(args.file, server, getattr(args, "set", None) or [])
    except (RemoteError, UsageError, WorkflowFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID if not isinstance(exc, RemoteError) else EXIT_FAILED
    client_id = uuid.uuid4().hex
    try:
        ws = server.connect(client_id)
    except RemoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    with ws:
        try:
            prompt_id = server.submit(document, client_id, getattr(args, "only", None))
        except PromptRejected as exc:
            if exc.invalid:
                print(f"{args.file}: invalid workflow", file=sys.stderr)
                for line in exc.lines:
                    print(f"  - {line}", file=sys.stderr)
                return EXIT_INVALID
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except RemoteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        for warning in server.warnings:
            print(f"warning: {warning_line(warning)}", file=sys.stderr)
        try:
            outcome = _follow(ws, prompt_id, document, quiet)
        except KeyboardInterrupt:
            try:
                server.interrupt(prompt_id)
            except RemoteError:
                pass
            print("interrupted", file=sys.stderr)
            return 130
        except RemoteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
    return _finish(server, prompt_id, outcome, args)


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
        msg = loads(message)
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
        history = server.history(prompt_id) or {}
    except RemoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    outputs = history.get("outputs") or {}
    out_dir = Path(getattr(args, "output_dir", None) or "output").resolve()
    saved: list[Path] = []
    problems: list[str] = []
    for item in output_items(outputs):
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
    rel, body = server.download(item)
    target = resolve_inside(out_dir, rel)  # a server cannot write outside out_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)
    return target
