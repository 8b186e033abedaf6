"""Output caches across runs, keyed by a node's Merkle key (see executor.node_key).

Policies: keep the last run's outputs (ComfyUI's default), an LRU of N entries, or none.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass
class CacheEntry:
    outputs: tuple
    ui: dict[str, Any] | None


class OutputCache:
    """Base: no caching across runs."""

    name = "none"

    def get(self, key: str) -> CacheEntry | None:
        return None

    def put(self, key: str, entry: CacheEntry) -> None:
        pass

    def end_run(self, used_keys: set[str]) -> None:
        """Called after each run with every key that run used or produced."""

    def clear(self) -> None:
        pass

    def __len__(self) -> int:
        return 0


class KeepLastRun(OutputCache):
    """Keeps exactly the outputs of the nodes of the latest run: a re-queued graph re-runs only what changed."""

    name = "last"

    def __init__(self) -> None:
        self._entries: dict[str, CacheEntry] = {}

    def get(self, key):
        return self._entries.get(key)

    def put(self, key, entry):
        self._entries[key] = entry

    def end_run(self, used_keys):
        if len(used_keys) != len(self._entries) or any(k not in used_keys for k in self._entries):
            self._entries = {k: v for k, v in self._entries.items() if k in used_keys}

    def clear(self):
        self._entries.clear()

    def __len__(self):
        return len(self._entries)


class LRUCache(OutputCache):
    """Keeps the N most recently used entries across runs (for switching between several workflows)."""

    name = "lru"

    def __init__(self, size: int = 256) -> None:
        if size < 1:
            raise ValueError("LRU cache size must be at least 1")
        self.size = size
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()

    def get(self, key):
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key, entry):
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self):
        self._entries.clear()

    def __len__(self):
        return len(self._entries)


def make_cache(policy: str | OutputCache | None) -> OutputCache:
    """'last' (default), 'none', 'lru' or 'lru:N'."""
    if isinstance(policy, OutputCache):
        return policy
    policy = (policy or "last").strip().lower()
    if policy == "last":
        return KeepLastRun()
    if policy == "none":
        return OutputCache()
    if policy.startswith("lru"):
        _, _, n = policy.partition(":")
        try:
            return LRUCache(int(n) if n else 256)
        except ValueError:
            raise ValueError(f"bad cache policy {policy!r}: use lru:N with N a positive integer") from None
    raise ValueError(f"unknown cache policy {policy!r}: use last, none, lru or lru:N")
