"""ComfyUI's WebSocket (``/ws?clientId=...``, ``/api/ws``) on graphflow's event stream.

The relay listens to every message the server's hub publishes (graphflow's own events, tagged with the job id)
and says the same in ComfyUI's messages: ``status`` (queue_remaining) to every client whenever the queue changes;
for a job, ``execution_start``, ``execution_cached``, ``executing`` per node, ``progress``, binary preview frames,
``executed`` per output node (previews only for prompts that ask, with ``extra_data.preview_method``), then ``execution_success`` / ``execution_error`` / ``execution_interrupted`` and the
closing ``executing`` with ``node: null``. A job's messages go to the client whose id its prompt named
(``client_id``); a job that named none (and every job sent to ``/jobs``) is told to every ComfyUI client.
"""
from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .. import lazy_module
from .api_shapes import class_name, failure_message, ui_output

web = lazy_module("aiohttp.web")  # the server imports these; node discovery should not pay for them
hub = lazy_module("graphflow.server.hub")
PREVIEW_IMAGE, PNG = 1, 2  # ComfyUI's binary frame: event type, then image format, each a big-endian uint32
# ComfyUI sends previews only for a prompt whose extra_data names a preview_method (its server's default is none)
NO_PREVIEWS = (None, "none", "default")


def preview_frame(png: bytes) -> bytes:
    return struct.pack(">II", PREVIEW_IMAGE, PNG) + png


@dataclass
class _Run:
    """What the relay remembers about the job that is running."""

    client: str | None
    classes: dict[str, str]  # node id → ComfyUI class, from the prompt (or the node events of a /jobs job)
    previews: bool = False
    node: str | None = None  # the node now executing
    executed: list[str] = field(default_factory=list)
    unannounced: list[str] = field(default_factory=list)  # cached nodes not yet told in an execution_cached


class ComfySocket:
    def __init__(self, server: Any):
        self.server = server
        self.clients: dict[str, Any] = {}  # client id → its hub.Subscriber
        self.runs: dict[str, _Run] = {}
        server.hub.listen(self.relay)

    def takes_websocket(self, request) -> bool:
        """graphflow's own ``/ws`` serves ComfyUI clients when they say who they are (``?clientId=``)."""
        return "clientId" in request.query

    async def websocket(self, request):
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        subscriber = hub.Subscriber(ws, None, events=False)
        self.clients[sid] = subscriber  # a reconnecting client replaces its old socket
        subscriber.offer(_frame("status", {"status": self.queue_info(), "sid": sid}))
        for job_id, run in self.runs.items():  # a client reconnecting mid-run learns where its job is
            if run.client == sid and run.node is not None:
                subscriber.offer(_frame("executing", {"node": run.node, "display_node": run.node, "prompt_id": job_id}))
        try:
            await self.server.hub.attach(subscriber)
        finally:
            if self.clients.get(sid) is subscriber:
                del self.clients[sid]
        return ws

    def queue_info(self) -> dict[str, Any]:
        """``{"exec_info": {"queue_remaining": N}}``: jobs waiting plus the one running (GET /prompt's answer)."""
        store = self.server.store
        return {"exec_info": {"queue_remaining": store.count("queued") + store.count("running")}}

    # -- graphflow's messages → ComfyUI's ------------------------------------------------------------------------
    def relay(self, message: dict[str, Any]) -> None:
        kind, job_id = message.get("type"), message.get("job")
        if kind == "queued":
            self._status()
        elif kind == "started":
            self._started(job_id)
        elif job_id in self.runs:
            self._during(self.runs[job_id], job_id, kind, message)
        elif kind == "cancelled":  # a queued job taken off the queue: nothing ran
            self._status()

    def _started(self, job_id: str) -> None:
        job = self.server.store.get(job_id, with_client=True) or {}
        client = job.get("client") or {}
        prompt = client.get("prompt") or {}
        classes = {node: entry.get("class_type") for node, entry in prompt.items() if isinstance(entry, dict)}
        extra_data = client.get("extra_data") or {}
        run = self.runs[job_id] = _Run(extra_data.get("client_id"), classes,
                                       extra_data.get("preview_method") not in NO_PREVIEWS)
        self._send(run, "execution_start", {"prompt_id": job_id, "timestamp": _now()})
        self._status()

    def _during(self, run: _Run, job_id: str, kind: str, message: dict[str, Any]) -> None:
        if kind == "node_cached":
            run.unannounced.append(message["node"])
            return
        if kind in ("node_started", "succeeded", "failed", "cancelled"):
            self._announce_cached(run, job_id)
        if kind == "node_started":
            run.node = message["node"]
            run.classes.setdefault(run.node, class_name(message["node_type"]))
            self._send(run, "executing", {"node": run.node, "display_node": run.node, "prompt_id": job_id})
        elif kind == "node_finished":
            run.executed.append(message["node"])
        elif kind == "progress":
            self._send(run, "progress", {"value": message["value"], "max": message["max"], "prompt_id": job_id,
                                         "node": message["node"]})
        elif kind == "preview" and run.previews:
            self._deliver(run.client, preview_frame(base64.b64decode(message["image_png"])))
        elif kind in ("succeeded", "failed", "cancelled"):
            self._finished(run, job_id, kind, message)

    def _finished(self, run: _Run, job_id: str, kind: str, message: dict[str, Any]) -> None:
        if kind == "succeeded":
            for node, result in message.get("outputs", {}).items():
                self._send(run, "executed", {"node": node, "display_node": node, "output": ui_output(result),
                                             "prompt_id": job_id})
            self._send(run, "execution_success", {"prompt_id": job_id, "timestamp": _now()})
        else:
            error = message.get("error")
            node = (error or {}).get("node") or run.node
            event, data = failure_message(job_id, error, kind == "cancelled", node, run.classes.get(node), run.executed)
            self._send(run, event, {**data, "timestamp": _now()})
        self._send(run, "executing", {"node": None, "display_node": None, "prompt_id": job_id})
        del self.runs[job_id]
        self._status()

    def _announce_cached(self, run: _Run, job_id: str) -> None:
        if run.unannounced:
            self._send(run, "execution_cached", {"nodes": run.unannounced, "prompt_id": job_id, "timestamp": _now()})
            run.unannounced = []

    # -- delivery --------------------------------------------------------------------------------------------------
    def _status(self) -> None:
        self._deliver(None, _frame("status", {"status": self.queue_info()}))

    def _send(self, run: _Run, kind: str, data: dict[str, Any]) -> None:
        self._deliver(run.client, _frame(kind, data))

    def _deliver(self, client: str | None, frame: str | bytes) -> None:
        """To one client (if connected), or to every client when the job named none."""
        if client is None:
            for subscriber in list(self.clients.values()):
                subscriber.offer(frame)
        elif client in self.clients:
            self.clients[client].offer(frame)


def _frame(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "data": data}, default=str)


def _now() -> int:
    return int(time.time() * 1000)
