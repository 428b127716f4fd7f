"""LoadImage, ImageScale and ImageGrid."""
import os

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from pydantic import ValidationError

from graphflow.errors import NodeInputError
from graphflow.node import spec_of
from nodes.image import ImageGrid, ImageScale, LoadImage
from nodes.values import Image
from tests.nodes.runctx import run_node


def link(node, output):
    return {"from": node, "output": output}


def random_pixels(batch=1, height=16, width=24, seed=0):
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))


def write_png(path, array):
    PILImage.fromarray(array).save(path)


# ----------------------------------------------------------------------------------------------- LoadImage


def test_load_image_tells_clients_its_file_inputs_take_an_uploaded_image():
    schema = spec_of(LoadImage).literals.model_json_schema()["properties"]
    assert schema["name"]["upload"] == schema["mask"]["upload"] == "image"  # the web page offers an upload there


def test_load_image_reads_rgb_pixels(stage_ctx):
    ctx, _ = stage_ctx
    array = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    write_png(ctx.settings.input_dir / "photo.png", array)
    image, mask = run_node(LoadImage, ctx=ctx, name="photo.png")
    assert image.pixels.shape == (1, 12, 20, 3) and image.pixels.dtype == torch.float32
    assert mask.mask.shape == (1, 12, 20) and not mask.mask.any()  # no alpha, no mask file: nothing to repaint
    assert torch.equal(image.pixels[0], torch.from_numpy(array).float() / 255)


def test_load_image_turns_alpha_into_the_mask_and_reads_subfolders(stage_ctx):
    ctx, _ = stage_ctx
    (ctx.settings.input_dir / "sub").mkdir()
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[2:5, 3:7, 3] = 0  # erased: repaint
    PILImage.fromarray(rgba).save(ctx.settings.input_dir / "sub" / "cut.png")
    image, mask = run_node(LoadImage, ctx=ctx, name="sub/cut.png")
    assert image.pixels.shape == (1, 8, 8, 3)
    assert torch.allclose(image.pixels[0, 0, 0], torch.tensor([200 / 255, 0.0, 0.0]))
    expected = torch.zeros(1, 8, 8)
    expected[:, 2:5, 3:7] = 1
    assert torch.equal(mask.mask, expected)


def test_a_mask_file_white_repaints_and_wins_over_alpha(stage_ctx):
    ctx, recorder = stage_ctx
    rgba = np.full((8, 8, 4), 255, dtype=np.uint8)
    rgba[0, 0, 3] = 0
    PILImage.fromarray(rgba).save(ctx.settings.input_dir / "photo.png")
    drawn = np.zeros((8, 8), dtype=np.uint8)
    drawn[4:, :] = 255
    drawn[0, 7] = 128
    PILImage.fromarray(drawn, mode="L").save(ctx.settings.input_dir / "photo_mask.png")
    _, mask = run_node(LoadImage, ctx=ctx, name="photo.png", mask="photo_mask.png")
    assert mask.mask.shape == (1, 8, 8) and mask.mask[0, 0, 0] == 0
    assert torch.all(mask.mask[0, 4:] == 1) and not mask.mask[0, :4, :7].any()
    assert abs(mask.mask[0, 0, 7].item() - 128 / 255) < 1e-6  # grey blends
    assert not recorder.warnings


def test_a_mask_file_of_another_size_is_resized_with_a_warning(stage_ctx):
    ctx, recorder = stage_ctx
    write_png(ctx.settings.input_dir / "photo.png", np.zeros((16, 24, 3), dtype=np.uint8))
    PILImage.fromarray(np.full((8, 12), 255, dtype=np.uint8), mode="L").save(ctx.settings.input_dir / "small.png")
    _, mask = run_node(LoadImage, ctx=ctx, name="photo.png", mask="small.png")
    assert mask.mask.shape == (1, 16, 24) and torch.all(mask.mask == 1)
    assert len(recorder.warnings) == 1 and "resized" in recorder.warnings[0]


def test_a_missing_mask_file_is_an_error_on_mask(stage_ctx):
    ctx, _ = stage_ctx
    write_png(ctx.settings.input_dir / "photo.png", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(NodeInputError) as error:
        run_node(LoadImage, ctx=ctx, name="photo.png", mask="nope.png")
    assert error.value.input == "mask" and error.value.received == "nope.png"
    with pytest.raises(NodeInputError) as error:
        run_node(LoadImage, ctx=ctx, name="photo.png", mask="../photo.png")
    assert error.value.input == "mask"


def with_assets(ctx, *folders):
    """The same context with ``folders`` as read-only asset folders searched after the input folder."""
    from dataclasses import replace

    return replace(ctx, settings=replace(ctx.settings, asset_dirs=tuple(folders)))


def test_asset_folders_are_searched_after_the_input_folder(stage_ctx, tmp_path):
    ctx, _ = stage_ctx
    first, second = tmp_path / "assets1", tmp_path / "assets2"
    for folder, value in ((first, 10), (second, 20)):
        folder.mkdir()
        write_png(folder / "shared.png", np.full((2, 2, 3), value, dtype=np.uint8))
    write_png(second / "only_here.png", np.full((2, 2, 3), 30, dtype=np.uint8))
    ctx = with_assets(ctx, first, second)

    def value(name):
        return round(run_node(LoadImage, ctx=ctx, name=name)[0].pixels[0, 0, 0, 0].item() * 255)

    assert value("shared.png") == 10  # the first asset folder wins
    assert value("only_here.png") == 30
    write_png(ctx.settings.input_dir / "shared.png", np.full((2, 2, 3), 40, dtype=np.uint8))
    assert value("shared.png") == 40  # the user's input folder wins over every asset
    with pytest.raises(NodeInputError) as error:
        run_node(LoadImage, ctx=ctx, name="gone.png")
    assert error.value.expected == ["only_here.png", "shared.png"]
    with pytest.raises(NodeInputError):
        run_node(LoadImage, ctx=ctx, name="../assets2/only_here.png")


def test_a_file_that_is_not_an_image_is_an_input_error(stage_ctx):
    ctx, _ = stage_ctx
    (ctx.settings.input_dir / "notes.png").write_text("not a picture")
    with pytest.raises(NodeInputError) as error:
        run_node(LoadImage, ctx=ctx, name="notes.png")
    assert error.value.input == "name" and "not a readable image" in error.value.message


def test_a_missing_file_lists_what_is_there(stage_ctx):
    ctx, _ = stage_ctx
    write_png(ctx.settings.input_dir / "there.png", np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(NodeInputError) as error:
        run_node(LoadImage, ctx=ctx, name="gone.png")
    assert error.value.expected == ["there.png"] and error.value.received == "gone.png"


@pytest.mark.parametrize("name", ["../secret.png", "sub/../../secret.png", "/etc/passwd", "..\\secret.png", ""])
def test_names_leaving_the_input_folder_are_refused(stage_ctx, name):
    ctx, _ = stage_ctx
    write_png(ctx.settings.input_dir.parent / "secret.png", np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(NodeInputError) as error:
        run_node(LoadImage, ctx=ctx, name=name)
    assert error.value.input == "name"


def test_a_symlink_pointing_out_is_refused(stage_ctx):
    ctx, _ = stage_ctx
    outside = ctx.settings.input_dir.parent / "outside.png"
    write_png(outside, np.zeros((2, 2, 3), dtype=np.uint8))
    os.symlink(outside, ctx.settings.input_dir / "link.png")
    with pytest.raises(NodeInputError):
        run_node(LoadImage, ctx=ctx, name="link.png")


def edited_later(path):
    """Move a file's modification time a second on, as an edit made later would (timestamps are coarser than
    the time between two writes in a test)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_fingerprint_is_the_files_identity_and_refuses_a_bad_name(stage_ctx):
    ctx, _ = stage_ctx
    fingerprint = spec_of(LoadImage).fingerprint
    path = ctx.settings.input_dir / "a.png"
    write_png(path, np.zeros((4, 4, 3), dtype=np.uint8))
    first = fingerprint({"name": "a.png", "mask": ""}, ctx.settings)
    assert fingerprint({"name": "a.png", "mask": ""}, ctx.settings) == first
    write_png(path, np.full((4, 4, 3), 9, dtype=np.uint8))
    edited_later(path)
    assert fingerprint({"name": "a.png", "mask": ""}, ctx.settings) != first
    with pytest.raises(NodeInputError):
        fingerprint({"name": "../a.png", "mask": ""}, ctx.settings)
    with pytest.raises(NodeInputError) as error:  # the run stops before any node runs, as the node itself would
        fingerprint({"name": "a.png", "mask": "absent.png"}, ctx.settings)
    assert error.value.input == "mask"


def test_fingerprint_covers_the_mask_file_and_the_resolved_file(stage_ctx, tmp_path):
    ctx, _ = stage_ctx
    fingerprint = spec_of(LoadImage).fingerprint
    assets = tmp_path / "assets"
    assets.mkdir()
    write_png(assets / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    write_png(assets / "m.png", np.zeros((4, 4, 3), dtype=np.uint8))
    settings = with_assets(ctx, assets).settings
    literals = {"name": "a.png", "mask": "m.png"}
    first = fingerprint(literals, settings)
    assert first != fingerprint({"name": "a.png", "mask": ""}, settings)
    write_png(assets / "m.png", np.full((4, 4, 3), 255, dtype=np.uint8))
    edited_later(assets / "m.png")
    second = fingerprint(literals, settings)
    assert second != first
    write_png(ctx.settings.input_dir / "a.png", np.full((4, 4, 3), 7, dtype=np.uint8))  # shadows the asset
    assert fingerprint(literals, settings) != second


# ----------------------------------------------------------------------------------------------- ImageScale


def test_scale_to_width_keeps_aspect_ratio():
    image = Image(pixels=random_pixels(height=16, width=24))
    assert run_node(ImageScale, image=image, width=48).pixels.shape == (1, 32, 48, 3)
    assert run_node(ImageScale, image=image, height=8).pixels.shape == (1, 8, 12, 3)
    assert run_node(ImageScale, image=image, width=10, height=10).pixels.shape == (1, 10, 10, 3)
    assert run_node(ImageScale, image=image, scale_by=1.5).pixels.shape == (1, 24, 36, 3)


def test_lanczos_is_pils_lanczos_on_float_channels():
    pixels = random_pixels(batch=2)
    out = run_node(ImageScale, image=Image(pixels=pixels), method="lanczos", width=40, height=30).pixels
    channel = PILImage.fromarray(pixels[1, :, :, 2].numpy()).resize((40, 30), PILImage.Resampling.LANCZOS)
    assert torch.equal(out[1, :, :, 2], torch.from_numpy(np.array(channel)).clamp(0, 1))
    assert out.min() >= 0 and out.max() <= 1  # lanczos overshoots; the result is clipped back


def test_nearest_doubling_repeats_pixels():
    pixels = random_pixels(height=4, width=4)
    out = run_node(ImageScale, image=Image(pixels=pixels), method="nearest", scale_by=2.0).pixels
    assert torch.equal(out, pixels.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2))


def test_scale_rejects_bad_literals():
    literals = spec_of(ImageScale).literals
    for bad in ({"method": "area"}, {"width": -1}, {"scale_by": 0.0}):
        with pytest.raises(ValidationError):
            literals.model_validate(bad)


# ----------------------------------------------------------------------------------------------- ImageGrid


def test_grid_of_four_is_two_by_two_row_major():
    pixels = random_pixels(batch=4, height=6, width=5)
    grid = run_node(ImageGrid, images=Image(pixels=pixels)).pixels
    assert grid.shape == (1, 12, 10, 3)
    assert torch.equal(grid[0, :6, :5], pixels[0]) and torch.equal(grid[0, :6, 5:], pixels[1])
    assert torch.equal(grid[0, 6:, :5], pixels[2]) and torch.equal(grid[0, 6:, 5:], pixels[3])


def test_grid_columns_and_black_leftover_cells():
    pixels = random_pixels(batch=3, height=6, width=5)
    grid = run_node(ImageGrid, images=Image(pixels=pixels)).pixels  # auto: 2 columns, 2 rows
    assert grid.shape == (1, 12, 10, 3) and not torch.any(grid[0, 6:, 5:])
    row = run_node(ImageGrid, images=Image(pixels=pixels), columns=3).pixels
    assert row.shape == (1, 6, 15, 3) and torch.equal(row[0, :, 10:], pixels[2])
    assert run_node(ImageGrid, images=Image(pixels=pixels), columns=10).pixels.shape == (1, 6, 15, 3)


# ----------------------------------------------------------------------------------------------- all


def test_image_nodes_leave_inputs_untouched_and_repeat(stage_ctx):
    ctx, _ = stage_ctx
    image = Image(pixels=random_pixels(batch=3))
    before = image.__graphflow_digest__()
    for method in ("lanczos", "bicubic", "bilinear", "nearest"):
        first = run_node(ImageScale, image=image, method=method, scale_by=1.7).pixels
        assert torch.equal(first, run_node(ImageScale, image=image, method=method, scale_by=1.7).pixels)
    run_node(ImageGrid, images=image)
    from nodes.outputs import SaveImage  # the output node reads the same pixels

    run_node(SaveImage, ctx=ctx, images=image)
    assert image.__graphflow_digest__() == before


def test_a_cancelled_image_scale_stops_between_pictures(tmp_path):
    from graphflow.errors import Cancelled
    from nodes.image import ImageScale
    from nodes.values import Image
    from tests.nodes.runctx import make_ctx, run_node

    ctx, _ = make_ctx(tmp_path)
    ctx.cancel_token.cancel()
    with pytest.raises(Cancelled):
        run_node(ImageScale, ctx, image=Image(pixels=torch.zeros(4, 16, 16, 3)), scale_by=2.0)
