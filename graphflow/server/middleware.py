"""What every request goes through: JSON error answers, the host/origin guard, the bearer token."""
from __future__ import annotations

import hmac
import json
import logging
from functools import partial
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

log = logging.getLogger("graphflow.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
dumps = partial(json.dumps, default=str)


class ApiError(Exception):
    """Raised by a handler; becomes a JSON answer ``{"error": message, **extra}`` with this status."""

    def __init__(self, http_status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.body = http_status, {"error": message, **extra}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


async def read_json(request: web.Request) -> Any:
    """A request's JSON body (an empty one reads as {}); form and text bodies are refused (415), so that a web
    page cannot post here without a CORS preflight."""
    if request.content_type not in ("application/json", "application/octet-stream"):  # the latter: no header
        raise ApiError(415, f"send JSON (Content-Type: application/json), not {request.content_type}")
    text = await request.text()  # aiohttp answers 413 past the app's client_max_size
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


async def read_at_most(part: Any, limit: int) -> bytes:
    """One multipart part's bytes; 413 as soon as it passes ``limit``."""
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"upload too large: more than {limit} bytes")
    return bytes(data)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as ``{"error": "..."}``: ours, aiohttp's (404 no route, 405, 413 body too large) and bugs,
    which are logged with their traceback and answered without it."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body, status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = exc.text or ""
        message = exc.reason if not text or text.startswith(f"{exc.status}:") else text
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return json_response({"error": message}, status=exc.status, headers=headers)
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return json_response({"error": "internal server error (see the server log)"}, status=500)


def guard_host_and_origin(allowed_hosts: frozenset[str] | None) -> Middleware:
    """Refuse requests a web page in someone's browser could make on their behalf.

    A Host header not in ``allowed_hosts`` means DNS rebinding (evil.example resolving to 127.0.0.1); an Origin
    other than the server itself means a page on another site (cross-site POST or WebSocket). Scripts and curl
    send no Origin and pass."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if allowed_hosts is not None and _host_name(request.host) not in allowed_hosts:
            raise ApiError(403, f"host {request.host!r} is not allowed; use one of {', '.join(sorted(allowed_hosts))}")
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
            raise ApiError(403, f"cross-origin requests are not allowed (Origin {origin})")
        return await handler(request)

    return guard


def require_token(token: str | None) -> Middleware:
    """With a token, every route but /health needs ``Authorization: Bearer TOKEN`` (compared in constant time)."""
    expected = token.encode() if token else None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path != "/health":
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
                return json_response({"error": "missing or wrong bearer token"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return check


def _host_name(host: str) -> str | None:
    try:
        return urlsplit("//" + host).hostname
    except ValueError:
        return None
