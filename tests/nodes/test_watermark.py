"""The invisible watermark: what InvisibleWatermark hides, ReadWatermark and the library's own decoder read back;
SaveImage can mark what it writes; pictures the method cannot carry are refused by name."""
import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from graphflow.errors import NodeInputError
from nodes.outputs import SaveImage
from nodes.values import Image
from nodes.watermark import SD_TEXT, InvisibleWatermark, ReadWatermark, embed_watermark, read_watermark
from tests.nodes.runctx import run_node


def shapes_picture(size=256, batch=1):
    """A red disc on mid-grey."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    disc = ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.1).float()[..., None]
    picture = torch.full((size, size, 3), 0.5) * (1 - disc) + torch.tensor([0.85, 0.1, 0.1]) * disc
    return torch.stack([picture.roll(17 * i, dims=1) for i in range(batch)])


def smooth_pictures(count, size=256):
    """Random smooth colour fields with a little texture, like photographs' low frequencies."""
    generator = torch.Generator().manual_seed(0)
    low = torch.rand(count, 3, 8, 8, generator=generator)
    pixels = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return (pixels.clamp(0.05, 0.95).permute(0, 2, 3, 1) + 0.03 * torch.rand(count, size, size, 3, generator=generator))


def test_the_hidden_text_reads_back_from_every_picture_of_a_batch():
    pixels = shapes_picture(batch=2)
    marked = run_node(InvisibleWatermark, image=Image(pixels=pixels), text="graphflow!")
    assert marked.pixels.shape == pixels.shape
    assert read_watermark(marked.pixels, len("graphflow!")) == [b"graphflow!", b"graphflow!"]
    assert (marked.pixels - pixels).abs().mean() < 2 / 255, "invisible: a few levels of 255 at most on average"
    assert read_watermark(pixels, len("graphflow!")) != [b"graphflow!", b"graphflow!"], "unmarked pictures carry no such text"


def test_dwt_dct_svd_carries_the_mark_where_dwt_dct_loses_it():
    """The package's fast dwtDct method (SD's) loses the bits on smooth, textured pictures even in an untouched
    8-bit file; its dwtDctSvd method keeps them. Measured on 8 such pictures (the README quotes it)."""
    pixels = smooth_pictures(8)
    svd = run_node(InvisibleWatermark, image=Image(pixels=pixels), text="graphflow!", method="dwtDctSvd")
    assert read_watermark(svd.pixels, 10, "dwtDctSvd") == [b"graphflow!"] * 8
    dct = run_node(InvisibleWatermark, image=Image(pixels=pixels), text="graphflow!", method="dwtDct")
    assert read_watermark(dct.pixels, 10, "dwtDct").count(b"graphflow!") <= 2


def test_read_watermark_reports_whether_each_picture_carries_the_expected_text():
    pixels = shapes_picture(batch=2)
    marked = torch.cat([embed_watermark(pixels[:1], SD_TEXT.encode()), pixels[1:]])
    report = run_node(ReadWatermark, image=Image(pixels=marked))
    assert [entry["matches"] for entry in report["watermarks"]] == [True, False]
    assert report["watermarks"][0]["text"] == SD_TEXT


def test_the_library_decodes_our_mark_as_sd_scripts_call_it():
    """The mark is the package's own: its decoder on the 8-bit BGR array (as SD's scripts call it) finds it."""
    from imwatermark import WatermarkDecoder

    marked = embed_watermark(shapes_picture(), SD_TEXT.encode())
    bgr = (marked[0].numpy() * 255).round().astype(np.uint8)[:, :, ::-1]
    assert WatermarkDecoder("bytes", 8 * len(SD_TEXT)).decode(np.ascontiguousarray(bgr), "dwtDctSvd") == SD_TEXT.encode()


def test_save_image_marks_the_png_it_writes(stage_ctx):
    ctx, _ = stage_ctx
    result = run_node(SaveImage, ctx=ctx, images=Image(pixels=shapes_picture()), filename_prefix="marked", watermark=SD_TEXT)
    with PILImage.open(ctx.settings.output_dir / result[0].filename) as png:
        saved = torch.from_numpy(np.asarray(png.convert("RGB")).astype(np.float32) / 255)[None]
    assert read_watermark(saved, len(SD_TEXT)) == [SD_TEXT.encode()]
    plain = run_node(SaveImage, ctx=ctx, images=Image(pixels=shapes_picture()), filename_prefix="plain")
    with PILImage.open(ctx.settings.output_dir / plain[0].filename) as png:
        assert np.array_equal(np.asarray(png.convert("RGB")), (shapes_picture()[0].numpy() * 255).round().astype(np.uint8))


@pytest.mark.parametrize("node, inputs", [(InvisibleWatermark, {}), (ReadWatermark, {})])
def test_pictures_below_256_by_256_are_refused_by_name(node, inputs):
    with pytest.raises(NodeInputError) as error:
        run_node(node, image=Image(pixels=shapes_picture(size=128)), **inputs)
    assert error.value.input == "image" and "256" in error.value.message and error.value.received == "128x128"


def test_save_image_refuses_a_small_picture_before_writing_anything(stage_ctx):
    ctx, _ = stage_ctx
    with pytest.raises(NodeInputError) as error:
        run_node(SaveImage, ctx=ctx, images=Image(pixels=shapes_picture(size=64)), filename_prefix="small", watermark="x")
    assert error.value.input == "images"
    assert not list(ctx.settings.output_dir.iterdir())
