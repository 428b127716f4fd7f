"""A pure-Python output node that writes a real PNG, so server tests can fetch images without Stable Diffusion."""
from __future__ import annotations

import io
import uuid
from pathlib import Path

from pydantic import Field

from graphflow.node import Input, node
from graphflow.outputs import OutputFile


def png_bytes(width: int, height: int, level: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (level, level, level)).save(buffer, format="PNG")
    return buffer.getvalue()


@node(output=True, category="test", pixels=("width", "height", "batch_size"))
def SaveGray(value=Input("NUMBER"), width: int = Field(16, ge=1, le=100_000), height: int = Field(8, ge=1, le=100_000),
             batch_size: int = Field(1, ge=1, le=1000), previews: int = Field(0, ge=0, le=1000), *, ctx):
    """Writes one gray PNG (level = value mod 256) per batch item, after emitting ``previews`` previews."""
    for step in range(previews):
        ctx.preview(png_bytes(4, 4, step % 256), step)
    images = []
    for _ in range(batch_size):
        name = f"gray-{uuid.uuid4().hex[:12]}.png"
        (Path(ctx.settings.output_dir) / name).write_bytes(png_bytes(width, height, int(value) % 256))
        images.append(OutputFile("image", name, {"width": width, "height": height}))
    return images
