"""controlnet_canny.json does what the README's Workflows table says: the Canny edges it saves are the outline of
outline_input.png's square, and toy-shapes-canny fed with them puts the prompt's red circle on that outline, where
the same seed without the ControlNet (strength 0) draws it elsewhere."""
import json

import numpy as np
from PIL import Image as PILImage

from tests.workflows.conftest import WORKFLOWS, asset
from training.measure import classify, foreground_mask, largest_blob

COVERS = {"controlnet_canny.json"}
NAME = "controlnet_canny.json"
BOX = (6, 32, 32, 58)  # left, top, right, bottom of outline_input.png's square (scripts/make_demo_images.py)
LANDS_WITHIN = 6  # pixels between centres: training/train_controlnet.py's measure


def blob_centre(picture: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(largest_blob(foreground_mask(picture.astype(np.float32) / 255)))
    return np.array([(xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2])


OUTLINE_CENTRE = np.array([(BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2])


def test_the_input_is_the_square_the_script_draws():
    assert classify(asset("outline_input.png")) == ("green", "square")
    assert np.abs(blob_centre(asset("outline_input.png")) - OUTLINE_CENTRE).max() <= 0.5


def test_the_saved_edges_are_the_input_squares_outline(shipped):
    edges = shipped.picture(NAME, "save_edges")[..., 0] > 127
    left, top, right, bottom = BOX
    ys, xs = np.nonzero(edges)
    assert len(xs) and xs.min() >= left - 2 and xs.max() <= right + 1 and ys.min() >= top - 2 and ys.max() <= bottom + 1
    assert not edges[top + 3:bottom - 3, left + 3:right - 3].any()  # nothing inside the square
    for side in (edges[top + 3:bottom - 3, left - 2:left + 2], edges[top + 3:bottom - 3, right - 2:right + 2]):
        assert side.any(axis=1).all()  # both vertical sides, unbroken
    for side in (edges[top - 2:top + 2, left + 3:right - 3], edges[bottom - 2:bottom + 2, left + 3:right - 3]):
        assert side.any(axis=0).all()


def test_the_circle_lands_on_the_outline_and_not_without_the_controlnet(shipped):
    controlled = shipped.picture(NAME, "save")
    assert classify(controlled) == ("red", "circle")
    assert np.hypot(*(blob_centre(controlled) - OUTLINE_CENTRE)) <= LANDS_WITHIN
    workflow = json.loads((WORKFLOWS / NAME).read_text())
    workflow["nodes"]["control"]["inputs"]["strength"] = 0.0
    [image] = shipped.engine.run(workflow).outputs["save"]["images"]
    with PILImage.open(shipped.engine.settings.output_dir / image["filename"]) as png:
        uncontrolled = np.asarray(png.convert("RGB"))
    assert classify(uncontrolled)[0] == "red"
    assert np.hypot(*(blob_centre(uncontrolled) - OUTLINE_CENTRE)) > LANDS_WITHIN
