"""Run a list of jobs against one workflow: validate them all, skip finished ones, record each in the manifest.

Where the work happens is a backend: :class:`LocalBackend` (one Executor in this process, its cache kept
across jobs), ``RayBackend`` (one Executor per Ray actor) or ``ServerBackend`` (a running server). Each job
writes into its own folder ``jobs/<job_id>/`` under the output folder, so file names never collide between
jobs and a job's files are easy to find, check and replace.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from ..cache import CacheEntry, OutputCache, make_cache
from ..executor import Executor
from ..paths import RuntimePaths, resolve_inside
from ..registry import NodeRegistry, default_registry
from ..validation import ValidationResult, WorkflowValidationError
from .manifest import JOBS_DIR, MANIFEST_NAME, ManifestWriter, collect_files, outputs_intact, read_manifest
from .sweep import Job, apply_params

RegistryFactory = Callable[[], NodeRegistry]


class BatchInvalid(Exception):
    """Refused before any job ran (exit code 2); ``lines`` are readable messages."""

    def __init__(self, message: str, lines: Iterable[str] = ()):
        self.lines = list(lines)
        super().__init__(message)


class BatchAborted(Exception):
    """The batch cannot go on (the manifest cannot be written): exit code 1."""


@dataclass
class Outcome:
    status: str  # "ok", "error" or "interrupted"
    error: dict[str, Any] | None = None
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seconds: float = 0.0
    blobs: list[tuple[str, bytes]] | None = None  # files to write into the job folder (remote backends)
    worker: str | None = None


@dataclass
class WorkItem:
    job: Job
    document: dict
    job_dir: Path


class Backend(Protocol):
    """Where a batch's jobs run (LocalBackend, RayBackend, ServerBackend).

    BatchRunner calls ``open``, ``validate`` for every job, ``run`` over the unfinished ones, then ``close``;
    ``stop`` may come from a signal handler at any time. ``open(document, dry_run=True)`` readies only what
    validation needs (no Ray workers; a server is asked whether it answers).
    """

    name: str

    def open(self, document: dict, *, dry_run: bool = False) -> None: ...

    def validate(self, document: dict) -> ValidationResult | None: ...  # None: the backend cannot tell

    def run_one(self, item: WorkItem) -> Outcome: ...

    def run(self, items: Iterable[WorkItem]) -> Iterator[tuple[WorkItem, Outcome]]: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class OneAtATime:
    """``run`` for backends that run one job at a time: ``run_one`` per item until stopped."""

    _stop: threading.Event

    def run_one(self, item: WorkItem) -> Outcome:
        raise NotImplementedError

    def run(self, items: Iterable[WorkItem]) -> Iterator[tuple[WorkItem, Outcome]]:
        for item in items:
            if self._stop.is_set():
                return
            yield item, self.run_one(item)


@dataclass
class BatchSummary:
    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: bool = False
    files: int = 0
    seconds: float = 0.0
    manifest: Path | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)  # (job id, message)

    @property
    def files_per_second(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else 0.0


def error_message(error: dict[str, Any] | None) -> str:
    if not error:
        return "failed"
    if error.get("node_id"):
        return f"node {error['node_id']} ({error.get('node_type')}): {error.get('message')}"
    return str(error.get("message"))


def document_digest(document: dict) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


class FreshOutputs(OutputCache):
    """A cache that never serves output nodes (entries with UI data) from an earlier job.

    Each job writes into its own folder; an output node taken from the cache would leave that folder
    empty and point at another job's files. Everything upstream (model, text encoding) is reused.
    """

    def __init__(self, inner: OutputCache):
        self.inner = inner
        self.name = f"fresh-outputs({inner.name})"

    def get(self, key: str) -> CacheEntry | None:
        entry = self.inner.get(key)
        return None if entry is None or entry.ui is not None else entry

    def put(self, key: str, entry: CacheEntry) -> None:
        self.inner.put(key, entry)

    def end_run(self, used_keys: set[str]) -> None:
        self.inner.end_run(used_keys)

    def clear(self) -> None:
        self.inner.clear()

    def __len__(self) -> int:
        return len(self.inner)


def default_cache_policy(document: dict) -> str:
    """An LRU that holds two jobs' worth of node outputs: the current job and the one before it."""
    return f"lru:{2 * len(document) + 8}"


def clear_dir(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def run_error(error: dict[str, Any] | None, status: str) -> dict[str, Any] | None:
    if status == "interrupted":
        return {"message": "interrupted", "node_id": (error or {}).get("node_id"),
                "node_type": (error or {}).get("node_type")}
    if not error:
        return None
    return {"message": error.get("exception_message"), "type": error.get("exception_type"),
            "node_id": error.get("node_id"), "node_type": error.get("node_type")}


class LocalBackend(OneAtATime):
    """One Executor in this process, kept across jobs: what did not change between jobs is not re-run."""

    name = "local"

    def __init__(self, registry_factory: RegistryFactory | None = None, *, cache: str | OutputCache | None = None,
                 paths: RuntimePaths | None = None, executor: Executor | None = None):
        self.registry_factory = registry_factory or default_registry
        self.cache_policy = cache
        self.base_paths = paths or RuntimePaths()
        self.executor = executor
        self._stop = threading.Event()

    def open(self, document: dict, *, dry_run: bool = False) -> None:
        if self.executor is None:
            inner = make_cache(self.cache_policy or default_cache_policy(document))
            self.executor = Executor(self.registry_factory(), cache=FreshOutputs(inner), paths=self.base_paths)

    def validate(self, document: dict) -> ValidationResult:
        assert self.executor is not None
        return self.executor.validate(document)

    def run_one(self, item: WorkItem) -> Outcome:
        job_dir, executor = item.job_dir, self.executor
        assert executor is not None
        started = time.perf_counter()
        try:
            clear_dir(job_dir)  # files of an earlier, unfinished attempt
        except OSError as exc:
            return Outcome("error", {"message": f"cannot clear the job folder {job_dir}: {exc}"},
                           seconds=time.perf_counter() - started)
        executor.paths = dataclasses.replace(self.base_paths, output=job_dir)
        try:
            result = executor.run(item.document, prompt_id=item.job.id)
        except WorkflowValidationError as exc:
            return Outcome("error", {"message": "; ".join(exc.result.messages())},
                           seconds=time.perf_counter() - started)
        status = {"success": "ok", "error": "error", "interrupted": "interrupted"}[result.status]
        return Outcome(status, run_error(result.error, result.status), executed=list(result.executed),
                       cached=list(result.cached), seconds=time.perf_counter() - started)

    def stop(self) -> None:
        self._stop.set()
        if self.executor is not None:
            self.executor.interrupt()

    def close(self) -> None:
        pass


class BatchRunner:
    """Validates every job, then runs the unfinished ones through a backend, recording each in the manifest."""

    def __init__(self, document: dict, jobs: list[Job], output_dir: str | Path, backend: Backend, *,
                 resume: bool = True, progress: bool = True, console: Any = None,
                 on_result: Callable[[Job, dict], None] | None = None):
        self.document = document
        self.jobs = jobs
        self.output_dir = Path(output_dir).resolve()
        self.backend = backend
        self.resume = resume
        self.show_progress = progress
        self.console = console
        self.on_result = on_result
        self.digest = document_digest(document)
        self._stopped = threading.Event()

    @property
    def manifest_path(self) -> Path:
        return self.output_dir / MANIFEST_NAME

    def job_dir(self, job: Job) -> Path:
        return resolve_inside(self.output_dir, f"{JOBS_DIR}/{job.id}")

    def validate_all(self) -> None:
        """Refuse the batch if any job's workflow is invalid, naming the first failing job."""
        for index, job in enumerate(self.jobs, 1):
            doc = apply_params(self.document, job.params)
            result = self.backend.validate(doc)
            if result is None or result.ok:
                continue
            shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in job.params.items()) or "no parameters"
            raise BatchInvalid(f"job {index} of {len(self.jobs)} ({shown}) is not a valid workflow",
                               result.messages())

    def finished_jobs(self) -> set[str]:
        if not self.resume:
            return set()
        records, _ = read_manifest(self.manifest_path)
        done = set()
        for job in self.jobs:
            rec = records.get(job.id)
            if rec and rec.get("status") == "ok" and rec.get("workflow") == self.digest \
                    and outputs_intact(rec, self.output_dir):
                done.add(job.id)
        return done

    def stop(self) -> None:
        """Stop after the running job (it is not recorded as finished); safe from a signal handler."""
        self._stopped.set()
        self.backend.stop()

    def _open(self, dry_run: bool) -> None:
        try:
            self.backend.open(self.document, dry_run=dry_run)
        except Exception as exc:  # Ray not installed or not reachable, a server that does not answer
            self.backend.close()
            raise BatchAborted(f"cannot start the {self.backend.name} backend: {exc}") from exc

    def dry_run(self) -> None:
        """Validate every job where the batch would run them, running nothing."""
        self._open(dry_run=True)
        try:
            self.validate_all()
        finally:
            self.backend.close()

    def run(self, *, handle_sigint: bool = False) -> BatchSummary:
        self._open(dry_run=False)
        try:
            self.validate_all()
        except BatchInvalid:
            self.backend.close()
            raise
        try:
            manifest = ManifestWriter(self.manifest_path)
        except OSError as exc:
            raise BatchAborted(f"cannot write the manifest in {self.output_dir}: {exc}") from None
        previous = None
        if handle_sigint and threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)

            def on_sigint(signum, frame):  # first Ctrl-C: finish cleanly; a second one kills
                self.stop()
                signal.signal(signal.SIGINT, previous)

            signal.signal(signal.SIGINT, on_sigint)
        try:
            with manifest:
                return self._run(manifest)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self.backend.close()

    def _run(self, manifest: ManifestWriter) -> BatchSummary:
        summary = BatchSummary(total=len(self.jobs), manifest=self.manifest_path)
        done = self.finished_jobs()
        summary.skipped = len(done)
        todo = [WorkItem(job, apply_params(self.document, job.params), self.job_dir(job))
                for job in self.jobs if job.id not in done]
        started = time.perf_counter()
        bar = _Bar(len(self.jobs), summary.skipped, self.show_progress, self.console)
        try:
            for item, outcome in self.backend.run(todo):
                if outcome.status == "interrupted" or self._stopped.is_set() and outcome.status != "ok":
                    summary.interrupted = True
                    break
                record = self._finish(item, outcome)
                try:
                    manifest.append(record)
                except OSError as exc:
                    raise BatchAborted(f"cannot append to the manifest {self.manifest_path}: {exc}") from None
                if record["status"] == "ok":
                    summary.ok += 1
                else:
                    summary.failed += 1
                    summary.failures.append((item.job.id, error_message(record["error"])))
                    bar.log(f"job {item.job.id} failed: {error_message(record['error'])}")
                summary.files += len(record["outputs"])
                summary.seconds = time.perf_counter() - started
                bar.advance(summary)
                if self.on_result is not None:
                    self.on_result(item.job, record)
                if self._stopped.is_set():
                    summary.interrupted = True
                    break
        finally:
            summary.seconds = time.perf_counter() - started
            bar.close()
        if self._stopped.is_set():
            summary.interrupted = True
        return summary

    def _finish(self, item: WorkItem, outcome: Outcome) -> dict[str, Any]:
        status, error = outcome.status, outcome.error
        outputs: list[dict] = []
        try:
            if outcome.blobs is not None:
                clear_dir(item.job_dir)
                for rel, data in outcome.blobs:
                    path = resolve_inside(item.job_dir, rel)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
            outputs = collect_files(item.job_dir, self.output_dir)
        except (OSError, ValueError) as exc:
            status, error = "error", {"message": f"cannot write the job's outputs in {item.job_dir}: {exc}"}
        return {
            "job_id": item.job.id,
            "params": item.job.params,
            "status": status,
            "outputs": outputs,
            "seconds": round(outcome.seconds, 4),
            "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "error": error,
            "executed": outcome.executed,
            "cached": outcome.cached,
            "workflow": self.digest,
            "backend": outcome.worker or self.backend.name,
        }


class _Bar:
    """A rich progress bar over jobs with ETA and files (images) per second."""

    def __init__(self, total: int, completed: int, enabled: bool, console: Any):
        self.enabled = enabled
        self._progress = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console or Console(stderr=True, highlight=False)
        self._progress = Progress(TextColumn("jobs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[rate]}"),
                                  console=self.console, transient=False)
        self._task = self._progress.add_task("jobs", total=total, completed=completed, rate="")
        self._progress.start()

    def advance(self, summary: BatchSummary) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, rate=f"{summary.files_per_second:.2f} img/s")

    def log(self, text: str) -> None:
        if self._progress is not None:
            from rich.markup import escape

            self._progress.console.print(f"[red]{escape(text)}[/]", markup=True, highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
