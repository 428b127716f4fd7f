"""The web page's files: served at / and /ui/ without the token, under a strict Content-Security-Policy, and
written so nothing from the server or a file can become markup. (tests/web/ drives the page in a browser.)"""
from __future__ import annotations

import base64
import re

import aiohttp
import pytest

from graphflow.server.page import STATIC_DIR

from .conftest import gray_workflow, submit

SCRIPTS = sorted(STATIC_DIR.glob("*.js"))


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, str, str, dict]:
    async with session.get(url) as response:
        return response.status, response.content_type, await response.text(), dict(response.headers)


async def test_the_page_and_its_files_need_no_token_but_the_api_does(start_server):
    server = start_server(token="s3cret")
    async with aiohttp.ClientSession() as session:
        status, content_type, html, headers = await fetch(session, f"{server.url}/")
        assert (status, content_type) == (200, "text/html")
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "default-src 'none'" in csp and "unsafe" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        for path, kind in [("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")]:
            status, content_type, _, headers = await fetch(session, server.url + path)
            assert (status, content_type) == (200, kind), path
            assert "Content-Security-Policy" in headers
        assert (await fetch(session, f"{server.url}/jobs"))[0] == 401
        assert (await fetch(session, f"{server.url}/about"))[0] == 401


async def test_the_page_has_no_inline_script_and_every_file_it_names_is_served(server):
    html = (STATIC_DIR / "index.html").read_text()
    tags = re.findall(r"<script\b[^>]*>", html)
    assert tags and all(re.search(r'\bsrc="/ui/[\w.]+"', tag) for tag in tags)  # CSP script-src 'self' allows these
    assert not re.search(r"\bon[a-z]+=", html), "inline event handlers are inline script"
    assert not re.search(r"\bstyle=", html), "inline styles would need style-src 'unsafe-inline'"
    named = re.findall(r'(?:src|href)="(/ui/[\w.]+)"', html)
    for script in SCRIPTS:
        named += [f"/ui/{name}" for name in re.findall(r'from "\./([\w.]+)"', script.read_text())]
    async with aiohttp.ClientSession() as session:
        for path in sorted(set(named)):
            assert (await fetch(session, server.url + path))[0] == 200, path


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_scripts_put_text_in_as_text(script):
    """Job outputs, node ids, prompts, PNG text chunks: all go in with textContent or attributes, never as markup."""
    source = script.read_text()
    for construct in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                      "setTimeout(\"", "javascript:"):
        assert construct not in source, f"{script.name} uses {construct}"


@pytest.mark.parametrize("path", ["/ui/page.py", "/ui/..%2fapp.py", "/ui/%2e%2e%2fpage.py", "/ui/nothing.js",
                                  "/ui/", "/ui/index.html%00.js"])
async def test_only_the_shipped_page_files_are_served(server, path):
    async with aiohttp.ClientSession() as session:
        status, content_type, text, _ = await fetch(session, server.url + path)
    assert status in (400, 404) and "import" not in text, path


def bearer_protocol(token: str) -> str:
    return "bearer." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


async def test_a_websocket_can_carry_the_token_as_a_subprotocol(start_server):
    """Browsers cannot set headers on a WebSocket: the page offers ``bearer.<base64url token>`` instead."""
    server = start_server(token="s3cret/+token")
    async with aiohttp.ClientSession() as session:
        for offered in [("graphflow", bearer_protocol("wrong")), ("graphflow", "bearer.!!"), ("graphflow",)]:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{server.url}/ws", protocols=offered)
            assert refused.value.status == 401, offered
        async with session.ws_connect(f"{server.url}/ws", protocols=("graphflow", bearer_protocol("s3cret/+token"))) as ws:
            assert ws.protocol == "graphflow"
            async with aiohttp.ClientSession(headers={"Authorization": "Bearer s3cret/+token"}) as api:
                job = await submit(api, server.url, gray_workflow())
            event = await ws.receive_json(timeout=10)
            assert (event["type"], event["job"]) == ("queued", job)
