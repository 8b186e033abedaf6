"""Where a runtime keeps files, and the one function that confines a user-given name to a folder.

Every place that turns a name from a workflow or a request into a path (SaveImage's prefix, LoadImage,
/view, uploads, userdata) goes through :func:`resolve_inside`, so the rules live in one spot.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path


class UnsafePathError(ValueError):
    """A name that would leave its folder (``..``, absolute, drive letter, UNC, NUL, symlink escape)."""


_DRIVE = re.compile(r"^[A-Za-z]:")


def resolve_inside(base: str | os.PathLike, name: str, *, allow_subdirs: bool = True) -> Path:
    """``base / name``, resolved (symlinks included), guaranteed to lie inside ``base``.

    ``a..b.png`` is a fine name; ``../x``, ``..\\x``, ``/etc/x``, ``C:\\x``, ``\\\\host\\share`` and names
    with NUL bytes are refused, and so is any symlink that points out of ``base``.
    """
    if not isinstance(name, str):
        raise UnsafePathError(f"file name must be a string, got {type(name).__name__}")
    if "\x00" in name:
        raise UnsafePathError("file name contains a NUL byte")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise UnsafePathError(f"absolute paths are not allowed: {name!r}")
    parts = re.split(r"[\\/]+", name)
    if any(p == ".." for p in parts):
        raise UnsafePathError(f"'..' is not allowed in file names: {name!r}")
    if not allow_subdirs and len([p for p in parts if p]) > 1:
        raise UnsafePathError(f"sub-folders are not allowed here: {name!r}")
    root = Path(base).resolve()
    target = (root / "/".join(p for p in parts if p not in ("", "."))).resolve()
    if target != root and not target.is_relative_to(root):
        raise UnsafePathError(f"{name!r} resolves outside its folder")
    return target


def check_file_name(name: str, what: str = "file name") -> str:
    """``name`` if it can name a file (not empty, not ``.``, not ending in a slash); raises UnsafePathError."""
    if not isinstance(name, str):
        raise UnsafePathError(f"{what} must be a string, got {type(name).__name__}")
    last = re.split(r"[\\/]", name)[-1]
    if not name.strip():
        raise UnsafePathError(f"{what} is empty")
    if last.strip() in ("", ".", ".."):
        raise UnsafePathError(f"{what} {name!r} names a folder, not a file")
    return name


@dataclass
class RuntimePaths:
    """The folders a runtime reads and writes; defaults live under one base directory."""

    base: Path = field(default_factory=lambda: Path(os.environ.get("GRAPH_RUNTIME_HOME", ".")).resolve())
    output: Path | None = None
    input: Path | None = None
    temp: Path | None = None
    user: Path | None = None
    models: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base = Path(self.base).resolve()
        self.output = Path(self.output or self.base / "output").resolve()
        self.input = Path(self.input or self.base / "input").resolve()
        self.temp = Path(self.temp or self.base / "temp").resolve()
        self.user = Path(self.user or self.base / "user").resolve()
        self.models = [Path(m).resolve() for m in self.models]

    def folder(self, kind: str) -> Path:
        """'output', 'input' or 'temp' (the ``type`` of ComfyUI's /view)."""
        if kind not in ("output", "input", "temp"):
            raise UnsafePathError(f"unknown folder type {kind!r}: use output, input or temp")
        return getattr(self, kind)


#: the folders of the runtime that is validating, describing or running nodes right now: what a node's
#: choices (LoadImage's input files, the models folders) list when they are built outside a node's context
_ACTIVE: ContextVar[RuntimePaths | None] = ContextVar("graph_runtime_paths", default=None)


def active_paths() -> RuntimePaths | None:
    """The paths set by :func:`using_paths` in this context (None outside any runtime)."""
    return _ACTIVE.get()


@contextmanager
def using_paths(paths: RuntimePaths | None) -> Iterator[None]:
    """Make ``paths`` the active ones while validating, describing or running (the executor and the server
    do this), so lists of files on disk follow the runtime's folders, not the working directory."""
    token = _ACTIVE.set(paths)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
