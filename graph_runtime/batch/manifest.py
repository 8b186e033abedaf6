"""The batch manifest: one JSON line per finished job, appended, flushed and fsync'd before the next job.

A line is written with one ``write`` after the job's files are on disk, so a batch killed at any moment
leaves a manifest whose every complete line describes files that exist. A torn last line (killed mid-write)
is skipped when reading, and a newline is added before appending after it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.jsonl"
JOBS_DIR = "jobs"


def file_digest(path: Path, *, sync: bool = False) -> dict[str, Any]:
    """``{"sha256", "size"}`` of a file; ``sync`` also forces its data to disk."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(f.fileno())
    return {"sha256": h.hexdigest(), "size": size}


def read_manifest(path: Path) -> tuple[dict[str, dict], int]:
    """The last record of each job id, and how many lines were unreadable (a torn tail, a stray edit)."""
    records: dict[str, dict] = {}
    bad = 0
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return records, 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            bad += 1
            continue
        if isinstance(rec, dict) and isinstance(rec.get("job_id"), str):
            records[rec["job_id"]] = rec
        else:
            bad += 1
    return records, bad


def outputs_intact(record: dict, output_dir: Path) -> bool:
    """Every file the record lists exists with the recorded size and sha256."""
    outputs = record.get("outputs")
    if not isinstance(outputs, list):
        return False
    for item in outputs:
        try:
            path = output_dir / item["path"]
            if path.stat().st_size != item["size"]:
                return False
            if file_digest(path)["sha256"] != item["sha256"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


class ManifestWriter:
    """Appends records durably. Opening it checks that the output folder is writable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":  # a torn last line: close it so the next record starts clean
                    self._write(b"\n")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":")) + "\n"
        self._write(line.encode("utf-8"))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def collect_files(job_dir: Path, output_dir: Path, *, sync: bool = True) -> list[dict[str, Any]]:
    """Every file under a job's folder, as manifest entries (path relative to the output folder)."""
    if not job_dir.is_dir():
        return []
    entries = []
    for path in sorted(p for p in job_dir.rglob("*") if p.is_file()):
        entries.append({"path": path.relative_to(output_dir).as_posix(), **file_digest(path, sync=sync)})
    return entries


def iter_records(path: Path) -> Iterable[dict]:
    """Every readable record in file order (history, not only the last per job)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(rec, dict):
            yield rec
