"""WebSocket fan-out: every published message goes to each subscriber that wants its job.

Lives on the event loop (the worker reaches it through ``loop.call_soon_threadsafe``). Each subscriber has its
own queue drained by its own sender task, so a slow client never blocks the others or the worker. Nothing is
dropped silently: a client that falls ``MAX_BACKLOG`` messages (or ``MAX_BACKLOG_BYTES``: previews are big)
behind is disconnected (close code 1013, "try again later") and can reconnect and read the current state
from ``GET /jobs/{id}``.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

from .middleware import dumps

MAX_BACKLOG = 10_000
MAX_BACKLOG_BYTES = 32 * 1024 * 1024


@dataclass(eq=False)
class Subscriber:
    ws: web.WebSocketResponse
    job: str | None  # only this job's messages, or everything
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    queued_bytes: int = 0
    dropped: bool = False

    def offer(self, text: str) -> None:
        if self.dropped:
            return
        if self.queue.qsize() >= MAX_BACKLOG or self.queued_bytes + len(text) > MAX_BACKLOG_BYTES:
            self.dropped = True
            asyncio.ensure_future(self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"client too slow"))
            return
        self.queued_bytes += len(text)
        self.queue.put_nowait(text)

    async def next(self) -> str:
        text = await self.queue.get()
        self.queued_bytes -= len(text)
        return text


class Hub:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, message: dict[str, Any]) -> None:
        text = dumps(message)
        for subscriber in self._subscribers:
            if subscriber.job is None or subscriber.job == message.get("job"):
                subscriber.offer(text)

    async def serve(self, ws: web.WebSocketResponse, job: str | None, first: dict[str, Any] | None = None) -> None:
        """Stream messages to ``ws`` until the client goes away (messages from the client are ignored).
        ``first`` is sent before anything else (after subscribing, so nothing published meanwhile is missed)."""
        subscriber = Subscriber(ws, job)
        self._subscribers.add(subscriber)
        if first is not None:
            subscriber.offer(dumps(first))
        sender = asyncio.create_task(self._pump(subscriber))
        try:
            async for _ in ws:
                pass
        finally:
            self._subscribers.discard(subscriber)
            sender.cancel()

    @staticmethod
    async def _pump(subscriber: Subscriber) -> None:
        while not subscriber.ws.closed:
            text = await subscriber.next()
            try:
                await subscriber.ws.send_str(text)
            except ConnectionError:
                return

    async def close_all(self) -> None:
        """On shutdown: say goodbye so clients do not wait for messages that will never come."""
        for subscriber in list(self._subscribers):
            await subscriber.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
