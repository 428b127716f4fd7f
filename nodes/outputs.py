"""Output nodes: they write files into ``settings.output_dir`` (images, animations, checkpoints).

Every name follows the rules of :mod:`nodes.files`: a prefix that would leave the output folder is refused,
files are numbered ``<prefix>_00001.<ext>``, ... and an existing file is never replaced or seen half-written.
"""
# No `from __future__ import annotations` here: the node decorator hands annotations to pydantic as they
# are, and an enum alias (a Literal bound to a name) must reach it as an object, not as a string.

import json
from pathlib import Path
from typing import Literal

from PIL import Image as PILImage
from PIL import features
from PIL.PngImagePlugin import PngInfo
from pydantic import Field

from graphflow.context import RunContext
from graphflow.documents import PNG_CHUNK
from graphflow.errors import NodeInputError, node_inputs
from graphflow.node import Input, node
from graphflow.outputs import OutputFile

from .files import new_output, relative_name, write_new_output
from .metadata import a1111_parameters, checkpoint_hash, describe
from .pixels import pixels_to_pil
from .watermark import embed_watermark, payload_of
from .values import CLIP, IMAGE, MODEL, VAE, Clip, Image, Model, Vae

@node(output=True, category="image")
def SaveImage(
    images: Image = Input(IMAGE),
    filename_prefix: str = Field("graphflow", min_length=1, description="files are <prefix>_00001.png, _00002.png, ...; may include sub-folders"),
    watermark: str = Field("", max_length=64, description="hide this text in every image with the invisible watermark (see InvisibleWatermark; 'StableDiffusionV1' as SD's scripts); empty = none"),
    *,
    ctx: RunContext,
) -> list[OutputFile]:
    """Save images as PNG files in the output folder, with the workflow and its settings embedded.

    Numbers count up from the highest one used with the prefix, and a file is never replaced or seen
    half-written (nodes.files.write_new_output). Each PNG carries the workflow as it ran (text chunk
    "graphflow": ``graphflow run IMAGE.png`` reruns it) and AUTOMATIC1111's "parameters" text (prompt with
    LoRA tags, negative prompt, steps, sampler and schedule type, CFG scale, seed, size, model and its hash,
    hires fix settings: see nodes.metadata) that other tools read. With ``watermark``, every picture carries
    that text as the invisible watermark (DWT-DCT; pictures of at least 256×256 pixels). Images that went through
    SafetyCheck are listed with ``"flagged": true/false``."""
    pixels = images.pixels
    if watermark:
        with node_inputs(pixels="images", payload="watermark"):
            pixels = embed_watermark(pixels, payload_of(watermark))
    return save_pngs(images, filename_prefix, ctx, pixels=pixels)


def save_pngs(images: Image, filename_prefix: str, ctx: RunContext, extra_text: dict[str, str] | None = None,
              truncate: bool = False, pixels=None) -> list[OutputFile]:
    """SaveImage's work: the images (or ``pixels`` made from them, e.g. watermarked) as numbered PNGs in the
    output folder with the "parameters" and "graphflow" text chunks, plus ``extra_text`` chunks (a node pack's own
    formats); ``truncate`` as in :func:`pixels_to_pil`."""
    out_dir = Path(ctx.settings.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    generation = describe(ctx.graph) if ctx.graph is not None else None
    model_hash = checkpoint_hash(generation, ctx.settings)
    info.add_text("parameters", a1111_parameters(generation, (images.width, images.height), model_hash))
    if ctx.graph is not None:
        info.add_text(PNG_CHUNK, json.dumps(ctx.graph.document, ensure_ascii=False))
    for key, text in (extra_text or {}).items():
        info.add_text(key, text)
    saved = []
    flags = images.flagged or ()
    for index, picture in enumerate(pixels_to_pil(images.pixels if pixels is None else pixels, truncate)):
        path = write_new_output(out_dir, filename_prefix, "png", lambda file, picture=picture: picture.save(file, format="PNG", pnginfo=info))
        details = {"width": picture.width, "height": picture.height}
        if index < len(flags):
            details["flagged"] = flags[index]  # by SafetyCheck
        saved.append(OutputFile("image", relative_name(path, out_dir), details))
    return saved


def animation_writer(frames: list[PILImage.Image], fmt: str, fps: float, loop: int, lossless: bool):
    """A file writer (for :func:`write_new_output`) saving ``frames`` as one animated GIF or WebP."""
    frame_ms = max(1, round(1000.0 / fps))
    options = {"save_all": True, "append_images": frames[1:], "duration": frame_ms, "loop": loop}
    if fmt == "webp":
        options.update(lossless=lossless, quality=100 if lossless else 90)

    def write(file) -> None:
        frames[0].save(file, format=fmt.upper(), **options)

    return write


@node(output=True, category="image")
def SaveAnimation(
    images: Image = Input(IMAGE, description="the frames, in order"),
    format: Literal["gif", "webp"] = "webp",
    fps: float = Field(8.0, gt=0, le=100, description="frames per second (GIF stores 1/100 s steps)"),
    filename_prefix: str = Field("graphflow", min_length=1, description="file name start; may include sub-folders"),
    loop: int = Field(0, ge=0, le=65535, description="loop count stored in the file; 0 = forever"),
    lossless: bool = Field(False, description="WebP only: lossless frames (larger files)"),
    *,
    ctx: RunContext,
) -> list[OutputFile]:
    """Save an image batch as an animated GIF or WebP in the output folder, one frame per image.

    Files are numbered ``<prefix>_00001.webp``, ... and never overwritten. GIF has 256 colours per frame
    and merges identical consecutive frames; WebP keeps full colour."""
    if format == "webp" and not features.check("webp"):
        raise NodeInputError("format", "this Pillow build cannot write WebP", "gif", format)
    frames = pixels_to_pil(images.pixels)
    output_dir = ctx.settings.output_dir
    path = write_new_output(output_dir, filename_prefix, format, animation_writer(frames, format, fps, loop, lossless))
    info = {"width": images.width, "height": images.height, "frames": len(frames), "format": format}
    return [OutputFile("image", relative_name(path, output_dir), info)]  # an animated image: browsers show it


@node(output=True, category="merge")
def SaveCheckpoint(
    model: Model = Input(MODEL),
    clip: Clip = Input(CLIP),
    vae: Vae = Input(VAE),
    filename_prefix: str = Field("checkpoints/merged", description="<output_dir>/<prefix>_NNNNN.safetensors; may "
                                 "name sub-folders, never leave the output folder"),
    *,
    ctx: RunContext,
) -> list[OutputFile]:
    """Write model, text encoder and VAE as one .safetensors checkpoint in the original SD key layout.

    The file goes to the output directory (workflows never write into the models folder); move it into
    ``<models_dir>/checkpoints`` to load it with LoadCheckpoint. An existing file is never replaced."""
    from .checkpoints import save_single_file  # the checkpoint writer pulls in diffusers: only when saving

    output_dir = Path(ctx.settings.output_dir)
    path = new_output(output_dir, filename_prefix, "safetensors", lambda path: save_single_file(model, clip, vae, path))
    patches = {"model": list(model.patches), "clip": list(clip.patches)}
    return [OutputFile("checkpoint", relative_name(path, output_dir), {"patches": patches})]
