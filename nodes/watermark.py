"""The invisible watermark that Stable Diffusion's reference scripts and diffusers' SDXL pipelines put in
their outputs: a few bytes hidden in the image's frequency domain with the ``invisible-watermark``
package, so a picture can later be recognised as generated.

SD 1.x/2.x's scripts embed the text ``StableDiffusionV1`` with the package's ``dwtDct`` method; diffusers'
SDXL watermarker embeds a fixed 48-bit message with the same method. That method is fast but rarely reads
back: in tests/nodes/test_watermark.py it loses a 10-byte text on 8 of 8 smooth pictures even in an untouched
8-bit file, where ``dwtDctSvd`` (the default here) keeps it on all 8. Neither survives large flat white
areas (the mark is clipped away at 255), heavy resizing or cropping, and anyone who knows the method can read
or remove it: it labels, it does not protect. The package needs 8-bit pictures of at least 256×256 pixels
(its own limit, refused here by name).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from graphflow.errors import InvalidArgument, node_inputs
from graphflow.node import Input, node

from .values import IMAGE, Image

Method = Literal["dwtDct", "dwtDctSvd"]
SD_TEXT = "StableDiffusionV1"  # what the CompVis / Stability reference scripts embed
MIN_PIXELS = 256 * 256  # imwatermark refuses pictures with fewer pixels


def _check_size(pixels: torch.Tensor) -> None:
    height, width = pixels.shape[1:3]
    if height * width < MIN_PIXELS:
        raise InvalidArgument("pixels", "too small for the invisible watermark: its methods need at least 256×256 pixels"
                              " (upscale first)", "at least 65536 pixels", f"{width}x{height}")


def _to_bgr_uint8(picture: torch.Tensor) -> np.ndarray:
    rgb = (picture.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return np.ascontiguousarray(rgb[:, :, ::-1])


def embed_watermark(pixels: torch.Tensor, payload: bytes, method: Method = "dwtDctSvd") -> torch.Tensor:
    """Pixels (B, H, W, 3) in [0, 1] with ``payload`` hidden in each picture; 8-bit values, as they will be saved."""
    from imwatermark import WatermarkEncoder

    if not payload:
        raise InvalidArgument("payload", "the watermark text is empty", "at least one byte", "''")
    _check_size(pixels)
    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", payload)
    marked = []
    for picture in pixels:
        bgr = encoder.encode(_to_bgr_uint8(picture), method)
        marked.append(torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).float() / 255)
    return torch.stack(marked).to(pixels.device)


def read_watermark(pixels: torch.Tensor, length: int, method: Method = "dwtDctSvd") -> list[bytes]:
    """The ``length`` bytes hidden in each picture (garbage when none was embedded: compare with what you expect)."""
    from imwatermark import WatermarkDecoder

    _check_size(pixels)
    decoder = WatermarkDecoder("bytes", 8 * length)
    return [bytes(decoder.decode(_to_bgr_uint8(picture), method)) for picture in pixels]


def payload_of(text: str) -> bytes:
    """The watermark bytes for a text input (a lone surrogate from a JSON escape has no UTF-8 form)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("payload", "must be encodable as UTF-8", "UTF-8 text", repr(text)) from None


@node(outputs={"image": IMAGE}, category="image")
def InvisibleWatermark(
    image: Image = Input(IMAGE),
    text: str = Field(SD_TEXT, min_length=1, max_length=64, description="the bytes to hide (UTF-8); SD's scripts use 'StableDiffusionV1'"),
    method: Method = Field("dwtDctSvd", description="invisible-watermark's method: dwtDctSvd (reads back reliably) or dwtDct (what SD's scripts and SDXL use; often unreadable)"),
) -> Image:
    """Hide ``text`` in every image with the invisible-watermark package, as SD's reference scripts do.

    The result is rounded to 8 bits (the watermark lives in those values) and differs from the input by a few
    levels; ReadWatermark gets the text back. Images need at least 256×256 pixels."""
    with node_inputs(pixels="image", payload="text"):
        return Image(pixels=embed_watermark(image.pixels, payload_of(text), method))


@node(output=True, category="image")
def ReadWatermark(
    image: Image = Input(IMAGE),
    length: int = Field(len(SD_TEXT), ge=1, le=64, description="how many bytes were hidden (17 for 'StableDiffusionV1')"),
    expected: str = Field(SD_TEXT, description="the text to look for; the report says per image whether it was found"),
    method: Method = Field("dwtDctSvd", description="the method the mark was embedded with"),
) -> dict:
    """Read the invisible watermark of every image: the run report lists the bytes found (as text, undecodable
    bytes escaped) and whether each equals ``expected``. Pictures without a mark give noise, never an error."""
    with node_inputs(pixels="image", payload="expected"):
        found = read_watermark(image.pixels, length, method)
        target = payload_of(expected)
    return {"watermarks": [{"text": data.decode("utf-8", "backslashreplace"), "matches": data == target} for data in found]}
