"""face_restore.json, as shipped: its detector (RetinaFace trained on toy faces) finds the one toy face of
``toy_face.png`` where it was drawn; its restorer has random weights, so what the saved picture shows is the
paste-back: inside the face's crop footprint the restorer's (scrambled) face, outside it the input, unchanged. A
picture without a face passes unchanged, with a warning."""
import numpy as np
import torch

from graphflow import Engine
from graphflow.events import Warning_
from graphflow.workflow import load
from nodes.faces import tiny
from nodes.faces.detection import detect_faces, load_detector
from nodes.faces.geometry import align_matrix, invert_affine, paste_mask
from tests.workflows.conftest import ASSETS, WORKFLOWS, asset
from training.toy_faces import DEMO_FACE, DEMO_PICTURE, write_demo_picture

COVERS = {"face_restore.json"}
DETECTOR = ASSETS / "facedetection" / "toy-retinaface-mobile0.25.safetensors"


def run_with_warnings(engine: Engine, workflow):
    warnings = []
    report = engine.run(workflow, on_event=lambda e: warnings.append(e.message) if isinstance(e, Warning_) else None)
    return report, warnings


def test_the_toy_detector_finds_the_drawn_face_at_its_landmarks():
    picture = torch.from_numpy(asset(DEMO_PICTURE).copy()).float() / 255
    (face,) = detect_faces(load_detector(DETECTOR, DETECTOR.name), picture, confidence=0.97, detect_size=0)
    error = (face.landmarks - DEMO_FACE.landmarks).norm(dim=1)
    assert float(error.max()) < 3.0, f"landmarks off by {error.tolist()} pixels (the face is 52 wide)"


def test_face_restore_replaces_the_face_and_keeps_everything_else(shipped):
    report, warnings = run_with_warnings(Engine(settings=shipped.engine.settings), WORKFLOWS / "face_restore.json")
    assert warnings == []
    saved = report.values["restore"]["image"].pixels[0]
    source = torch.from_numpy(asset(DEMO_PICTURE).copy()).float() / 255
    back = invert_affine(align_matrix(DEMO_FACE.landmarks))  # where the true face's crop lies in the picture
    footprint = paste_mask(back, 128, 128) > 0
    outside = ~torch.nn.functional.max_pool2d(footprint[None, None].float(), 13, 1, 6)[0, 0].bool()  # ± 6 px of slack
    assert int(outside.sum()) > 128 * 128 / 3
    assert float((saved - source).abs().amax(-1)[outside].max()) == 0.0
    centre = DEMO_FACE.landmarks.mean(0).round().long().tolist()
    assert float((saved - source).abs()[centre[1] - 8:centre[1] + 8, centre[0] - 8:centre[0] + 8].mean()) > 0.05


def test_a_picture_without_a_face_passes_unchanged_with_a_warning(shipped):
    workflow = load(WORKFLOWS / "face_restore.json").to_json()
    workflow["nodes"]["image"]["inputs"]["name"] = "input.png"  # a blue square on white
    report, warnings = run_with_warnings(Engine(settings=shipped.engine.settings), workflow)
    assert warnings == ["no face found in image 0 of 1 (confidence ≥ 0.97): passed unchanged"]
    assert np.array_equal((report.values["restore"]["image"].pixels[0].numpy() * 255).round(), asset("input.png"))


def test_the_shipped_restorer_and_picture_are_what_the_script_writes(tmp_path):
    assert tiny.write_restorer_asset(tmp_path).read_bytes() == (ASSETS / tiny.RESTORER_ASSET).read_bytes()
    assert write_demo_picture(tmp_path).read_bytes() == (ASSETS / DEMO_PICTURE).read_bytes()
