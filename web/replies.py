"""What every route shares: ComfyUI's error body, reading a strict-JSON request, integer query parameters,
and whether replies must hide websocket client ids."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from graph_runtime import strict_json


def error(status: int, message: str, kind: str = "bad_request") -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, "details": "", "extra_info": {}}},
                        status_code=status)


async def read_json(request: Request) -> Any:
    """The request body as strict JSON (None when empty); ValueError names what is wrong with it."""
    raw = await request.body()
    if not raw:
        return None
    return strict_json.loads(raw, "the request body")


def query_int(value: str | None) -> int | None:
    """An integer query parameter (None when absent or empty); ValueError names a malformed one."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"expected an integer, got {value!r}") from None


def hide_client_ids(request: Request) -> bool:
    """With a token (a server others can reach), no reply names the websocket client id of a prompt: whoever
    reads it could otherwise wait for its owner to disconnect and connect with it."""
    return bool(request.app.state.server.config.token)
