"""nodes.pixels: tensor ↔ PIL conversion and grids."""
import numpy as np
import torch

from nodes.pixels import image_grid, normalise, pil_to_pixels, pixels_to_pil


def test_image_grid_layout():
    cells = torch.stack([torch.full((2, 3, 1), float(i)) for i in range(1, 4)])
    grid = image_grid(cells)  # 3 cells → 2×2 with one empty cell
    assert grid.shape == (4, 6, 1)
    assert grid[0, 0, 0] == 1 and grid[0, 3, 0] == 2 and grid[2, 0, 0] == 3 and grid[2, 3, 0] == 0


def test_pixels_round_trip_through_8_bit_pictures():
    pixels = torch.tensor([[[[0.0, 0.5, 1.0], [0.2, 0.4, 0.6]]]])
    (picture,) = pixels_to_pil(pixels)
    assert picture.mode == "RGB" and picture.size == (2, 1)
    assert np.asarray(picture).tolist() == [[[0, 128, 255], [51, 102, 153]]]
    assert torch.allclose(pil_to_pixels([picture]), pixels, atol=0.5 / 255)


def test_normalise_stretches_and_keeps_constants_grey():
    values = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    assert normalise(values, dims=(1,)).tolist() == [[0.0, 1.0], [0.5, 0.5]]
