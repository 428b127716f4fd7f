"""VAEDecode and VAEEncode: diffusers' latent scaling and pixel ranges, deterministic encoding."""
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor

from graphflow.errors import NodeInputError
from nodes.vae import VAEDecode, VAEEncode
from nodes.values import Image, Latent
from tests.nodes.runctx import run_node
from tests.nodes.stage_helpers import channels_last


def random_latent(batch=2, seed=0):
    return Latent(samples=torch.randn(batch, 4, 16, 24, generator=torch.Generator().manual_seed(seed)))


def gradient_image(batch=1, height=32, width=48):
    return Image(pixels=torch.linspace(0, 1, batch * height * width * 3).reshape(batch, height, width, 3))


def test_decode_is_the_pipelines_decode_and_postprocess(sd_vae):
    latent = random_latent()
    image = run_node(VAEDecode, vae=sd_vae, latent=latent)
    with torch.no_grad():
        decoded = sd_vae.vae.decode(latent.samples / sd_vae.vae.config.scaling_factor, return_dict=False)[0]
    expected = VaeImageProcessor(vae_scale_factor=2).postprocess(decoded, output_type="pt")
    assert image.pixels.shape == (2, 32, 48, 3)  # channels last, twice the latent size for the tiny VAE
    assert image.pixels.dtype == torch.float32
    assert torch.equal(image.pixels, channels_last(expected))
    assert image.pixels.min() >= 0 and image.pixels.max() <= 1


def test_encode_is_the_scaled_mode_of_the_latent_distribution(sd_vae):
    image = gradient_image()
    latent = run_node(VAEEncode, vae=sd_vae, image=image)
    normalized = VaeImageProcessor(vae_scale_factor=2).normalize(image.pixels.permute(0, 3, 1, 2))
    with torch.no_grad():
        mode = sd_vae.vae.encode(normalized).latent_dist.mode()
    assert latent.samples.shape == (1, 4, 16, 24)
    assert torch.equal(latent.samples, mode * sd_vae.vae.config.scaling_factor)
    assert latent.schedule is None


def test_encode_is_deterministic(sd_vae):
    image = gradient_image(batch=2)
    assert torch.equal(run_node(VAEEncode, vae=sd_vae, image=image).samples, run_node(VAEEncode, vae=sd_vae, image=image).samples)


def test_decode_is_deterministic(sd_vae):
    latent = random_latent(seed=3)
    assert torch.equal(run_node(VAEDecode, vae=sd_vae, latent=latent).pixels, run_node(VAEDecode, vae=sd_vae, latent=latent).pixels)


def test_encode_needs_sizes_that_fit_the_downscale_factor(sd_vae):
    with pytest.raises(NodeInputError) as error:
        run_node(VAEEncode, vae=sd_vae, image=gradient_image(height=33))
    assert error.value.input == "image" and error.value.received == 33


def test_vae_nodes_leave_inputs_untouched(sd_vae):
    latent, image = random_latent(), gradient_image()
    before = [v.__graphflow_digest__() for v in (sd_vae, latent, image)]
    run_node(VAEDecode, vae=sd_vae, latent=latent)
    run_node(VAEEncode, vae=sd_vae, image=image)
    assert [v.__graphflow_digest__() for v in (sd_vae, latent, image)] == before


# ------------------------------------------------------------------------------------------------ tiling


@pytest.fixture(scope="module")
def toy_vae():
    from nodes.loaders import LoadCheckpoint

    return run_node(LoadCheckpoint, name="toy-shapes", prediction_type="auto", dtype="float32", device="cpu")[2]


@pytest.fixture(scope="module")
def shapes_256():
    import numpy as np

    from training.shapes import make_dataset

    pictures, _ = make_dataset(2, 5, 256)
    return Image(pixels=torch.from_numpy(pictures.astype(np.float32) / 255))


def test_tiled_decode_and_encode_stay_near_one_pass_and_nearer_than_diffusers_tiling(toy_vae, shapes_256):
    """3×3 tiles of 128 px over 256² toy pictures. The VAE's group norms and mid-block attention see only their
    tile, so tiling is not exact (a tile of plain background normalises differently): the README quotes these
    bounds. diffusers' own tiled_decode on the same tiles (its 25 % overlap) differs more."""
    import copy

    latent = run_node(VAEEncode, vae=toy_vae, image=shapes_256)
    tiled_latent = run_node(VAEEncode, vae=toy_vae, image=shapes_256, tile_size=128, tile_overlap=32)
    assert (tiled_latent.samples - latent.samples).abs().mean() < 0.07  # latents have std ~1
    full = run_node(VAEDecode, vae=toy_vae, latent=latent).pixels
    tiled = run_node(VAEDecode, vae=toy_vae, latent=latent, tile_size=128, tile_overlap=32).pixels
    assert tiled.shape == full.shape == (2, 256, 256, 3)
    ours = (tiled - full).abs().mean()
    assert ours < 0.035
    theirs = copy.copy(toy_vae.vae)  # a shallow copy takes the tile attributes without touching the shared model
    theirs.tile_sample_min_size, theirs.tile_latent_min_size, theirs.tile_overlap_factor = 128, 32, 0.25
    with torch.no_grad():
        reference = toy_vae.vae.decode(latent.samples / toy_vae.scaling_factor).sample
        diffusers_tiled = theirs.tiled_decode(latent.samples / toy_vae.scaling_factor).sample
    assert ours < ((diffusers_tiled - reference).abs() / 2).mean()


def test_a_tile_as_large_as_the_image_is_one_pass_per_image(toy_vae, shapes_256):
    """Tiled runs go image by image: a single tile equals the batched pass up to float reassociation."""
    latent = run_node(VAEEncode, vae=toy_vae, image=shapes_256)
    one = run_node(VAEDecode, vae=toy_vae, latent=latent, tile_size=256).pixels
    assert (one - run_node(VAEDecode, vae=toy_vae, latent=latent).pixels).abs().max() < 1e-3


def test_tiled_nodes_report_progress_per_tile_and_stop_when_cancelled(toy_vae, shapes_256, tmp_path):
    from graphflow.errors import Cancelled
    from tests.nodes.runctx import make_ctx

    ctx, recorder = make_ctx(tmp_path)
    latent = run_node(VAEEncode, ctx=ctx, vae=toy_vae, image=shapes_256, tile_size=128, tile_overlap=32)
    # 128 px tiles overlapping by at least 32 px need three a side of 256 px: 2 images × 3×3 tiles
    assert recorder.progress == [(i, 18) for i in range(1, 19)]
    ctx, recorder = make_ctx(tmp_path, cancel_after_progress=3)
    with pytest.raises(Cancelled):
        run_node(VAEDecode, ctx=ctx, vae=toy_vae, latent=latent, tile_size=128, tile_overlap=32)
    assert len(recorder.progress) == 3


def test_an_overlap_as_large_as_the_tile_is_refused(sd_vae):
    with pytest.raises(NodeInputError) as error:
        run_node(VAEDecode, vae=sd_vae, latent=random_latent(), tile_size=64, tile_overlap=64)
    assert error.value.input == "tile_overlap"


def test_a_sliced_batch_gives_the_batchs_pixels_and_latents(sd_vae, monkeypatch):
    """VAE slicing decodes and encodes one image at a time; every VAE layer treats images separately, so the
    result is the whole batch's up to float rounding (kernels sum in another order for another batch size)."""
    latent, image = random_latent(batch=3), gradient_image(batch=3)
    whole = run_node(VAEDecode, vae=sd_vae, latent=latent).pixels, run_node(VAEEncode, vae=sd_vae, image=image).samples
    batches = []
    decode, encode = sd_vae.vae.decode, sd_vae.vae.encode
    monkeypatch.setattr(sd_vae.vae, "decode", lambda z, **kw: batches.append(z.shape[0]) or decode(z, **kw))
    monkeypatch.setattr(sd_vae.vae, "encode", lambda x, **kw: batches.append(x.shape[0]) or encode(x, **kw))
    sliced = (run_node(VAEDecode, vae=sd_vae, latent=latent, slice_batch=True).pixels,
              run_node(VAEEncode, vae=sd_vae, image=image, slice_batch=True).samples)
    assert batches == [1] * 6
    assert (sliced[0] - whole[0]).abs().max() <= 1e-5 and (sliced[1] - whole[1]).abs().max() <= 1e-5
