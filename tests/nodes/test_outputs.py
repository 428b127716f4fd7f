"""Output nodes: SaveImage (files, names, PNG metadata) and SaveAnimation. SaveCheckpoint: test_merge.py."""
import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from graphflow.errors import NodeInputError
from graphflow.outputs import OutputFile, report_form
from nodes.outputs import SaveAnimation, SaveImage
from nodes.values import Image
from tests.nodes.runctx import make_ctx, run_node


def link(node, output):
    return {"from": node, "output": output}


def random_pixels(batch=1, height=16, width=24, seed=0):
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- SaveImage


def test_save_image_writes_numbered_pngs_and_reports_them(stage_ctx):
    ctx, _ = stage_ctx
    pixels = random_pixels(batch=2)
    result = run_node(SaveImage, ctx=ctx, images=Image(pixels=pixels), filename_prefix="shot")
    assert result == [OutputFile("image", "shot_00001.png", {"width": 24, "height": 16}),
                      OutputFile("image", "shot_00002.png", {"width": 24, "height": 16})]
    assert report_form(result) == {"images": [{"filename": "shot_00001.png", "width": 24, "height": 16},
                                 {"filename": "shot_00002.png", "width": 24, "height": 16}]}
    saved = np.asarray(PILImage.open(ctx.settings.output_dir / "shot_00002.png"))
    assert np.array_equal(saved, (pixels[1].numpy() * 255).round().astype(np.uint8))
    again = run_node(SaveImage, ctx=ctx, images=Image(pixels=pixels[:1]), filename_prefix="shot")
    assert again[0].filename == "shot_00003.png"


def test_save_image_never_overwrites(stage_ctx):
    ctx, _ = stage_ctx
    out = ctx.settings.output_dir
    (out / "keep_00007.png").write_bytes(b"someone else's file")
    result = run_node(SaveImage, ctx=ctx, images=Image(pixels=random_pixels()), filename_prefix="keep")
    assert result[0].filename == "keep_00008.png"
    assert (out / "keep_00007.png").read_bytes() == b"someone else's file"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left behind"


def test_save_image_refuses_prefixes_leaving_the_output_folder(stage_ctx):
    ctx, _ = stage_ctx
    with pytest.raises(NodeInputError) as error:
        run_node(SaveImage, ctx=ctx, images=Image(pixels=random_pixels()), filename_prefix="../escape")
    assert error.value.input == "filename_prefix"


def test_png_carries_the_workflow_as_run_and_the_a1111_parameters(stage_ctx):
    from dataclasses import replace

    from tests.nodes.test_metadata import TXT2IMG_VALUES, provenance, txt2img

    ctx, _ = stage_ctx
    graph = provenance(txt2img(), TXT2IMG_VALUES, drawn={("noise", "seed"): 77})
    result = run_node(SaveImage, ctx=replace(ctx, graph=graph), images=Image(pixels=random_pixels(height=64, width=64)))
    png = PILImage.open(ctx.settings.output_dir / result[0].filename)
    assert json.loads(png.text["graphflow"]) == graph.document and "workflow" not in png.text  # ComfyUI's name
    assert json.loads(png.text["graphflow"])["nodes"]["noise"]["inputs"]["seed"] == 77
    assert png.text["parameters"] == (
        "a red fox\nNegative prompt: blurry\n"
        "Steps: 12, Sampler: Euler a, Schedule type: Uniform, CFG scale: 6.5, Seed: 77, Size: 64x64, Model: tiny-sd")


def test_an_image_saved_outside_a_run_records_its_size_only(stage_ctx):
    ctx, _ = stage_ctx
    result = run_node(SaveImage, ctx=ctx, images=Image(pixels=random_pixels(height=16, width=24)))
    png = PILImage.open(ctx.settings.output_dir / result[0].filename)
    assert png.text == {"parameters": "Size: 24x16"}


# ----------------------------------------------------------------------------------------------- SaveAnimation


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
    first = run_node(SaveAnimation, ctx, images=frames(), format=fmt, fps=10.0, filename_prefix="anim/clip", loop=0, lossless=False)
    second = run_node(SaveAnimation, ctx, images=frames(), format=fmt, fps=10.0, filename_prefix="anim/clip", loop=0, lossless=False)
    (entry,), (entry2,) = first, second
    assert report_form(first) == {"images": [{"filename": f"anim/clip_00001.{fmt}", "width": 32, "height": 24,
                                              "frames": 4, "format": fmt}]}
    assert entry2.filename == f"anim/clip_00002.{fmt}"
    with PILImage.open(tmp_path / "output" / entry.filename) as picture:
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
    ctx, _ = make_ctx(tmp_path)
    with pytest.raises(NodeInputError) as info:
        run_node(SaveAnimation, ctx, images=frames(2), format="gif", fps=5.0, filename_prefix="../escape", loop=0, lossless=False)
    assert info.value.input == "filename_prefix"
    assert not (tmp_path / "escape_00001.gif").exists()
