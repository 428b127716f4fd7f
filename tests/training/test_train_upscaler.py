"""training/train_upscaler.py: a few steps make a file spandrel identifies as a 4x Real-ESRGAN Compact, and the
same seed gives the same weights (the shipped upscaler is what one full run wrote)."""
import dataclasses

import pytest
import torch

from training.train_upscaler import Config, make_pairs, save, train

TINY = dataclasses.replace(Config(), pictures=4, held_out=2, steps=3, batch=2, num_feat=8, num_conv=2)


@pytest.fixture(autouse=True)
def keep_thread_count():
    """train() sets torch's thread count; the rest of the session keeps its own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_pairs_are_the_256_picture_and_its_vae_decoded_64_copy():
    inputs, targets = make_pairs(2, seed=3, high=256)
    assert inputs.shape == (2, 3, 64, 64) and targets.shape == (2, 3, 256, 256)
    shrunk = torch.nn.functional.avg_pool2d(targets, 4)
    assert (inputs - shrunk).abs().mean() < 0.05, "the input is the target, smaller, through the toy VAE"
    again, _ = make_pairs(2, seed=3, high=256)
    assert torch.equal(inputs, again)


def test_a_short_run_saves_a_compact_esrgan_that_spandrel_loads_and_is_repeatable(tmp_path):
    from nodes.upscale import load_upscale_model

    first, report = train(TINY, log=lambda line: None)
    second, _ = train(TINY, log=lambda line: None)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert {"psnr_model", "psnr_lanczos", "final_l1"} <= set(report)
    save(first, tmp_path / "up.safetensors")
    loaded = load_upscale_model(tmp_path / "up.safetensors", "up.safetensors")
    assert (loaded.architecture, loaded.scale) == ("RealESRGAN Compact", 4)
