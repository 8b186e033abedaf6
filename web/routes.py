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

from graph_runtime import WorkflowFormatError, strict_json, using_paths
from graph_runtime.validation import error as v_error
from graph_runtime.validation import warning_line

from . import files
from .frontend import user_css
from .queue import QueueFull
from .store import HistoryEntry, QueueItem, create_time, job_status, workflow_id
from .system import system_stats

log = logging.getLogger(__name__)

JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")


def bad_prompt(message: str, details: str = "", kind: str = "invalid_prompt", status: int = 400) -> JSONResponse:
    return JSONResponse({"error": v_error(kind, message, details), "node_errors": {}}, status_code=status)


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    return strict_json.loads(raw, "the request body")


# -- the editor's startup ------------------------------------------------------------------------------------


async def users(request: Request) -> Response:
    if request.method == "POST":
        return files.error(400, "this server has a single user")
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
    hide = _hide_client_ids(request)
    return JSONResponse({"queue_running": [_public(running.as_comfy(), hide)] if running else [],
                         "queue_pending": [_public(i.as_comfy(), hide) for i in q.pending()]})


def _hide_client_ids(request: Request) -> bool:
    """With a token (a server others can reach), no reply names the websocket client id of a prompt: whoever
    reads it could otherwise wait for its owner to disconnect and connect with it."""
    return bool(request.app.state.server.config.token)


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
        return files.error(400, str(exc))
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
        return JSONResponse({pid: _public_history(entry, _hide_client_ids(request))} if entry else {})
    try:
        max_items = _int(request.query_params.get("max_items"))
        offset = _int(request.query_params.get("offset"))
    except ValueError as exc:
        return files.error(400, str(exc))
    # one page, read in SQL: the latest history_page entries unless the client asks for more (up to a cap)
    max_items = state.config.history_page if max_items is None or max_items < 0 else max_items
    max_items = min(max_items, state.config.max_history_page)
    entries = await run_in_threadpool(store.history, max_items, offset)
    hide = _hide_client_ids(request)
    return JSONResponse({e.item.prompt_id: _public_history(e, hide) for e in entries})


async def post_history(request: Request) -> Response:
    store = request.app.state.server.store
    try:
        clear, ids = await _clear_or_delete(request)
    except ValueError as exc:
        return files.error(400, str(exc))
    if clear:
        store.delete_history(None)
    if ids:
        store.delete_history(ids)
    return Response(status_code=200)


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"expected an integer, got {value!r}") from None


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
        return files.error(400, str(exc))
    if not isinstance(body, dict):
        return files.error(400, "expected a JSON object")
    q.request_free(bool(body.get("unload_models")), bool(body.get("free_memory")))
    return Response(status_code=200)


# -- jobs (the new editor's view of queue and history) -------------------------------------------------------


def _preview(outputs: dict) -> tuple[dict | None, int, int]:
    first, count, previewable = None, 0, 0
    for nid, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for kind, items in ui.items():
            if not isinstance(items, list):
                continue
            for it in items:
                count += 1
                if kind in ("images", "video", "audio") and isinstance(it, dict) and "filename" in it:
                    previewable += 1
                    if first is None:
                        first = {**it, "nodeId": nid, "mediaType": kind}
    return first, count, previewable


def _job_from_queue(item: QueueItem, status: str) -> dict:
    return {"id": item.prompt_id, "status": status, "priority": item.number, "create_time": create_time(item),
            "execution_start_time": None, "execution_end_time": None, "preview_output": None,
            "outputs_count": None, "previewable_outputs_count": None, "execution_error": None,
            "workflow_id": workflow_id(item.extra_data)}


def _job_from_history(entry: HistoryEntry) -> dict:
    item = entry.item
    preview, count, previewable = _preview(entry.outputs)
    status = job_status(entry.status)
    job = _job_from_queue(item, status)
    job.update({"execution_start_time": int(entry.started * 1000) if entry.started else None,
                "execution_end_time": int(entry.finished * 1000) if entry.finished else None,
                "preview_output": preview, "outputs_count": count, "previewable_outputs_count": previewable,
                "execution_error": _clean_error(entry.error) if status == "failed" else None})
    return job


def _clean_error(err: dict | None) -> dict | None:
    if not err:
        return None
    return {**err, "node_id": str(err.get("node_id") or ""), "node_type": str(err.get("node_type") or ""),
            "exception_message": str(err.get("exception_message") or ""),
            "exception_type": str(err.get("exception_type") or ""), "traceback": list(err.get("traceback") or [])}


def _queue_jobs(state) -> list[tuple[dict, QueueItem]]:
    q = state.queue
    running = q.running
    jobs = [(_job_from_queue(running, "in_progress"), running)] if running is not None else []
    return jobs + [(_job_from_queue(i, "pending"), i) for i in q.pending()]


def _jobs_page(state, wanted: list[str], wf: str | None, sort_by: str, desc: bool, offset: int,
               limit: int) -> tuple[list[dict], int]:
    """One page of queue + history in /jobs order; the history part is filtered, sorted and cut in SQL, and
    only the entries on the page are decoded."""
    def duration(job: dict) -> float:
        s, e = job.get("execution_start_time"), job.get("execution_end_time")
        return (e - s) / 1000 if s and e else 0.0

    sort_key = duration if sort_by == "execution_duration" else (lambda j: j["create_time"])
    queued = [j for j, _ in _queue_jobs(state)
              if (not wanted or j["status"] in wanted) and (not wf or j.get("workflow_id") == wf)]
    hist_wanted = [s for s in wanted if s in ("completed", "failed", "cancelled")]
    keys: list[tuple[float, int, str, dict | None]] = [(sort_key(j), 0, j["id"], j) for j in queued]
    total = len(queued)
    if not wanted or hist_wanted:
        rows, count = state.store.job_keys(hist_wanted or None, wf, sort_by, desc, offset + limit)
        total += count
        keys += [(key, 1, pid, None) for pid, key in rows]
    # queue entries before history ones at equal keys (they are newer); history keeps SQL's order
    keys.sort(key=lambda k: (k[0], -k[1]) if desc else (k[0], k[1]), reverse=desc)
    page = keys[offset:offset + limit]
    entries = state.store.history_many([pid for _, src, pid, _ in page if src == 1])
    jobs = []
    for _, _src, pid, job in page:
        if job is not None:
            jobs.append(job)
        elif pid in entries:
            jobs.append(_job_from_history(entries[pid]))
    return jobs, total


async def get_jobs(request: Request) -> Response:
    state = request.app.state.server
    qp = request.query_params
    wanted = [s for s in (qp.get("status") or "").split(",") if s]
    bad = [s for s in wanted if s not in JOB_STATUSES]
    if bad:
        return files.error(400, f"unknown status {bad[0]!r}; use {', '.join(JOB_STATUSES)}")
    try:
        limit = _int(qp.get("limit"))
        offset = max(0, _int(qp.get("offset")) or 0)
    except ValueError as exc:
        return files.error(400, str(exc))
    limit = state.config.history_page if limit is None or limit < 0 else limit
    limit = min(limit, state.config.max_history_page)
    sort_by = qp.get("sort_by") or "created_at"
    desc = (qp.get("sort_order") or "desc").lower() != "asc"
    page, total = await run_in_threadpool(_jobs_page, state, wanted, qp.get("workflow_id") or None, sort_by, desc,
                                          offset, limit)
    return JSONResponse({"jobs": page, "pagination": {"offset": offset, "limit": limit, "total": total,
                                                      "has_more": offset + len(page) < total}})


def _find_job(state, pid: str) -> dict | None:
    for job, item in _queue_jobs(state):
        if job["id"] == pid:
            return {**job, "workflow": {"prompt": item.prompt, "extra_data": item.extra_data}, "outputs": {},
                    "execution_status": None, "execution_meta": None}
    entry = state.store.history_one(pid)
    if entry is None:
        return None
    return {**_job_from_history(entry), "workflow": {"prompt": entry.item.prompt, "extra_data": entry.item.extra_data},
            "outputs": entry.outputs, "execution_status": entry.status, "execution_meta": entry.meta}


async def get_job(request: Request) -> Response:
    state = request.app.state.server
    pid = request.path_params["job_id"]
    detail = await run_in_threadpool(_find_job, state, pid)
    if detail is None:
        return files.error(404, f"no job {pid}", "not_found")
    if _hide_client_ids(request):
        extra = detail["workflow"]["extra_data"]
        detail["workflow"]["extra_data"] = {k: v for k, v in extra.items() if k != "client_id"}
    return JSONResponse(detail)


async def cancel_job(request: Request) -> Response:
    q = request.app.state.server.queue
    pid = request.path_params["job_id"]
    if not q.delete([pid]):
        q.interrupt(pid)
    return Response(status_code=200)


async def cancel_jobs(request: Request) -> Response:
    q = request.app.state.server.queue
    try:
        body = await read_json(request) or {}
    except ValueError as exc:
        return files.error(400, str(exc))
    ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return files.error(400, "job_ids must be a list of job ids")
    q.delete(ids)
    running = q.running
    if running is not None and running.prompt_id in ids:
        q.interrupt(running.prompt_id)
    return Response(status_code=200)


# -- the websocket -------------------------------------------------------------------------------------------


async def websocket(ws: WebSocket) -> None:
    await ws.app.state.server.hub.serve(ws)


def routes() -> list:
    table: list[tuple[str, Any, list[str]]] = [
        ("/users", users, ["GET", "POST"]),
        ("/settings", files.get_settings, ["GET"]),
        ("/settings", files.post_settings, ["POST"]),
        ("/settings/{id}", files.get_setting, ["GET"]),
        ("/settings/{id}", files.post_setting, ["POST"]),
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
        ("/jobs", get_jobs, ["GET"]),
        ("/jobs/cancel", cancel_jobs, ["POST"]),
        ("/jobs/{job_id}", get_job, ["GET"]),
        ("/jobs/{job_id}/cancel", cancel_job, ["POST"]),
        ("/interrupt", interrupt, ["POST"]),
        ("/free", free, ["POST"]),
        ("/view", files.view, ["GET"]),
        ("/internal/files/{directory_type}", files.list_folder, ["GET"]),
        ("/upload/image", files.upload_image, ["POST"]),
        ("/upload/mask", files.upload_mask, ["POST"]),
        ("/userdata", files.list_userdata, ["GET"]),
        ("/userdata/user.css", user_css, ["GET"]),  # the editor loads it on every start: empty until written
        ("/userdata/{rest:path}", files.userdata, ["GET", "POST", "DELETE"]),
    ]
    out: list = []
    for prefix in ("/api", ""):
        for path, endpoint, methods in table:
            out.append(Route(prefix + path, endpoint, methods=methods))
        out.append(WebSocketRoute(prefix + "/ws", websocket))
    return out
