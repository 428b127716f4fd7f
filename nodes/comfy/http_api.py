"""ComfyUI's HTTP API on graphflow's server: the same process, queue (SQLite), worker and cache as ``/jobs``.

The pack declares :class:`ComfyApi` as a server extension; the server then answers ComfyUI's routes, each also
under ``/api/`` as ComfyUI does, behind the same token, Host/Origin checks and limits as its own. A prompt
becomes a graphflow job (the pack's API-format reader makes the workflow; :meth:`Server.admit` validates and
bounds it exactly as for ``POST /jobs``); the job keeps what ComfyUI's clients read back (number, prompt,
extra_data, output ids) in its ``client`` record, from which ``/queue`` and ``/history`` answer.
"""
from __future__ import annotations

import asyncio
import importlib.metadata
import io
import json
import mimetypes
import os
import posixpath
import platform
import sys
from pathlib import Path
from typing import Any

from graphflow import paths
from graphflow.registry import NodePack

from .. import lazy_module
from . import api_shapes as shapes
from .api_format import is_api_prompt
from .api_socket import ComfySocket

# Node discovery imports this module; aiohttp (and graphflow.server, which imports it) only the server needs.
web = lazy_module("aiohttp.web")
files = lazy_module("graphflow.server.files")
middleware = lazy_module("graphflow.server.middleware")
bodies = lazy_module("graphflow.server.bodies")
FINISHED = ("succeeded", "failed", "cancelled")
FOLDER_TYPES = ("input", "output", "temp")  # temp: the outputs' temp/ sub-folder, where PreviewImage writes
FRONT_PRIORITY = 1  # "front": true runs before the jobs queued at graphflow's default priority 0


class ComfyApi:
    def __init__(self, server: Any):
        self.server = server
        self.socket = ComfySocket(server)
        self.takes_websocket = self.socket.takes_websocket
        self.websocket = self.socket.websocket

    def routes(self) -> list:
        table = [
            ("POST", "/prompt", self.post_prompt), ("GET", "/prompt", self.get_prompt),
            ("GET", "/queue", self.get_queue), ("POST", "/queue", self.post_queue),
            ("GET", "/history", self.get_history), ("GET", "/history/{prompt_id}", self.get_history_item),
            ("POST", "/interrupt", self.interrupt),
            ("GET", "/object_info", self.object_info), ("GET", "/object_info/{node_class}", self.object_info_item),
            ("GET", "/view", self.view), ("POST", "/upload/image", self.upload_image), ("POST", "/upload/mask", self.upload_mask),
            ("GET", "/system_stats", self.system_stats), ("GET", "/embeddings", self.embeddings),
        ]
        routes = [web.route(method, prefix + path, handler) for prefix in ("", "/api") for method, path, handler in table]
        return routes + [web.get("/api/ws", self.socket.websocket)]  # /ws itself is graphflow's, shared by clientId

    # -- prompts ---------------------------------------------------------------------------------------------------
    async def post_prompt(self, request) -> Any:
        body = await _json_body(request)
        if not isinstance(body, dict) or "prompt" not in body:
            return _prompt_refused(shapes.error("no_prompt", "No prompt provided", "No prompt provided"))
        prompt = body["prompt"]
        if not is_api_prompt(prompt):
            return _prompt_refused(shapes.error("invalid_prompt", "Prompt is not in ComfyUI's API format",
                                                'expected {"node id": {"class_type": ..., "inputs": {...}}, ...}'))
        extra_data = body.get("extra_data") if isinstance(body.get("extra_data"), dict) else {}
        if isinstance(body.get("client_id"), str):
            extra_data = {**extra_data, "client_id": body["client_id"]}
        job_id = body.get("prompt_id")
        if job_id is not None and (not isinstance(job_id, str) or not job_id or self.server.store.get(job_id)):
            return _prompt_refused(shapes.error("invalid_prompt", "prompt_id must be a new non-empty string", repr(job_id)))
        registry = self.server.engine.registry
        output_ids = [node for node, entry in prompt.items()
                      if getattr(registry.get(shapes.PREFIX + str(entry.get("class_type"))), "output_node", False)]
        try:
            workflow = self.server.admit(prompt, None, 1, source="prompt")
        except middleware.ApiError as exc:
            if exc.status == 429:
                answer = {"error": shapes.error("queue_full", exc.body["error"]), "node_errors": {}}
            else:
                answer = shapes.prompt_errors(exc.body.get("node_errors", {}), prompt, output_ids)
            return middleware.json_response(answer, status=exc.status)
        number = body.get("number")
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            number = self.server.store.count()  # every job ever queued: a number that only grows
            if body.get("front"):
                number = -number
        client = {"number": number, "prompt": prompt, "extra_data": extra_data, "outputs": output_ids}
        [job_id] = self.server.enqueue(workflow, None, FRONT_PRIORITY if body.get("front") else 0, 1,
                                       client=client, job_id=job_id)
        return middleware.json_response({"prompt_id": job_id, "number": number, "node_errors": {}})

    async def get_prompt(self, request) -> Any:
        return middleware.json_response(self.socket.queue_info())

    async def get_queue(self, request) -> Any:
        store = self.server.store
        running = store.list("running", 10, with_client=True)
        pending = store.list("queued", self.server.limits.max_queued, with_client=True, run_order=True)
        return middleware.json_response({"queue_running": [shapes.queue_item(job) for job in running],
                              "queue_pending": [shapes.queue_item(job) for job in pending]})

    async def post_queue(self, request) -> Any:
        """``{"clear": true}`` takes every waiting prompt off the queue, ``{"delete": [prompt_id, ...]}`` those;
        running ones are left alone (POST /interrupt stops them), as are jobs sent to ``/jobs``."""
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise middleware.ApiError(400, 'expected {"clear": true} or {"delete": [prompt_id, ...]}')
        delete = body.get("delete", [])
        if not isinstance(delete, list) or not all(isinstance(item, str) for item in delete):
            raise middleware.ApiError(400, f"delete must be a list of prompt ids, not {delete!r}")
        if body.get("clear"):
            delete += [job["id"] for job in self.server.store.list("queued", self.server.limits.max_queued, with_client=True)]
        for job_id in delete:
            job = self.server.store.get(job_id, with_client=True)
            if job is not None and job["client"] is not None and job["status"] == "queued":
                self.server.worker.cancel(job_id)
        return web.Response(status=200)

    async def interrupt(self, request) -> Any:
        """Stop the running job; with ``{"prompt_id": ID}`` that job, if it is running."""
        body = await _json_body(request) if request.can_read_body else {}
        wanted = body.get("prompt_id") if isinstance(body, dict) else None
        if wanted is None:
            target = self.server.worker.running  # the one running longest, when a worker pool runs several
        else:
            job = self.server.store.get(str(wanted))
            target = job["id"] if job is not None and job["status"] == "running" else None
        if target is not None:
            self.server.worker.cancel(target)
        return web.Response(status=200)

    # -- history ---------------------------------------------------------------------------------------------------
    async def get_history(self, request) -> Any:
        raw = request.query.get("max_items")
        try:
            max_items = 10_000 if raw in (None, "") else int(raw)
        except ValueError:
            max_items = -1
        if max_items < 0:
            raise middleware.ApiError(400, f"max_items must be a non-negative integer, not {raw!r}")
        jobs = [job for job in self.server.store.list(FINISHED, max_items, with_client=True) if job["started"] is not None]
        return middleware.json_response({job["id"]: shapes.history_entry(job) for job in reversed(jobs)})

    async def get_history_item(self, request) -> Any:
        job = self.server.store.get(request.match_info["prompt_id"], with_client=True)
        if job is None or job["client"] is None or job["status"] not in FINISHED or job["started"] is None:
            return middleware.json_response({})  # ComfyUI's answer for a prompt that has no history (yet)
        return middleware.json_response({job["id"]: shapes.history_entry(job)})

    # -- node types --------------------------------------------------------------------------------------------------
    async def object_info(self, request) -> Any:
        registry = self.server.engine.registry
        names = [name for name in registry.names() if name.startswith(shapes.PREFIX)]
        return middleware.json_response(await asyncio.to_thread(self._object_info, names))

    async def object_info_item(self, request) -> Any:
        name = shapes.PREFIX + request.match_info["node_class"]
        known = name in self.server.engine.registry
        return middleware.json_response(await asyncio.to_thread(self._object_info, [name]) if known else {})

    def _object_info(self, names: list[str]) -> dict[str, Any]:
        """Off the event loop: file inputs list the model and image folders."""
        engine = self.server.engine
        return {shapes.class_name(name): shapes.object_info(engine.registry.get(name), engine.settings) for name in names}

    # -- files -------------------------------------------------------------------------------------------------------
    def _folder(self, kind: str | None) -> Path:
        kind = kind or "output"
        if kind == "output":
            return self.server.outputs_dir
        if kind == "input":
            return self.server.uploads_dir
        if kind == shapes.TEMP:
            return self.server.outputs_dir / shapes.TEMP
        raise middleware.ApiError(400, f"type must be one of {', '.join(FOLDER_TYPES)}, not {kind!r}")

    async def view(self, request) -> Any:
        """A file by ComfyUI's (filename, subfolder, type): an image a job wrote, or one uploaded."""
        filename = request.query.get("filename")
        if not filename:
            raise middleware.ApiError(400, "filename is missing")
        root = self._folder(request.query.get("type"))
        if "/" in filename or "\\" in filename:
            raise middleware.ApiError(400, f"invalid filename {filename!r}: name sub-folders in 'subfolder'")
        name = posixpath.join(request.query.get("subfolder", ""), filename)
        try:
            path = files.served_file(root, name)
        except files.Rejected as exc:
            raise middleware.ApiError(exc.status, exc.message) from None
        if path is None:
            raise middleware.ApiError(404, f"no file {name!r}")
        headers = {"X-Content-Type-Options": "nosniff", "Content-Disposition": f'filename="{path.name}"'}
        preview, channel = request.query.get("preview"), request.query.get("channel", "rgba")
        if preview is None and channel == "rgba":
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return web.FileResponse(path, headers={"Content-Type": content_type, **headers})
        if channel not in CHANNELS:
            raise middleware.ApiError(400, f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
        alpha = "a" in request.query.get("channel", "")  # a preview keeps the alpha (webp) when a channel names it
        body, content_type = await asyncio.to_thread(_image_variant, path, preview, channel, alpha)
        return web.Response(body=body, headers={"Content-Type": content_type, **headers})

    async def upload_image(self, request) -> Any:
        fields, data, filename = await self._read_upload(request, "image")
        return middleware.json_response(await asyncio.to_thread(self._store_upload, fields, data, filename, None))

    async def upload_mask(self, request) -> Any:
        """ComfyUI's mask editor: the uploaded image's alpha becomes the alpha of ``original_ref``'s image."""
        fields, data, filename = await self._read_upload(request, "image")
        try:
            ref = json.loads(fields.get("original_ref", ""))
            original = posixpath.join(str(ref.get("subfolder", "")), str(ref["filename"]))
            root = self._folder(ref.get("type", "output"))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise middleware.ApiError(400, 'original_ref must be JSON {"filename", "subfolder", "type"}') from None
        try:
            source = files.served_file(root, original)
        except files.Rejected as exc:
            raise middleware.ApiError(exc.status, exc.message) from None
        if source is None:
            raise middleware.ApiError(404, f"no image {original!r} to apply the mask to")
        return middleware.json_response(await asyncio.to_thread(self._store_upload, fields, data, filename, source))

    async def _read_upload(self, request, field_name: str) -> tuple[dict[str, str], bytes, str]:
        limit = self.server.limits.max_upload_bytes
        if request.content_type != "multipart/form-data":
            raise middleware.ApiError(415, f"send the image as multipart/form-data with the field '{field_name}'")
        if request.content_length is not None and request.content_length > limit + 64 * 1024:
            raise middleware.ApiError(413, f"upload too large: {request.content_length} bytes, the limit is {limit}")
        fields, data, filename = await bodies.read_multipart_form(request, field_name, limit)
        if data is None:
            raise middleware.ApiError(400, f"multipart field '{field_name}' is missing")
        return fields, data, filename

    def _store_upload(self, fields: dict[str, str], data: bytes, filename: str, mask_of: Path | None) -> dict[str, Any]:
        """Store an upload under the client's file name (ComfyUI's workflows name their inputs so): ``stem (1).png``
        when that name holds other bytes, unless ``overwrite``; only a name with an image extension, and only an
        image that decodes completely."""
        kind = fields.get("type") or "input"
        root = self._folder(kind)
        subfolder = fields.get("subfolder", "")
        name = os.path.basename(filename.replace("\\", "/"))
        suffix = Path(name).suffix.lower()
        if not name or suffix not in set(files.IMAGE_EXTENSIONS.values()) | {".jpeg", ".tif"}:
            raise middleware.ApiError(400, f"the file name {filename!r} needs an image extension "
                                f"({', '.join(sorted(set(files.IMAGE_EXTENSIONS.values())))})")
        try:
            files.decode_upload(data, self.server.limits.max_upload_pixels)
        except files.Rejected as exc:
            raise middleware.ApiError(exc.status, exc.message) from None
        if mask_of is not None:
            data, name = _apply_mask(mask_of, data), Path(name).stem + ".png"
        overwrite = fields.get("overwrite", "").lower() in ("true", "1")
        stem, counter = Path(name).stem, 1
        while True:
            try:
                target = paths.resolve_inside(root, posixpath.join(subfolder, name))
            except paths.UnsafePath:
                raise middleware.ApiError(
                    400, f"invalid subfolder {subfolder!r}: expected a path inside the folder, without '..'") from None
            if overwrite or not target.exists() or target.read_bytes() == data:
                break
            name, counter = f"{stem} ({counter}){Path(name).suffix}", counter + 1
        target.parent.mkdir(parents=True, exist_ok=True)
        paths.atomic_write(target, lambda file: file.write(data), replace=True)
        return {"name": name, "subfolder": subfolder, "type": kind}

    # -- the machine -------------------------------------------------------------------------------------------------
    async def system_stats(self, request) -> Any:
        return middleware.json_response(await asyncio.to_thread(_system_stats))

    async def embeddings(self, request) -> Any:
        from ..embeddings import available_embeddings, embedding_folders

        return middleware.json_response(available_embeddings(embedding_folders(self.server.engine.settings)))


GRAPHFLOW_PACK = NodePack(server_extensions=(ComfyApi,))


def _system_stats() -> dict[str, Any]:
    import psutil
    import torch

    memory = psutil.virtual_memory()
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        device = {"name": torch.cuda.get_device_name(index), "type": "cuda", "index": index,
                  "vram_total": total, "vram_free": free,
                  "torch_vram_total": torch.cuda.memory_reserved(index),
                  "torch_vram_free": torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)}
    else:  # on the CPU the "video" memory is the machine's
        device = {"name": "cpu", "type": "cpu", "index": None, "vram_total": memory.total, "vram_free": memory.available,
                  "torch_vram_total": memory.total, "torch_vram_free": memory.available}
    version = importlib.metadata.version("graphflow") if _installed("graphflow") else "unknown"
    return {"system": {"os": os.name, "ram_total": memory.total, "ram_free": memory.available,
                       "comfyui_version": f"graphflow {version}", "python_version": sys.version,
                       "pytorch_version": torch.__version__, "embedded_python": False, "argv": sys.argv,
                       "platform": platform.platform()},
            "devices": [device]}


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


CHANNELS = ("rgba", "rgb", "a")


def _image_variant(path: Path, preview: str | None, channel: str, alpha: bool) -> tuple[bytes, str]:
    """What ComfyUI's /view makes of an image for ``preview=FORMAT;QUALITY`` (webp or jpeg, webp whenever the
    alpha is wanted) or ``channel`` (``rgb``: without alpha; ``a``: the alpha alone, as a transparent black PNG)."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError):
        raise middleware.ApiError(400, f"{path.name} is not an image: preview and channel need one") from None
    buffer = io.BytesIO()
    with image:
        if preview is not None:
            kind, _, quality = preview.partition(";")
            kind = kind if kind in ("webp", "jpeg") and not alpha else "webp"
            picture = image.convert("RGB") if kind == "jpeg" or channel == "rgb" else image
            picture.save(buffer, format=kind.upper(), quality=int(quality) if quality.isdigit() else 90)
            return buffer.getvalue(), f"image/{kind}"
        if channel == "rgb":
            image.convert("RGB").save(buffer, format="PNG")
        else:
            alpha = image.getchannel("A") if "A" in image.getbands() else Image.new("L", image.size, 255)
            transparent = Image.new("RGBA", image.size)
            transparent.putalpha(alpha)
            transparent.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


def _apply_mask(original: Path, mask: bytes) -> bytes:
    from PIL import Image

    with Image.open(original) as image, Image.open(io.BytesIO(mask)) as painted:
        combined = image.convert("RGBA")
        alpha = painted.convert("RGBA").getchannel("A").resize(combined.size)
        combined.putalpha(alpha)
        buffer = io.BytesIO()
        combined.save(buffer, format="PNG")
    return buffer.getvalue()


async def _json_body(request) -> Any:
    """The JSON body; form and text bodies are refused (415), as on POST /jobs: a web page could post those here
    without a CORS preflight."""
    if request.content_type not in ("application/json", "application/octet-stream"):  # the latter: no header
        raise middleware.ApiError(415, f"send JSON (Content-Type: application/json), not {request.content_type}")
    return await bodies.read_json(request)


def _prompt_refused(error: dict[str, Any]) -> Any:
    return middleware.json_response({"error": error, "node_errors": {}}, status=400)

