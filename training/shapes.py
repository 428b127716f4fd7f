"""Synthetic captioned shapes: one flat-coloured circle, square or triangle on a plain background.

Every sample is drawn from a seed, so the same seed always gives the same images and captions.
Shapes are drawn at 4x resolution and box-filtered down, which gives soft (anti-aliased) edges like
the ones a VAE decoder produces. All three shapes are axis-aligned and fill a known share of their
bounding box (square 1, circle pi/4, upright triangle 1/2): ``training.measure`` relies on that.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SUPERSAMPLE = 4
SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 20, 20),
    "green": (20, 180, 20),
    "blue": (20, 40, 220),
    "yellow": (240, 210, 10),
}
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
BACKGROUND_WEIGHTS = {"white": 0.7, "black": 0.15, "gray": 0.15}
MIN_SIDE, MAX_SIDE, MARGIN = 22, 46, 3

# Caption forms and how often each is used. Short forms teach the model single words, so prompts
# like "a circle" (any colour) and negative prompts like "red" mean something.
CAPTION_FORMS = (
    ("a {colour} {shape} on a {background} background", 0.45),
    ("a {colour} {shape}", 0.25),
    ("{colour} {shape}", 0.05),
    ("a {shape} on a {background} background", 0.05),
    ("a {shape}", 0.08),
    ("{colour}", 0.08),
    ("a {background} background", 0.04),
)


@dataclass(frozen=True)
class Sample:
    image: Image.Image  # size x size RGB (64 unless asked otherwise)
    caption: str
    colour: str
    shape: str
    background: str
    box: tuple[int, int, int, int]  # left, top, right, bottom in pixels (exclusive right/bottom)


def draw_shape(shape: str, colour: str, background: str, box: tuple[int, int, int, int], size: int = SIZE) -> Image.Image:
    """Draw one shape filling ``box`` (left, top, right, bottom; pixels of a ``size`` image)."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    s = SUPERSAMPLE
    canvas = Image.new("RGB", (size * s, size * s), BACKGROUNDS[background])
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = (v * s for v in box)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((left, top, right - 1, bottom - 1), fill=fill)
    elif shape == "square":
        draw.rectangle((left, top, right - 1, bottom - 1), fill=fill)
    else:  # upright isosceles triangle: base on the box's bottom edge, apex at the top centre
        draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)
    return canvas.reduce(s)


def _pick(rng: np.random.Generator, weights: dict[str, float] | tuple) -> str:
    names = list(weights) if isinstance(weights, dict) else [w[0] for w in weights]
    probs = np.array(list(weights.values()) if isinstance(weights, dict) else [w[1] for w in weights], dtype=float)
    return names[rng.choice(len(names), p=probs / probs.sum())]


def caption_for(colour: str, shape: str, background: str, rng: np.random.Generator) -> str:
    """One caption for the drawn scene, in a randomly chosen long or short form."""
    return _pick(rng, CAPTION_FORMS).format(colour=colour, shape=shape, background=background)


def random_sample(rng: np.random.Generator, size: int = SIZE) -> Sample:
    """A random shape of random colour, size and position, and its caption.

    Side and margin scale with ``size``: a 128-pixel sample looks like a 64-pixel one enlarged, which is
    what the second pass of a hires fix sees."""
    scale = size / SIZE
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    background = _pick(rng, BACKGROUND_WEIGHTS)
    side = int(rng.integers(round(MIN_SIDE * scale), round(MAX_SIDE * scale) + 1))
    margin = round(MARGIN * scale)
    left = int(rng.integers(margin, size - margin - side + 1))
    top = int(rng.integers(margin, size - margin - side + 1))
    box = (left, top, left + side, top + side)
    image = draw_shape(shape, colour, background, box, size)
    return Sample(image, caption_for(colour, shape, background, rng), colour, shape, background, box)


def make_samples(count: int, seed: int, size: int = SIZE) -> list[Sample]:
    """``count`` samples of ``size`` x ``size`` pixels, identical for the same seed and size."""
    rng = np.random.default_rng(seed)
    return [random_sample(rng, size) for _ in range(count)]


def make_dataset(count: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, list[str]]:
    """Images as one uint8 array (count, size, size, 3) and their captions; identical for the same seed."""
    samples = make_samples(count, seed, size)
    images = np.stack([np.asarray(s.image, dtype=np.uint8) for s in samples])
    return images, [s.caption for s in samples]
