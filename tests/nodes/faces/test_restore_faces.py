"""RestoreFaces: each found face is cut out, restored and pasted back over its own footprint only; an image
without faces passes unchanged with a warning."""
import pytest
import torch

from nodes.faces import tiny
from nodes.faces.detection import Face, load_detector
from nodes.faces.geometry import apply_affine, face_template
from nodes.faces.nodes import RestoreFaces, restore_image
from nodes.faces.restorers import load_restorer
from nodes.values import Image
from tests.nodes.runctx import make_ctx, run_node


@pytest.fixture(scope="module")
def restorer(tmp_path_factory):
    path = tiny.save_state(tiny.restoreformer_state(), tmp_path_factory.mktemp("rf") / "rf.safetensors")
    return load_restorer(path, "rf.safetensors")


@pytest.fixture(scope="module")
def random_detector(tmp_path_factory):
    path = tiny.save_state(tiny.retinaface_state(), tmp_path_factory.mktemp("det") / "det.safetensors")
    return load_detector(path, "det.safetensors")


def test_a_face_is_restored_inside_its_footprint_and_nowhere_else(restorer):
    # a face the size of a 64² crop at (30, 20) of a 96×128 image
    placement = torch.tensor([[64 / 512, 0.0, 30.0], [0.0, 64 / 512, 20.0]], dtype=torch.float64)
    face = Face(box=(30.0, 20.0, 94.0, 84.0), score=0.99, landmarks=apply_affine(placement, face_template()))
    picture = torch.full((96, 128, 3), 0.5)
    restored = restore_image(picture, [face], restorer, fidelity=0.5, visibility=1.0)
    changed = (restored - picture).abs().amax(-1) > 1e-6
    rows, columns = changed.nonzero(as_tuple=True)
    assert int(rows.min()) >= 20 and int(rows.max()) < 84 and int(columns.min()) >= 30 and int(columns.max()) < 94
    assert bool(changed[52, 62]), "the middle of the face is the restorer's"
    assert torch.equal(picture, torch.full((96, 128, 3), 0.5)), "the input is not changed"
    assert torch.equal(restore_image(picture, [face], restorer, 0.5, visibility=0.0), picture)


def test_an_image_without_faces_passes_unchanged_with_a_warning(tmp_path, restorer, random_detector):
    ctx, recorder = make_ctx(tmp_path)
    pixels = torch.rand(2, 64, 80, 3)
    out = run_node(RestoreFaces, ctx, image=Image(pixels=pixels), face_restore_model=restorer,
                   face_detector=random_detector, detect_size=0)
    assert torch.equal(out.pixels, pixels)
    assert recorder.warnings == [f"no face found in image {i} of 2 (confidence ≥ 0.97): passed unchanged" for i in range(2)]
    assert recorder.progress == [(1, 2), (2, 2)]
