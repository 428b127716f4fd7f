"""Upscale models: loading through spandrel, tiled upscaling with blended seams, progress, cancel, OOM retry."""
import pytest
import torch
from pydantic import Field

import nodes.upscale as upscale
from graphflow import Engine, Settings
from graphflow.cache import ResultCache
from graphflow.errors import Cancelled, NodeInputError, WorkflowInvalid
from graphflow.node import Input, node, spec_of
from graphflow.registry import Registry
from nodes.tiling import tile_starts
from nodes.upscale import LoadUpscaleModel, UpscaleModel, UpscaleWithModel, model_file_fingerprint
from nodes.values import IMAGE, Image
from tests.nodes.runctx import make_ctx, run_node
from tests.upscale_assets import write_tiny_esrgan


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's convolutions are too small to gain from threads; on a busy machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A settings root with a tiny 4× ESRGAN as .pth and a 2× one as .safetensors."""
    root = tmp_path_factory.mktemp("upscale")
    folder = root / "models" / "upscale_models"
    write_tiny_esrgan(folder / "tiny_x4.pth", scale=4)
    write_tiny_esrgan(folder / "sub" / "tiny_x2.safetensors", scale=2, seed=1)
    return root


@pytest.fixture(scope="module")
def x4(root) -> UpscaleModel:
    ctx, _ = make_ctx(root)
    return run_node(LoadUpscaleModel, ctx, name="tiny_x4.pth", device="cpu")


def picture(batch=1, height=72, width=56, seed=0) -> Image:
    generator = torch.Generator().manual_seed(seed)
    return Image(pixels=torch.rand(batch, height, width, 3, generator=generator))


def upscale_untiled(model: UpscaleModel, image: Image) -> torch.Tensor:
    chw = image.pixels[0].permute(2, 0, 1)[None]
    return model.descriptor(chw)[0].permute(1, 2, 0)


# ---------------------------------------------------------------------------------------------- loading

def test_load_pth_and_safetensors(root, x4):
    assert (x4.scale, x4.architecture, x4.name) == (4, "ESRGAN", "tiny_x4.pth")
    assert x4.nbytes > 0
    ctx, _ = make_ctx(root)
    x2 = run_node(LoadUpscaleModel, ctx, name="sub/tiny_x2.safetensors", device="cpu")
    assert (x2.scale, x2.architecture) == (2, "ESRGAN")


def test_unknown_name_lists_available_files(root):
    ctx, _ = make_ctx(root)
    with pytest.raises(NodeInputError) as info:
        run_node(LoadUpscaleModel, ctx, name="RealESRGAN_x4plus.pth", device="cpu")
    assert info.value.input == "name"
    assert "sub/tiny_x2.safetensors" in info.value.expected and "tiny_x4.pth" in info.value.expected


def test_names_outside_the_folder_are_refused(root):
    ctx, _ = make_ctx(root)
    for name in ("../upscale_models/tiny_x4.pth", "/etc/passwd"):
        with pytest.raises(NodeInputError) as info:
            run_node(LoadUpscaleModel, ctx, name=name, device="cpu")
        assert info.value.input == "name"


def test_unrecognised_architecture_lists_supported_ones(tmp_path):
    folder = tmp_path / "models" / "upscale_models"
    folder.mkdir(parents=True)
    torch.save({"encoder.weight": torch.zeros(2, 2), "decoder.bias": torch.zeros(2)}, folder / "mystery.pth")
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    ctx, _ = make_ctx(tmp_path)
    with pytest.raises(NodeInputError) as info:
        run_node(LoadUpscaleModel, ctx, name="mystery.pth", device="cpu")
    assert "does not recognise" in info.value.message
    assert "ESRGAN" in info.value.expected and "SwinIR" in info.value.expected
    with pytest.raises(NodeInputError, match="could not read"):
        run_node(LoadUpscaleModel, ctx, name="broken.safetensors", device="cpu")


def test_fingerprint_follows_the_file(tmp_path):
    settings = Settings(models_dir=tmp_path / "models")
    path = write_tiny_esrgan(tmp_path / "models" / "upscale_models" / "m.pth", scale=2)
    before = model_file_fingerprint({"name": "m.pth"}, settings)
    write_tiny_esrgan(path, scale=2, seed=5)
    path.touch()
    assert model_file_fingerprint({"name": "m.pth"}, settings) != before
    with pytest.raises(NodeInputError) as error:  # the run stops before any node runs, as the node itself would
        model_file_fingerprint({"name": "missing.pth"}, settings)
    assert error.value.input == "name"


def test_asset_folders_are_searched_after_the_models_folder(tmp_path):
    from dataclasses import replace

    assets = tmp_path / "assets"
    write_tiny_esrgan(assets / "upscale_models" / "shipped.pth", scale=2)
    write_tiny_esrgan(assets / "upscale_models" / "both.pth", scale=2)
    write_tiny_esrgan(tmp_path / "models" / "upscale_models" / "both.pth", scale=4)
    ctx, _ = make_ctx(tmp_path)
    ctx = replace(ctx, settings=replace(ctx.settings, asset_dirs=(assets,)))
    assert run_node(LoadUpscaleModel, ctx, name="shipped.pth", device="cpu").scale == 2
    assert run_node(LoadUpscaleModel, ctx, name="both.pth", device="cpu").scale == 4  # the user's models folder wins
    with pytest.raises(NodeInputError) as info:
        run_node(LoadUpscaleModel, ctx, name="nope.pth", device="cpu")
    assert "shipped.pth" in info.value.expected and "both.pth" in info.value.expected


def test_fingerprint_follows_the_resolved_file(tmp_path):
    from dataclasses import replace

    assets = tmp_path / "assets"
    write_tiny_esrgan(assets / "upscale_models" / "m.pth", scale=2)
    settings = replace(Settings(models_dir=tmp_path / "models"), asset_dirs=(assets,))
    from_assets = model_file_fingerprint({"name": "m.pth"}, settings)
    write_tiny_esrgan(tmp_path / "models" / "upscale_models" / "m.pth", scale=2)  # same bytes, shadows the asset
    assert model_file_fingerprint({"name": "m.pth"}, settings) != from_assets


# ---------------------------------------------------------------------------------------------- tiling

def test_tiled_equals_untiled_when_the_receptive_field_fits(tmp_path, x4):
    image = picture(height=40, width=48)
    full = upscale_untiled(x4, image)
    ctx, _ = make_ctx(tmp_path)
    tiled = run_node(UpscaleWithModel, ctx, upscale_model=x4, image=image, tile_size=32, overlap=16).pixels[0]  # 2×2 tiles
    assert tiled.shape == full.shape == (40 * 4, 48 * 4, 3)
    assert (tiled - full).abs().max() <= 1e-3
    # the model does see across tile borders: tiles blended right up to their edges miss the tolerance
    seams = run_node(UpscaleWithModel, ctx, upscale_model=x4, image=image, tile_size=32, overlap=0).pixels[0]
    assert (seams - full).abs().max() > 1e-3


def test_scale_and_batch(tmp_path, root):
    ctx, _ = make_ctx(root)
    x2 = run_node(LoadUpscaleModel, ctx, name="sub/tiny_x2.safetensors", device="cpu")
    out = run_node(UpscaleWithModel, ctx, upscale_model=x2, image=picture(batch=2, height=20, width=28), tile_size=512, overlap=32)
    assert out.pixels.shape == (2, 40, 56, 3)
    assert out.pixels.min() >= 0 and out.pixels.max() <= 1
    assert not torch.equal(out.pixels[0], out.pixels[1])


def test_progress_once_per_tile(tmp_path, x4):
    ctx, recorder = make_ctx(tmp_path)
    run_node(UpscaleWithModel, ctx, upscale_model=x4, image=picture(batch=2, height=40, width=36), tile_size=32, overlap=8)
    tiles = len(tile_starts(40, 32, 8)) * len(tile_starts(36, 32, 8))
    assert tiles == 4
    assert recorder.progress == [(i, 2 * tiles) for i in range(1, 2 * tiles + 1)]


def test_cancel_between_tiles(tmp_path, x4, monkeypatch):
    calls = []
    real = upscale.run_model
    monkeypatch.setattr(upscale, "run_model", lambda d, t: calls.append(t.shape) or real(d, t))
    ctx, recorder = make_ctx(tmp_path, cancel_after_progress=2)
    with pytest.raises(Cancelled):
        run_node(UpscaleWithModel, ctx, upscale_model=x4, image=picture(height=40, width=36), tile_size=32, overlap=8)
    assert len(calls) == 2 and len(recorder.progress) == 2


def test_out_of_memory_retries_once_with_half_tiles(tmp_path, x4, monkeypatch):
    shapes = []
    real = upscale.run_model

    def flaky(descriptor, tile):
        shapes.append(tuple(tile.shape[-2:]))
        if len(shapes) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(descriptor, tile)

    monkeypatch.setattr(upscale, "run_model", flaky)
    ctx, recorder = make_ctx(tmp_path)
    image = picture(height=72, width=40)
    out = run_node(UpscaleWithModel, ctx, upscale_model=x4, image=image, tile_size=64, overlap=16)
    assert shapes[:2] == [(64, 40), (64, 40)]  # the second of two tiles ran out of memory
    assert set(shapes[2:]) == {(32, 32)} and len(shapes[2:]) == 4 * 2
    assert len(recorder.warnings) == 1 and "32px tiles" in recorder.warnings[0]
    assert (out.pixels[0] - upscale_untiled(x4, image)).abs().max() <= 1e-3


def test_out_of_memory_twice_fails_clearly(tmp_path, x4, monkeypatch):
    def always(descriptor, tile):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate ... out of memory")

    monkeypatch.setattr(upscale, "run_model", always)
    ctx, _ = make_ctx(tmp_path)
    with pytest.raises(NodeInputError) as info:
        run_node(UpscaleWithModel, ctx, upscale_model=x4, image=picture(height=40, width=40), tile_size=64, overlap=16)
    assert info.value.input == "tile_size" and "32px" in info.value.message


def test_other_errors_are_not_retried(tmp_path, x4, monkeypatch):
    calls = []

    def broken(descriptor, tile):
        calls.append(1)
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(upscale, "run_model", broken)
    ctx, _ = make_ctx(tmp_path)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_node(UpscaleWithModel, ctx, upscale_model=x4, image=picture(height=40, width=40), tile_size=64, overlap=16)
    assert calls == [1]


def test_overlap_must_be_smaller_than_the_tile(tmp_path, x4):
    ctx, _ = make_ctx(tmp_path)
    with pytest.raises(NodeInputError) as info:
        run_node(UpscaleWithModel, ctx, upscale_model=x4, image=picture(height=40, width=40), tile_size=32, overlap=32)
    assert info.value.input == "overlap"


def test_grey_models_take_luminance_and_give_rgb(tmp_path):
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    folder = tmp_path / "models" / "upscale_models"
    folder.mkdir(parents=True)
    save_file(ESRGAN(in_nc=1, out_nc=1, num_filters=4, num_blocks=1, scale=2).state_dict(), str(folder / "grey.safetensors"))
    ctx, _ = make_ctx(tmp_path)
    model = run_node(LoadUpscaleModel, ctx, name="grey.safetensors", device="cpu")
    out = run_node(UpscaleWithModel, ctx, upscale_model=model, image=picture(height=12, width=10), tile_size=512, overlap=32).pixels
    assert out.shape == (1, 24, 20, 3)
    assert torch.equal(out[..., 0], out[..., 1]) and torch.equal(out[..., 1], out[..., 2])


# ---------------------------------------------------------------------------------------------- in the engine

@node(outputs={"image": IMAGE}, category="test")
def RandomPicture(height: int = Field(32, ge=1), width: int = Field(32, ge=1), seed: int = 0) -> Image:
    """Uniform noise pixels (test source)."""
    return picture(height=height, width=width, seed=seed)


@node(output=True, category="test")
def ShowShape(image: Image = Input(IMAGE)) -> dict:
    """Report an image batch's shape (test sink)."""
    return {"shape": list(image.pixels.shape)}


def test_workflow_loads_once_and_upscales(root):
    registry = Registry()
    registry.add_module(upscale)
    registry.add(spec_of(RandomPicture))
    registry.add(spec_of(ShowShape))
    settings = Settings(models_dir=root / "models", input_dir=root / "input", output_dir=root / "output")
    engine = Engine(registry, settings, ResultCache(value_budget=10**8), check_mutations=True)

    def workflow(seed):
        return {"graphflow": 1, "nodes": {
            "model": {"type": "LoadUpscaleModel", "inputs": {"name": "sub/tiny_x2.safetensors", "device": "cpu"}},
            "pic": {"type": "RandomPicture", "inputs": {"height": 16, "width": 24, "seed": seed}},
            "up": {"type": "UpscaleWithModel", "inputs": {"upscale_model": {"from": "model", "output": "upscale_model"},
                                                          "image": {"from": "pic", "output": "image"}, "tile_size": 32, "overlap": 8}},
            "show": {"type": "ShowShape", "inputs": {"image": {"from": "up", "output": "image"}}},
        }}

    first = engine.run(workflow(0))
    assert first.outputs["show"] == {"shape": [1, 32, 48, 3]}
    second = engine.run(workflow(1))
    assert "model" in second.cached and "up" in second.executed
    bad = workflow(0)
    bad["nodes"]["model"]["inputs"]["name"] = "nope.pth"
    with pytest.raises(WorkflowInvalid) as info:  # preflight: refused before anything runs
        engine.run(bad)
    [issue] = info.value.issues
    assert issue.input == "name" and "tiny_x4.pth" in issue.expected
