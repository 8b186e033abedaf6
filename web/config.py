"""Server settings: where files live, what is listened on, and the limits that protect a local server."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from graph_runtime import RuntimePaths

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

MB = 1024 * 1024


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8188
    paths: RuntimePaths = field(default_factory=RuntimePaths)
    token: str | None = None  # required (Bearer header, ?token= or cookie) when set
    listen_anywhere: bool = False
    allowed_hosts: tuple[str, ...] = ()  # extra Host header names accepted (a reverse proxy's name)
    cache: str = "last"
    frontend: bool = True
    node_modules: tuple[str, ...] = ()  # extra modules whose register(registry) adds nodes
    # Limits.
    max_prompt_bytes: int = 16 * MB  # JSON bodies (prompt, settings, userdata)
    max_upload_bytes: int = 64 * MB  # multipart uploads
    max_ws_clients: int = 256
    max_connections: int = 1024  # open HTTP + websocket connections (kept below the open-file limit)
    header_timeout: float = 10.0  # seconds a connection has to send a complete request head
    max_ws_queue: int = 1024  # messages waiting for one slow client before it is dropped
    max_nodes: int = 5000  # nodes in one prompt
    max_pending: int = 10000  # prompts waiting in the queue
    max_history: int = 10000  # finished prompts kept
    db_busy_timeout: float = 5.0  # seconds one statement waits for a database another connection holds
    db_finish_retry: float = 60.0  # seconds a finished prompt's result is retried on a busy database
    history_page: int = 100  # /history and /jobs entries in one reply when the client names no limit
    max_history_page: int = 1000  # the most entries one /history or /jobs reply holds, whatever is asked

    @property
    def user_dir(self) -> Path:
        return self.paths.user / "default"

    @property
    def db_path(self) -> Path:
        return self.paths.user / "queue.sqlite3"


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")
