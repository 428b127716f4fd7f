"""Finding faces: facexlib's RetinaFace (ResNet-50 or MobileNet-0.25), with its weights from the models folder.

facexlib's own ``init_detection_model`` downloads the weights when the file is missing; graphflow never calls
it. The network is built from facexlib's class and the file in ``<models_dir>/facedetection/`` (the name
ComfyUI's face restoration nodes use; e.g. ``detection_Resnet50_Final.pth`` or
``detection_mobilenet0.25_Final.pth`` from facexlib's releases) is loaded into it strictly: every tensor must
fit, or the file is refused with what is wrong.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphflow.errors import NodeInputError

from ..values import SocketValue, digest_of, nbytes_of
from .requirements import require_package

FACE_DETECTOR = "FACE_DETECTOR"
DETECTOR_FOLDER = "facedetection"
# the first key of each backbone, as facexlib's RetinaFace names its modules
NETWORKS = {"body.conv1.weight": "resnet50", "body.stage1.0.0.weight": "mobile0.25"}
EYE_DISTANCE_MIN = 5.0  # pixels: closer eyes are a side view or a face too small to restore (facexlib's threshold)


@dataclass(frozen=True)
class Face:
    """A detected face: its box (x1, y1, x2, y2), the detector's score and (5, 2) landmarks (left eye, right
    eye, nose, left and right mouth corner), in the pixels of the image it was found in."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: torch.Tensor

    @property
    def eye_distance(self) -> float:
        return float(torch.linalg.vector_norm(self.landmarks[0] - self.landmarks[1]))


@dataclass(frozen=True, eq=False)
class FaceDetector(SocketValue):
    """FACE_DETECTOR: a facexlib RetinaFace network with its weights, and the file name."""

    network: Any
    name: str

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.network)

    def __graphflow_digest__(self) -> str:
        return digest_of((self.name, self.network))


def detector_network(state: dict[str, torch.Tensor], name: str) -> str:
    for key, network in NETWORKS.items():
        if key in state:
            return network
    raise NodeInputError("name", f"{name!r} is not a RetinaFace detector (neither backbone's keys are in it)",
                         "facexlib's detection_Resnet50_Final.pth or detection_mobilenet0.25_Final.pth", name)


def retinaface(network: str, device: torch.device | str = "cpu", phase: str = "test"):
    """A fresh facexlib RetinaFace ("resnet50" or "mobile0.25"), built without facexlib's deprecation noise."""
    with warnings.catch_warnings():
        # facexlib's import scripts a function with the deprecated torch.jit, and its ResNet-50 asks torchvision
        # for resnet50(pretrained=False), a deprecated spelling
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        from facexlib.detection.retinaface import RetinaFace

        return RetinaFace(network_name=network, phase=phase, device=torch.device(device))


def load_detector(path: Path, name: str, device: torch.device | str = "cpu") -> FaceDetector:
    """facexlib's RetinaFace with the weights of ``path``; NodeInputErrors on ``name`` for every way it fails."""
    require_package("facexlib", "the face detector (RetinaFace)")
    import spandrel

    try:  # spandrel's reader: .pth through a restricted unpickler, .safetensors
        state = spandrel.ModelLoader().load_state_dict_from_file(path)
    except Exception as exc:
        raise NodeInputError("name", f"could not read {name!r} as a weights file: {exc}",
                             "a .pth or .safetensors state dict", name) from None
    state = {key.removeprefix("module."): value for key, value in state.items()}  # saved from DataParallel
    network = retinaface(detector_network(state, name), device)
    expected = network.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        problems = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                    f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                    f"{len(wrong)} of another shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} "
                    f"for {tuple(expected[wrong[0]].shape)})" if wrong else ""]
        raise NodeInputError("name", f"{name!r} does not fit RetinaFace {network.cfg['name']}: "
                             + ", ".join(p for p in problems if p) + " tensors",
                             "facexlib's RetinaFace weights, every tensor", name)
    network.load_state_dict({k: v.float() for k, v in state.items()})
    return FaceDetector(network=network.eval(), name=name)


def detect_faces(detector: FaceDetector, pixels: torch.Tensor, confidence: float, detect_size: int) -> list[Face]:
    """The faces in one (H, W, 3) image in [0, 1], best score first. The image is scaled so that its shorter
    side is ``detect_size`` (0: as it is) for the detector; boxes and landmarks are in the image's own pixels.
    Faces whose eyes are under 5 pixels apart are left out (side views, specks)."""
    height, width = pixels.shape[:2]
    scale = 1.0 if detect_size == 0 else detect_size / min(height, width)
    chw = pixels.permute(2, 0, 1)[None].float()
    if scale != 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        chw = torch.nn.functional.interpolate(chw, size=size, mode="bicubic", align_corners=False, antialias=True)
    # RetinaFace takes OpenCV's layout: BGR, 0..255, (H, W, 3)
    bgr = (chw[0].clamp(0, 1) * 255).flip(0).permute(1, 2, 0).cpu().numpy().astype(np.float32)
    with torch.no_grad():
        found = detector.network.detect_faces(bgr, conf_threshold=confidence)
    x_scale, y_scale = width / bgr.shape[1], height / bgr.shape[0]  # detector pixels → the image's
    faces = []
    for row in np.asarray(found, dtype=np.float64).reshape(-1, 15):
        landmarks = torch.tensor(row[5:15].reshape(5, 2) * [x_scale, y_scale])
        box = (row[0] * x_scale, row[1] * y_scale, row[2] * x_scale, row[3] * y_scale)
        face = Face(box=tuple(float(v) for v in box), score=float(row[4]), landmarks=landmarks)
        if face.eye_distance >= EYE_DISTANCE_MIN:
            faces.append(face)
    return faces

