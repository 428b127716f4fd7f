"""The web page: ``/`` and its static files under ``/ui/``, shipped in ``static/`` (no build step).

The page holds no data of its own, so it is served without the token; every call it makes to the API needs
the token. Its Content-Security-Policy allows scripts, styles and connections from this server only (no inline
script, no eval) and images from here or from the ``blob:``/``data:`` URLs the page makes of previews and of
outputs fetched with the token.
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .middleware import ApiError

STATIC_DIR = Path(__file__).with_name("static")
UI_PREFIX = "/ui/"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}


def is_public(path: str) -> bool:
    """The paths served without the token: the page and its static files."""
    return path == "/" or path.startswith(UI_PREFIX)


def _static(name: str) -> web.FileResponse:
    path = STATIC_DIR / name
    content_type = CONTENT_TYPES.get(path.suffix)
    # a flat folder: a name with a slash (or anything not shipped) is simply not there
    if "/" in name or "\\" in name or content_type is None or not path.is_file():
        raise ApiError(404, f"no such page file {name!r}")
    return web.FileResponse(path, headers={**HEADERS, "Content-Type": content_type})


async def page(request: web.Request) -> web.FileResponse:
    return _static("index.html")


async def asset(request: web.Request) -> web.FileResponse:
    return _static(request.match_info["name"])


def page_routes() -> list[web.RouteDef]:
    return [web.get("/", page), web.get(UI_PREFIX + "{name}", asset)]
