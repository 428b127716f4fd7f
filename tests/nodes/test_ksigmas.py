"""ComfyUI's noise levels and noise: each schedule against its formula (computed here in float64 with numpy),
SD 1.5's well-known sigma range, KSampler's denoise and window rules, and how each noise is seeded."""
import math

import numpy as np
import pytest
import torch

from graphflow.errors import InvalidArgument
from nodes.ksigmas import (DISCARD_PENULTIMATE, SCHEDULER_NAMES, DiscreteSigmas, brownian_noise_sampler,
                           default_noise_sampler, initial_noise, ksampler_sigmas, scheduler_sigmas, trim_sigmas)

SD15 = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}


def reference_sigmas() -> np.ndarray:
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    alphas = np.cumprod(1 - betas)
    return np.sqrt((1 - alphas) / alphas)


@pytest.fixture(scope="module")
def sd15():
    return DiscreteSigmas.from_config(SD15)


def test_the_model_sigmas_are_sd15s(sd15):
    assert sd15.sigmas.dtype == torch.float32 and len(sd15.sigmas) == 1000
    assert float(sd15.sigma_max) == pytest.approx(14.6146, abs=1e-4)  # the numbers every k-diffusion UI shows
    assert float(sd15.sigma_min) == pytest.approx(0.0292, abs=1e-4)
    # ComfyUI rounds alphas_cumprod to float32 before taking the sigmas: ~1e-5 off the float64 values at the low end
    assert np.allclose(sd15.sigmas.numpy(), reference_sigmas(), rtol=2e-5)


def test_timestep_is_the_nearest_in_log_space_and_sigma_interpolates_log_linearly(sd15):
    ref = reference_sigmas()
    assert sd15.timestep(torch.tensor([float(ref[500]), float(ref[0]) * 0.1, 100.0])).tolist() == [500, 0, 999]
    halfway = float(sd15.sigma(torch.tensor(250.5)))
    assert halfway == pytest.approx(math.exp((math.log(ref[250]) + math.log(ref[251])) / 2), rel=1e-5)


def test_karras_and_exponential_follow_their_formulas(sd15):
    low, high = float(sd15.sigma_min), float(sd15.sigma_max)
    ramp = np.linspace(0, 1, 8)
    karras = (high ** (1 / 7) + ramp * (low ** (1 / 7) - high ** (1 / 7))) ** 7
    assert np.allclose(scheduler_sigmas(sd15, "karras", 8).numpy(), [*karras, 0.0], rtol=1e-5)
    exponential = np.exp(np.linspace(math.log(high), math.log(low), 8))
    assert np.allclose(scheduler_sigmas(sd15, "exponential", 8).numpy(), [*exponential, 0.0], rtol=1e-5)


def test_normal_and_sgm_uniform_space_the_timesteps_evenly(sd15):
    ref = np.log(reference_sigmas())

    def at(t):
        low, high = math.floor(t), math.ceil(t)
        return math.exp((1 - (t - low)) * ref[low] + (t - low) * ref[high])

    normal = scheduler_sigmas(sd15, "normal", 5).numpy()
    assert np.allclose(normal, [at(t) for t in np.linspace(999, 0, 5)] + [0.0], rtol=2e-5)
    sgm = scheduler_sigmas(sd15, "sgm_uniform", 5).numpy()
    assert np.allclose(sgm, [at(t) for t in np.linspace(999, 0, 6)[:-1]] + [0.0], rtol=2e-5)


def test_simple_and_ddim_uniform_pick_training_sigmas(sd15):
    ref = reference_sigmas()
    assert np.allclose(scheduler_sigmas(sd15, "simple", 4).numpy(), [ref[999], ref[749], ref[499], ref[249], 0.0], rtol=2e-5)
    ddim = scheduler_sigmas(sd15, "ddim_uniform", 10).numpy()
    assert np.allclose(ddim, [ref[t] for t in range(901, 0, -100)] + [0.0], rtol=2e-5)
    # 1000 // 12 = 83: training steps 1, 84, ..., 997 — 13 sigmas for 12 steps, as in ComfyUI
    assert len(scheduler_sigmas(sd15, "ddim_uniform", 12)) == 14


def beta_quantile(p: float, a: float, b: float) -> float:
    """Beta(a, b)'s quantile by bisection on its CDF (the regularised incomplete beta function)."""
    from scipy.special import betainc

    low, high = 0.0, 1.0
    for _ in range(80):
        mid = (low + high) / 2
        low, high = (mid, high) if betainc(a, b, mid) < p else (low, mid)
    return (low + high) / 2


def test_beta_picks_training_sigmas_at_the_beta_quantiles(sd15):
    ref = reference_sigmas()
    steps = [int(np.rint(beta_quantile(1 - k / 10, 0.6, 0.6) * 999)) for k in range(10)]
    assert steps[0] == 999 and all(abs(a + b - 999) <= 1 for a, b in zip(steps[1:], steps[:0:-1]))  # a = b: symmetric
    assert np.allclose(scheduler_sigmas(sd15, "beta", 10).numpy(), [ref[t] for t in steps] + [0.0], rtol=2e-5)
    many = scheduler_sigmas(sd15, "beta", 600)  # dense ends: repeated training steps are taken once
    assert len(many) < 601 and bool((many[:-1] > many[1:]).all())


def test_linear_quadratic_falls_linearly_then_along_the_joined_parabola(sd15):
    steps, linear, threshold = 10, 5, 0.025
    # rising r(i): linear with slope threshold/linear up to i = linear, then the parabola with the same value and
    # slope there that reaches 1 at i = steps; the schedule is sigma_max·(1 − r)
    a, b, c = np.linalg.solve([[linear ** 2, linear, 1], [2 * linear, 1, 0], [steps ** 2, steps, 1]],
                              [threshold, threshold / linear, 1.0])
    rising = [i * threshold / linear for i in range(linear)] + [a * i * i + b * i + c for i in range(linear, steps + 1)]
    expected = float(sd15.sigma_max) * (1 - np.array(rising))
    assert np.allclose(scheduler_sigmas(sd15, "linear_quadratic", steps).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert scheduler_sigmas(sd15, "linear_quadratic", 1).tolist() == pytest.approx([float(sd15.sigma_max), 0.0])


def test_kl_optimal_is_evenly_spaced_in_arctan_sigma(sd15):
    low, high = float(sd15.sigma_min), float(sd15.sigma_max)
    expected = np.tan(np.linspace(math.atan(high), math.atan(low), 7))
    assert np.allclose(scheduler_sigmas(sd15, "kl_optimal", 7).numpy(), [*expected, 0.0], rtol=1e-5)
    assert scheduler_sigmas(sd15, "kl_optimal", 1).tolist() == pytest.approx([high, 0.0], rel=1e-5)


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_every_schedule_falls_from_the_top_to_zero(sd15, scheduler):
    sigmas = scheduler_sigmas(sd15, scheduler, 10)
    assert len(sigmas) == 11 and float(sigmas[-1]) == 0.0
    assert bool((sigmas[:-1] > sigmas[1:]).all())


def test_unknown_scheduler_is_named():
    with pytest.raises(InvalidArgument, match="unknown scheduler"):
        scheduler_sigmas(DiscreteSigmas.from_config(SD15), "linear_quadratic_x", 4)


def test_denoise_keeps_the_tail_of_steps_over_denoise(sd15):
    assert torch.equal(ksampler_sigmas(sd15, "karras", "euler", 10, denoise=0.4),
                       scheduler_sigmas(sd15, "karras", 25)[-11:])
    assert torch.equal(ksampler_sigmas(sd15, "normal", "euler", 7, denoise=1.0), scheduler_sigmas(sd15, "normal", 7))
    assert len(ksampler_sigmas(sd15, "normal", "euler", 7, denoise=0.0)) == 0


@pytest.mark.parametrize("sampler", sorted(DISCARD_PENULTIMATE - {"uni_pc_bh2"}))
def test_samplers_that_overshoot_drop_the_penultimate_sigma(sd15, sampler):
    longer = scheduler_sigmas(sd15, "normal", 11)
    assert torch.equal(ksampler_sigmas(sd15, "normal", sampler, 10), torch.cat([longer[:-2], longer[-1:]]))


def test_advanced_window():
    sigmas = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    assert trim_sigmas(sigmas, 0, 3).tolist() == [5.0, 4.0, 3.0, 2.0]
    assert trim_sigmas(sigmas, 0, 3, force_full_denoise=True).tolist() == [5.0, 4.0, 3.0, 0.0]
    assert trim_sigmas(sigmas, 2, 10000).tolist() == [3.0, 2.0, 1.0, 0.0]
    assert trim_sigmas(sigmas, 5, 10000) is None and trim_sigmas(sigmas, 3, 3) is None
    assert sigmas.tolist() == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]  # the input is left alone


def test_initial_noise_is_one_cpu_stream_for_the_batch():
    torch.manual_seed(42)
    expected = torch.randn(2, 4, 8, 8)  # what ComfyUI's prepare_noise draws after torch.manual_seed(seed)
    noise = initial_noise((2, 4, 8, 8), 42)
    assert noise.dtype == torch.float32 and torch.equal(noise, expected)
    assert not torch.equal(noise[1], initial_noise((1, 4, 8, 8), 42)[0])
    assert torch.equal(initial_noise((1, 4, 2, 2), 2**64 - 1), initial_noise((1, 4, 2, 2), 2**64 - 1))


def test_images_taken_from_a_batch_keep_the_noise_they_had_there():
    full = torch.cat([initial_noise((1, 4, 8, 8), 5, (i,)) for i in range(3)])
    generator = torch.Generator().manual_seed(5)
    assert torch.equal(full, torch.cat([torch.randn(1, 4, 8, 8, generator=generator) for _ in range(3)]))
    picked = initial_noise((3, 4, 8, 8), 5, (2, 0, 2))
    assert torch.equal(picked, full[[2, 0, 2]])


def test_ancestral_noise_comes_from_seed_plus_one_on_the_cpu():
    x = torch.zeros(1, 4, 4, 4)
    sample = default_noise_sampler(x, 42)
    first, second = sample(1.0, 0.5), sample(0.5, 0.1)
    generator = torch.Generator().manual_seed(43)
    assert torch.equal(first, torch.randn(1, 4, 4, 4, generator=generator))
    assert torch.equal(second, torch.randn(1, 4, 4, 4, generator=generator))


def test_brownian_noise_is_a_brownian_motion_over_sigma():
    torchsde = pytest.importorskip("torchsde")
    x = torch.zeros(1, 4, 32, 32)
    sigmas = torch.tensor([10.0, 4.0, 1.0, 0.0])
    sample = brownian_noise_sampler(x, sigmas, 7)
    # unit variance per interval, repeatable for a seed and independent of the order of the calls
    a, b = sample(sigmas[0], sigmas[1]), sample(sigmas[1], sigmas[2])
    assert float(a.std()) == pytest.approx(1.0, abs=0.05) and float(b.std()) == pytest.approx(1.0, abs=0.05)
    again = brownian_noise_sampler(x, sigmas, 7)
    assert torch.allclose(again(sigmas[1], sigmas[2]), b, atol=1e-5)
    assert torch.allclose(again(sigmas[0], sigmas[1]), a, atol=1e-5)
    # increments add up: W(10→1) = W(10→4) + W(4→1), each normalised by sqrt of its interval
    whole = sample(sigmas[0], sigmas[2]) * 3.0
    assert torch.allclose(whole, a * math.sqrt(6.0) + b * math.sqrt(3.0), atol=1e-4)
    # and the increment down from 10 to 4 is minus torchsde's from 4 up to 10
    tree = torchsde.BrownianTree(torch.tensor(1.0), torch.zeros(1, 4, 32, 32), torch.tensor(10.0), entropy=7)
    assert torch.allclose(a, -tree(torch.tensor(4.0), torch.tensor(10.0)) / math.sqrt(6.0), atol=1e-5)
    assert not torch.allclose(brownian_noise_sampler(x, sigmas, 8)(sigmas[0], sigmas[1]), a, atol=1e-2)
