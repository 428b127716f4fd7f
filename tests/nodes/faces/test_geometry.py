"""nodes.faces.geometry: alignment to the 5-point template, crops, and the soft paste-back, on synthetic images
whose face landmarks are known exactly."""
import math

import pytest
import torch

from nodes.faces.geometry import (CROP_FILL, FACE_SIZE, align_matrix, apply_affine, crop_face, face_template,
                                  paste_face, paste_mask, similarity_transform)


def rotation(angle: float, scale: float, shift: tuple[float, float]) -> torch.Tensor:
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return torch.tensor([[c, -s, shift[0]], [s, c, shift[1]]], dtype=torch.float64)


def face_landmarks(angle=0.3, scale=0.2, shift=(60.0, 40.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """A face in an image: the template, shrunk, turned and moved by a known transform (template → image)."""
    placement = rotation(angle, scale, shift)
    return apply_affine(placement, face_template()), placement


def dots_at(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A (3, H, W) black image with a small Gaussian dot at each of (up to 3) points, point k in channel k (so
    the crop's dots can be told apart)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    image = torch.zeros(3, height, width, dtype=torch.float64)
    for index, (x, y) in enumerate(points.tolist()):
        image[index] += torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 2.0)
    return image.float()


def test_a_similarity_transform_is_recovered_exactly_from_five_points():
    placement = rotation(-0.7, 1.8, (12.5, -3.0))
    source = torch.tensor([[0.0, 0.0], [10.0, 1.0], [3.0, 7.0], [-4.0, 2.0], [5.0, -6.0]])
    found = similarity_transform(source, apply_affine(placement, source))
    assert torch.allclose(found, placement, atol=1e-9)


def test_noisy_landmarks_give_the_least_squares_fit():
    source = face_template()
    target = apply_affine(rotation(0.1, 0.5, (3.0, 4.0)), source) + torch.tensor(
        [[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5], [0.2, 0.2]], dtype=torch.float64)
    found = similarity_transform(source, target)
    residual = (apply_affine(found, source) - target).square().sum()
    for nudge in (rotation(0.01, 1.0, (0, 0)), rotation(0, 1.01, (0, 0)), rotation(0, 1, (0.1, 0))):
        nudged = torch.cat([nudge[:, :2] @ found[:, :2], (nudge[:, :2] @ found[:, 2:]) + nudge[:, 2:]], 1)
        assert (apply_affine(nudged, source) - target).square().sum() > residual


def test_the_aligned_crop_puts_each_landmark_on_the_template():
    landmarks, _ = face_landmarks()
    image = dots_at(landmarks[:3], 260, 260)  # eyes and nose; the crop lies inside the image
    crop = crop_face(image, align_matrix(landmarks))
    assert crop.shape == (3, FACE_SIZE, FACE_SIZE)
    template = face_template()
    for index in range(3):
        dot = crop[index].double()
        ys, xs = torch.meshgrid(torch.arange(FACE_SIZE), torch.arange(FACE_SIZE), indexing="ij")
        centre = torch.stack([(xs * dot).sum(), (ys * dot).sum()]) / dot.sum()
        assert torch.linalg.vector_norm(centre - template[index]) <= 0.5  # crop pixels (image ones × 5)


def test_a_crop_reaching_past_the_image_is_grey_there():
    landmarks, _ = face_landmarks(angle=0.0, scale=0.2, shift=(-20.0, -20.0))  # the face's box starts off-image
    crop = crop_face(torch.zeros(3, 100, 100), align_matrix(landmarks))
    assert torch.allclose(crop[:, 0, 0], torch.tensor(CROP_FILL))
    assert float(crop[:, -1, -1].abs().max()) == 0.0  # the crop's far corner is inside the (black) image


def test_pasting_the_unchanged_crop_back_keeps_the_image():
    torch.manual_seed(0)
    landmarks, _ = face_landmarks(scale=0.3)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 20, 25), size=(200, 250), mode="bilinear")[0]
    align = align_matrix(landmarks)
    pasted = paste_face(smooth, crop_face(smooth, align), align)
    assert (pasted - smooth).abs().max() < 0.02  # only the crop's resampling there and back


def test_the_pasted_face_replaces_the_inside_and_fades_out_before_the_crops_edge():
    landmarks, placement = face_landmarks(angle=0.0, scale=0.25, shift=(40.0, 30.0))  # crop footprint 128² at (40, 30)
    image = torch.zeros(3, 200, 220)
    pasted = paste_face(image, torch.ones(3, FACE_SIZE, FACE_SIZE), align_matrix(landmarks))
    centre = apply_affine(placement, torch.tensor([[256.0, 256.0]]))[0].round().long().tolist()
    assert torch.allclose(pasted[:, centre[1], centre[0]], torch.ones(3))
    assert float(pasted[:, :, :39].abs().max()) == 0.0 and float(pasted[:, :29, :].abs().max()) == 0.0
    assert float(pasted[:, :, 169:].abs().max()) == 0.0 and float(pasted[:, 159:, :].abs().max()) == 0.0
    row = pasted[0, centre[1], 40:105]
    assert 0.0 < float(row[3]) < 1.0 and bool((row[1:] >= row[:-1] - 1e-6).all()), "a rising soft edge"
    assert image.abs().max() == 0, "the input is not changed"


@pytest.mark.parametrize("side", [64, 256])
def test_the_soft_edge_is_a_twentieth_of_the_faces_side(side):
    back = rotation(0.0, side / FACE_SIZE, (10.0, 10.0))  # crop → image
    mask = paste_mask(back, side + 20, side + 20)
    row = mask[10 + side // 2, :]
    rising = int(((row > 0.01) & (row < 0.99)).sum()) / 2
    assert side / 20 * 0.8 <= rising <= side / 20 * 2.5
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0


def test_strength_zero_leaves_the_image_as_it_was():
    landmarks, _ = face_landmarks()
    image = torch.rand(3, 160, 200)
    assert torch.equal(paste_face(image, torch.ones(3, FACE_SIZE, FACE_SIZE), align_matrix(landmarks), 0.0), image)
