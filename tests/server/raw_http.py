"""Requests sent byte for byte (a client library would refuse to send most malformed ones), their answers read
as every JSON parser would, and the server's log watched for tracebacks."""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

import pytest


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    json: object = field(default=None)


def strict_json(data: bytes) -> object:
    """JSON as every parser reads it: NaN and Infinity are no JSON."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(data, parse_constant=refuse)


async def send(url: str, method: str, target: bytes, headers: dict[str, bytes] | None = None, body: bytes = b"",
               host: bytes | None = None) -> Answer:
    address, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(address, int(port))
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: " + (host if host is not None else f"{address}:{port}".encode())]
    lines += [name.encode() + b": " + value for name, value in (headers or {}).items()]
    lines += [b"Content-Length: %d" % len(body), b"Connection: close"]
    writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    answer = Answer(int(status_line.split()[1]), {k.lower(): v for k, v in parsed.items()}, payload)
    if answer.headers.get("content-type", "").startswith("application/json"):
        answer.json = strict_json(payload)
    return answer


def assert_json_4xx(answer: Answer, *words: str) -> None:
    assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.body[:300]
    assert isinstance(answer.json, dict) and isinstance(answer.json.get("error"), str), answer.body[:300]
    for word in words:
        assert word in answer.json["error"], answer.json["error"]


@pytest.fixture
def server_log():
    """Every record the server logs (aiohttp's and ours), formatted with its traceback if it has one."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    yield records
    root.removeHandler(handler)


def no_traceback(records: list[str]) -> None:
    problems = [r for r in records if "Traceback" in r or " ERROR " in r]
    assert not problems, problems[0][-2000:]
