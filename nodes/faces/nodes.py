"""The face restoration nodes: LoadFaceRestoreModel, LoadFaceDetector, RestoreFaces.

RestoreFaces does what the WebUI's "Restore faces" and ComfyUI's FaceRestoreCFWithModel do: find the faces,
align each to the 5-point template of a 512² crop, restore the crop, and paste it back with a soft-edged
square mask (the WebUI also offers a face-parsing mask, which needs another model: not here).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.node import Input, node

from ..loaders import pick_device
from ..search import file_fingerprint, files_in, model_file, preflight_check, search_folders
from ..values import IMAGE, Image
from .detection import DETECTOR_FOLDER, FACE_DETECTOR, FaceDetector, detect_faces, load_detector
from .geometry import FACE_SIZE, align_matrix, crop_face, paste_face
from .restorers import FACE_RESTORE_MODEL, RESTORER_FOLDER, FaceRestoreModel, load_restorer, restore_crop

SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
KINDS = {RESTORER_FOLDER: "face restoration model", DETECTOR_FOLDER: "face detector"}


def model_path(folder: str, name: str, settings: Any) -> Path:
    return model_file(name, search_folders(settings, folder), SUFFIXES, KINDS[folder])


def _file_checks(folder: str):
    """The fingerprint and preflight of a loader of files in ``<models_dir>/<folder>``."""
    def fingerprint(literals: dict[str, Any], settings: Any) -> str:
        return file_fingerprint(model_path(folder, literals["name"], settings))

    def preflight(literals: dict[str, Any], settings: Any) -> list:
        return preflight_check(lambda: model_path(folder, literals["name"], settings),
                               lambda: files_in(search_folders(settings, folder), SUFFIXES))

    return {"fingerprint": fingerprint, "preflight": preflight}


@node(outputs={"face_restore_model": FACE_RESTORE_MODEL}, category="faces", pool="model", **_file_checks(RESTORER_FOLDER))
def LoadFaceRestoreModel(
    name: str = Field(description="file in <models_dir>/facerestore_models (or an asset folder's), e.g. GFPGANv1.4.pth, codeformer-v0.1.0.pth"),
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto",
    *,
    ctx: RunContext,
) -> FaceRestoreModel:
    """Load a face restoration model (GFPGAN, RestoreFormer, CodeFormer) with spandrel.

    The architecture is recognised from the weights. CodeFormer loads only when the ``spandrel_extra_arches``
    package is installed (``pip install 'graphflow[codeformer]'``; CodeFormer's license allows non-commercial use
    only); without it a CodeFormer file is refused with that instruction."""
    return load_restorer(model_path(RESTORER_FOLDER, name, ctx.settings), name, pick_device(device))


@node(outputs={"face_detector": FACE_DETECTOR}, category="faces", pool="model", **_file_checks(DETECTOR_FOLDER))
def LoadFaceDetector(
    name: str = Field("detection_Resnet50_Final.pth",
                      description="RetinaFace weights in <models_dir>/facedetection: facexlib's detection_Resnet50_Final.pth or detection_mobilenet0.25_Final.pth"),
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto",
    *,
    ctx: RunContext,
) -> FaceDetector:
    """Load facexlib's RetinaFace face detector (ResNet-50 or MobileNet-0.25 backbone, read from the weights).

    The file is never downloaded: without it the node fails and names the folder. Needs the ``faces`` extra
    (``pip install 'graphflow[faces]'``, which installs facexlib)."""
    return load_detector(model_path(DETECTOR_FOLDER, name, ctx.settings), name, pick_device(device))


def restore_image(picture: torch.Tensor, faces: list, model: FaceRestoreModel, fidelity: float,
                  visibility: float) -> torch.Tensor:
    """One (H, W, 3) image with each face restored and pasted back, in turn."""
    canvas = picture.permute(2, 0, 1)
    for face in faces:
        align = align_matrix(face.landmarks, FACE_SIZE)
        restored = restore_crop(model, crop_face(canvas, align, FACE_SIZE), fidelity)
        canvas = paste_face(canvas, restored, align, visibility)
    return canvas.permute(1, 2, 0).clamp(0, 1)


@node(outputs={"image": IMAGE}, category="faces")
def RestoreFaces(
    image: Image = Input(IMAGE),
    face_restore_model: FaceRestoreModel = Input(FACE_RESTORE_MODEL),
    face_detector: FaceDetector = Input(FACE_DETECTOR),
    fidelity: float = Field(0.5, ge=0.0, le=1.0,
                            description="CodeFormer's weight w: 0 restores the most, 1 keeps closest to the input (other models ignore it)"),
    visibility: float = Field(1.0, ge=0.0, le=1.0, description="how much of the restored face is blended in (the WebUI's visibility)"),
    confidence: float = Field(0.97, gt=0.0, lt=1.0, description="the detector's score a face needs (facexlib's default)"),
    detect_size: int = Field(640, ge=0, le=4096,
                             description="the image's shorter side is scaled to this for detection (0: as it is)"),
    *,
    ctx: RunContext,
) -> Image:
    """Find the faces in each image, restore each one, and paste it back with a soft edge.

    Each face is aligned by its 5 landmarks to the FFHQ template of a 512×512 crop, restored by the model, and
    put back through the inverse transform with a mask that fades over 1/20 of the face's size. An image with
    no face passes unchanged, with a warning. The output has the input's size."""
    results = []
    for index, picture in enumerate(image.pixels):
        faces = detect_faces(face_detector, picture, confidence, detect_size)
        if not faces:
            ctx.warn(f"no face found in image {index} of {image.batch_size} (confidence ≥ {confidence}): passed unchanged")
            results.append(picture)
        else:
            results.append(restore_image(picture, faces, face_restore_model, fidelity, visibility))
        ctx.progress(index + 1, image.batch_size)
    return Image(pixels=torch.stack(results).to(image.pixels.dtype))
