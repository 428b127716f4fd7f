"""Synthetic "toy faces" with exactly known 5-point landmarks: what the example face detector is trained on.

A toy face is drawn in the coordinates of the 512² face crop (an oval of skin, two eyes, a nose, a mouth, placed
on FFHQ's 5-point template), then put into the picture by a similarity transform (scale, turn, shift), so its
landmarks in the picture are the template through that transform. Backgrounds are smooth colour fields with
ovals that are not faces (a detector must not fire on any oval). Pictures are (3, H, W) RGB in [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from nodes.faces.geometry import apply_affine, face_template, invert_affine

# In 512² crop coordinates: (centre x, centre y, radius x, radius y) of the parts
FACE_OVAL = (256.0, 300.0, 165.0, 215.0)
EYE = (30.0, 16.0)
IRIS = 11.0
NOSE = (14.0, 24.0)
MOUTH = (58.0, 13.0)


@dataclass(frozen=True)
class ToyFace:
    placement: torch.Tensor  # 2×3, crop → picture
    skin: tuple[float, float, float]

    @property
    def landmarks(self) -> torch.Tensor:
        return apply_affine(self.placement, face_template())

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The oval's bounding box in the picture (x1, y1, x2, y2)."""
        cx, cy, rx, ry = FACE_OVAL
        angles = torch.linspace(0, 2 * math.pi, 73, dtype=torch.float64)
        rim = torch.stack([cx + rx * torch.cos(angles), cy + ry * torch.sin(angles)], 1)
        points = apply_affine(self.placement, rim)
        return (float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max()))


def placement(width: float, angle: float, centre: tuple[float, float]) -> torch.Tensor:
    """The crop → picture transform of a face whose oval is ``width`` pixels wide, turned by ``angle``, with the
    oval's centre at ``centre``."""
    scale = width / (2 * FACE_OVAL[2])
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    ox, oy = FACE_OVAL[:2]
    return torch.tensor([[c, -s, centre[0] - (c * ox - s * oy)], [s, c, centre[1] - (s * ox + c * oy)]], dtype=torch.float64)


def _oval_alpha(points: torch.Tensor, oval: tuple[float, float, float, float], pixels_per_unit: float) -> torch.Tensor:
    """Coverage of an axis-aligned oval (in crop units) at (N, 2) crop points, with a one-picture-pixel soft edge."""
    cx, cy, rx, ry = oval
    radius = torch.sqrt(((points[:, 0] - cx) / rx) ** 2 + ((points[:, 1] - cy) / ry) ** 2)
    distance = (radius - 1) * min(rx, ry) * pixels_per_unit  # roughly, in picture pixels
    return (0.5 - distance).clamp(0, 1).float()


def crop_points(face_placement: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, float]:
    """Every picture pixel's position in crop coordinates (H·W, 2), and picture pixels per crop unit."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    points = apply_affine(invert_affine(face_placement), torch.stack([xs.flatten(), ys.flatten()], 1))
    return points, float(torch.linalg.vector_norm(face_placement[:, 0]))


def draw_face(picture: torch.Tensor, face: ToyFace) -> torch.Tensor:
    """``picture`` with the toy face drawn over it (a new tensor)."""
    _, height, width = picture.shape
    points, scale = crop_points(face.placement, height, width)
    template = face_template()
    skin = torch.tensor(face.skin)
    out = picture.clone().view(3, -1)

    def paint(oval, colour):
        alpha = _oval_alpha(points, oval, scale)
        out.mul_(1 - alpha).add_(alpha * torch.as_tensor(colour, dtype=torch.float32)[:, None])

    paint(FACE_OVAL, skin)
    for eye in template[:2].tolist():
        paint((*eye, *EYE), (0.95, 0.95, 0.95))
        paint((*eye, IRIS, IRIS), (0.1, 0.08, 0.05))
    paint((*template[2].tolist(), *NOSE), skin * 0.75)
    mouth = template[3:].mean(0).tolist()
    paint((*mouth, *MOUTH), (0.55, 0.1, 0.12))
    return out.view(3, height, width)


def background(height: int, width: int, generator: torch.Generator, ovals: int = 3) -> torch.Tensor:
    """A smooth random colour field with a few plain ovals (not faces) on it."""
    field = torch.rand(1, 3, 4, 4, generator=generator)
    picture = F.interpolate(field, size=(height, width), mode="bicubic", align_corners=False)[0].clamp(0, 1)
    for _ in range(ovals):
        u = torch.rand(5, generator=generator).tolist()
        decoy = ToyFace(placement(8 + u[0] * 50, u[1] * 3, (u[2] * width, u[3] * height)), (u[4], 1 - u[4], 0.5))
        cx, cy, rx, ry = FACE_OVAL
        points, scale = crop_points(decoy.placement, height, width)
        alpha = _oval_alpha(points, (cx, cy, rx * (0.6 + u[1] * 0.4), ry), scale)
        picture = (picture.view(3, -1) * (1 - alpha) + alpha * torch.tensor(decoy.skin)[:, None]).view(3, height, width)
    return picture


def random_face(height: int, width: int, generator: torch.Generator, sizes: tuple[float, float] = (20.0, 64.0)) -> ToyFace:
    u = torch.rand(7, generator=generator).tolist()
    face_width = sizes[0] + u[0] * (sizes[1] - sizes[0])
    margin = face_width * 0.4
    centre = (margin + u[1] * (width - 2 * margin), margin + u[2] * (height - 2 * margin))
    skin = (0.55 + 0.4 * u[4], 0.4 + 0.3 * u[5], 0.3 + 0.25 * u[6])
    return ToyFace(placement(face_width, (u[3] - 0.5) * 0.7, centre), skin)


def random_picture(size: int, generator: torch.Generator, face_chance: float = 0.8) -> tuple[torch.Tensor, list[ToyFace]]:
    """A size² picture with one toy face (with probability ``face_chance``) or none, and its faces."""
    picture = background(size, size, generator)
    if float(torch.rand(1, generator=generator)) >= face_chance:
        return picture, []
    face = random_face(size, size, generator)
    return draw_face(picture, face), [face]


DEMO_PICTURE = "toy_face.png"
DEMO_SIZE = 128
DEMO_SEED = 7
DEMO_FACE = ToyFace(placement(width=52.0, angle=0.15, centre=(70.0, 62.0)), skin=(0.85, 0.62, 0.48))


def demo_picture() -> torch.Tensor:
    """The example workflow's input: the demo face on a fixed background, (3, 128, 128)."""
    generator = torch.Generator().manual_seed(DEMO_SEED)
    return draw_face(background(DEMO_SIZE, DEMO_SIZE, generator), DEMO_FACE)


def write_demo_picture(root: Path) -> Path:
    from nodes.pixels import pixels_to_pil

    path = Path(root) / DEMO_PICTURE
    pixels_to_pil(demo_picture().permute(1, 2, 0)[None])[0].save(path)
    return path
