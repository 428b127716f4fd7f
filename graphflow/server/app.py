"""The HTTP API: one handler per route, and the :class:`Server` that owns what they share.

Handlers stay thin: the store keeps jobs, the worker runs them, the hub streams events, ``files`` guards paths,
``limits`` bounds requests, ``middleware`` answers errors as JSON and keeps foreign pages and token-less
clients out.
"""
from __future__ import annotations

import asyncio
import logging
import mimetypes
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import paths
from ..context import Settings
from ..documents import read_document
from ..errors import WorkflowFormatError, WorkflowInvalid
from ..execute import Engine
from ..registry import Registry, default_registry
from ..seeds import offset_seeds
from ..workflow import Workflow
from .bodies import read_json, read_multipart_field
from .files import Rejected, served_file, store_image
from .hub import Hub
from .limits import Limits, check_literals, check_size, issue
from .middleware import (WS_PROTOCOL, ApiError, answer_protocol_errors_as_json, dumps, guard_host_and_origin, json_errors,
                         json_response, require_token)
from .page import is_public, page_routes
from .store import STATUSES, JobStore
from .dispatch import Dispatcher
from .worker import LocalPool, private

if TYPE_CHECKING:
    from .ray_pool import RayOptions

log = logging.getLogger("graphflow.server")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path = Path("graphflow-data")
    token: str | None = None  # when set, every route but /health needs "Authorization: Bearer TOKEN"
    models_dir: Path | None = None  # None: $GRAPHFLOW_MODELS_DIR or ./models
    limits: Limits = field(default_factory=Limits)
    allowed_hosts: frozenset[str] | None = LOOPBACK_HOSTS  # Host header names accepted; None accepts any
    ray: "RayOptions | None" = None  # run jobs on Ray worker actors instead of this process's engine
    asset_dirs: tuple[Path, ...] = ()  # read-only example folders input names also find (Settings.asset_dirs)


SERVER = web.AppKey("server", "Server")


class Server:
    """Everything one running server owns: data directories, job store, engine (and its cache), worker, hub."""

    def __init__(self, config: ServerConfig, registry: Registry | None = None):
        self.config = config
        self.outputs_dir = config.data_dir / "outputs"
        self.uploads_dir = config.data_dir / "uploads"
        paths.check_writable_folder(config.data_dir, "--data-dir")
        for directory in (self.outputs_dir, self.uploads_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_data_dir(config.data_dir)
        _sweep_interrupted_writes(self.outputs_dir, self.uploads_dir)
        self.store = JobStore(config.data_dir / "jobs.sqlite")
        interrupted = self.store.recover()
        if interrupted:
            log.warning("%d job(s) were running when the server last stopped; marked failed", interrupted)
        settings = Settings.from_env(models_dir=config.models_dir, input_dir=self.uploads_dir, output_dir=self.outputs_dir)
        for folder in config.asset_dirs:
            settings = settings.with_asset_dir(Path(folder).resolve())
        self.engine = Engine(registry or default_registry(), settings)
        self.limits = config.limits.over_defaults(self.engine.registry.literal_limits)
        self.engine.settings = replace(settings, limits=self.limits.run_limits(self.engine.registry.run_limits))
        self.hub = Hub()
        try:
            pool = self._pool(config)
        except BaseException:  # no Ray, no cluster: let go of the data directory for the next attempt
            self.store.close()
            self._lock_file.close()
            raise
        self.worker = Dispatcher(pool, self.store, self._publish_from_thread, lambda value: private(value, self.engine.settings))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._catalog: str | None = None
        # NodePack.server_extensions: routes of other APIs on this queue; one may take over GET /ws requests
        # (``takes_websocket(request)`` → its ``websocket(request)``).
        self.extensions = [make(self) for make in self.engine.registry.server_extensions]

    def _pool(self, config: ServerConfig):
        if config.ray is None:
            return LocalPool(self.engine)
        from .ray_pool import RayPool

        return RayPool(config.ray, self.engine.registry, self.engine.settings, self.uploads_dir, self.outputs_dir)

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self.worker.start()

    async def shutdown(self, app: web.Application) -> None:
        await self.hub.close_all()

    async def cleanup(self, app: web.Application) -> None:
        await asyncio.to_thread(self.worker.stop)
        self.store.close()
        self._lock_file.close()

    def _publish_from_thread(self, message: dict[str, Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self.hub.publish, message)
        except (AttributeError, RuntimeError):  # no loop yet, or it has closed during shutdown
            pass

    # -- jobs ------------------------------------------------------------------------------------------------
    async def submit(self, request: web.Request) -> web.Response:
        if request.content_type not in ("application/json", "application/octet-stream"):  # the latter: no header
            # Refusing form/text bodies stops a web page from posting jobs here without a CORS preflight.
            raise ApiError(415, f"send the job as JSON (Content-Type: application/json), not {request.content_type}")
        body = await read_json(request)
        document, outputs, priority, repeat = _job_request(body, self.limits.max_repeat)
        workflow = self.admit(document, outputs, repeat or 1)
        job_ids = self.enqueue(workflow, outputs, priority, repeat or 1)
        answer = {"id": job_ids[0], "status": "queued"} if repeat is None else {"ids": job_ids, "status": "queued"}
        return json_response(answer, status=202, headers={"Location": f"/jobs/{job_ids[0]}"})

    def admit(self, document: Any, outputs: list[str] | None, jobs: int = 1, source: str = "workflow") -> Workflow:
        """The workflow of a submitted document once it has passed validation, the limits and the queue's room for
        ``jobs`` more; else ApiError (400 with ``node_errors`` by node id, "" for the document; 429 queue full)."""
        try:
            workflow = read_document(document, source, self.engine.registry)
        except WorkflowFormatError as exc:
            raise ApiError(400, str(exc), node_errors={"": [issue(None, str(exc), "a graphflow workflow", None, code="bad_document")]}) from None
        too_big = check_size(len(workflow.nodes), self.limits)
        if too_big:
            raise ApiError(400, "workflow exceeds this server's limits", node_errors=too_big)
        try:
            checked = self.engine.validate(workflow, outputs)
        except WorkflowInvalid as exc:
            # a missing file's message names the folders it was looked for in: shown as <models>, <inputs>, ...
            raise ApiError(400, f"{len(exc.issues)} problem(s) in workflow", node_errors=self.worker.private(exc.by_node())) from None
        over = check_literals(checked, self.limits)
        if over:
            raise ApiError(400, "workflow exceeds this server's limits", node_errors=over)
        waiting = self.store.count("queued")
        if waiting + jobs > self.limits.max_queued:
            raise ApiError(429, f"the queue is full ({waiting} of {self.limits.max_queued} jobs waiting); try again later")
        return workflow

    def enqueue(self, workflow: Workflow, outputs: list[str] | None, priority: int = 0, jobs: int = 1,
                client: Any = None, job_id: str | None = None) -> list[str]:
        """Queue an admitted workflow ``jobs`` times (A1111's batch count: fixed seeds count up by one per job)."""
        job_ids = []
        for index in range(jobs):
            job_ids.append(self.store.add(offset_seeds(workflow, self.engine.registry, index).to_json(), outputs,
                                          priority, client=client, job_id=job_id if index == 0 else None))
            self.hub.publish({"type": "queued", "job": job_ids[-1], "priority": priority})
        self.worker.wake()
        return job_ids

    async def job(self, request: web.Request) -> web.Response:
        return json_response(self._job_or_404(request.match_info["id"], with_workflow=True))

    def _job_or_404(self, job_id: str, with_workflow: bool = False) -> dict[str, Any]:
        job = self.store.get(job_id, with_workflow)
        if job is None:
            raise ApiError(404, f"no job {job_id!r}")
        if job["status"] == "running":
            job["progress"] = self.worker.progress(job_id) or job["progress"]
            job["seeds"] = self.worker.seeds(job_id) or job["seeds"]
        return job

    async def jobs(self, request: web.Request) -> web.Response:
        status = request.query.get("status") or None
        if status is not None and status not in STATUSES:
            raise ApiError(400, f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        limit = _int_query(request, "limit", 50, 1, 500)
        offset = _int_query(request, "offset", 0, 0, 2**62)

        def page() -> str:  # up to 500 jobs read and encoded: in a thread, so the event loop keeps answering
            return dumps({"jobs": self.store.list(status, limit, offset), "limit": limit, "offset": offset})

        return web.Response(text=await asyncio.to_thread(page), content_type="application/json")

    async def cancel(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        self._job_or_404(job_id)
        outcome = self.worker.cancel(job_id)
        if outcome == "cancelled":
            return json_response({"id": job_id, "status": "cancelled"})
        if outcome == "cancelling":  # the worker records "cancelled" when the run stops at its next check
            return json_response({"id": job_id, "status": "running", "cancelling": True}, status=202)
        status = self._job_or_404(job_id)["status"]
        raise ApiError(409, f"job {job_id} has already {'finished' if status != 'cancelled' else 'been cancelled'}", status=status)

    # -- files -----------------------------------------------------------------------------------------------
    async def output(self, request: web.Request) -> web.StreamResponse:
        try:
            path = served_file(self.outputs_dir, request.match_info["name"])
        except Rejected as exc:
            raise ApiError(exc.status, exc.message) from None
        if path is None:
            raise ApiError(404, "no such output")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return web.FileResponse(path, headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"})

    async def upload(self, request: web.Request) -> web.Response:
        limit = self.limits.max_upload_bytes
        if request.content_type != "multipart/form-data":
            raise ApiError(415, "send the image as multipart/form-data with the field 'image'")
        if request.content_length is not None and request.content_length > limit + 64 * 1024:
            raise ApiError(413, f"upload too large: {request.content_length} bytes, the limit is {limit}")
        data = await read_multipart_field(request, "image", limit)
        if data is None:
            raise ApiError(400, "multipart field 'image' is missing")
        try:
            stored = await asyncio.to_thread(store_image, data, self.uploads_dir, self.limits.max_upload_pixels)
        except Rejected as exc:
            raise ApiError(exc.status, exc.message) from None
        return json_response(stored, status=201)

    # -- the rest --------------------------------------------------------------------------------------------
    async def nodes(self, request: web.Request) -> web.Response:
        if self._catalog is None:
            self._catalog = dumps(self.engine.registry.catalog())
        return web.Response(text=self._catalog, content_type="application/json")

    async def health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "queue": self.store.queued, "running": self.worker.running})

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        for extension in self.extensions:
            if getattr(extension, "takes_websocket", lambda _: False)(request):
                return await extension.websocket(request)
        job_id = request.query.get("job") or None
        first = None
        if job_id is not None:  # start with the job's current state, so a late subscriber is never left waiting
            snapshot = self._job_or_404(job_id)
            first = {**snapshot, "type": "status", "job": snapshot.pop("id")}
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024, protocols=(WS_PROTOCOL,))
        await ws.prepare(request)
        await self.hub.serve(ws, job_id, first)
        return ws

    async def index(self, request: web.Request) -> web.Response:
        counts = {status: self.store.count(status) for status in STATUSES}
        return web.Response(text=index_page(counts, self.worker.running, self.routes()), content_type="text/html",
                            headers={"X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})

    def routes(self) -> list[web.RouteDef]:
        return [
            *page_routes(),
            web.get("/about", self.index),
            web.post("/jobs", self.submit),
            web.get("/jobs", self.jobs),
            web.get("/jobs/{id}", self.job),
            web.delete("/jobs/{id}", self.cancel),
            web.get("/outputs/{name:.+}", self.output),
            web.post("/uploads", self.upload),
            web.get("/nodes", self.nodes),
            web.get("/health", self.health),
            web.get("/ws", self.websocket),
        ] + [route for extension in self.extensions for route in extension.routes()]


def create_app(config: ServerConfig, registry: Registry | None = None) -> web.Application:
    server = Server(config, registry)
    app = web.Application(client_max_size=config.limits.max_body_bytes,
                          middlewares=[json_errors, guard_host_and_origin(config.allowed_hosts), require_token(config.token, is_public)])
    app[SERVER] = server
    answer_protocol_errors_as_json(app)
    app.add_routes(server.routes())
    app.on_startup.append(server.start)
    app.on_shutdown.append(server.shutdown)
    app.on_cleanup.append(server.cleanup)
    return app


# -- the index page ----------------------------------------------------------------------------------------
# One line per route for the page at /about; a route missing here fails tests/server/test_index.py.
ROUTE_HELP = {
    ("GET", "/"): "the web page: run workflows, watch the queue and previews, browse the gallery (open without the token)",
    ("GET", "/ui/{name}"): "the web page's scripts and styles (open without the token)",
    ("GET", "/about"): "this page",
    ("POST", "/jobs"): 'submit a workflow: {"workflow": {...}, "outputs": [...], "priority": 0} → 202 {"id", "status"}',
    ("GET", "/jobs"): "the jobs, newest first (?status=&limit=&offset=)",
    ("GET", "/jobs/{id}"): "one job: status, progress, outputs, timings, error",
    ("DELETE", "/jobs/{id}"): "cancel a queued or running job",
    ("GET", "/outputs/{name}"): "a file a job wrote (the url of an entry in a job's outputs)",
    ("POST", "/uploads"): "upload an input image as multipart field 'image' → its name for LoadImage",
    ("GET", "/nodes"): "the node catalog: inputs, outputs, defaults and bounds of every node type",
    ("GET", "/health"): "liveness and queue length (open without the token)",
    ("GET", "/ws"): "WebSocket of job events (?job=ID to follow one job)",
}
LINKED = ("/", "/nodes", "/jobs", "/health")


def index_page(counts: dict[str, int], running: str | None, routes: list[web.RouteDef]) -> str:
    """A small HTML page saying what this server is, what its queue holds and which routes it answers."""
    from html import escape

    queue = "".join(f"<tr><td>{escape(status)}</td><td>{count}</td></tr>" for status, count in counts.items())
    rows = []
    for route in routes:
        path = route.path.replace("{name:.+}", "{name}")
        target = f'<a href="{path}">{path}</a>' if route.method == "GET" and path in LINKED else escape(path)
        rows.append(f"<tr><td>{route.method}</td><td><code>{target}</code></td>"
                    f"<td>{escape(ROUTE_HELP.get((route.method, path), ''))}</td></tr>")
    now = f"running job <code>{escape(running)}</code>" if running else "no job running"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>graphflow server</title>
<style>body{{font-family:sans-serif;max-width:52em;margin:2em auto;padding:0 1em}}td{{padding:.15em .8em .15em 0}}</style>
</head><body>
<h1>graphflow server</h1>
<p>This is a graphflow job server: it runs node-graph workflows as jobs, one at a time,
streams their progress over a WebSocket and serves the images they write. People use <a href="/">its web page</a>;
programs send JSON: see
<a href="/nodes">/nodes</a> for the node types, <a href="/jobs">/jobs</a> for the jobs and
<a href="/health">/health</a> for a liveness check.</p>
<h2>Queue</h2>
<p>{now}.</p>
<table>{queue}</table>
<h2>API</h2>
<table>{"".join(rows)}</table>
<p>Request and answer formats, with curl examples: the <em>HTTP server → API</em> section of graphflow's
README.md.</p>
</body></html>
"""


# -- helpers -------------------------------------------------------------------------------------------------
def _job_request(body: Any, max_repeat: int) -> tuple[Any, list[str] | None, int, int | None]:
    """Check the shape of a POST /jobs body: {"workflow": {...}, "outputs": [ids], "priority": int, "repeat": int}."""
    if not isinstance(body, dict) or "workflow" not in body:
        raise ApiError(400, 'the body must be a JSON object {"workflow": {...}, "outputs": [...], "priority": 0}')
    unknown = sorted(set(body) - {"workflow", "outputs", "priority", "repeat"})
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; expected workflow, outputs, priority, repeat")
    outputs = body.get("outputs")
    if outputs is not None and not (isinstance(outputs, list) and all(isinstance(o, str) for o in outputs)):
        raise ApiError(400, f"outputs must be a list of node ids, not {outputs!r}")
    priority = body.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 2**31:
        raise ApiError(400, f"priority must be an integer (higher runs first), not {priority!r}")
    repeat = body.get("repeat")
    if repeat is not None and (isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= max_repeat):
        raise ApiError(400, f"repeat must be an integer from 1 to {max_repeat} (the number of jobs), not {repeat!r}")
    return body["workflow"], outputs, priority, repeat


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}, not {raw!r}")
    return value


def _sweep_interrupted_writes(*folders: Path) -> None:
    """A server killed mid-save leaves the hidden temporary file of its atomic write; with the data directory
    locked no other server writes here, so every such leftover is ours to delete."""
    for folder in folders:
        swept = paths.sweep_temporaries(folder)
        if swept:
            log.warning("removed %d unfinished file(s) left by an interrupted write in %s", len(swept), folder)


def _lock_data_dir(data_dir: Path):
    """Hold an exclusive lock on the data directory: two servers on one job store would steal each other's jobs."""
    handle = open(data_dir / "server.lock", "a+")
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; one server per data dir is then up to the user
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise RuntimeError(f"another graphflow server is using {data_dir}") from None
    return handle
