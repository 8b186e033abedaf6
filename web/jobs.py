"""/jobs: the new editor's view of queue and history (one job per prompt, pages cut in SQL)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .replies import error, hide_client_ids, query_int, read_json
from .store import HistoryEntry, QueueItem, create_time, job_status, workflow_id

JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")


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
        return error(400, f"unknown status {bad[0]!r}; use {', '.join(JOB_STATUSES)}")
    try:
        limit = query_int(qp.get("limit"))
        offset = max(0, query_int(qp.get("offset")) or 0)
    except ValueError as exc:
        return error(400, str(exc))
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
        return error(404, f"no job {pid}", "not_found")
    if hide_client_ids(request):
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
        return error(400, str(exc))
    ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return error(400, "job_ids must be a list of job ids")
    q.delete(ids)
    running = q.running
    if running is not None and running.prompt_id in ids:
        q.interrupt(running.prompt_id)
    return Response(status_code=200)
