"""Protections for a server that every web page the user opens can reach.

- Host header: only loopback names, the bound host and configured names (stops DNS rebinding).
- Token: when one is configured (required off loopback), every request carries it as ``Authorization:
  Bearer``, ``?token=`` or the cookie set after a ``?token=`` visit.
- Origin: state-changing requests (POST, PUT, PATCH, DELETE, the websocket upgrade) from another origin,
  from ``Origin: null`` or with ``Sec-Fetch-Site: cross-site`` are refused.
- Body size: capped before the body is read (Content-Length, and counted for chunked bodies).
- File names from requests are confined with :func:`graph_runtime.resolve_inside`.
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from graph_runtime import UnsafePathError, resolve_inside

from .config import LOOPBACK_NAMES, ServerConfig, is_wildcard

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
TOKEN_COOKIE = "graph_runtime_token"
UPLOAD_PATHS = ("/upload/", "/api/upload/")


class BodyTooLarge(Exception):
    pass


def split_host(value: str) -> tuple[str, str | None]:
    """'[::1]:8188' -> ('::1', '8188'); 'localhost' -> ('localhost', None)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        host, rest = value[1:end], value[end + 1:]
        return host, rest[1:] if rest.startswith(":") else None
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, port
    return value, None


class SecurityMiddleware:
    def __init__(self, app, config: ServerConfig):
        self.app = app
        self.config = config
        names = {*LOOPBACK_NAMES, *(h.lower().strip("[]") for h in config.allowed_hosts)}
        if not is_wildcard(config.host):
            names.add(config.host.lower().strip("[]"))
        self.any_host = is_wildcard(config.host) and bool(config.token)  # the token guards, any name reaches us
        self.host_names = names

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = scope.get("method", "GET") if kind == "http" else "WEBSOCKET"

        problem = self.check_host(headers)
        if problem is None:
            problem, set_cookie = self.check_token(scope, headers)
        else:
            set_cookie = False
        if problem is None and (method in STATE_CHANGING or kind == "websocket"):
            problem = self.check_origin(headers)
        if problem is not None:
            status, message = problem
            return await refuse(scope, send, status, message)

        if kind == "http" and method in STATE_CHANGING:
            cap = self.body_cap(scope["path"])
            length = headers.get("content-length")
            if length is not None:
                try:
                    too_big = int(length) > cap
                except ValueError:
                    return await refuse(scope, send, 400, "bad Content-Length")
                if too_big:
                    return await refuse(scope, send, 413, f"request body larger than {cap // (1024 * 1024)} MB")
            receive = _counting_receive(receive, cap)

        if set_cookie:
            send = _with_cookie(send, self.config.token)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await refuse(scope, send, 413, "request body too large")

    def body_cap(self, path: str) -> int:
        if path.startswith(UPLOAD_PATHS):
            return self.config.max_upload_bytes
        return self.config.max_prompt_bytes

    def check_host(self, headers: dict[str, str]) -> tuple[int, str] | None:
        if self.any_host:
            return None
        host, _ = split_host(headers.get("host", ""))
        if host not in self.host_names:
            return 403, "unknown Host header (the server only answers to its own name)"
        return None

    def check_token(self, scope, headers: dict[str, str]) -> tuple[tuple[int, str] | None, bool]:
        token = self.config.token
        if not token:
            return None, False
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and _same(auth[7:].strip(), token):
            return None, False
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:
            pass
        if TOKEN_COOKIE in cookie and _same(cookie[TOKEN_COOKIE].value, token):
            return None, False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [None])[0]
        if given is not None and _same(given, token):
            return None, scope["type"] == "http"
        return (401, "a token is required: send 'Authorization: Bearer TOKEN' or add ?token=TOKEN"), False

    def check_origin(self, headers: dict[str, str]) -> tuple[int, str] | None:
        if headers.get("sec-fetch-site", "").lower() == "cross-site":
            return 403, "cross-site requests are refused"
        origin = headers.get("origin")
        if origin is None:
            return None  # not a browser, or a same-origin request of an old browser
        if origin.strip().lower() == "null":
            return 403, "requests from an opaque origin are refused"
        try:
            parts = urlsplit(origin.strip())
            port = parts.port  # raises on a port that is not a number in range
        except ValueError:
            return 403, "bad Origin header"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return 403, "bad Origin header"
        o_host = parts.hostname.lower()
        o_port = str(port) if port else ("443" if parts.scheme == "https" else "80")
        h_host, h_port = split_host(headers.get("host", ""))
        h_port = h_port or ("443" if parts.scheme == "https" else "80")
        if o_host != h_host or o_port != h_port:
            return 403, f"cross-origin request from {origin} refused"
        return None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _counting_receive(receive, cap: int):
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise BodyTooLarge()
        return message

    return wrapped


def _with_cookie(send, token: str):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            cookie = f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict".encode("latin-1")
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
        await send(message)

    return wrapped


async def refuse(scope, send, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        # Closing before accepting makes the server answer the upgrade with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    body = json.dumps({"error": {"type": "forbidden" if status in (401, 403) else "bad_request",
                                 "message": message, "details": "", "extra_info": {}}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def confine(base: Path, *names: str, allow_subdirs: bool = True) -> Path:
    """``base/names...`` resolved and kept inside ``base``; raises UnsafePathError."""
    parts = [n for n in names if n]
    if not parts:
        raise UnsafePathError("a file name is required")
    for part in parts:  # each part on its own: 'sub' + 'C:\\x' must not pass as a folder named 'C:'
        resolve_inside(base, part, allow_subdirs=allow_subdirs)
    return resolve_inside(base, "/".join(parts))
