"""Image files in and out, and pixel-space resizing and grids.

Files are read from ``settings.input_dir``, then from the read-only asset folders (``settings.asset_dirs``,
see :mod:`nodes.search`), and written only to ``settings.output_dir``, under the rules of :mod:`nodes.files`:
a name that would leave its folder (``..``, an absolute path, a symlink pointing out) is refused, and a
saved image never replaces an existing file.
"""
# No `from __future__ import annotations` here: the node decorator hands annotations to pydantic as they
# are, and an enum alias (a Literal bound to a name) must reach it as an object, not as a string.

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo
from pydantic import Field

from graphflow.errors import NodeInputError
from graphflow.node import Input, node, spec_of

from .files import relative_name, write_new_output
from .latent import scaled_size
from .mask import load_mask_from_rgba, luminance, match_mask_to_image
from .search import find_file, search_folders
from .values import IMAGE, MASK, Image, Mask

# ---------------------------------------------------------------------------------------------- conversions


def pixels_to_pil(pixels: torch.Tensor) -> list[PILImage.Image]:
    """(B, H, W, 3) floats in [0, 1] → 8-bit RGB images, rounded as diffusers' numpy_to_pil rounds."""
    array = (pixels.detach().cpu().float().numpy() * 255).round().astype("uint8")
    return [PILImage.fromarray(frame) for frame in array]


def pil_to_pixels(images: list[PILImage.Image]) -> torch.Tensor:
    """8-bit RGB images of one size → (B, H, W, 3) float32 in [0, 1]."""
    return torch.from_numpy(np.stack([np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0 for img in images]))


# ---------------------------------------------------------------------------------------------- LoadImage


def input_folders(settings: Any) -> list[Path]:
    """Where input files are looked up, in order: the input folder, then every asset folder."""
    return search_folders(settings, "", first=Path(settings.input_dir))


def input_file(name: str, settings: Any, input_name: str = "name") -> Path:
    """The existing file ``name`` in the first input folder holding it (names leaving a folder are refused)."""
    folders = input_folders(settings)
    path = find_file(folders, [name], input_name)
    if path is None:
        where = ", ".join(str(Path(f).resolve()) for f in folders)
        raise NodeInputError(input_name, f"no such file in the input folders ({where})", _available(folders), name)
    return path


def _available(folders: list[Path], limit: int = 20) -> list[str]:
    names: list[str] = []
    for folder in map(Path, folders):
        root = folder.resolve()
        if root.is_dir():
            names += [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    names = sorted(set(names))
    return names[:limit] + ([f"... {len(names) - limit} more"] if len(names) > limit else [])


def _file_fingerprint(literals: dict[str, Any], settings: Any) -> str:
    """sha256 of the bytes of the files read (the image, and the mask file if named): editing or replacing
    either, or a file in the input folder shadowing an asset, reruns LoadImage."""
    hasher = hashlib.sha256()
    for input_name in ("name", "mask"):
        name = literals.get(input_name)
        if name:
            hasher.update(input_name.encode() + b"\0" + input_file(name, settings, input_name).read_bytes())
    return hasher.hexdigest()


def open_picture(path: Path, input_name: str, name: str) -> PILImage.Image:
    """A loaded picture, EXIF rotation applied; anything unreadable is a NodeInputError on ``input_name``."""
    try:
        with PILImage.open(path) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as exc:
        raise NodeInputError(input_name, f"not a readable image: {exc}", "a PNG, JPEG, WebP, ... file", name) from None


@node(outputs={"image": IMAGE, "mask": MASK}, category="image", fingerprint=_file_fingerprint, version=2)
def LoadImage(
    name: str = Field(..., description="file name inside the input folder (sub-folders allowed)"),
    mask: str = Field("", description="optional mask file in the input folder: white repaints, black keeps; "
                      "empty = the image's transparency (transparent repaints)"),
    ctx=None,
) -> tuple[Image, Mask]:
    """Load an image file as RGB (EXIF rotation applied, alpha dropped) and its inpainting mask.

    Files are looked up in the input folder, then in the asset folders (e.g. ``assets/`` next to the
    workflow run by the CLI). The mask comes from the ``mask`` file if one is named (its luminance, so
    white = 1 = repaint; a mask of another size is resized to the image with a warning), otherwise from the
    image's alpha channel (transparent = repaint); an image without either gives an all-zero mask."""
    picture = open_picture(input_file(name, ctx.settings), "name", name)
    image = Image(pixels=pil_to_pixels([picture]))
    if mask:
        mask_picture = open_picture(input_file(mask, ctx.settings, "mask"), "mask", mask)
        drawn = Mask(mask=luminance(pil_to_pixels([mask_picture]))[..., 0].clamp(0, 1))
        return image, match_mask_to_image(drawn, image.height, image.width, ctx.warn)
    return image, load_mask_from_rgba(picture)


# ---------------------------------------------------------------------------------------------- SaveImage


@node(output=True, category="image")
def SaveImage(
    images: Image = Input(IMAGE),
    filename_prefix: str = Field("graphflow", min_length=1, description="files are <prefix>_00001.png, _00002.png, ...; may include sub-folders"),
    ctx=None,
) -> dict[str, Any]:
    """Save images as PNG files in the output folder, with the workflow and its settings embedded.

    Numbers count up from the highest one used with the prefix, and a file is never replaced or seen
    half-written (nodes.files.write_new_output). Each PNG carries the workflow JSON (text chunk "workflow")
    and an AUTOMATIC1111-style "parameters" text (prompt, negative prompt, steps, sampler, CFG scale, seed,
    size, model) that other tools read."""
    out_dir = Path(ctx.settings.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text("parameters", a1111_parameters(ctx.workflow, ctx.node_id, images.width, images.height))
    if ctx.workflow is not None:
        info.add_text("workflow", json.dumps(ctx.workflow, ensure_ascii=False))
    saved = []
    for picture in pixels_to_pil(images.pixels):
        path = write_new_output(out_dir, filename_prefix, "png", lambda file, picture=picture: picture.save(file, format="PNG", pnginfo=info))
        saved.append({"filename": relative_name(path, out_dir), "width": picture.width, "height": picture.height})
    return {"images": saved}


# ---------------------------------------------------------------------------------------------- metadata


def a1111_parameters(workflow: dict[str, Any] | None, save_node: str | None, width: int, height: int) -> str:
    """The A1111 "parameters" text for an image saved by ``save_node``, read off the workflow graph.

    Follows links upstream from the save node to the nearest Sample node, then from there to the prompts,
    the schedule, the seed and the checkpoint. Whatever cannot be found is left out."""
    nodes = (workflow or {}).get("nodes") or {}
    sample = _nearest_upstream(nodes, _inputs_of(nodes, save_node), "Sample")
    noised = _nearest_upstream(nodes, [_linked(nodes, sample, "latent")], "AddNoise")
    schedule = _nearest_upstream(nodes, [_linked(nodes, noised, "schedule")], "Schedule")
    checkpoint = _nearest_upstream(nodes, [_linked(nodes, sample, "model")], "LoadCheckpoint")
    seed = _literal(nodes, sample, "seed")
    if seed is None or seed == -1:  # -1 continues AddNoise's generator, whose seed is the one that counts
        seed = _literal(nodes, noised, "seed")
    denoise = _literal(nodes, schedule, "denoise")
    fields = {
        "Steps": _literal(nodes, schedule, "steps"),
        "Sampler": _a1111_sampler(_literal(nodes, schedule, "sampler")),
        "CFG scale": _literal(nodes, sample, "cfg"),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model": _literal(nodes, checkpoint, "name"),
        "Denoising strength": denoise if isinstance(denoise, (int, float)) and denoise < 1 else None,
    }
    lines = []
    prompt = _prompt_text(nodes, _linked(nodes, sample, "positive"))
    if prompt is not None:
        lines.append(prompt)
    negative = _prompt_text(nodes, _linked(nodes, sample, "negative"))
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{key}: {value}" for key, value in fields.items() if value is not None))
    return "\n".join(lines)


def _a1111_sampler(name: Any) -> Any:
    from .sampling import SAMPLERS

    return SAMPLERS[name].a1111 if isinstance(name, str) and name in SAMPLERS else name


def _inputs_of(nodes: dict, node_id: str | None) -> list[str]:
    """Ids of the nodes linked into ``node_id``."""
    inputs = ((nodes.get(node_id) or {}).get("inputs") or {}) if node_id else {}
    return [v["from"] for _, v in sorted(inputs.items()) if isinstance(v, dict) and isinstance(v.get("from"), str)]


def _linked(nodes: dict, node_id: str | None, input_name: str) -> str | None:
    """Id of the node linked into ``node_id.input_name``, or None."""
    value = ((nodes.get(node_id) or {}).get("inputs") or {}).get(input_name) if node_id else None
    return value.get("from") if isinstance(value, dict) and isinstance(value.get("from"), str) else None


def _nearest_upstream(nodes: dict, starts: list[str | None], node_type: str) -> str | None:
    """Breadth-first up the links from ``starts`` (themselves included) to the first node of ``node_type``."""
    seen: set[str] = set()
    queue = list(starts)
    while queue:
        node_id = queue.pop(0)
        if node_id is None or node_id in seen or node_id not in nodes:
            continue
        seen.add(node_id)
        if nodes[node_id].get("type") == node_type:
            return node_id
        queue.extend(_inputs_of(nodes, node_id))
    return None


def _literal(nodes: dict, node_id: str | None, name: str) -> Any:
    """A literal input of a node as the workflow gives it, else the node type's default; None if neither."""
    entry = nodes.get(node_id) if node_id else None
    if not isinstance(entry, dict):
        return None
    inputs = entry.get("inputs") or {}
    value = inputs[name] if name in inputs else _default_of(entry.get("type"), name)
    return None if isinstance(value, dict) else value


def _default_of(node_type: Any, name: str) -> Any:
    from .sampling import AddNoise, Sample, Schedule
    from .text import TextEncode, Tokenize

    function = {"Sample": Sample, "AddNoise": AddNoise, "Schedule": Schedule, "Tokenize": Tokenize, "TextEncode": TextEncode}.get(node_type)
    field = spec_of(function).literals.model_fields.get(name) if function else None
    return None if field is None or field.is_required() else field.default


def _prompt_text(nodes: dict, node_id: str | None) -> str | None:
    """The text behind a conditioning: TextEncode's own, or the Tokenize feeding a CLIPTextEncode."""
    encoder = _nearest_upstream(nodes, [node_id], "TextEncode") or _nearest_upstream(nodes, [node_id], "Tokenize")
    text = _literal(nodes, encoder, "text")
    return text if isinstance(text, str) else None


# ---------------------------------------------------------------------------------------------- pixels

ScaleMethod = Literal["lanczos", "bicubic", "bilinear", "nearest"]
_PIL_FILTERS = {
    "lanczos": PILImage.Resampling.LANCZOS,
    "bicubic": PILImage.Resampling.BICUBIC,
    "bilinear": PILImage.Resampling.BILINEAR,
    "nearest": PILImage.Resampling.NEAREST,
}


@node(outputs={"image": IMAGE}, category="image")
def ImageScale(
    image: Image = Input(IMAGE),
    method: ScaleMethod = "lanczos",
    width: int = Field(0, ge=0, le=16384, description="0 = follow height's aspect ratio (or scale_by)"),
    height: int = Field(0, ge=0, le=16384, description="0 = follow width's aspect ratio (or scale_by)"),
    scale_by: float = Field(1.0, ge=0.01, le=16.0, description="used when width and height are both 0"),
) -> Image:
    """Resize images with PIL's filters (lanczos as in A1111's upscaler "Lanczos").

    Resizing happens on float channels (PIL mode "F"), so no 8-bit rounding is added; lanczos and bicubic
    overshoot at edges and are clipped back to [0, 1]."""
    new_w, new_h = scaled_size(image.width, image.height, width, height, scale_by)
    resample = _PIL_FILTERS[method]
    frames = image.pixels.detach().cpu().float().numpy()
    resized = [
        np.stack([_resize_channel(frame[..., c], (new_w, new_h), resample) for c in range(frame.shape[-1])], axis=-1)
        for frame in frames
    ]
    return Image(pixels=torch.from_numpy(np.stack(resized)).clamp(0, 1))


def _resize_channel(channel: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    return np.asarray(PILImage.fromarray(np.ascontiguousarray(channel, dtype=np.float32)).resize(size, resample), dtype=np.float32)


@node(outputs={"image": IMAGE}, category="image")
def ImageGrid(
    images: Image = Input(IMAGE),
    columns: int = Field(0, ge=0, le=64, description="0 = about the square root of the image count"),
) -> Image:
    """Tile a batch of images into one image, row by row (like diffusers' make_image_grid).

    Cells left over in the last row stay black; more columns than images are cut to the image count."""
    from .preview import image_grid  # preview imports this module, so import it when needed

    count = images.batch_size
    return Image(pixels=image_grid(images.pixels, min(columns, count) if columns else None).unsqueeze(0))
