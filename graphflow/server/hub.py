"""WebSocket fan-out: every published message goes to each subscriber that wants its job.

Lives on the event loop (the worker reaches it through ``loop.call_soon_threadsafe``). Each subscriber has its
own queue drained by its own sender task, so a slow client never blocks the others or the worker. Nothing is
dropped silently: a client that falls ``MAX_BACKLOG`` messages (or ``MAX_BACKLOG_BYTES``: previews are big)
behind is disconnected (close code 1013, "try again later") and can reconnect and read the current state
from ``GET /jobs/{id}``.

Server extensions (``NodePack.server_extensions``) that speak another protocol ``listen`` to every message and
``attach`` subscribers of their own (``events=False``: they get only the frames the extension offers them, text
or binary); the hub still bounds their backlog and says goodbye to them on shutdown.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import WSCloseCode, web

from .middleware import dumps

log = logging.getLogger("graphflow.server")
MAX_BACKLOG = 10_000
MAX_BACKLOG_BYTES = 32 * 1024 * 1024


@dataclass(eq=False)
class Subscriber:
    ws: web.WebSocketResponse
    job: str | None  # only this job's messages, or everything
    events: bool = True  # False: no hub messages, only what its owner offers (an extension's own protocol)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    queued_bytes: int = 0
    dropped: bool = False

    def offer(self, frame: str | bytes) -> None:
        """Queue one text (str) or binary (bytes) WebSocket frame."""
        if self.dropped:
            return
        if self.queue.qsize() >= MAX_BACKLOG or self.queued_bytes + len(frame) > MAX_BACKLOG_BYTES:
            self.dropped = True
            asyncio.ensure_future(self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"client too slow"))
            return
        self.queued_bytes += len(frame)
        self.queue.put_nowait(frame)

    async def next(self) -> str | bytes:
        frame = await self.queue.get()
        self.queued_bytes -= len(frame)
        return frame


class Hub:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def listen(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener(message)`` with every published message, on the event loop, before the fan-out."""
        self._listeners.append(listener)

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, message: dict[str, Any]) -> None:
        for listener in self._listeners:
            try:
                listener(message)
            except Exception:  # a broken extension must not cost graphflow's own subscribers their messages
                log.exception("hub: a listener failed on a %s message", message.get("type"))
        text = dumps(message)
        for subscriber in self._subscribers:
            if subscriber.events and (subscriber.job is None or subscriber.job == message.get("job")):
                subscriber.offer(text)

    async def serve(self, ws: web.WebSocketResponse, job: str | None, first: dict[str, Any] | None = None) -> None:
        """Stream messages to ``ws`` until the client goes away (messages from the client are ignored).
        ``first`` is sent before anything else (after subscribing, so nothing published meanwhile is missed)."""
        subscriber = Subscriber(ws, job)
        if first is not None:
            subscriber.offer(dumps(first))
        await self.attach(subscriber)

    async def attach(self, subscriber: Subscriber) -> None:
        """Send ``subscriber``'s frames until its client goes away (messages from the client are ignored)."""
        self._subscribers.add(subscriber)
        sender = asyncio.create_task(self._pump(subscriber))
        try:
            async for _ in subscriber.ws:
                pass
        finally:
            self._subscribers.discard(subscriber)
            sender.cancel()

    @staticmethod
    async def _pump(subscriber: Subscriber) -> None:
        while not subscriber.ws.closed:
            frame = await subscriber.next()
            try:
                if isinstance(frame, bytes):
                    await subscriber.ws.send_bytes(frame)
                else:
                    await subscriber.ws.send_str(frame)
            except ConnectionError:
                return

    async def close_all(self) -> None:
        """On shutdown: say goodbye so clients do not wait for messages that will never come."""
        for subscriber in list(self._subscribers):
            await subscriber.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
