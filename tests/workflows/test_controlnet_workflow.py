"""controlnet_canny.json does what the README's Workflows table says: the Canny edges it saves are the input
picture's outline, and the ControlNet fed with them changes the picture (strength 0 gives exactly the picture
without it)."""
import json

import numpy as np
from PIL import Image as PILImage

from tests.workflows.conftest import WORKFLOWS

COVERS = {"controlnet_canny.json"}
NAME = "controlnet_canny.json"
BOX = (14, 14, 50, 50)  # the square of workflows/assets/input.png (scripts/make_demo_images.py)


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


def test_the_controlnet_changes_the_picture(shipped):
    workflow = json.loads((WORKFLOWS / NAME).read_text())
    workflow["nodes"]["control"]["inputs"]["strength"] = 0.0
    without = shipped.engine.run(workflow)
    [image] = without.outputs["save"]["images"]
    with PILImage.open(shipped.engine.settings.output_dir / image["filename"]) as png:
        uncontrolled = np.asarray(png.convert("RGB")).astype(int)
    controlled = shipped.picture(NAME, "save").astype(int)
    assert np.abs(controlled - uncontrolled).max() > 10
