"""Face restoration models (GFPGAN, RestoreFormer, CodeFormer) read by spandrel, and one call to run any of them.

spandrel recognises the architecture from the file's keys. GFPGAN and RestoreFormer are in spandrel itself
(MIT/Apache code). CodeFormer's code is under the S-Lab License 1.0 (non-commercial use only), so spandrel keeps
it in the separate ``spandrel_extra_arches`` package: graphflow recognises a CodeFormer file without it, and loads
it only when the user has installed that package (``pip install 'graphflow[codeformer]'``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from graphflow.errors import NodeInputError

from ..upscale import SpandrelModel
from .requirements import installed, require_package

FACE_RESTORE_MODEL = "FACE_RESTORE_MODEL"
RESTORER_FOLDER = "facerestore_models"
BUILTIN_ARCHITECTURES = ("GFPGAN", "RestoreFormer")
# what a CodeFormer state dict holds (spandrel_extra_arches' detection keys), to name the missing package
CODEFORMER_KEYS = ("position_emb", "idx_pred_layer.1.weight", "quantize.embedding.weight")


@dataclass(frozen=True, eq=False)
class FaceRestoreModel(SpandrelModel):
    """FACE_RESTORE_MODEL: a spandrel ``ImageModelDescriptor`` of a face model and its file name."""

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.id)


def face_registry():
    """A spandrel registry of the face architectures alone: GFPGAN, RestoreFormer, and CodeFormer when
    ``spandrel_extra_arches`` is installed (graphflow never adds it to spandrel's main registry, so the
    upscaler loader's choice of architectures does not change)."""
    import spandrel

    registry = spandrel.ArchRegistry()
    registry.add(*(spandrel.MAIN_REGISTRY.get(name) for name in BUILTIN_ARCHITECTURES))
    if installed("spandrel_extra_arches"):
        with warnings.catch_warnings():  # its CodeFormer module uses torch.jit.script, deprecated in torch 2.14
            warnings.simplefilter("ignore", FutureWarning)
            from spandrel_extra_arches import EXTRA_REGISTRY

        registry.add(EXTRA_REGISTRY.get("CodeFormer"))
    return registry


def supported_architectures() -> list[str]:
    return [support.architecture.id for support in face_registry().architectures()]


def load_restorer(path: Path, name: str, device: torch.device | str = "cpu") -> FaceRestoreModel:
    """Read ``path`` with spandrel into a face model; every way that can fail is a NodeInputError on ``name``."""
    import spandrel

    loader = spandrel.ModelLoader(device=device, registry=face_registry())
    try:
        state = loader.load_state_dict_from_file(path)
    except Exception as exc:  # corrupt file, pickle with forbidden objects, not a state dict at all
        raise NodeInputError("name", f"could not read {name!r} as a model file: {exc}",
                             "a .pth or .safetensors state dict", name) from None
    if all(key in state for key in CODEFORMER_KEYS):
        require_package("spandrel_extra_arches", f"{name!r} is a CodeFormer model, which", received=name)
    try:
        descriptor = loader.load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise NodeInputError("name", f"{name!r} is not a face restoration model spandrel recognises",
                             f"a model of one of: {', '.join(supported_architectures())}", name) from None
    except Exception as exc:  # the keys named an architecture but the tensors do not fit it
        raise NodeInputError("name", f"{name!r} looks like a {_guess(state)} model but does not load: {exc}",
                             "an unmodified GFPGAN, RestoreFormer or CodeFormer file", name) from None
    return FaceRestoreModel(descriptor=descriptor.eval(), name=name)


def _guess(state: dict) -> str:
    for support in face_registry().architectures():
        if support.architecture.detect(state):
            return support.architecture.id
    return "face"


def _to_signed(crop: torch.Tensor) -> torch.Tensor:
    return crop * 2 - 1


def _from_signed(output: torch.Tensor) -> torch.Tensor:
    return (output + 1) / 2


# architecture → how to run it on a (1, 3, 512, 512) crop in [0, 1] with a fidelity weight; GFPGAN and CodeFormer
# work in [-1, 1] and return (image, extras); spandrel's RestoreFormer call converts by itself
RUNNERS: dict[str, Callable[[Any, torch.Tensor, float], torch.Tensor]] = {
    "GFPGAN": lambda d, crop, _: _from_signed(d.model(_to_signed(crop), return_rgb=False)[0]),
    "CodeFormer": lambda d, crop, fidelity: _from_signed(d.model(_to_signed(crop), weight=fidelity, adain=True)[0]),
    "RestoreFormer": lambda d, crop, _: d(crop),
}


def restore_crop(model: FaceRestoreModel, crop: torch.Tensor, fidelity: float) -> torch.Tensor:
    """The restored (3, 512, 512) face of an aligned (3, 512, 512) crop in [0, 1]. ``fidelity`` is CodeFormer's
    weight w (0: the most restoration from its codebook, 1: closest to the input); the others ignore it."""
    descriptor = model.descriptor
    run = RUNNERS[model.architecture]
    with torch.no_grad():
        output = run(descriptor, crop[None].to(device=descriptor.device, dtype=descriptor.dtype), fidelity)
    return output[0].float().clamp(0, 1).to(crop.device)
