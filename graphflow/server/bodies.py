"""Reading what a client sent: a JSON body, a multipart field. Every way a body can be malformed becomes an
:class:`~graphflow.server.middleware.ApiError` (a JSON 4xx) saying what is wrong; routes read their bodies
through these helpers rather than ``request.json()``/``request.text()``, which raise whatever the codec, the
JSON parser or the multipart reader raises (UnicodeDecodeError, LookupError, ValueError, RecursionError)."""
from __future__ import annotations

import codecs
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import WorkflowFormatError
from ..workflow import decode_json
from .middleware import ApiError


async def read_json(request: web.Request) -> Any:
    """The body as strict JSON (see :func:`graphflow.workflow.decode_json`); aiohttp answers 413 past the app's
    ``client_max_size``."""
    data = await request.read()
    charset = request.charset or "utf-8"
    try:
        codecs.lookup(charset)
    except (LookupError, ValueError, UnicodeError):
        raise ApiError(415, f"unknown charset {charset!r} in Content-Type; send the body as UTF-8 JSON") from None
    try:
        text = data.decode(charset)
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the body is not valid {'UTF-8' if charset.lower().replace('-', '') == 'utf8' else charset} "
                            f"text (byte 0x{data[exc.start]:02x} at offset {exc.start}); send UTF-8 JSON") from None
    try:
        return decode_json(text, "body")
    except WorkflowFormatError as exc:
        raise ApiError(400, str(exc)) from None


async def read_multipart_field(request: web.Request, name: str, limit: int) -> bytes | None:
    """The bytes of multipart field ``name`` (None if the body has no such field); more than ``limit`` bytes → 413,
    a missing or broken boundary or a body that does not follow it → 400."""
    try:
        reader = await request.multipart()
        async for part in reader:
            if isinstance(part, BodyPartReader) and part.name == name:
                return await _read_at_most(part, limit)
    except ApiError:
        raise
    except MALFORMED as exc:
        raise _malformed(exc) from None
    return None


TEXT_FIELD_LIMIT = 64 * 1024


async def read_multipart_form(request: web.Request, name: str, limit: int) -> tuple[dict[str, str], bytes | None, str]:
    """Field ``name``'s bytes (at most ``limit``; None if missing) and file name, and every other field as text (at
    most 64 KiB each), of a multipart/form-data body; errors as :func:`read_multipart_field`'s."""
    fields: dict[str, str] = {}
    data, filename = None, ""
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or not part.name:
                continue
            if part.name == name and data is None:
                filename, data = part.filename or "", await _read_at_most(part, limit)
            else:
                fields[part.name] = (await _read_at_most(part, TEXT_FIELD_LIMIT)).decode("utf-8", "replace")
    except ApiError:
        raise
    except MALFORMED as exc:
        raise _malformed(exc) from None
    return fields, data, filename


# what aiohttp's reader raises on bad input (HttpProcessingError: a part's header lines it cannot parse)
MALFORMED = (ValueError, AssertionError, LookupError, UnicodeError, HttpProcessingError)


def _malformed(exc: Exception) -> ApiError:
    reason = (exc.message if isinstance(exc, HttpProcessingError) else str(exc)).split("\n")[0][:200] or type(exc).__name__
    return ApiError(400, f"malformed multipart/form-data body: {reason}")


async def _read_at_most(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"upload too large: more than {limit} bytes")
    return bytes(data)
