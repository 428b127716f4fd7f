"""Malformed requests get a JSON 4xx that names the problem: never an HTTP 500, never plain text, never a traceback
in the server's log. The requests are sent byte for byte (a client library would refuse to send most of them)."""
from __future__ import annotations

import json
import random

import aiohttp
import pytest
from aiohttp import web

from graphflow.server.middleware import json_errors

from .conftest import gray_workflow
from .raw_http import assert_json_4xx, no_traceback, send, server_log  # noqa: F401 (server_log: a fixture)

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}".encode()}


def job_body(**literals) -> bytes:
    return json.dumps({"workflow": gray_workflow(**literals)}).encode()


def deep(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


JSON = {"Content-Type": b"application/json"}
# The shapes issue 19 lists, each answered today with a JSON 4xx.
SHAPES = [
    ("not UTF-8", "POST", b"/jobs", JSON, b"\xff\xfe", ["UTF-8"]),
    ("5000-digit integer", "POST", b"/jobs", JSON, b'{"workflow": ' + b"9" * 5000 + b"}", ["5000 digits"]),
    ("arrays 1000 deep", "POST", b"/jobs", JSON, deep(1000).encode(), ["nested too deeply"]),
    ("a literal 500 deep", "POST", b"/jobs", JSON, job_body().replace(b'"bias": 0', b'"bias": ' + deep(500).encode()),
     ["nested too deeply"]),
    ("NaN literal", "POST", b"/jobs", JSON, job_body().replace(b'"bias": 0', b'"bias": NaN'), ["NaN"]),
    ("1e999 literal", "POST", b"/jobs", JSON, job_body().replace(b'"bias": 0', b'"bias": 1e999'), ["too large"]),
    ("bogus charset", "POST", b"/jobs", {"Content-Type": b"application/json; charset=bogus-charset"}, job_body(),
     ["bogus-charset"]),
    ("Origin http://[ on /health", "GET", b"/health", {"Origin": b"http://["}, b"", ["Origin"]),
    ("Origin http://[ on /jobs", "POST", b"/jobs", {**JSON, "Origin": b"http://["}, job_body(), ["Origin"]),
    ("Origin http://[ on /nodes", "GET", b"/nodes", {"Origin": b"http://["}, b"", ["Origin"]),
    ("300-character output name", "GET", b"/outputs/" + b"a" * 300 + b".png", {}, b"", []),
    ("long output path", "GET", b"/outputs/" + b"/".join([b"d" * 200] * 30), {}, b"", []),
    ("multipart without boundary", "POST", b"/uploads", {"Content-Type": b"multipart/form-data"}, b"--x\r\n\r\n",
     ["multipart"]),
    ("multipart, broken boundary", "POST", b"/uploads", {"Content-Type": b'multipart/form-data; boundary="'},
     b"--x\r\n\r\n", ["multipart"]),
    ("multipart, body without it", "POST", b"/uploads", {"Content-Type": b"multipart/form-data; boundary=abc"},
     b"no parts at all", []),
    ("multipart, a part header with a NUL", "POST", b"/uploads", {"Content-Type": b"multipart/form-data; boundary=abc"},
     b'--abc\r\nContent-Disposition: form-data; name="image"\r\nX\x00: y\r\n\r\ndata\r\n--abc--\r\n', ["multipart"]),
    ("limit of 10**100", "GET", b"/jobs?limit=" + b"1" * 100, {}, b"", ["limit"]),
]


@pytest.mark.parametrize("name, method, target, headers, body, words", SHAPES, ids=[s[0] for s in SHAPES])
async def test_each_malformed_shape_gets_a_json_4xx(start_server, server_log, name, method, target, headers, body, words):
    server = start_server()
    assert_json_4xx(await send(server.url, method, target, headers, body), *words)
    no_traceback(server_log)


@pytest.mark.parametrize("authorization", [b"Bearer \xff\xfe", b"Bearer " + b"\xc3" * 3, b"Basic \xff", b"\xff"])
async def test_a_token_that_is_not_text_is_just_a_wrong_token(start_server, server_log, authorization):
    server = start_server(token=TOKEN)
    answer = await send(server.url, "GET", b"/jobs", {"Authorization": authorization})
    assert answer.status == 401
    assert_json_4xx(answer, "token")
    no_traceback(server_log)


# -- the middleware, for routes this test does not know ------------------------------------------------------
CLIENT_FAULTS = [
    (lambda: b"\xff".decode("utf-8"), 400, "not valid text"),
    (lambda: json.loads(deep(100_000)), 400, "nested too deeply"),
    (lambda: "x".encode("bogus-charset"), 400, "bogus-charset"),
    (lambda: json.loads("{"), 400, "invalid JSON"),
]


@pytest.mark.parametrize("fault, status, words", CLIENT_FAULTS)
async def test_the_middleware_answers_what_a_request_caused_as_a_json_4xx(server_log, fault, status, words):
    """Any route (also one added later) that lets a decoding error of the client's data escape gets a 4xx."""
    async def handler(request):
        fault()

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/any", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        answer = await send(f"http://127.0.0.1:{port}", "GET", b"/any")
    finally:
        await runner.cleanup()
    assert answer.status == status
    assert_json_4xx(answer, words)
    no_traceback(server_log)


# -- the fuzz test ----------------------------------------------------------------------------------------------
class Fuzz:
    """Seeded variations on the shapes above, over every route of the app (its router is read, so routes added
    later are fuzzed too)."""

    def __init__(self, seed: int, routes: list[tuple[str, str]]):
        self.rng = random.Random(seed)
        self.routes = routes

    def text(self, low: int = 1, high: int = 40) -> bytes:
        alphabet = b"abc/.%\\\x00\xff\xfe\xc3 \"'[]{}:;,?#&=+-_~" + bytes(range(0x80, 0x90))
        return bytes(self.rng.choice(alphabet) for _ in range(self.rng.randint(low, high)))

    def target(self) -> bytes:
        method, path = self.rng.choice(self.routes)
        path = path.replace("{id}", self.rng.choice(["x", "0" * 64, "%ff", "a" * 300]))
        path = path.replace("{name:.+}", self.rng.choice(["a.png", ".hidden.png", "a" * self.rng.randint(250, 5000),
                                                           "%2e%2e/secret", "%00.png", "d/" * 300 + "x"]))
        if self.rng.random() < 0.3:
            path += "?" + self.rng.choice(["limit=", "offset=", "status=", "job="]) + self.rng.choice(
                ["-1", "1" * self.rng.randint(20, 5000), "abc", "%ff", "", "1e9"])
        return path.encode("latin-1", "replace"), method

    def json_body(self) -> bytes:
        kind = self.rng.randrange(9)
        if kind == 0:
            return self.text(0, 200)
        if kind == 1:
            return deep(self.rng.randint(65, 5000), *self.rng.choice([("[", "]"), ('{"a":' , "}")])).encode() \
                if self.rng.random() < 0.5 else ("[" * self.rng.randint(65, 5000)).encode()
        if kind == 2:
            return b'{"workflow": ' + b"7" * self.rng.randint(4301, 20000) + b"}"
        literal = self.rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400", deep(self.rng.randint(65, 900)).encode(),
                                   b'"' + b"\\ud800" * 3 + b'"', b"9" * self.rng.randint(4301, 9000)])
        body = job_body().replace(b'"bias": 0', b'"bias": ' + literal)
        if kind == 3:
            return body[: self.rng.randrange(len(body))]
        if kind == 4:
            return body.decode().encode(self.rng.choice(["utf-16", "utf-32", "latin-1"]))
        return body

    def headers(self, method: str, path: bytes) -> dict[str, bytes]:
        headers: dict[str, bytes] = {}
        if self.rng.random() < 0.85:
            headers.update(AUTH)
        else:
            headers["Authorization"] = self.rng.choice([b"Bearer ", b"Basic ", b""]) + self.text(0, 30)
        if self.rng.random() < 0.3:
            headers["Origin"] = self.rng.choice([b"http://[", b"http://[::1", b"://", b"http://a:b:c", b"null", b"\xff"]) \
                if self.rng.random() < 0.7 else b"http://" + self.text()
        if method == "POST":
            roll = self.rng.random()
            if roll < 0.3:
                headers["Content-Type"] = b"multipart/form-data" + self.rng.choice(
                    [b"", b"; boundary=", b'; boundary="', b"; boundary=" + self.text(1, 80), b"; boundary=abc"])
            elif roll < 0.6:
                headers["Content-Type"] = b"application/json; charset=" + self.rng.choice(
                    [b"bogus-charset", b"utf-16", b"latin-1", b"", b"\xff", self.text(1, 20)])
            else:
                headers["Content-Type"] = self.rng.choice([b"application/json", b"text/plain", self.text(1, 20)])
        return headers

    def host(self) -> bytes | None:
        if self.rng.random() < 0.9:
            return None
        return self.rng.choice([b"evil.com@localhost", b"localhost:99999", b"[", b"", b"localhost:abc", b"127.0.0.1:1:2",
                                b"\xff", b"[::1", b"LOCALHOST"])

    def case(self) -> tuple[str, bytes, dict[str, bytes], bytes, bytes | None]:
        path, method = self.target()
        headers = self.headers(method, path)
        body = b""
        if method == "POST":
            body = self.json_body() if b"multipart" not in headers.get("Content-Type", b"") else (
                b"--abc\r\n" + self.text(0, 300) if self.rng.random() < 0.5 else self.text(0, 300))
        return method, path, headers, body, self.host()


FUZZ_CASES = 300


@pytest.mark.timeout(120)
async def test_fuzzed_malformed_requests_never_get_a_500_or_log_a_traceback(start_server, server_log):
    server = start_server(token=TOKEN)
    routes = sorted({(r.method, r.resource.canonical) for r in server.app.router.routes() if r.method != "HEAD"})
    fuzz = Fuzz(19, routes)
    statuses = []
    for index in range(FUZZ_CASES):
        method, path, headers, body, host = case = fuzz.case()
        answer = await send(server.url, method, path, headers, body, host)
        assert answer.status < 500, (index, case, answer.status, answer.body[:300])
        if answer.status >= 400:
            assert isinstance(answer.json, dict) and "error" in answer.json, (index, case, answer.body[:300])
        statuses.append(answer.status)
    no_traceback(server_log)
    assert sum(400 <= s < 500 for s in statuses) > FUZZ_CASES // 2  # the cases are mostly refusals, as meant
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        async with session.get(f"{server.url}/health") as response:  # and the server is still fine
            assert response.status == 200
