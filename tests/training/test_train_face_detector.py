"""training/train_face_detector.py and training/toy_faces.py: the training targets are RetinaFace's own encoding
(facexlib's decoder turns them back into the face's box and landmarks), toy faces put their landmarks on the
template, and a few steps make a file LoadFaceDetector reads."""
import dataclasses

import pytest
import torch

from nodes.faces.geometry import align_matrix, apply_affine, face_template
from training.toy_faces import DEMO_FACE, random_picture
from training.train_face_detector import SIZE, Config, targets, train


@pytest.fixture(autouse=True)
def keep_thread_count():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def priors():
    from facexlib.detection.retinaface import generate_config
    from facexlib.detection.retinaface_utils import PriorBox

    return PriorBox(generate_config("mobile0.25"), image_size=(SIZE, SIZE)).forward()


def test_targets_decode_back_to_the_faces_box_and_landmarks_with_facexlibs_decoder():
    from facexlib.detection.retinaface_utils import decode, decode_landm

    _, faces = random_picture(SIZE, torch.Generator().manual_seed(4), face_chance=1.0)
    anchors = priors()
    labels, boxes, landmarks = targets(faces, anchors)
    positive = labels == 1
    assert int(positive.sum()) >= 1
    decoded = decode(boxes[positive], anchors[positive], [0.1, 0.2]) * SIZE
    assert torch.allclose(decoded, torch.tensor(faces[0].box, dtype=torch.float32).expand_as(decoded), atol=1e-3)
    points = decode_landm(landmarks[positive], anchors[positive], [0.1, 0.2]) * SIZE
    assert torch.allclose(points, faces[0].landmarks.float().flatten().expand_as(points), atol=1e-3)


def test_a_picture_without_a_face_has_no_positive_anchor():
    labels, _, _ = targets([], priors())
    assert int(labels.sum()) == 0


def test_a_toy_faces_landmarks_are_the_template_through_its_placement():
    assert torch.allclose(apply_affine(align_matrix(DEMO_FACE.landmarks), DEMO_FACE.landmarks), face_template(), atol=1e-6)


def test_a_short_run_writes_a_detector_file_that_loads_and_the_same_seed_writes_the_same_file(tmp_path):
    from nodes.faces.detection import load_detector

    short = dataclasses.replace(Config(), steps=2, batch=2, held_out=2)
    results = train(short, tmp_path / "det.safetensors")
    assert {"found", "missed", "false_detections"} <= set(results)
    assert load_detector(tmp_path / "det.safetensors", "det.safetensors").network.cfg["name"] == "mobilenet0.25"
    train(short, tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "det.safetensors").read_bytes()
