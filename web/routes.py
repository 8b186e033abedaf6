"""ComfyUI's HTTP routes over the queue, the executor and the registry. Each answers at /x and /api/x."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from graph_runtime import WorkflowFormatError, using_paths
from graph_runtime.validation import error as v_error
from graph_runtime.validation import warning_line

from . import files, jobs, userdata
from .frontend import user_css
from .queue import QueueFull
from .replies import error, hide_client_ids, query_int, read_json
from .store import HistoryEntry
from .system import system_stats

log = logging.getLogger(__name__)


def bad_prompt(message: str, details: str = "", kind: str = "invalid_prompt", status: int = 400) -> JSONResponse:
    return JSONResponse({"error": v_error(kind, message, details), "node_errors": {}}, status_code=status)


# -- the editor's startup ------------------------------------------------------------------------------------


async def users(request: Request) -> Response:
    if request.method == "POST":
        return error(400, "this server has a single user")
    return JSONResponse({"storage": "server", "migrated": True})


async def empty_list(request: Request) -> Response:
    return JSONResponse([])


async def empty_dict(request: Request) -> Response:
    return JSONResponse({})


async def extensions(request: Request) -> Response:
    return JSONResponse(request.app.state.server.extensions)


async def features(request: Request) -> Response:
    return JSONResponse(request.app.state.server.feature_flags())


async def stats(request: Request) -> Response:
    c = request.app.state.server.config
    server_limits = {name: getattr(c, name) for name in (
        "max_prompt_bytes", "max_upload_bytes", "max_nodes", "max_pending", "max_history", "history_page",
        "max_history_page", "max_ws_clients", "max_ws_queue", "max_connections", "header_timeout")}
    return JSONResponse(await run_in_threadpool(system_stats, server_limits))


async def object_info(request: Request) -> Response:
    server = request.app.state.server

    def describe() -> dict:
        with using_paths(server.paths):  # file lists (LoadImage, models) follow the server's folders
            return server.registry.object_info()

    info = await run_in_threadpool(describe)
    name = request.path_params.get("node_class")
    if name is not None:
        return JSONResponse({name: info[name]} if name in info else {})
    return JSONResponse(info)


# -- prompts -------------------------------------------------------------------------------------------------


async def get_prompt(request: Request) -> Response:
    return JSONResponse(request.app.state.server.queue.status())


async def post_prompt(request: Request) -> Response:
    state = request.app.state.server
    try:
        body = await read_json(request)
    except ValueError as exc:
        return bad_prompt(str(exc))
    if not isinstance(body, dict) or "prompt" not in body:
        return bad_prompt("No prompt provided", "the body must be a JSON object with a 'prompt'", "no_prompt")
    prompt = body["prompt"]
    from graph_runtime.ui_format import is_ui_format, ui_to_api

    if is_ui_format(prompt):  # an editor-saved graph: convert it here
        try:
            prompt = ui_to_api(prompt, state.registry)
        except (ValueError, WorkflowFormatError) as exc:
            return bad_prompt(str(exc))
    if not isinstance(prompt, dict):
        return bad_prompt("A workflow must be a JSON object of nodes", f"got {type(prompt).__name__}")
    if len(prompt) > state.config.max_nodes:
        return bad_prompt(f"The workflow has {len(prompt)} nodes; at most {state.config.max_nodes} are accepted",
                          kind="prompt_too_large")
    targets = body.get("partial_execution_targets")
    if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str | int) for t in targets)):
        return bad_prompt("partial_execution_targets must be a list of node ids")
    result = await run_in_threadpool(state.executor.validate, prompt, [str(t) for t in targets] if targets else None)
    if not result.ok:
        return JSONResponse(result.to_comfy(), status_code=400)

    extra = body.get("extra_data") or {}
    if not isinstance(extra, dict):
        return bad_prompt("extra_data must be an object")
    client_id = body.get("client_id")
    if client_id is not None and not isinstance(client_id, str):
        return bad_prompt("client_id must be a string")
    prompt_id = body.get("prompt_id")
    if prompt_id is not None:
        if not isinstance(prompt_id, str) or not 0 < len(prompt_id) <= 128:
            return bad_prompt("prompt_id must be a string of at most 128 characters")
        if state.queue.has(prompt_id) or state.store.exists(prompt_id):
            return bad_prompt(f"prompt_id {prompt_id} is already used", kind="duplicate_prompt_id")
    number = body.get("number")
    if number is not None:
        if isinstance(number, bool) or not isinstance(number, int | float) or number != number:
            return bad_prompt("number must be a number")
        number = float(number)
    front = bool(body.get("front"))
    extra = {**extra, "create_time": int(time.time() * 1000)}
    if client_id:
        extra["client_id"] = client_id
    try:
        item = state.queue.put(prompt, prompt_id=prompt_id, number=number, front=front, extra_data=extra,
                               outputs=result.plan.targets, client_id=client_id)
    except QueueFull as exc:
        return bad_prompt(str(exc), kind="queue_full", status=503)
    for warning in result.warnings:  # the editor ignores the answer's warnings: its Logs panel shows these
        log.warning("prompt %s: %s", item.prompt_id, warning_line(warning))
    return JSONResponse({"prompt_id": item.prompt_id, "number": item.number, "node_errors": {},
                         "warnings": result.warnings})


async def get_queue(request: Request) -> Response:
    q = request.app.state.server.queue
    running = q.running
    hide = hide_client_ids(request)
    return JSONResponse({"queue_running": [_public(running.as_comfy(), hide)] if running else [],
                         "queue_pending": [_public(i.as_comfy(), hide) for i in q.pending()]})


def _public(entry: list, hide: bool) -> list:
    """A queue entry [number, id, prompt, extra_data, outputs], its extra_data without client_id when hidden."""
    if hide and isinstance(entry[3], dict) and "client_id" in entry[3]:
        entry = [*entry[:3], {k: v for k, v in entry[3].items() if k != "client_id"}, *entry[4:]]
    return entry


def _public_history(entry: HistoryEntry, hide: bool) -> dict:
    out = entry.as_comfy()
    out["prompt"] = _public(out["prompt"], hide)
    return out


async def _clear_or_delete(request: Request) -> tuple[bool, list[str]]:
    """The body POST /queue and POST /history share: ``{"clear": true}`` and/or ``{"delete": [ids]}``."""
    body = await read_json(request) or {}
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    ids = body.get("delete") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError("delete must be a list of prompt ids")
    return bool(body.get("clear")), ids


async def post_queue(request: Request) -> Response:
    q = request.app.state.server.queue
    try:
        clear, ids = await _clear_or_delete(request)
    except ValueError as exc:
        return error(400, str(exc))
    if clear:
        q.clear()
    if ids:
        q.delete(ids)
    return Response(status_code=200)


async def get_history(request: Request) -> Response:
    state = request.app.state.server
    store = state.store
    pid = request.path_params.get("prompt_id")
    if pid is not None:
        entry = await run_in_threadpool(store.history_one, pid)
        return JSONResponse({pid: _public_history(entry, hide_client_ids(request))} if entry else {})
    try:
        max_items = query_int(request.query_params.get("max_items"))
        offset = query_int(request.query_params.get("offset"))
    except ValueError as exc:
        return error(400, str(exc))
    # one page, read in SQL: the latest history_page entries unless the client asks for more (up to a cap)
    max_items = state.config.history_page if max_items is None or max_items < 0 else max_items
    max_items = min(max_items, state.config.max_history_page)
    entries = await run_in_threadpool(store.history, max_items, offset)
    hide = hide_client_ids(request)
    return JSONResponse({e.item.prompt_id: _public_history(e, hide) for e in entries})


async def post_history(request: Request) -> Response:
    store = request.app.state.server.store
    try:
        clear, ids = await _clear_or_delete(request)
    except ValueError as exc:
        return error(400, str(exc))
    if clear:
        store.delete_history(None)
    if ids:
        store.delete_history(ids)
    return Response(status_code=200)


async def interrupt(request: Request) -> Response:
    q = request.app.state.server.queue
    try:
        body = await read_json(request) or {}
    except ValueError:
        body = {}
    pid = body.get("prompt_id") if isinstance(body, dict) else None
    q.interrupt(pid if isinstance(pid, str) else None)
    return Response(status_code=200)


async def free(request: Request) -> Response:
    q = request.app.state.server.queue
    try:
        body = await read_json(request) or {}
    except ValueError as exc:
        return error(400, str(exc))
    if not isinstance(body, dict):
        return error(400, "expected a JSON object")
    q.request_free(bool(body.get("unload_models")), bool(body.get("free_memory")))
    return Response(status_code=200)


# -- jobs (the new editor's view of queue and history) -------------------------------------------------------


# -- the websocket -------------------------------------------------------------------------------------------


async def websocket(ws: WebSocket) -> None:
    await ws.app.state.server.hub.serve(ws)


def routes() -> list:
    table: list[tuple[str, Any, list[str]]] = [
        ("/users", users, ["GET", "POST"]),
        ("/settings", userdata.get_settings, ["GET"]),
        ("/settings", userdata.post_settings, ["POST"]),
        ("/settings/{id}", userdata.get_setting, ["GET"]),
        ("/settings/{id}", userdata.post_setting, ["POST"]),
        ("/extensions", extensions, ["GET"]),
        ("/embeddings", empty_list, ["GET"]),
        ("/i18n", empty_dict, ["GET"]),
        ("/global_subgraphs", empty_dict, ["GET"]),
        ("/workflow_templates", empty_dict, ["GET"]),
        ("/features", features, ["GET"]),
        ("/system_stats", stats, ["GET"]),
        ("/object_info", object_info, ["GET"]),
        ("/object_info/{node_class}", object_info, ["GET"]),
        ("/prompt", get_prompt, ["GET"]),
        ("/prompt", post_prompt, ["POST"]),
        ("/queue", get_queue, ["GET"]),
        ("/queue", post_queue, ["POST"]),
        ("/history", get_history, ["GET"]),
        ("/history", post_history, ["POST"]),
        ("/history/{prompt_id}", get_history, ["GET"]),
        ("/jobs", jobs.get_jobs, ["GET"]),
        ("/jobs/cancel", jobs.cancel_jobs, ["POST"]),
        ("/jobs/{job_id}", jobs.get_job, ["GET"]),
        ("/jobs/{job_id}/cancel", jobs.cancel_job, ["POST"]),
        ("/interrupt", interrupt, ["POST"]),
        ("/free", free, ["POST"]),
        ("/view", files.view, ["GET"]),
        ("/internal/files/{directory_type}", files.list_folder, ["GET"]),
        ("/upload/image", files.upload_image, ["POST"]),
        ("/upload/mask", files.upload_mask, ["POST"]),
        ("/userdata", userdata.list_userdata, ["GET"]),
        ("/userdata/user.css", user_css, ["GET"]),  # the editor loads it on every start: empty until written
        ("/userdata/{rest:path}", userdata.userdata, ["GET", "POST", "DELETE"]),
    ]
    out: list = []
    for prefix in ("/api", ""):
        for path, endpoint, methods in table:
            out.append(Route(prefix + path, endpoint, methods=methods))
        out.append(WebSocketRoute(prefix + "/ws", websocket))
    return out
