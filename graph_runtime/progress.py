"""Terminal progress: one line per node, and a bar while a node reports steps (a sampler)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from . import events


class TerminalProgress:
    """An event handler that prints what the executor does. ``titles`` maps node id -> a readable name."""

    def __init__(self, titles: dict[str, str] | None = None, console: Console | None = None, quiet: bool = False):
        self.titles = titles or {}
        self.console = console or Console(stderr=True, highlight=False)
        self.quiet = quiet
        self._bar: Progress | None = None
        self._task = None
        self._started: dict[str, float] = {}
        self._current: str | None = None

    def _name(self, nid: str | None) -> str:
        return f"[{nid}] {self.titles.get(nid, '')}".rstrip()

    def _finish_node(self) -> None:
        nid = self._current
        if nid is None:
            return
        self._close_bar()
        if not self.quiet:
            took = time.perf_counter() - self._started.get(nid, time.perf_counter())
            self.console.print(f"  [green]done[/] {self._name(nid)}  {took:.2f}s")
        self._current = None

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._task = None

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == events.EXECUTION_CACHED and data.get("nodes") and not self.quiet:
            self.console.print(f"  [dim]cached: {', '.join(self._name(n) for n in data['nodes'])}[/]")
        elif event == events.EXECUTING:
            self._finish_node()
            nid = data.get("node")
            if nid is not None:
                self._current = nid
                self._started[nid] = time.perf_counter()
        elif event == events.PROGRESS and not self.quiet:
            if self._bar is None:
                self._bar = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=self.console, transient=True)
                self._bar.start()
                self._task = self._bar.add_task(self._name(data.get("node")), total=data.get("max") or 1)
            self._bar.update(self._task, completed=data.get("value", 0), total=data.get("max") or 1)
        elif event == events.EXECUTED:
            if data.get("node") == self._current:
                self._finish_node()
        elif event == events.LOG:
            self._close_bar()
            self.console.print(f"  [yellow]warning[/] {self._name(data.get('node'))}: {data.get('message')}")
        elif event == events.EXECUTION_SUCCESS:
            self._finish_node()
        elif event == events.EXECUTION_ERROR:
            self._close_bar()
            self._current = None
            self.console.print(f"  [red]failed[/] {self._name(data.get('node_id'))}: "
                               f"{data.get('exception_type')}: {data.get('exception_message')}")
        elif event == events.EXECUTION_INTERRUPTED:
            self._close_bar()
            self._current = None
            self.console.print(f"  [yellow]interrupted[/] at {self._name(data.get('node_id'))}")
