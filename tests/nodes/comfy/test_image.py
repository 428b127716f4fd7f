"""comfy.LoadImage, LoadImageMask, ImageScale, ImageScaleBy, ImageScaleToTotalPixels, ImagePadForOutpaint,
ImageUpscaleWithModel."""
import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from graphflow.errors import NodeInputError
from nodes.comfy.image import (ImagePadForOutpaint, ImageScale, ImageScaleBy, ImageScaleToTotalPixels,
                               ImageUpscaleWithModel, LoadImage, LoadImageMask)
from nodes.values import Image
from tests.nodes.runctx import run_node


def rgba_file(folder, name="pic.png", size=(8, 6)):
    """A picture: red ramps left to right, green 200, blue 0, alpha 0 in the left half and 255 in the right."""
    w, h = size
    array = np.zeros((h, w, 4), dtype=np.uint8)
    array[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
    array[..., 1] = 200
    array[..., 3] = 255
    array[:, : w // 2, 3] = 0
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(array, "RGBA").save(folder / name)
    return name


def test_load_image_gives_rgb_and_transparency_as_the_mask(stage_ctx):
    ctx, _ = stage_ctx
    rgba_file(ctx.settings.input_dir, "sub/pic.png")
    image, mask = run_node(LoadImage, ctx=ctx, image="sub\\pic.png [input]")  # ComfyUI's Windows / annotated names
    assert image.pixels.shape == (1, 6, 8, 3) and torch.allclose(image.pixels[0, 0, 0, 1], torch.tensor(200 / 255))
    assert mask.mask.shape == (1, 6, 8) and mask.mask[0, :, :4].min() == 1 and mask.mask[0, :, 4:].max() == 0


def test_load_image_names_comfyuis_input_when_the_file_is_missing(stage_ctx):
    ctx, _ = stage_ctx
    with pytest.raises(NodeInputError) as caught:
        run_node(LoadImage, ctx=ctx, image="nothing.png")
    assert caught.value.input == "image"
    problems = LoadImage.__graphflow_node__.preflight({"image": "nothing.png"}, ctx.settings)
    assert [p.input for p in problems] == ["image"]


@pytest.mark.parametrize("channel, expected_left, expected_right", [("alpha", 1.0, 0.0), ("green", 200 / 255, 200 / 255)])
def test_load_image_mask_takes_one_channel(stage_ctx, channel, expected_left, expected_right):
    ctx, _ = stage_ctx
    rgba_file(ctx.settings.input_dir)
    mask = run_node(LoadImageMask, ctx=ctx, image="pic.png", channel=channel).mask
    assert mask.shape == (1, 6, 8)
    assert torch.allclose(mask[0, :, 0], torch.tensor(expected_left)) and torch.allclose(mask[0, :, -1], torch.tensor(expected_right))
    red = run_node(LoadImageMask, ctx=ctx, image="pic.png", channel="red").mask
    assert red[0, 0, 0] == 0 and red[0, 0, -1] == 1


def picture(h=6, w=8) -> Image:
    return Image(pixels=torch.rand(2, h, w, 3, generator=torch.Generator().manual_seed(0)))


def test_image_scale_sizes_the_aspect_rule_and_crop():
    image = picture()
    assert run_node(ImageScale, image=image, width=16, height=12).pixels.shape == (2, 12, 16, 3)
    assert run_node(ImageScale, image=image, width=0, height=3).pixels.shape == (2, 3, 4, 3)
    assert run_node(ImageScale, image=image, width=0, height=0) is image
    cropped = run_node(ImageScale, image=image, width=6, height=6, crop="center", upscale_method="nearest-exact")
    assert torch.equal(cropped.pixels, image.pixels[:, :, 1:7])


def test_image_scale_lanczos_goes_through_8_bit_pictures():
    image = picture()
    out = run_node(ImageScale, image=image, width=8, height=6, upscale_method="lanczos").pixels
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4)  # whole 8-bit steps
    assert (out - image.pixels).abs().max() <= 1 / 255 + 1e-6  # same size: only the 8-bit cut


def test_image_scale_by_and_to_total_pixels():
    image = picture()
    assert run_node(ImageScaleBy, image=image, scale_by=1.5, upscale_method="area").pixels.shape == (2, 9, 12, 3)
    out = run_node(ImageScaleToTotalPixels, image=image, megapixels=0.01, upscale_method="bilinear")
    height, width = out.pixels.shape[1:3]
    assert (width, height) == (118, 89) and abs(width * height - 0.01 * 1024 * 1024) < 120


def test_pad_for_outpaint_greys_the_new_area_and_feathers_the_mask_quadratically():
    image = Image(pixels=torch.zeros(1, 10, 10, 3))
    padded, mask = run_node(ImagePadForOutpaint, image=image, left=4, right=0, top=0, bottom=0, feathering=4)
    assert padded.pixels.shape == (1, 10, 14, 3)
    assert torch.all(padded.pixels[:, :, :4] == 0.5) and torch.all(padded.pixels[:, :, 4:] == 0)
    assert torch.all(mask.mask[0, :, :4] == 1)
    row = mask.mask[0, 0, 4:]
    assert torch.allclose(row[:4], torch.tensor([1.0, 0.5625, 0.25, 0.0625])) and torch.all(row[4:] == 0)
    _, unfeathered = run_node(ImagePadForOutpaint, image=image, left=4, feathering=5)  # 2 * 5 is not < 10
    assert torch.all(unfeathered.mask[0, :, 4:] == 0)


def test_upscale_with_model_uses_the_model_scale(stage_ctx):
    from nodes.upscale import LoadUpscaleModel

    ctx, _ = stage_ctx
    from pathlib import Path

    assets = Path(__file__).resolve().parents[3] / "workflows" / "assets"
    from dataclasses import replace

    ctx.settings = replace(ctx.settings, asset_dirs=(assets,))
    model = run_node(LoadUpscaleModel, ctx=ctx, name="toy-compact-x4.safetensors", device="cpu")
    out = run_node(ImageUpscaleWithModel, ctx=ctx, upscale_model=model, image=picture(6, 8))
    assert out.pixels.shape == (2, 24, 32, 3)
