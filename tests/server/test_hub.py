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


def test_listeners_see_every_message_and_a_failing_one_costs_subscribers_nothing(caplog):
    hub = hub_module.Hub()
    seen = []
    hub.listen(seen.append)
    hub.listen(lambda message: 1 / 0)
    everything = Subscriber(FakeSocket(), job=None)
    own_frames = Subscriber(FakeSocket(), job=None, events=False)  # an extension's: only what it offers
    hub._subscribers.update({everything, own_frames})
    hub.publish({"type": "queued", "job": "j"})
    assert seen == [{"type": "queued", "job": "j"}] and "a listener failed" in caplog.text
    assert everything.queue.qsize() == 1 and own_frames.queue.qsize() == 0


async def test_binary_frames_are_queued_and_counted_like_text():
    subscriber = Subscriber(FakeSocket(), job=None)
    subscriber.offer(b"\x00\x00\x00\x01png")
    assert subscriber.queued_bytes == 7 and await subscriber.next() == b"\x00\x00\x00\x01png"
