"""ComfyUI's HTTP routes over the queue, the executor and the registry. Each answers at /x and /api/x."""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from graph_runtime import WorkflowFormatError, strict_json
from graph_runtime.validation import error as v_error

from . import files
from .queue import QueueFull
from .store import HistoryEntry, QueueItem
from .system import system_stats

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
    return JSONResponse(await run_in_threadpool(system_stats))


async def object_info(request: Request) -> Response:
    registry = request.app.state.server.registry
    info = await run_in_threadpool(registry.object_info)
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
    if isinstance(prompt, dict) and isinstance(prompt.get("nodes"), list) and "links" in prompt:
        from graph_runtime.ui_format import ui_to_api  # an editor-saved graph: convert it here

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
    return JSONResponse({"prompt_id": item.prompt_id, "number": item.number, "node_errors": {}})


async def get_queue(request: Request) -> Response:
    q = request.app.state.server.queue
    running = q.running
    return JSONResponse({"queue_running": [running.as_comfy()] if running else [],
                         "queue_pending": [i.as_comfy() for i in q.pending()]})


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
    store = request.app.state.server.store
    pid = request.path_params.get("prompt_id")
    if pid is not None:
        entry = store.history_one(pid)
        return JSONResponse({pid: entry.as_comfy()} if entry else {})
    try:
        max_items = _int(request.query_params.get("max_items"))
        offset = _int(request.query_params.get("offset"))
    except ValueError as exc:
        return files.error(400, str(exc))
    entries = await run_in_threadpool(store.history, max_items, offset)
    return JSONResponse({e.item.prompt_id: e.as_comfy() for e in entries})


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
    return {"id": item.prompt_id, "status": status, "priority": item.number,
            "create_time": int(item.extra_data.get("create_time") or item.created * 1000),
            "execution_start_time": None, "execution_end_time": None, "preview_output": None,
            "outputs_count": None, "previewable_outputs_count": None, "execution_error": None,
            "workflow_id": _workflow_id(item)}


def _workflow_id(item: QueueItem) -> str | None:
    wf = (item.extra_data.get("extra_pnginfo") or {}).get("workflow") if isinstance(
        item.extra_data.get("extra_pnginfo"), dict) else None
    return wf.get("id") if isinstance(wf, dict) and isinstance(wf.get("id"), str) else None


def _job_status(entry: HistoryEntry) -> str:
    if entry.status.get("status_str") == "success":
        return "completed"
    if entry.status.get("interrupted") or any(m[0] == "execution_interrupted" for m in entry.status.get("messages", [])):
        return "cancelled"
    return "failed"


def _job_from_history(entry: HistoryEntry) -> dict:
    item = entry.item
    preview, count, previewable = _preview(entry.outputs)
    job = _job_from_queue(item, _job_status(entry))
    job.update({"execution_start_time": int(entry.started * 1000) if entry.started else None,
                "execution_end_time": int(entry.finished * 1000) if entry.finished else None,
                "preview_output": preview, "outputs_count": count, "previewable_outputs_count": previewable,
                "execution_error": _clean_error(entry.error) if _job_status(entry) == "failed" else None})
    return job


def _clean_error(err: dict | None) -> dict | None:
    if not err:
        return None
    return {**err, "node_id": str(err.get("node_id") or ""), "node_type": str(err.get("node_type") or ""),
            "exception_message": str(err.get("exception_message") or ""),
            "exception_type": str(err.get("exception_type") or ""), "traceback": list(err.get("traceback") or [])}


def _all_jobs(state) -> list[tuple[dict, Any]]:
    q = state.queue
    jobs: list[tuple[dict, Any]] = []
    running = q.running
    if running is not None:
        jobs.append((_job_from_queue(running, "in_progress"), running))
    jobs += [(_job_from_queue(i, "pending"), i) for i in q.pending()]
    jobs += [(_job_from_history(e), e) for e in state.store.history()]
    return jobs


async def get_jobs(request: Request) -> Response:
    state = request.app.state.server
    qp = request.query_params
    wanted = [s for s in (qp.get("status") or "").split(",") if s]
    bad = [s for s in wanted if s not in JOB_STATUSES]
    if bad:
        return files.error(400, f"unknown status {bad[0]!r}; use {', '.join(JOB_STATUSES)}")
    try:
        limit = _int(qp.get("limit"))
        offset = _int(qp.get("offset")) or 0
    except ValueError as exc:
        return files.error(400, str(exc))
    sort_by = qp.get("sort_by") or "created_at"
    desc = (qp.get("sort_order") or "desc").lower() != "asc"
    jobs = [j for j, _ in await run_in_threadpool(_all_jobs, state)]
    if wanted:
        jobs = [j for j in jobs if j["status"] in wanted]
    wf = qp.get("workflow_id")
    if wf:
        jobs = [j for j in jobs if j.get("workflow_id") == wf]
    if sort_by == "execution_duration":
        def key(j):
            s, e = j.get("execution_start_time"), j.get("execution_end_time")
            return (e - s) if s and e else 0
    else:
        def key(j):
            return j["create_time"]
    jobs.sort(key=key, reverse=desc)
    total = len(jobs)
    offset = max(0, offset)
    page = jobs[offset:offset + limit] if limit is not None and limit >= 0 else jobs[offset:]
    return JSONResponse({"jobs": page, "pagination": {"offset": offset, "limit": limit if limit is not None else total,
                                                      "total": total, "has_more": offset + len(page) < total}})


async def get_job(request: Request) -> Response:
    state = request.app.state.server
    pid = request.path_params["job_id"]
    for job, src in await run_in_threadpool(_all_jobs, state):
        if job["id"] == pid:
            item = src.item if isinstance(src, HistoryEntry) else src
            detail = {**job, "workflow": {"prompt": item.prompt, "extra_data": item.extra_data},
                      "outputs": src.outputs if isinstance(src, HistoryEntry) else {},
                      "execution_status": src.status if isinstance(src, HistoryEntry) else None,
                      "execution_meta": src.meta if isinstance(src, HistoryEntry) else None}
            return JSONResponse(detail)
    return files.error(404, f"no job {pid}", "not_found")


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
        ("/experiment/models", empty_list, ["GET"]),
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
        ("/upload/image", files.upload_image, ["POST"]),
        ("/userdata", files.list_userdata, ["GET"]),
        ("/userdata/{rest:path}", files.userdata, ["GET", "POST", "DELETE"]),
    ]
    out: list = []
    for prefix in ("/api", ""):
        for path, endpoint, methods in table:
            out.append(Route(prefix + path, endpoint, methods=methods))
        out.append(WebSocketRoute(prefix + "/ws", websocket))
    return out
