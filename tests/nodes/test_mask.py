"""Mask nodes: values, shapes and edge behaviour of every mask operation."""
import pytest
import torch
from PIL import Image as PILImage

from nodes.mask import (FeatherMask, GrowMask, InvertMask, MaskFromImage, PadImageForOutpaint, BlurMask,
                        load_mask_from_rgba, match_mask_to_image)
from nodes.values import Image, Mask

from .runctx import run_node


def square_mask(size=21, half=2) -> Mask:
    m = torch.zeros(1, size, size)
    c = size // 2
    m[0, c - half:c + half + 1, c - half:c + half + 1] = 1
    return Mask(mask=m)


def test_mask_from_image_channels():
    pixels = torch.tensor([[[[1.0, 0.5, 0.0], [0.0, 0.0, 1.0]]]])  # one 1×2 image
    image = Image(pixels=pixels)
    assert run_node(MaskFromImage, image=image, channel="red").mask.tolist() == [[[1.0, 0.0]]]
    assert run_node(MaskFromImage, image=image, channel="green").mask.tolist() == [[[0.5, 0.0]]]
    assert run_node(MaskFromImage, image=image, channel="blue").mask.tolist() == [[[0.0, 1.0]]]
    lum = run_node(MaskFromImage, image=image, channel="luminance").mask
    assert lum.shape == (1, 1, 2)
    assert torch.allclose(lum, torch.tensor([[[0.299 + 0.5 * 0.587, 0.114]]]))


def test_load_mask_from_rgba_marks_transparent_pixels():
    rgba = PILImage.new("RGBA", (3, 2), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.putpixel((2, 1), (0, 0, 0, 128))
    mask = load_mask_from_rgba(rgba).mask
    assert mask.shape == (1, 2, 3)
    assert mask[0, 0, 0] == 1.0 and mask[0, 0, 1] == 0.0
    assert mask[0, 1, 2] == pytest.approx(1 - 128 / 255)


def test_load_mask_from_rgba_without_alpha_repaints_nothing():
    mask = load_mask_from_rgba(PILImage.new("RGB", (4, 5), (255, 255, 255))).mask
    assert mask.shape == (1, 5, 4) and mask.sum() == 0


def test_load_mask_from_palette_transparency():
    picture = PILImage.new("P", (2, 1))
    picture.putpalette([0, 0, 0, 255, 255, 255])
    picture.putpixel((1, 0), 1)
    picture.info["transparency"] = 1
    assert load_mask_from_rgba(picture).mask.tolist() == [[[0.0, 1.0]]]


def test_invert_mask():
    mask = Mask(mask=torch.tensor([[[0.0, 0.25, 1.0]]]))
    assert run_node(InvertMask, mask=mask).mask.tolist() == [[[1.0, 0.75, 0.0]]]


def test_grow_square_and_tapered_shapes():
    mask = square_mask(size=21, half=2)  # a 5×5 square
    square = run_node(GrowMask, mask=mask, pixels=3, tapered=False).mask
    assert square.shape == mask.mask.shape
    assert square.sum() == 11 * 11  # a square grows into a larger square, corners included
    tapered = run_node(GrowMask, mask=mask, pixels=3, tapered=True).mask
    assert tapered.sum() == 11 * 11 - 4 * (1 + 2 + 3)  # diamond growth cuts the corners
    assert tapered[0, 10, 13 + 2] == 1 and tapered[0, 7 - 2, 7 - 2] == 0


def test_grow_negative_shrinks_and_zero_copies():
    mask = square_mask(size=21, half=4)  # 9×9
    assert run_node(GrowMask, mask=mask, pixels=-2, tapered=False).mask.sum() == 5 * 5
    assert run_node(GrowMask, mask=mask, pixels=-5, tapered=True).mask.sum() == 0
    same = run_node(GrowMask, mask=mask, pixels=0, tapered=True).mask
    assert torch.equal(same, mask.mask) and same is not mask.mask


def test_grow_keeps_soft_values_and_border_masks():
    soft = Mask(mask=torch.tensor([[[0.0, 0.0, 0.4, 0.0, 0.0]]]))
    assert run_node(GrowMask, mask=soft, pixels=1, tapered=True).mask[0, 0].tolist() == pytest.approx([0.0, 0.4, 0.4, 0.4, 0.0])
    border = Mask(mask=torch.tensor([[[1.0, 1.0, 1.0, 0.0, 0.0]]]))
    assert run_node(GrowMask, mask=border, pixels=-1, tapered=True).mask.tolist() == [[[1.0, 1.0, 0.0, 0.0, 0.0]]]


def test_feather_mask_ramps_at_the_given_edges_only():
    full = Mask(mask=torch.ones(1, 6, 10))
    out = run_node(FeatherMask, mask=full, left=3, top=0, right=0, bottom=2).mask
    assert out.shape == (1, 6, 10)
    assert out[0, 0, :4].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])  # left ramp
    assert out[0, :, 4].tolist() == pytest.approx([1, 1, 1, 1, 2 / 3, 1 / 3])  # bottom ramp
    assert out[0, 0, 9] == 1.0  # no right feathering
    assert torch.equal(run_node(FeatherMask, mask=full, left=0, top=0, right=0, bottom=0).mask, full.mask)


def test_blur_mask_softens_the_outline_and_keeps_the_range():
    mask = square_mask(size=33, half=6)
    blurred = run_node(BlurMask, mask=mask, radius=4).mask
    assert blurred.shape == mask.mask.shape
    assert 0 <= blurred.min() and blurred.max() <= 1
    centre_row = blurred[0, 16]
    assert 0.2 < centre_row[10] < 0.8  # the edge became a slope
    assert centre_row[16] == pytest.approx(1.0, abs=1e-4) and centre_row[0] == pytest.approx(0.0, abs=1e-4)
    assert blurred.sum().item() == pytest.approx(mask.mask.sum().item(), rel=1e-3)  # blurring moves mass, does not add it


def test_pad_image_for_outpaint_canvas_and_mask():
    pixels = torch.rand(2, 16, 24, 3)
    image, mask = run_node(PadImageForOutpaint, image=Image(pixels=pixels), left=8, top=0, right=16, bottom=8, feathering=4)
    assert image.pixels.shape == (2, 24, 48, 3)
    assert mask.mask.shape == (2, 24, 48)
    assert torch.equal(image.pixels[:, 0:16, 8:32], pixels)  # original untouched
    assert torch.all(image.pixels[:, :, :8] == 0.5) and torch.all(image.pixels[:, 16:] == 0.5)
    m = mask.mask[0]
    assert torch.all(m[:, :8] == 1) and torch.all(m[:, 32:] == 1) and torch.all(m[16:] == 1)
    # into the original from the left edge: a falling ramp over 4 pixels, then 0
    assert m[5, 8:14].tolist() == pytest.approx([4 / 5, 3 / 5, 2 / 5, 1 / 5, 0, 0])
    # the top was not padded: no feathering there
    assert m[0, 20] == 0
    assert torch.all(m[0:12, 12:28] == 0)  # far from every padded side


def test_pad_image_for_outpaint_without_feathering():
    _, mask = run_node(PadImageForOutpaint, image=Image(pixels=torch.rand(1, 8, 8, 3)), left=0, top=8, right=0, bottom=0, feathering=0)
    assert mask.mask[0, :8].eq(1).all() and mask.mask[0, 8:].eq(0).all()


def test_match_mask_to_image_resizes_with_a_warning():
    warnings = []
    mask = square_mask(size=8, half=1)
    same = match_mask_to_image(mask, 8, 8, warnings.append)
    assert same is mask and warnings == []
    bigger = match_mask_to_image(mask, 16, 24, warnings.append)
    assert bigger.mask.shape == (1, 16, 24)
    assert 0 <= bigger.mask.min() and bigger.mask.max() <= 1 and bigger.mask.max() > 0.5
    assert len(warnings) == 1 and "8x8" in warnings[0] and "24x16" in warnings[0]
    smaller = match_mask_to_image(Mask(mask=torch.ones(1, 64, 64)), 8, 8)
    assert torch.allclose(smaller.mask, torch.ones(1, 8, 8))


def test_mask_chain_in_the_engine_leaves_inputs_untouched(tmp_path):
    import nodes.mask
    from graphflow import Engine, Settings
    from graphflow.cache import ResultCache
    from graphflow.node import Input, node, spec_of
    from graphflow.registry import Registry

    @node(outputs={"image": "IMAGE"}, category="test")
    def Gradient(height: int = 16, width: int = 24) -> Image:
        """A horizontal grey ramp (test source)."""
        return Image(pixels=torch.linspace(0, 1, width).view(1, 1, width, 1).expand(1, height, width, 3).clone())

    @node(output=True, category="test")
    def MaskStats(mask: Mask = Input("MASK")) -> dict:
        """Shape and mean of a mask (test sink)."""
        return {"shape": list(mask.mask.shape), "mean": round(float(mask.mask.mean()), 4)}

    registry = Registry()
    registry.add_module(nodes.mask)
    registry.add(spec_of(Gradient))
    registry.add(spec_of(MaskStats))
    engine = Engine(registry, Settings(output_dir=tmp_path), ResultCache(value_budget=10**8), check_mutations=True)
    link = lambda n, o: {"from": n, "output": o}  # noqa: E731
    report = engine.run({"graphflow": 1, "nodes": {
        "img": {"type": "Gradient", "inputs": {}},
        "pad": {"type": "PadImageForOutpaint", "inputs": {"image": link("img", "image"), "right": 8, "feathering": 4}},
        "grey": {"type": "MaskFromImage", "inputs": {"image": link("pad", "image"), "channel": "luminance"}},
        "grow": {"type": "GrowMask", "inputs": {"mask": link("pad", "mask"), "pixels": 2}},
        "inv": {"type": "InvertMask", "inputs": {"mask": link("grow", "mask")}},
        "blur": {"type": "BlurMask", "inputs": {"mask": link("inv", "mask"), "radius": 2}},
        "feather": {"type": "FeatherMask", "inputs": {"mask": link("grey", "mask"), "left": 4}},
        "a": {"type": "MaskStats", "inputs": {"mask": link("blur", "mask")}},
        "b": {"type": "MaskStats", "inputs": {"mask": link("feather", "mask")}},
    }})
    assert report.outputs["a"]["shape"] == [1, 16, 32] and 0 < report.outputs["a"]["mean"] < 1
    assert report.outputs["b"]["shape"] == [1, 16, 32]


def test_a_cancelled_tapered_grow_stops_between_steps(tmp_path):
    from graphflow.errors import Cancelled
    from nodes.mask import GrowMask
    from nodes.values import Mask
    from tests.nodes.runctx import make_ctx, run_node

    ctx, _ = make_ctx(tmp_path)
    ctx.cancel_token.cancel()
    with pytest.raises(Cancelled):
        run_node(GrowMask, ctx, mask=Mask(mask=torch.zeros(1, 32, 32)), pixels=1000, tapered=True)
