"""WebSocket fan-out: a client that stops reading is cut off, not silently skipped."""
from __future__ import annotations

import asyncio

from graphflow.server import hub as hub_module
from graphflow.server.hub import Subscriber


class FakeSocket:
    def __init__(self):
        self.closed_with = None

    async def close(self, code, message):
        self.closed_with = (code, message)


async def test_a_subscriber_too_far_behind_is_disconnected(monkeypatch):
    monkeypatch.setattr(hub_module, "MAX_BACKLOG", 3)
    socket = FakeSocket()
    subscriber = Subscriber(socket, job=None)
    for i in range(5):
        subscriber.offer(str(i))
    await asyncio.sleep(0)
    assert subscriber.dropped and socket.closed_with == (1013, b"client too slow")
    assert [await subscriber.next() for _ in range(3)] == ["0", "1", "2"]  # nothing silently skipped before
    assert subscriber.queued_bytes == 0


async def test_a_subscriber_with_too_many_bytes_waiting_is_disconnected(monkeypatch):
    monkeypatch.setattr(hub_module, "MAX_BACKLOG_BYTES", 1000)
    socket = FakeSocket()
    subscriber = Subscriber(socket, job=None)
    subscriber.offer("p" * 600)
    assert await subscriber.next() == "p" * 600  # sent: its bytes no longer count
    subscriber.offer("p" * 600)
    subscriber.offer("p" * 600)
    await asyncio.sleep(0)
    assert subscriber.dropped and socket.closed_with[0] == 1013
