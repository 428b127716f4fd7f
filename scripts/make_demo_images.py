"""Write the example workflows' input picture and inpainting mask, in the toy model's own domain.

    python scripts/make_demo_images.py [--out DIR]

DIR defaults to workflows/assets. Writes (replacing what is there; the bytes depend only on this script):
- input.png: a blue square on white, 64x64, drawn by ``training.shapes.draw_shape`` exactly as the
  ``toy-shapes`` training pictures are drawn, so the toy VAE reproduces it (img2img.json, inpaint.json and
  outpaint.json start from it);
- inpaint_mask.png: white (repaint) over the square and a margin of MASK_MARGIN pixels around it, black
  (keep) elsewhere; inpaint.json repaints the square and keeps the white around it;
- outline_input.png: a smaller green square in the lower left corner, whose Canny edges tell controlnet_canny.json
  where to draw.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from PIL import Image, ImageDraw  # noqa: E402

from training.shapes import SIZE, draw_shape  # noqa: E402

SHAPE, COLOUR, BACKGROUND = "square", "blue", "white"
BOX = (14, 14, 50, 50)  # left, top, right, bottom: a 36-pixel square in the middle
MASK_MARGIN = 4
OUTLINE_BOX = (6, 32, 32, 58)  # a 26-pixel square in the lower left corner


def input_picture() -> Image.Image:
    return draw_shape(SHAPE, COLOUR, BACKGROUND, BOX, SIZE)


def inpaint_mask() -> Image.Image:
    """"L" mask: 255 over the box grown by MASK_MARGIN, 0 elsewhere."""
    mask = Image.new("L", (SIZE, SIZE), 0)
    left, top, right, bottom = BOX
    m = MASK_MARGIN
    ImageDraw.Draw(mask).rectangle((left - m, top - m, right + m - 1, bottom + m - 1), fill=255)
    return mask


def make_demo_images(out: Path = REPO / "workflows" / "assets") -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = {"input.png": input_picture(), "inpaint_mask.png": inpaint_mask(),
               "outline_input.png": draw_shape("square", "green", BACKGROUND, OUTLINE_BOX, SIZE)}
    for name, picture in written.items():
        picture.save(out / name, optimize=True)
    return {name: out / name for name in written}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "workflows" / "assets", help="asset folder to write into")
    args = parser.parse_args(argv)
    for name, path in make_demo_images(args.out).items():
        print(f"{name}: {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
