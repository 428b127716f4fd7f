"""GET /about is a real page: what the server is, its queue counts, every API route, links to /nodes, /jobs, /health."""
from __future__ import annotations

import re
from html import escape

import aiohttp

from graphflow.server.app import ROUTE_HELP

from .conftest import gray_workflow, submit, wait_for_status


async def page(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, str, str]:
    async with session.get(f"{url}/about", headers=headers) as response:
        return response.status, response.content_type, await response.text()


def counts(html: str) -> dict[str, int]:
    return {status: int(count) for status, count in re.findall(r"<tr><td>(\w+)</td><td>(\d+)</td></tr>", html)}


async def test_the_index_says_what_the_server_is_and_counts_its_queue(server):
    async with aiohttp.ClientSession() as session:
        status, content_type, html = await page(session, server.url)
        assert status == 200 and content_type == "text/html"
        assert "<h1>graphflow server</h1>" in html and "no job running" in html
        assert counts(html) == {"queued": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
        job = await submit(session, server.url, gray_workflow(value=1.0))
        await wait_for_status(session, server.url, job, "succeeded")
        assert counts((await page(session, server.url))[2])["succeeded"] == 1
    for target in ("/", "/nodes", "/jobs", "/health"):
        assert f'href="{target}"' in html
    assert "HTTP server → API" in html and "Not Found" not in html


async def test_the_index_lists_every_route_with_what_it_does(server):
    routes = [(r.method, r.resource.canonical) for r in server.app.router.routes() if r.method != "HEAD"]
    assert set(routes) == set(ROUTE_HELP), "describe new routes in graphflow.server.app.ROUTE_HELP"
    async with aiohttp.ClientSession() as session:
        html = (await page(session, server.url))[2]
    for (method, path), text in ROUTE_HELP.items():
        assert re.search(rf"<tr><td>{method}</td><td><code>(<a href=\"{re.escape(path)}\">)?{re.escape(path)}", html), path
        assert escape(text) in html


async def test_with_a_token_the_about_page_needs_it_too(start_server):
    server = start_server(token="s3cret")
    async with aiohttp.ClientSession() as session:
        assert (await page(session, server.url))[0] == 401
        assert (await page(session, server.url, Authorization="Bearer s3cret"))[0] == 200
