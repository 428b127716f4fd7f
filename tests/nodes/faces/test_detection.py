"""detect_faces with the shipped toy RetinaFace (trained on 128² toy faces): boxes and landmarks come back in the
pixels of the image given, whatever size the detector saw it at."""
from pathlib import Path

import torch

from nodes.faces import detection
from nodes.faces.detection import detect_faces, load_detector
from training.toy_faces import DEMO_FACE, demo_picture

DETECTOR = Path(__file__).resolve().parents[3] / "workflows" / "assets" / "facedetection" / "toy-retinaface-mobile0.25.safetensors"


def test_landmarks_are_in_the_given_images_pixels_when_detection_rescales_it():
    detector = load_detector(DETECTOR, DETECTOR.name)
    half = torch.nn.functional.avg_pool2d(demo_picture()[None], 2)[0].permute(1, 2, 0)  # 64²: the face 26 px wide
    (face,) = detect_faces(detector, half, confidence=0.97, detect_size=128)  # seen at the trained 128²
    assert float((face.landmarks - DEMO_FACE.landmarks / 2).norm(dim=1).max()) < 1.5
    x1, y1, x2, y2 = face.box
    assert 0 <= x1 < DEMO_FACE.landmarks[:, 0].min() / 2 and x2 > DEMO_FACE.landmarks[:, 0].max() / 2 and y2 <= 64


def test_faces_whose_eyes_are_closer_than_the_minimum_are_left_out(monkeypatch):
    detector = load_detector(DETECTOR, DETECTOR.name)
    picture = demo_picture().permute(1, 2, 0)
    (face,) = detect_faces(detector, picture, confidence=0.97, detect_size=0)
    assert 19 < face.eye_distance < 21  # the demo face's eyes are 19.8 px apart
    monkeypatch.setattr(detection, "EYE_DISTANCE_MIN", 20.5)  # the toy detector finds no face with closer eyes
    assert detect_faces(detector, picture, confidence=0.97, detect_size=0) == []
