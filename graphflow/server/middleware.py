"""What every request goes through: JSON error answers, the host/origin guard, the bearer token."""
from __future__ import annotations

import base64
import hmac
import json
import logging
import math
import re
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

log = logging.getLogger("graphflow.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def dumps(value: Any) -> str:
    """JSON every parser reads: a float that is NaN or infinite (a value echoed back in an error, say) is written
    as its text ("NaN", "inf") rather than as the non-standard literal Python would write."""
    try:
        return json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


class ApiError(Exception):
    """Raised by a handler; becomes a JSON answer ``{"error": message, **extra}`` with this status."""

    def __init__(self, http_status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.body = http_status, {"error": message, **extra}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


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
    except Exception as exc:
        refusal = client_fault(exc)
        if refusal is not None:
            log.info("%s %s: refused a malformed request: %s", request.method, request.path, refusal)
            return json_response({"error": refusal}, status=400)
        log.exception("unexpected error in %s %s", request.method, request.path)
        return json_response({"error": "internal server error (see the server log)"}, status=500)


def client_fault(exc: Exception) -> str | None:
    """What is wrong with the request, for the exceptions only a client's data raises (whichever route let them
    escape: routes should read bodies through :mod:`graphflow.server.bodies`, which names the problem better);
    None for everything else, which is a bug of ours."""
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
    if isinstance(exc, UnicodeError):
        return f"the request is not valid text: {getattr(exc, 'reason', exc)}"
    if isinstance(exc, RecursionError):
        return "the request's data is nested too deeply"
    if type(exc) is LookupError:  # codecs.lookup's "unknown encoding: NAME" (KeyError and IndexError are bugs)
        return f"{exc}; send UTF-8"
    return None


def guard_host_and_origin(allowed_hosts: frozenset[str] | None) -> Middleware:
    """Refuse requests a web page in someone's browser could make on their behalf.

    A Host header not in ``allowed_hosts`` means DNS rebinding (evil.example resolving to 127.0.0.1); an Origin
    other than the server itself means a page on another site (cross-site POST or WebSocket). Scripts and curl
    send no Origin and pass."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if allowed_hosts is not None and host_name(request.host) not in allowed_hosts:
            raise ApiError(403, f"host {request.host[:200]!r} is not allowed; use one of {', '.join(sorted(allowed_hosts))}")
        origin = request.headers.get("Origin")
        if origin is not None and _origin_netloc(origin) != request.host.lower():
            raise ApiError(403, f"cross-origin requests are not allowed (Origin {origin[:200]!r})")
        return await handler(request)

    return guard


WS_PROTOCOL = "graphflow"  # the WebSocket subprotocol the server selects
WS_TOKEN_PREFIX = "bearer."  # a browser cannot set headers on a WebSocket: it offers "bearer.<base64url token>"


def require_token(token: str | None, public: Callable[[str], bool] = lambda path: False) -> Middleware:
    """With a token, every route but /health and the ``public`` paths needs ``Authorization: Bearer TOKEN``
    (compared in constant time). A WebSocket handshake may carry it instead as the subprotocol
    ``bearer.<token in unpadded base64url>``, next to ``graphflow``."""
    expected = token.encode() if token else None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path != "/health" and not public(request.path):
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer":
                # aiohttp keeps undecodable header bytes as surrogates: encode them back to the bytes that were sent
                presented = given.strip().encode("utf-8", "surrogateescape")
            else:
                presented = _protocol_token(request.headers.get("Sec-WebSocket-Protocol", ""))
            if not hmac.compare_digest(presented, expected):
                return json_response({"error": "missing or wrong bearer token"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return check


def _protocol_token(header: str) -> bytes:
    for offered in header.split(","):
        offered = offered.strip()
        if offered.startswith(WS_TOKEN_PREFIX):
            encoded = offered[len(WS_TOKEN_PREFIX):]
            try:
                return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except ValueError:
                return b""
    return b""


# A Host header is a name or an address with an optional port, nothing else: "evil.com@localhost" names evil.com's
# user info for urlsplit, which would then report the host "localhost".
_HOST = re.compile(r"(?P<name>[A-Za-z0-9._-]+|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::[0-9]{1,5})?")


def host_name(host: str) -> str | None:
    """The lower-case name in a Host header (an IPv6 address without its brackets); None when it is malformed."""
    match = _HOST.fullmatch(host or "")
    if match is None:
        return None
    return (match["ipv6"] or match["name"]).lower()


def _origin_netloc(origin: str) -> str | None:
    try:
        return urlsplit(origin).netloc.lower()
    except ValueError:  # "http://[": a malformed Origin is no same-origin page
        return None


# -- requests aiohttp refuses before any middleware sees them ---------------------------------------------------
JSON_PROTOCOL_ERRORS = web.AppKey("json_protocol_errors", bool)


def answer_protocol_errors_as_json(app: web.Application) -> None:
    """Make the requests aiohttp's HTTP parser refuses (a raw space or a non-ASCII byte in the request line, a NUL
    in a header, a malformed header line) get a JSON ``{"error": ...}`` from ``app`` too, as every other answer.

    aiohttp builds those answers in ``RequestHandler.handle_error`` (plain text), below the application, where no
    middleware runs; the handler is wrapped once per process and answers JSON only for apps marked here, so any
    other aiohttp server in the process keeps aiohttp's own answers. A client's malformed request is logged
    without a traceback (it is no error of ours)."""
    from aiohttp import web_protocol

    app[JSON_PROTOCOL_ERRORS] = True
    handler_class = web_protocol.RequestHandler
    if getattr(handler_class.handle_error, "_graphflow", False):
        return
    plain = handler_class.handle_error

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None, message: str | None = None):
        owner = getattr(getattr(self._manager, "request_handler", None), "__self__", None)  # the Application
        if not (isinstance(owner, web.Application) and owner.get(JSON_PROTOCOL_ERRORS)):
            return plain(self, request, status, exc, message)
        if request.writer.output_size > 0:  # an answer has started already: nothing can be said any more
            return plain(self, request, status, exc, message)
        if status >= 500:
            log.error("unexpected error handling a request", exc_info=exc)
            text = "internal server error (see the server log)"
        else:
            detail = getattr(exc, "message", None) or message or ""
            text = f"malformed HTTP request: {str(detail).strip().splitlines()[0][:200] if detail else status}"
            log.info("refused a request aiohttp could not parse: %s", text)
        response = json_response({"error": text}, status=status)
        response.force_close()
        return response

    handle_error._graphflow = True
    handler_class.handle_error = handle_error
