"""Images in, and pixel-space resizing and grids (saving them is :mod:`nodes.outputs`).

Files are read from ``settings.input_dir``, then from the read-only asset folders (``settings.asset_dirs``,
see :mod:`nodes.search`), under the rules of :mod:`nodes.files`: a name that would leave its folder (``..``,
an absolute path, a symlink pointing out) is refused.
"""

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from .latent import scaled_size
from .mask import load_mask_from_rgba, luminance, match_mask_to_image
from .pixels import check_pixels, image_grid, pil_to_pixels
from .search import MissingFile, file_fingerprint, find_file, preflight_check, search_folders
from .values import IMAGE, MASK, Image, Mask

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
        raise MissingFile(input_name, f"no such file in the input folders ({where})", _available(folders), name)
    return path


def _preflight(literals: dict[str, Any], settings: Any) -> list:
    """The image file, and the mask file when one is named."""
    problems = []
    for input_name in ("name", "mask"):
        name = literals.get(input_name)
        if name:
            problems += preflight_check(lambda: input_file(name, settings, input_name),
                                        lambda: _available(input_folders(settings), limit=None))
    return problems


def _available(folders: list[Path], limit: int | None = 20) -> list[str]:
    """The image files in the folders (the asset folders also hold models, which are no input)."""
    names: list[str] = []
    images = PILImage.registered_extensions()
    for folder in map(Path, folders):
        root = folder.resolve()
        if root.is_dir():
            names += [p.relative_to(root).as_posix() for p in root.rglob("*")
                      if p.suffix.lower() in images and p.is_file() and not p.name.startswith(".")]
    names = sorted(set(names))
    if limit is None:
        return names
    return names[:limit] + ([f"... {len(names) - limit} more"] if len(names) > limit else [])


def _file_fingerprint(literals: dict[str, Any], settings: Any) -> str:
    """The identity of the files read (the image, and the mask file if named): editing or replacing either,
    or a file in the input folder shadowing an asset, reruns LoadImage."""
    names = [(n, literals[n]) for n in ("name", "mask") if literals.get(n)]
    return "|".join(f"{n}:{file_fingerprint(input_file(name, settings, n))}" for n, name in names)


def open_picture(path: Path, input_name: str, name: str) -> PILImage.Image:
    """A loaded picture, EXIF rotation applied; anything unreadable is a NodeInputError on ``input_name``."""
    try:
        with PILImage.open(path) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as exc:
        raise NodeInputError(input_name, f"not a readable image: {exc}", "a PNG, JPEG, WebP, ... file", name) from None


UPLOAD = {"upload": "image"}  # tells clients (the web page) that an uploaded image's name goes here


@node(outputs={"image": IMAGE, "mask": MASK}, category="image", fingerprint=_file_fingerprint, version=2,
      preflight=_preflight)
def LoadImage(
    name: str = Field(..., description="file name inside the input folder (sub-folders allowed)", json_schema_extra=UPLOAD),
    mask: str = Field("", description="optional mask file in the input folder: white repaints, black keeps; "
                      "empty = the image's transparency (transparent repaints)", json_schema_extra=UPLOAD),
    *,
    ctx: RunContext,
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


# ---------------------------------------------------------------------------------------------- pixels

ScaleMethod = Literal["lanczos", "bicubic", "bilinear", "nearest"]
_PIL_FILTERS = {
    "lanczos": PILImage.Resampling.LANCZOS,
    "bicubic": PILImage.Resampling.BICUBIC,
    "bilinear": PILImage.Resampling.BILINEAR,
    "nearest": PILImage.Resampling.NEAREST,
}


@node(outputs={"image": IMAGE}, category="image", pixels=("width", "height"))
def ImageScale(
    image: Image = Input(IMAGE),
    method: ScaleMethod = "lanczos",
    width: int = Field(0, ge=0, le=16384, description="0 = follow height's aspect ratio (or scale_by)"),
    height: int = Field(0, ge=0, le=16384, description="0 = follow width's aspect ratio (or scale_by)"),
    scale_by: float = Field(1.0, ge=0.01, le=16.0, description="used when width and height are both 0"),
    *,
    ctx: RunContext,
) -> Image:
    """Resize images with PIL's filters (lanczos as in A1111's upscaler "Lanczos").

    Resizing happens on float channels (PIL mode "F"), so no 8-bit rounding is added; lanczos and bicubic
    overshoot at edges and are clipped back to [0, 1]."""
    new_w, new_h = scaled_size(image.width, image.height, width, height, scale_by)
    check_pixels(ctx, "width" if width else "height" if height else "scale_by", image.batch_size, new_h, new_w,
                 "scaled image")
    resample = _PIL_FILTERS[method]
    frames = image.pixels.detach().cpu().float().numpy()
    resized = []
    for frame in frames:  # a big batch of big pictures takes a while: a cancelled run stops between pictures
        ctx.check_cancelled()
        resized.append(np.stack([_resize_channel(frame[..., c], (new_w, new_h), resample)
                                 for c in range(frame.shape[-1])], axis=-1))
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
    count = images.batch_size
    return Image(pixels=image_grid(images.pixels, min(columns, count) if columns else None).unsqueeze(0))
