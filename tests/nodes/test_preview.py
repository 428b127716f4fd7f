"""Previews and animations: latent→RGB map, preview PNGs, channel views, SaveAnimation files."""
import io

import pytest
import torch
from PIL import Image as PILImage

from nodes.preview import (SD_LATENT_RGB_FACTORS, LatentChannels, SaveAnimation, image_grid, latent_to_rgb,
                           preview_png)
from nodes.values import Image, Latent
from tests.nodes.runctx import make_ctx


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


def test_image_grid_layout():
    cells = torch.stack([torch.full((2, 3, 1), float(i)) for i in range(1, 4)])
    grid = image_grid(cells)  # 3 cells → 2×2 with one empty cell
    assert grid.shape == (4, 6, 1)
    assert grid[0, 0, 0] == 1 and grid[0, 3, 0] == 2 and grid[2, 0, 0] == 3 and grid[2, 3, 0] == 0


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


def test_latent_channels_grid_normalised_per_channel():
    samples = torch.zeros(2, 4, 3, 5)
    for c in range(4):
        samples[:, c] = torch.linspace(-c - 1, 10 * c + 1, 15).view(3, 5)
    image = LatentChannels(Latent(samples=samples))
    assert image.pixels.shape == (2, 6, 10, 3)
    for row, col in ((0, 0), (0, 1), (1, 0), (1, 1)):
        cell = image.pixels[0, row * 3:(row + 1) * 3, col * 5:(col + 1) * 5, 0]
        assert cell.min() == 0 and cell.max() == 1  # each channel stretched on its own
    assert torch.equal(image.pixels[..., 0], image.pixels[..., 2])  # grey


def frames(count=4, size=(24, 32)):
    h, w = size
    pixels = torch.zeros(count, h, w, 3)
    for i in range(count):  # distinct frames: a moving white bar on a coloured ground
        pixels[i, ..., i % 3] = 0.6
        pixels[i, :, 4 * i:4 * i + 4] = 1.0
    return Image(pixels=pixels)


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_save_animation_writes_a_multiframe_file_and_never_overwrites(tmp_path, fmt):
    ctx, _ = make_ctx(tmp_path)
    first = SaveAnimation(frames(), format=fmt, fps=10.0, filename_prefix="anim/clip", loop=0, lossless=False, ctx=ctx)
    second = SaveAnimation(frames(), format=fmt, fps=10.0, filename_prefix="anim/clip", loop=0, lossless=False, ctx=ctx)
    (entry,), (entry2,) = first["images"], second["images"]
    assert entry == {"filename": f"anim/clip_00001.{fmt}", "width": 32, "height": 24, "frames": 4, "format": fmt}
    assert entry2["filename"] == f"anim/clip_00002.{fmt}"
    with PILImage.open(tmp_path / "output" / entry["filename"]) as picture:
        assert picture.format == fmt.upper()
        assert picture.n_frames == 4 and picture.is_animated
        assert picture.size == (32, 24)
        picture.seek(2)
        picture.load()
        assert picture.info["duration"] == 100  # 10 fps
        red, green, blue = picture.convert("RGB").getpixel((20, 10))
        assert blue > 120 and red < 40  # third frame has the blue ground
    assert sorted(p.name for p in (tmp_path / "output" / "anim").iterdir()) == [f"clip_00001.{fmt}", f"clip_00002.{fmt}"]


def test_save_animation_refuses_prefixes_leaving_the_output_folder(tmp_path):
    from graphflow.errors import NodeInputError

    ctx, _ = make_ctx(tmp_path)
    with pytest.raises(NodeInputError) as info:
        SaveAnimation(frames(2), format="gif", fps=5.0, filename_prefix="../escape", loop=0, lossless=False, ctx=ctx)
    assert info.value.input == "filename_prefix"
    assert not (tmp_path / "escape_00001.gif").exists()
