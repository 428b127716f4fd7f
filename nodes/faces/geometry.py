"""The geometry of face restoration: align a face to the 5-point template, cut it out, paste it back softly.

Coordinates are in pixels with pixel centres at integers (OpenCV's convention, the one the face models'
crops were made with). An affine matrix is 2×3 and maps source pixel coordinates to destination ones. Images
are (C, H, W) float tensors.
"""
from __future__ import annotations

import math

import torch

from .. import lazy_module
from ..mask import gaussian_blur

F = lazy_module("torch.nn.functional")  # torch loads on first use (see nodes/__init__.py)

FACE_SIZE = 512  # the crop GFPGAN, CodeFormer and RestoreFormer are trained on
# FFHQ's 5-point template for a 512² crop (left eye, right eye, nose tip, left and right mouth corner), as
# facexlib's FaceRestoreHelper and the WebUI use it
FACE_TEMPLATE_512 = (
    (192.98138, 239.94708), (318.90277, 240.19360), (256.63416, 314.01935),
    (201.26117, 371.41043), (313.08905, 371.15118),
)
# the grey facexlib fills outside the image with when a face is near an edge (RGB)
CROP_FILL = (132 / 255, 133 / 255, 135 / 255)


def face_template(size: int = FACE_SIZE) -> torch.Tensor:
    """The (5, 2) template landmarks for a size² crop."""
    return torch.tensor(FACE_TEMPLATE_512, dtype=torch.float64) * (size / 512)


def similarity_transform(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The 2×3 rotation + uniform scale + translation mapping ``source`` points closest to ``target`` points
    (least squares over all points; (N, 2) each, N ≥ 2)."""
    source, target = source.double(), target.double()
    x, y = source[:, 0], source[:, 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    # x' = a·x − b·y + tx,  y' = b·x + a·y + ty
    rows = torch.cat([torch.stack([x, -y, one, zero], 1), torch.stack([y, x, zero, one], 1)])
    values = torch.cat([target[:, 0], target[:, 1]])
    a, b, tx, ty = torch.linalg.lstsq(rows, values[:, None]).solution[:, 0]
    return torch.stack([torch.stack([a, -b, tx]), torch.stack([b, a, ty])])


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    full = torch.cat([matrix.double(), torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
    return torch.linalg.inv(full)[:2]


def apply_affine(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(N, 2) points through a 2×3 matrix."""
    return points.double() @ matrix[:, :2].T.double() + matrix[:, 2].double()


def warp_affine(image: torch.Tensor, matrix: torch.Tensor, height: int, width: int,
                fill: tuple[float, ...] | float = 0.0) -> torch.Tensor:
    """(C, h, w) image → (C, height, width): each output pixel p takes the image's bilinear value at
    ``matrix⁻¹·p``; where that falls outside the image, ``fill``."""
    channels, source_h, source_w = image.shape
    inverse = invert_affine(matrix)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    points = apply_affine(inverse, torch.stack([xs.flatten(), ys.flatten()], 1))
    # grid_sample's normalised coordinates (align_corners=False): pixel centre i sits at (2i + 1) / size − 1
    grid = torch.stack([(2 * points[:, 0] + 1) / source_w - 1, (2 * points[:, 1] + 1) / source_h - 1], 1)
    grid = grid.view(1, height, width, 2).to(device=image.device, dtype=torch.float32)
    with_coverage = torch.cat([image.float(), torch.ones_like(image[:1], dtype=torch.float32)])
    warped = F.grid_sample(with_coverage[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    pixels, coverage = warped[:channels], warped[channels:]
    background = torch.as_tensor(fill, dtype=torch.float32, device=image.device).reshape(-1, 1, 1)
    return (pixels + (1 - coverage) * background).to(image.dtype)


def align_matrix(landmarks: torch.Tensor, size: int = FACE_SIZE) -> torch.Tensor:
    """The matrix taking an image's face with these (5, 2) landmarks onto the template of a size² crop."""
    return similarity_transform(landmarks, face_template(size))


def crop_face(image: torch.Tensor, matrix: torch.Tensor, size: int = FACE_SIZE) -> torch.Tensor:
    """The aligned size² face crop of a (3, H, W) image (grey where the crop reaches past the image)."""
    return warp_affine(image, matrix, size, size, fill=CROP_FILL)


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Minimum over a (2·radius + 1)² square of a (H, W) mask; outside the mask counts as 0."""
    if radius <= 0:
        return mask
    padded = F.pad(mask[None, None], (radius,) * 4, value=0.0)
    return -F.max_pool2d(-padded, 2 * radius + 1, stride=1)[0, 0]


def paste_mask(matrix: torch.Tensor, height: int, width: int, size: int = FACE_SIZE) -> torch.Tensor:
    """The soft (H, W) weight a restored crop is pasted with: 1 well inside the crop's footprint in the image,
    falling smoothly to 0 before its edge. The width of the fall grows with the face (1/20 of the side of
    the footprint), so big and small faces blend alike."""
    footprint = warp_affine(torch.ones(1, size, size), matrix, height, width)[0]
    inside = erode(footprint, 1)  # drop the bilinear fringe at the footprint's border
    edge = int(math.sqrt(float(inside.sum()))) // 20
    if edge == 0:
        return inside
    return gaussian_blur(erode(inside, edge)[None], edge)[0]


def paste_face(image: torch.Tensor, face: torch.Tensor, align: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """``image`` (3, H, W) with the (3, s, s) ``face`` crop put back where ``align`` (image → crop) took it from,
    blended by :func:`paste_mask` times ``strength``. A new tensor; ``image`` is not changed."""
    _, height, width = image.shape
    back = invert_affine(align)
    restored = warp_affine(face, back, height, width)
    weight = (paste_mask(back, height, width, face.shape[-1]) * strength).to(image)
    return image * (1 - weight) + restored.to(image) * weight
