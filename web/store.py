"""SQLite persistence of the prompt queue and history, so that a restart (or a crash) loses nothing.

A prompt is written to ``queue`` when it is accepted and moved to ``history`` in the same transaction that
records its result. After a crash, whatever is still in ``queue`` runs on the next start; each start of a
run is counted (``attempts``), so a prompt that was running when the server died is re-run once and, if the
server dies during that run too, recorded as failed instead of taking the server down on every start.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph_runtime import strict_json

_loads = strict_json.loads_stored  # rows an older version wrote may hold a bare NaN
log = logging.getLogger(__name__)


def _is_busy(exc: Exception) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    prompt_id TEXT PRIMARY KEY,
    number REAL NOT NULL,
    seq INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs TEXT NOT NULL,
    client_id TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT UNIQUE NOT NULL,
    number REAL NOT NULL,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs_to_execute TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    status TEXT NOT NULL,
    outputs TEXT NOT NULL,
    meta TEXT NOT NULL,
    error TEXT
);
"""

# Columns /jobs filters and sorts on, kept beside the JSON so a page is one indexed query (added to older
# databases and filled in once, at open).
JOB_COLUMNS = (("job_status", "TEXT"), ("create_time", "INTEGER"), ("workflow_id", "TEXT"), ("duration", "REAL"))
JOB_INDEXES = """
CREATE INDEX IF NOT EXISTS history_create_time ON history (create_time);
CREATE INDEX IF NOT EXISTS history_status_time ON history (job_status, create_time);
CREATE INDEX IF NOT EXISTS history_duration ON history (duration);
"""


def job_status(status: dict) -> str:
    """A history entry's status as the jobs API names it: completed, cancelled or failed."""
    if status.get("status_str") == "success":
        return "completed"
    messages = status.get("messages") or []
    if status.get("interrupted") or any(isinstance(m, list) and m and m[0] == "execution_interrupted"
                                        for m in messages):
        return "cancelled"
    return "failed"


def workflow_id(extra_data: dict) -> str | None:
    """The editor's workflow id saved in a prompt's extra_data (extra_pnginfo.workflow.id), if any."""
    info = extra_data.get("extra_pnginfo") if isinstance(extra_data, dict) else None
    wf = info.get("workflow") if isinstance(info, dict) else None
    wid = wf.get("id") if isinstance(wf, dict) else None
    return wid if isinstance(wid, str) else None


def create_time(item: QueueItem) -> int:
    value = item.extra_data.get("create_time") if isinstance(item.extra_data, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return int(item.created * 1000)


def _duration(started: float | None, finished: float | None) -> float:
    return (finished - started) if started and finished else 0.0


@dataclass
class QueueItem:
    number: float
    prompt_id: str
    prompt: dict
    extra_data: dict
    outputs: list[str]
    client_id: str | None
    created: float
    seq: int = 0
    attempts: int = 0  # runs started (counted before each run, so a crash leaves it counted)
    # what each earlier, unfinished run produced before the server died: [{node id: ui output}, ...]
    partial: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.number, float) and self.number.is_integer():
            self.number = int(self.number)

    def as_comfy(self) -> list:
        """ComfyUI's queue entry: [number, prompt_id, prompt, extra_data, outputs_to_execute]."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class HistoryEntry:
    item: QueueItem
    status: dict  # {status_str, completed, messages}
    outputs: dict
    meta: dict
    started: float | None = None
    finished: float | None = None
    error: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_comfy(self) -> dict:
        return {"prompt": self.item.as_comfy(), "outputs": self.outputs, "status": self.status, "meta": self.meta}


def _dumps(value: Any) -> str:
    return strict_json.dumps(value, separators=(",", ":"))


class StoreError(Exception):
    """The database cannot be opened or used; the message names the file and what to do."""


class Store:
    """All SQL lives here; every method is safe to call from any thread."""

    def __init__(self, path: Path, max_history: int = 10000, busy_timeout: float = 5.0,
                 finish_retry_s: float = 60.0):
        self.path = path
        self.max_history = max_history
        self.finish_retry_s = finish_retry_s
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                       timeout=busy_timeout)
            self._open()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(self._explain(exc)) from None

    def _explain(self, exc: Exception) -> str:
        text = str(exc)
        if "locked" in text or "busy" in text:
            advice = "another process holds it (a second server on the same user folder?); stop it or use --user-dir"
        elif "readonly" in text or "read-only" in text or isinstance(exc, PermissionError):
            advice = "the file or its folder is not writable; fix the permissions or use --user-dir"
        elif "not a database" in text or "malformed" in text or "corrupt" in text:
            advice = "the file is damaged; move it aside (a new, empty queue and history is created)"
        else:
            advice = "check the file and its folder, or use --user-dir"
        return f"cannot open the queue database {self.path}: {text}; {advice}"

    def _open(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._add_job_columns()
        self._db.executescript(JOB_INDEXES)
        queue_columns = {r[1] for r in self._db.execute("PRAGMA table_info(queue)").fetchall()}
        if "attempts" not in queue_columns:
            self._db.execute("ALTER TABLE queue ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")
        if "partial" not in queue_columns:
            self._db.execute("ALTER TABLE queue ADD COLUMN partial TEXT NOT NULL DEFAULT '[]'")

    def _add_job_columns(self) -> None:
        have = {r[1] for r in self._db.execute("PRAGMA table_info(history)").fetchall()}
        missing = [(n, t) for n, t in JOB_COLUMNS if n not in have]
        if not missing:
            return
        self._db.execute("BEGIN")
        try:
            for name, kind in missing:
                self._db.execute(f"ALTER TABLE history ADD COLUMN {name} {kind}")
            rows = self._db.execute("SELECT seq, extra_data, created, started, finished, status FROM history")
            for seq, extra, created, started, finished, status in rows.fetchall():
                extra = _loads(extra)
                item = QueueItem(0, "", {}, extra if isinstance(extra, dict) else {}, [], None, created)
                self._db.execute("UPDATE history SET job_status=?, create_time=?, workflow_id=?, duration=? "
                                 "WHERE seq=?", (job_status(_loads(status)), create_time(item),
                                                 workflow_id(item.extra_data), _duration(started, finished), seq))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- queue ------------------------------------------------------------------------------------------------

    def add(self, item: QueueItem) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO queue (prompt_id, number, seq, prompt, extra_data, outputs, client_id, created, "
                "attempts) VALUES (?,?,?,?,?,?,?,?,?)",
                (item.prompt_id, item.number, item.seq, _dumps(item.prompt), _dumps(item.extra_data),
                 _dumps(item.outputs), item.client_id, item.created, item.attempts),
            )

    def started(self, prompt_id: str) -> int:
        """Count one more run of a queued prompt (committed before it runs); returns the count."""
        with self._lock:
            self._db.execute("UPDATE queue SET attempts = attempts + 1, partial = json_insert(partial, '$[#]', "
                             "json('{}')) WHERE prompt_id=?", (prompt_id,))
            row = self._db.execute("SELECT attempts FROM queue WHERE prompt_id=?", (prompt_id,)).fetchone()
        return row[0] if row else 0

    def record_output(self, prompt_id: str, node_id: str, ui: dict) -> None:
        """Keep a node's output of the run in progress, so files it wrote are known if the server dies."""
        with self._lock:
            self._db.execute("UPDATE queue SET partial = json_set(partial, '$[#-1].' || json_quote(?), json(?)) "
                             "WHERE prompt_id=?", (node_id, _dumps(ui), prompt_id))

    def remove(self, prompt_ids: list[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM queue WHERE prompt_id=?", [(p,) for p in prompt_ids])

    def pending(self) -> list[QueueItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT number, prompt_id, prompt, extra_data, outputs, client_id, created, seq, attempts, partial "
                "FROM queue ORDER BY number, seq").fetchall()
        return [QueueItem(r[0], r[1], _loads(r[2]), _loads(r[3]), _loads(r[4]), r[5], r[6], r[7], r[8],
                          [p for p in _loads(r[9]) if isinstance(p, dict)]) for r in rows]

    def counters(self) -> tuple[float, int]:
        """The highest number and sequence used so far (queue and history)."""
        with self._lock:
            q = self._db.execute("SELECT MAX(number), MAX(seq) FROM queue").fetchone()
            h = self._db.execute("SELECT MAX(number), COUNT(*) FROM history").fetchone()
        number = max(x for x in (q[0], h[0], 0) if x is not None)
        seq = max(x for x in (q[1], h[1], 0) if x is not None)
        return number, seq

    def exists(self, prompt_id: str) -> bool:
        with self._lock:
            return bool(
                self._db.execute("SELECT 1 FROM queue WHERE prompt_id=? UNION ALL "
                                 "SELECT 1 FROM history WHERE prompt_id=?", (prompt_id, prompt_id)).fetchone())

    # -- history ----------------------------------------------------------------------------------------------

    def finish(self, entry: HistoryEntry) -> None:
        """Move a prompt from the queue to the history, atomically, and trim the history. A database that is
        busy (locked by another connection) is tried again with backoff for up to ``finish_retry_s``: a result
        is not lost to a moment of contention."""
        deadline = time.monotonic() + self.finish_retry_s
        delay = 0.05
        while True:
            try:
                return self._finish(entry)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("recording prompt %s: %s; trying again in %.2f s", entry.item.prompt_id, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _finish(self, entry: HistoryEntry) -> None:
        it = entry.item
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM queue WHERE prompt_id=?", (it.prompt_id,))
                self._db.execute("DELETE FROM history WHERE prompt_id=?", (it.prompt_id,))
                self._db.execute(
                    "INSERT INTO history (prompt_id, number, prompt, extra_data, outputs_to_execute, created, "
                    "started, finished, status, outputs, meta, error, job_status, create_time, workflow_id, "
                    "duration) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (it.prompt_id, it.number, _dumps(it.prompt), _dumps(it.extra_data), _dumps(it.outputs),
                     it.created, entry.started, entry.finished, _dumps(entry.status), _dumps(entry.outputs),
                     _dumps(entry.meta), _dumps(entry.error) if entry.error else None, job_status(entry.status),
                     create_time(it), workflow_id(it.extra_data), _duration(entry.started, entry.finished)),
                )
                self._db.execute(
                    "DELETE FROM history WHERE seq <= (SELECT MAX(seq) FROM history) - ?", (self.max_history,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    _HISTORY_COLS = ("number, prompt_id, prompt, extra_data, outputs_to_execute, created, started, finished, "
                     "status, outputs, meta, error")

    def _entry(self, r: tuple) -> HistoryEntry:
        extra = _loads(r[3])
        item = QueueItem(r[0], r[1], _loads(r[2]), extra, _loads(r[4]), extra.get("client_id"), r[5])
        return HistoryEntry(item=item, started=r[6], finished=r[7], status=_loads(r[8]),
                            outputs=_loads(r[9]), meta=_loads(r[10]),
                            error=_loads(r[11]) if r[11] else None)

    def history(self, max_items: int | None = None, offset: int | None = None) -> list[HistoryEntry]:
        """Oldest first. Without an offset, the latest ``max_items`` entries (ComfyUI's behaviour)."""
        with self._lock:
            total = self._db.execute("SELECT COUNT(*) FROM history").fetchone()[0]
            if offset is None or offset < 0:
                offset = max(0, total - max_items) if max_items is not None else 0
            limit = -1 if max_items is None else max(0, max_items)
            rows = self._db.execute(f"SELECT {self._HISTORY_COLS} FROM history ORDER BY seq LIMIT ? OFFSET ?",
                                    (limit, offset)).fetchall()
        return [self._entry(r) for r in rows]

    def job_keys(self, statuses: list[str] | None, workflow: str | None, sort_by: str, desc: bool,
                 limit: int) -> tuple[list[tuple[str, float]], int]:
        """The first ``limit`` history entries in /jobs order, as (prompt_id, sort key), and how many match."""
        where, args = [], []
        if statuses:
            where.append(f"job_status IN ({','.join('?' * len(statuses))})")
            args += statuses
        if workflow:
            where.append("workflow_id=?")
            args.append(workflow)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        key = "duration" if sort_by == "execution_duration" else "create_time"
        order = "DESC" if desc else "ASC"
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM history{clause}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT prompt_id, {key} FROM history{clause} ORDER BY {key} {order}, seq "
                                    f"{order} LIMIT ?", [*args, max(0, limit)]).fetchall()
        return [(r[0], r[1] or 0) for r in rows], total

    def history_many(self, prompt_ids: list[str]) -> dict[str, HistoryEntry]:
        out: dict[str, HistoryEntry] = {}
        with self._lock:
            for start in range(0, len(prompt_ids), 500):
                chunk = prompt_ids[start:start + 500]
                rows = self._db.execute(f"SELECT {self._HISTORY_COLS} FROM history WHERE prompt_id IN "
                                        f"({','.join('?' * len(chunk))})", chunk).fetchall()
                for r in rows:
                    out[r[1]] = self._entry(r)
        return out

    def history_one(self, prompt_id: str) -> HistoryEntry | None:
        with self._lock:
            r = self._db.execute(f"SELECT {self._HISTORY_COLS} FROM history WHERE prompt_id=?",
                                 (prompt_id,)).fetchone()
        return self._entry(r) if r else None

    def delete_history(self, prompt_ids: list[str] | None) -> None:
        """Delete the given entries, or all of them when ``prompt_ids`` is None."""
        with self._lock:
            if prompt_ids is None:
                self._db.execute("DELETE FROM history")
            else:
                self._db.executemany("DELETE FROM history WHERE prompt_id=?", [(p,) for p in prompt_ids])
