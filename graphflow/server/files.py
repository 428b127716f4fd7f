"""The two places the server touches files for clients: serving outputs and storing uploads.

Outputs are served only from inside the outputs directory (no ``..``, no absolute paths, no symlink that leads
out). Uploads are stored under a name derived from their content (sha256 + the extension of the format Pillow
found), never from the client's filename, and only after Pillow decoded them completely.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

from .. import paths

# Formats we accept from clients, with the extension their stored name gets.
IMAGE_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tiff"}


class Rejected(Exception):
    """A client file request we refuse; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def served_file(root: Path, name: str) -> Path | None:
    """The regular file ``name`` (a relative path) names inside ``root`` by :func:`graphflow.paths.resolve_inside`'s
    rules; None when there is no such file. A symlink that leads out is, to a client, just not there; the other
    refused names could only be an escape attempt and raise :class:`Rejected` (400), as does a backslash (a URL
    names sub-folders with ``/``). Hidden names (a part starting with ``.``) are never served."""
    refusal = f"invalid file name {name[:300]!r}: expected a path inside the directory, without '..'"
    if "\\" in name:
        raise Rejected(400, refusal)
    try:
        path = paths.resolve_inside(root, name)
        if any(part.startswith(".") for part in name.split("/")):
            return None  # hidden: an interrupted write's temporary (swept at start), never a finished output
        return path if path.is_file() else None
    except paths.UnsafePath as exc:
        if exc.via_symlink:
            return None
        raise Rejected(400, refusal) from None
    except (OSError, ValueError):  # a name or path too long for the file system, or one it cannot encode
        return None


def store_image(data: bytes, directory: Path, max_pixels: int) -> dict[str, object]:
    """Check that ``data`` is a whole image of an accepted format and store it; returns {name, width, height}."""
    kind, width, height = decode_upload(data, max_pixels)
    name = hashlib.sha256(data).hexdigest() + IMAGE_EXTENSIONS[kind]
    _write_new(directory / name, data)
    return {"name": name, "width": width, "height": height}


def decode_upload(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of an image that decodes completely, or :class:`Rejected` saying what is wrong
    with it: empty, not an image, a format we do not accept, too many pixels, or truncated/corrupt. The message
    is ours, never Pillow's (which names in-memory objects by address)."""
    from PIL import Image, UnidentifiedImageError

    accepted = ", ".join(IMAGE_EXTENSIONS)
    if not data:
        raise Rejected(400, "field 'image' is empty")
    kind = ""
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, (width, height) = image.format or "", image.size
            if kind not in IMAGE_EXTENSIONS:
                raise Rejected(400, f"unsupported image format {kind}; expected one of {accepted}")
            if width * height > max_pixels:
                raise Rejected(400, f"image too large: {width}x{height} is {width * height} pixels, the limit is {max_pixels}")
            image.load()  # decode every pixel: truncated or corrupt files fail here
    except Rejected:
        raise
    except UnidentifiedImageError:
        raise Rejected(400, f"field 'image' is not an image in a format this server reads; expected one of {accepted}") from None
    except Image.DecompressionBombError:
        raise Rejected(400, f"image too large: more pixels than Pillow will decode, the limit is {max_pixels}") from None
    except Exception:
        raise Rejected(400, f"field 'image' is a truncated or corrupt {kind or 'image'} file: it does not decode completely") from None
    return kind, width, height


def _write_new(target: Path, data: bytes) -> None:
    """Write ``target`` completely or not at all, and never replace an existing file (same name = same bytes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        paths.atomic_write(target, lambda file: file.write(data))
    except FileExistsError:
        pass
