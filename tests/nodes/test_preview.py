"""Sampler previews: the latent→RGB map and preview PNGs."""
import io

import pytest
import torch
from PIL import Image as PILImage

from nodes.preview import SD_LATENT_RGB_FACTORS, latent_to_rgb, preview_png
from nodes.values import Image, Latent


def test_latent_to_rgb_shape_range_and_linear_map():
    latents = torch.randn(2, 4, 8, 6) * 3
    rgb = latent_to_rgb(latents)
    assert rgb.shape == (2, 8, 6, 3)
    assert rgb.min() >= 0 and rgb.max() <= 1
    # a latent pointing along one channel gives that channel's row of the map
    one_hot = torch.zeros(1, 4, 1, 1)
    one_hot[0, 3] = 1.0
    expected = (torch.tensor(SD_LATENT_RGB_FACTORS[3]) + 1) / 2
    assert torch.allclose(latent_to_rgb(Latent(samples=one_hot))[0, 0, 0], expected)
    assert torch.allclose(latent_to_rgb(torch.zeros(1, 4, 2, 2)), torch.full((1, 2, 2, 3), 0.5))


def test_latent_to_rgb_other_channel_counts_show_grey_structure():
    latents = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    rgb = latent_to_rgb(latents)
    assert rgb.shape == (1, 4, 4, 3)
    assert rgb[0, 0, 0].tolist() == [0.0, 0.0, 0.0] and rgb[0, 3, 3].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("source, size", [
    (torch.randn(1, 4, 64, 48), (64, 48)),
    (Latent(samples=torch.randn(4, 4, 16, 16)), (32, 32)),  # a batch becomes a 2×2 grid
    (Image(pixels=torch.rand(1, 600, 300, 3)), (256, 128)),  # shrunk to fit 256
    (torch.rand(1, 20, 30, 3), (20, 30)),  # never enlarged
])
def test_preview_png_is_a_small_png(source, size):
    data = preview_png(source, max_size=256)
    picture = PILImage.open(io.BytesIO(data))
    assert picture.format == "PNG" and picture.mode == "RGB"
    assert (picture.height, picture.width) == size


def test_preview_png_rejects_other_values():
    with pytest.raises(ValueError, match="preview_png"):
        preview_png(torch.rand(3, 3))
