"""The k-diffusion samplers on a model known in closed form: data drawn from N(0, c²) per pixel.

For that data the ideal denoiser is ``D(x, σ) = x·c²/(c² + σ²)`` and the probability-flow ODE has the exact
solution ``x(σ) = x(σ0)·sqrt(c² + σ²)/sqrt(c² + σ0²)``. Each sampler's first steps are recomputed here by hand
from the published update rules, the deterministic ones must converge to the exact solution, and the
stochastic ones must end with the data's spread c."""
import math

import pytest
import torch

from nodes.ksamplers import KSAMPLERS, ancestral_step
from nodes.ksigmas import DiscreteSigmas, default_noise_sampler, brownian_noise_sampler, karras_sigmas

C = 0.5


def gaussian_denoiser(calls=None):
    def denoise(x, sigma):
        if calls is not None:
            calls.append(sigma.clone())
        s = sigma.reshape(-1, 1, 1, 1)
        return x * C ** 2 / (C ** 2 + s ** 2)

    return denoise


def D(x, s):
    return x * C ** 2 / (C ** 2 + s ** 2)


def d(x, s):
    return (x - D(x, s)) / s


@pytest.fixture
def x0():
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3.0


SIGMAS = torch.tensor([3.0, 1.5, 0.5, 0.0], dtype=torch.float64)


def run(name, x, sigmas, **extra):
    return KSAMPLERS[name].function(gaussian_denoiser(), x, sigmas, **extra)


def test_euler_step_by_hand(x0):
    s0, s1 = 3.0, 1.5
    assert torch.allclose(run("euler", x0, SIGMAS[:2]), x0 + d(x0, s0) * (s1 - s0))
    assert torch.equal(run("ddim", x0, SIGMAS), run("euler", x0, SIGMAS))  # ComfyUI's ddim is its Euler


def test_heun_step_by_hand_and_euler_on_the_last(x0):
    s0, s1 = 3.0, 1.5
    guess = x0 + d(x0, s0) * (s1 - s0)
    expected = x0 + (d(x0, s0) + d(guess, s1)) / 2 * (s1 - s0)
    assert torch.allclose(run("heun", x0, SIGMAS[:2]), expected)
    calls = []
    KSAMPLERS["heun"].function(gaussian_denoiser(calls), x0, SIGMAS)
    assert len(calls) == 5  # two per step, one on the step to 0


def test_dpm_2_step_by_hand(x0):
    s0, s1 = 3.0, 1.5
    mid = math.sqrt(s0 * s1)
    guess = x0 + d(x0, s0) * (mid - s0)
    assert torch.allclose(run("dpm_2", x0, SIGMAS[:2]), x0 + d(guess, mid) * (s1 - s0))


def test_lms_second_step_integrates_the_lagrange_polynomial(x0):
    s0, s1, s2 = 3.0, 1.5, 0.5
    x1 = x0 + d(x0, s0) * (s1 - s0)
    c_now = ((s2 - s0) ** 2 - (s1 - s0) ** 2) / 2 / (s1 - s0)
    c_before = (s2 - s1) ** 2 / 2 / (s0 - s1)
    expected = x1 + c_now * d(x1, s1) + c_before * d(x0, s0)
    assert torch.allclose(run("lms", x0, SIGMAS[:3]), expected, rtol=1e-6)


def test_dpmpp_2m_two_steps_by_hand(x0):
    s0, s1, s2 = 3.0, 1.5, 0.5
    x1 = (s1 / s0) * x0 + (1 - s1 / s0) * D(x0, s0)
    r = math.log(s0 / s1) / math.log(s1 / s2)
    corrected = (1 + 1 / (2 * r)) * D(x1, s1) - 1 / (2 * r) * D(x0, s0)
    expected = (s2 / s1) * x1 + (1 - s2 / s1) * corrected
    assert torch.allclose(run("dpmpp_2m", x0, SIGMAS[:3]), expected)


def test_dpmpp_2m_sde_without_noise_is_dpmpp_2m(x0):
    no_noise = run("dpmpp_2m_sde", x0, SIGMAS, noise_sampler=None, eta=0.0)
    assert torch.allclose(no_noise, run("dpmpp_2m", x0, SIGMAS))


def test_dpmpp_2m_sde_step_by_hand(x0):
    s0, s1 = 3.0, 1.5
    z = torch.full_like(x0, 0.7)
    h = math.log(s0 / s1)
    expected = (s1 / s0) * math.exp(-h) * x0 + (1 - math.exp(-2 * h)) * D(x0, s0) + z * s1 * math.sqrt(1 - math.exp(-2 * h))
    assert torch.allclose(run("dpmpp_2m_sde", x0, SIGMAS[:2], noise_sampler=lambda a, b: z), expected)


def test_dpmpp_sde_without_noise_is_dpm_solver_pp_2s(x0):
    s0, s1 = 3.0, 1.5
    mid = math.sqrt(s0 * s1)
    x_mid = (mid / s0) * x0 + (1 - mid / s0) * D(x0, s0)
    expected = (s1 / s0) * x0 + (1 - s1 / s0) * D(x_mid, mid)
    assert torch.allclose(run("dpmpp_sde", x0, SIGMAS[:2], noise_sampler=None, eta=0.0), expected)


@pytest.mark.parametrize("name", ["euler_ancestral", "dpm_2_ancestral"])
def test_ancestral_step_by_hand(x0, name):
    s0, s1 = torch.tensor(3.0, dtype=torch.float64), torch.tensor(1.5, dtype=torch.float64)
    up = min(1.5, math.sqrt(1.5 ** 2 * (9.0 - 1.5 ** 2) / 9.0))
    down = math.sqrt(1.5 ** 2 - up ** 2)
    assert [float(v) for v in ancestral_step(s0, s1)] == pytest.approx([down, up])
    z = torch.full_like(x0, -0.3)
    if name == "euler_ancestral":
        deterministic = x0 + d(x0, 3.0) * (down - 3.0)
    else:
        mid = math.sqrt(3.0 * down)
        guess = x0 + d(x0, 3.0) * (mid - 3.0)
        deterministic = x0 + d(guess, mid) * (down - 3.0)
    got = run(name, x0, torch.stack([s0, s1]), noise_sampler=lambda a, b: z)
    assert torch.allclose(got, deterministic + z * up)


def test_dpmpp_2s_ancestral_step_by_hand(x0):
    s0, s1 = 3.0, 1.5
    up = min(1.5, math.sqrt(1.5 ** 2 * (9.0 - 1.5 ** 2) / 9.0))
    down = math.sqrt(1.5 ** 2 - up ** 2)
    mid = math.sqrt(s0 * down)
    x_mid = (mid / s0) * x0 + (1 - mid / s0) * D(x0, s0)
    z = torch.full_like(x0, 0.4)
    expected = (down / s0) * x0 + (1 - down / s0) * D(x_mid, mid) + z * up
    assert torch.allclose(run("dpmpp_2s_ancestral", x0, SIGMAS[:2], noise_sampler=lambda a, b: z), expected)


def test_lcm_jumps_to_the_prediction_and_noises_it_to_the_next_sigma(x0):
    z = torch.full_like(x0, 0.3)
    one = run("lcm", x0, SIGMAS[:2], noise_sampler=lambda a, b: z)
    assert torch.allclose(one, D(x0, 3.0) + z * 1.5)
    assert torch.allclose(run("lcm", x0, SIGMAS, noise_sampler=lambda a, b: z), D(D(one, 1.5) + z * 0.5, 0.5))


def test_ddpm_step_is_the_posterior_of_the_predicted_clean_latent(x0):
    """DDPM's q(x_{t-1} | x_t, x0) (Ho et al. eq. 6-7) in the variance-preserving latent x / sqrt(1 + σ²)."""
    s0, s1 = 3.0, 1.5
    z = torch.full_like(x0, -0.2)
    ac, ac_next = 1 / (1 + s0 ** 2), 1 / (1 + s1 ** 2)
    alpha = ac / ac_next
    x_vp = x0 * math.sqrt(ac)
    mean = math.sqrt(ac_next) * (1 - alpha) / (1 - ac) * D(x0, s0) + math.sqrt(alpha) * (1 - ac_next) / (1 - ac) * x_vp
    spread = math.sqrt((1 - alpha) * (1 - ac_next) / (1 - ac))
    expected = (mean + spread * z) / math.sqrt(ac_next)
    assert torch.allclose(run("ddpm", x0, SIGMAS[:2], noise_sampler=lambda a, b: z), expected)
    last = torch.tensor([0.5, 0.0], dtype=torch.float64)  # the step to 0 lands on the prediction, no noise
    assert torch.allclose(run("ddpm", x0, last, noise_sampler=lambda a, b: z * 1e6), D(x0, 0.5))


def test_dpmpp_3m_sde_without_noise_starts_as_dpmpp_2m_and_then_corrects_with_its_history(x0):
    first = run("dpmpp_3m_sde", x0, SIGMAS[:2], noise_sampler=None, eta=0.0)
    assert torch.allclose(first, run("dpmpp_2m", x0, SIGMAS[:2]))  # both first order on the first step
    s0, s1, s2 = 3.0, 1.5, 0.5
    x1 = (s1 / s0) * x0 + (1 - s1 / s0) * D(x0, s0)
    h, h_1 = math.log(s1 / s2), math.log(s0 / s1)
    phi_2 = math.expm1(-h) / h + 1  # φ2(h)·h = (e^-h − 1 + h)/h: the exponential integrator's second term
    expected = (s2 / s1) * x1 + (1 - s2 / s1) * D(x1, s1) + phi_2 * (D(x1, s1) - D(x0, s0)) / (h_1 / h)
    assert torch.allclose(run("dpmpp_3m_sde", x0, SIGMAS[:3], noise_sampler=None, eta=0.0), expected)


def test_dpmpp_3m_sde_noise_enters_as_in_dpmpp_2m_sde(x0):
    z = torch.full_like(x0, 0.7)
    assert torch.allclose(run("dpmpp_3m_sde", x0, SIGMAS[:2], noise_sampler=lambda a, b: z),
                          run("dpmpp_2m_sde", x0, SIGMAS[:2], noise_sampler=lambda a, b: z))


class WithNegative:
    """A guided denoiser that also says what the negative prompt predicted (CFG++ samplers read both)."""

    def __init__(self, guided, negative):
        self.guided, self.negative = guided, negative

    def with_uncond(self, x, sigma):
        s = sigma.reshape(-1, 1, 1, 1)
        return self.guided(x, s), self.negative(x, s)


def test_euler_cfg_pp_lands_on_the_guided_prediction_along_the_negatives_direction(x0):
    s0, s1 = 3.0, 1.5
    model = WithNegative(D, lambda x, s: 0.5 * D(x, s))
    got = KSAMPLERS["euler_cfg_pp"].function(model, x0, SIGMAS[:2])
    assert torch.allclose(got, D(x0, s0) + s1 * (x0 - 0.5 * D(x0, s0)) / s0)
    same = KSAMPLERS["euler_cfg_pp"].function(WithNegative(D, D), x0, SIGMAS)
    assert torch.allclose(same, run("euler", x0, SIGMAS))  # negative = guided (cfg 1): plain Euler


DETERMINISTIC = ["euler", "heun", "dpm_2", "lms", "dpmpp_2m", "uni_pc", "uni_pc_bh2", "ddim"]


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_converge_to_the_exact_ode_solution(x0, name):
    sigmas = karras_sigmas(60, 0.03, 3.0).double()
    exact_end = x0 * C / math.sqrt(C ** 2 + 9.0)  # x(0)
    got = run(name, x0, sigmas)
    first_order = name in ("euler", "ddim")  # 60 Euler steps land within ~3%, the others within 0.2%
    assert torch.allclose(got, exact_end, rtol=4e-2 if first_order else 2e-3, atol=1e-4), (got - exact_end).abs().max()


def test_uni_pc_is_higher_order_than_euler(x0):
    sigmas = karras_sigmas(8, 0.03, 3.0).double()
    exact_end = x0 * C / math.sqrt(C ** 2 + 9.0)
    unipc_error = (run("uni_pc", x0, sigmas) - exact_end).abs().max()
    euler_error = (run("euler", x0, sigmas) - exact_end).abs().max()
    assert unipc_error < euler_error / 5


@pytest.mark.parametrize("name", ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
                                  "dpmpp_3m_sde", "ddpm"])
def test_stochastic_samplers_end_with_the_datas_spread(name):
    pytest.importorskip("torchsde")
    sigmas = karras_sigmas(100, 0.03, 10.0)  # Euler ancestral, first order, still ends 4% narrow at 100 steps
    start = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(1)) * math.sqrt(C ** 2 + 100.0)
    spec = KSAMPLERS[name]
    noise = default_noise_sampler(start, 5) if spec.noise == "default" else brownian_noise_sampler(start, sigmas, 5)
    end = spec.function(gaussian_denoiser(), start, sigmas, noise_sampler=noise)
    assert float(end.std()) == pytest.approx(C, rel=0.06)
    ode_end = start * C / math.sqrt(C ** 2 + 100.0)
    assert not torch.allclose(end, ode_end, atol=0.05)  # the added noise changed the path


def test_callback_sees_every_step_and_the_prediction(x0):
    seen = []
    KSAMPLERS["dpmpp_2m"].function(gaussian_denoiser(), x0, SIGMAS, callback=lambda i, x, den: seen.append((i, den.shape)))
    assert [i for i, _ in seen] == [0, 1, 2]


def test_every_comfyui_sampler_name_of_the_issue_is_there():
    wanted = {"euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2m", "dpmpp_2m_sde",
              "dpmpp_sde", "ddim", "uni_pc", "lcm", "ddpm", "euler_cfg_pp", "dpmpp_3m_sde"}
    assert wanted <= set(KSAMPLERS)
    names = list(KSAMPLERS)  # ComfyUI's order
    assert names.index("euler_cfg_pp") == names.index("euler") + 1
    assert names[names.index("dpmpp_2m_sde"):names.index("ddim")] == ["dpmpp_2m_sde", "dpmpp_3m_sde", "ddpm", "lcm"]


def test_samplers_run_on_the_sd15_schedule_in_float32():
    sigmas = DiscreteSigmas.from_config({"beta_schedule": "scaled_linear"})
    from nodes.ksigmas import scheduler_sigmas

    schedule = scheduler_sigmas(sigmas, "normal", 10)
    x = torch.randn(1, 4, 8, 8) * float(schedule[0])
    for name in DETERMINISTIC:
        out = KSAMPLERS[name].function(gaussian_denoiser(), x, schedule)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name, scheduler_class, options", [
    ("euler", "EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    ("lms", "LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    ("dpmpp_2m", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++"}),
])
def test_the_same_steps_as_diffusers_ports_of_the_k_diffusion_samplers(name, scheduler_class, options):
    """An independent implementation: diffusers' schedulers step on their own sigmas; ours on the same sigmas.

    DPM-Solver in diffusers works on x / sqrt(1 + sigma²) (variance preserving); the others on x itself. LMS is
    compared before its last step, which k-diffusion replaces by the prediction and diffusers integrates."""
    import diffusers

    from nodes.builtin_models import SD_SCHEDULER_CONFIG

    scheduler = getattr(diffusers, scheduler_class).from_config(SD_SCHEDULER_CONFIG, **options)
    scheduler.set_timesteps(10)
    sigmas = scheduler.sigmas.clone().float()
    variance_preserving = name == "dpmpp_2m"
    steps = 9 if name == "lms" else 10
    start = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)) * float(sigmas[0])
    x = start / math.sqrt(1 + float(sigmas[0]) ** 2) if variance_preserving else start.clone()
    for i, t in enumerate(scheduler.timesteps[:steps]):
        sigma = float(sigmas[i])
        k_x = x * math.sqrt(1 + sigma ** 2) if variance_preserving else x
        eps = (k_x - D(k_x, sigma)) / sigma  # what an epsilon UNet would predict for this denoiser
        scheduler.scale_model_input(x, t)  # the pipeline's call (LMS warns without it); the UNet input is not needed
        x = scheduler.step(eps, t, x).prev_sample
    if variance_preserving and float(sigmas[steps]) > 0:
        x = x * math.sqrt(1 + float(sigmas[steps]) ** 2)
    ours = KSAMPLERS[name].function(gaussian_denoiser(), start, sigmas[:steps + 1])
    assert torch.allclose(ours, x, rtol=1e-4, atol=1e-5), (ours - x).abs().max()
