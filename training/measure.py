"""Pixel measurements that tell which colour and shape an image shows (for checks of meaning).

The recipe, for an image with one shape on a plain background:
1. background colour = median of the one-pixel border;
2. foreground = pixels whose RGB distance from it exceeds half of the image's largest distance
   (half-way between background and shape colour, so anti-aliased edges split evenly);
3. keep the largest 4-connected blob (stray specks must not stretch the bounding box);
4. colour = the palette hue nearest to the blob's mean colour, or "none" if that colour is grey;
5. shape = blob area / bounding-box area: a square fills 1, a circle pi/4 ~ 0.79, a triangle 1/2.
"""
from __future__ import annotations

import colorsys
from collections import deque

import numpy as np

from training.shapes import COLOURS

NONE = "none"
# Split points half-way between the ideal fill ratios (0.5 triangle, 0.785 circle, 1.0 square).
TRIANGLE_CIRCLE_SPLIT = (0.5 + np.pi / 4) / 2
CIRCLE_SQUARE_SPLIT = (np.pi / 4 + 1.0) / 2
MIN_CONTRAST = 0.2  # RGB distance (0..1 channels) below which nothing counts as foreground
MIN_BLOB_SHARE = 0.01  # a blob smaller than 1% of the image is no shape
MIN_SATURATION = 0.3

PALETTE_HUES = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for name, rgb in COLOURS.items()}


def as_array(image) -> np.ndarray:
    """A PIL image or HxWx3 array (uint8 0..255 or float 0..1) as float32 HxWx3 in 0..1."""
    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 RGB, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def background_colour(pixels: np.ndarray) -> np.ndarray:
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(border, axis=0)


def foreground_mask(pixels: np.ndarray) -> np.ndarray:
    """Boolean HxW mask of pixels that differ clearly from the background colour."""
    distance = np.linalg.norm(pixels - background_colour(pixels), axis=-1)
    threshold = max(MIN_CONTRAST, 0.5 * float(distance.max()))
    return distance > threshold


def largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of ``mask`` (flood fill; images here are small)."""
    height, width = mask.shape
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        blob, queue = [], deque([start])
        while queue:
            y, x = queue.popleft()
            blob.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(blob) > len(best):
            best = blob
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def colour_name(mean_rgb) -> str:
    """Palette colour whose hue is nearest to ``mean_rgb`` (0..1), or "none" for greyish colours."""
    hue, saturation, value = colorsys.rgb_to_hsv(*(float(c) for c in mean_rgb))
    if saturation < MIN_SATURATION or value < 0.15:
        return NONE
    return min(PALETTE_HUES, key=lambda name: min(abs(hue - PALETTE_HUES[name]), 1 - abs(hue - PALETTE_HUES[name])))


def fill_ratio(blob: np.ndarray) -> float:
    ys, xs = np.nonzero(blob)
    box_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    return float(blob.sum()) / float(box_area)


def shape_name(ratio: float) -> str:
    if ratio < TRIANGLE_CIRCLE_SPLIT:
        return "triangle"
    if ratio < CIRCLE_SQUARE_SPLIT:
        return "circle"
    return "square"


def classify(image) -> tuple[str, str]:
    """(colour, shape) of the one shape in ``image``; ("none", "none") if there is no clear shape."""
    pixels = as_array(image)
    blob = largest_blob(foreground_mask(pixels))
    if blob.sum() < MIN_BLOB_SHARE * blob.size:
        return NONE, NONE
    return colour_name(pixels[blob].mean(axis=0)), shape_name(fill_ratio(blob))
