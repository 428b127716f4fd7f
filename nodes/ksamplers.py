"""k-diffusion-style samplers: small pure functions over (denoiser, x, sigmas).

A *denoiser* is ``denoise(x, sigma) -> x0``: given latents at noise level sigma (a (B,) tensor) it predicts
the clean latents (for an epsilon model ``x - sigma * eps``; classifier-free guidance and area composition
live inside it, see nodes/comfy/guidance.py). A sampler walks ``x`` down the sigmas (highest first, usually
ending on 0) and returns the result; ``x`` starts as noise already scaled to ``sigmas[0]``.

The update rules are those of Katherine Crowson's k-diffusion as ComfyUI ships them (Karras et al. 2022 for
Euler/Heun/DPM2, Lu et al. 2022 for DPM-Solver++), written here from the published formulas with the same
order of float operations, so a step gives ComfyUI's numbers. Samplers that add noise take a
``noise_sampler(sigma, sigma_next)`` (nodes/ksigmas.py makes ComfyUI's). ``callback(i, x, denoised)``, if
given, is called after the model call of step i (progress and previews).

:data:`KSAMPLERS` maps ComfyUI's sampler names to these functions, in ComfyUI's order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Denoiser = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
Callback = Callable[[int, "torch.Tensor", "torch.Tensor"], None] | None


def to_d(x: "torch.Tensor", sigma: "torch.Tensor", denoised: "torch.Tensor") -> "torch.Tensor":
    """The probability-flow ODE's derivative dx/dsigma for a denoiser output."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from: "torch.Tensor", sigma_to: "torch.Tensor", eta: float = 1.0):
    """(sigma_down, sigma_up): step deterministically down to sigma_down, then add sigma_up of fresh noise,
    so the total variance lands on sigma_to."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def _batch(x: "torch.Tensor", sigma: "torch.Tensor") -> "torch.Tensor":
    return sigma * x.new_ones([x.shape[0]])


def _notify(callback: Callback, i: int, x, denoised) -> None:
    if callback is not None:
        callback(i, x, denoised)


def sample_euler(model: Denoiser, x, sigmas, callback: Callback = None, **_):
    """Euler steps along the ODE (Karras et al. Algorithm 2 without churn)."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(x, sigmas[i]))
        _notify(callback, i, x, denoised)
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def sample_euler_ancestral(model: Denoiser, x, sigmas, noise_sampler, callback: Callback = None, eta: float = 1.0, s_noise: float = 1.0, **_):
    """Euler down to sigma_down, then fresh noise up to sigma_next."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(x, sigmas[i]))
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _notify(callback, i, x, denoised)
        if sigma_down == 0:
            x = denoised
        else:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i]) + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def sample_heun(model: Denoiser, x, sigmas, callback: Callback = None, **_):
    """Heun's second-order method; the last step (to 0) is plain Euler."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(x, sigmas[i]))
        d = to_d(x, sigmas[i], denoised)
        _notify(callback, i, x, denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, _batch(x, sigmas[i + 1])))
            x = x + (d + d_2) / 2 * dt
    return x


def _log_midpoint(a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    return a.log().lerp(b.log(), 0.5).exp()


def sample_dpm_2(model: Denoiser, x, sigmas, callback: Callback = None, **_):
    """DPM-Solver-2: the derivative taken at the log-midpoint sigma; the last step is Euler."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(x, sigmas[i]))
        d = to_d(x, sigmas[i], denoised)
        _notify(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            sigma_mid = _log_midpoint(sigmas[i], sigmas[i + 1])
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, model(x_2, _batch(x, sigma_mid)))
            x = x + d_2 * (sigmas[i + 1] - sigmas[i])
    return x


def sample_dpm_2_ancestral(model: Denoiser, x, sigmas, noise_sampler, callback: Callback = None, eta: float = 1.0, s_noise: float = 1.0, **_):
    """DPM-Solver-2 down to sigma_down, then fresh noise up to sigma_next."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(x, sigmas[i]))
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _notify(callback, i, x, denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = _log_midpoint(sigmas[i], sigma_down)
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, model(x_2, _batch(x, sigma_mid)))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def lms_coefficient(order: int, t, i: int, j: int) -> float:
    """∫ from t[i] to t[i+1] of the Lagrange basis polynomial j over the points t[i], t[i-1], ..., t[i-order+1]."""
    from scipy import integrate

    def basis(tau: float) -> float:
        product = 1.0
        for k in range(order):
            if k != j:
                product *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return product

    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


def sample_lms(model: Denoiser, x, sigmas, callback: Callback = None, order: int = 4, **_):
    """Linear multistep: the last ``order`` derivatives integrated as a polynomial in sigma."""
    points = sigmas.detach().cpu().numpy()
    history: list = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(x, sigmas[i]))
        history.append(to_d(x, sigmas[i], denoised))
        if len(history) > order:
            history.pop(0)
        _notify(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            current = min(i + 1, order)
            coefficients = [lms_coefficient(current, points, i, j) for j in range(current)]
            x = x + sum(c * d for c, d in zip(coefficients, reversed(history)))
    return x


def _t(sigma: "torch.Tensor") -> "torch.Tensor":
    """DPM-Solver's time: minus log sigma (half the log signal-to-noise ratio)."""
    return sigma.log().neg()


def _sigma(t: "torch.Tensor") -> "torch.Tensor":
    return t.neg().exp()


def sample_dpmpp_2s_ancestral(model: Denoiser, x, sigmas, noise_sampler, callback: Callback = None, eta: float = 1.0,
                              s_noise: float = 1.0, **_):
    """DPM-Solver++(2S) down to sigma_down (one extra model call at the log-midpoint), then fresh noise."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(x, sigmas[i]))
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _notify(callback, i, x, denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(sigma_down)
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (_sigma(s) / _sigma(t)) * x - (-h * 0.5).expm1() * denoised
            denoised_2 = model(x_2, _batch(x, _sigma(s)))
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def sample_dpmpp_2m(model: Denoiser, x, sigmas, callback: Callback = None, **_):
    """DPM-Solver++(2M): second order from the previous step's prediction; first and last steps first order."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(x, sigmas[i]))
        _notify(callback, i, x, denoised)
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - _t(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def sample_dpmpp_2m_sde(model: Denoiser, x, sigmas, noise_sampler, callback: Callback = None, eta: float = 1.0,
                        s_noise: float = 1.0, solver_type: str = "midpoint", **_):
    """DPM-Solver++(2M) SDE (midpoint correction by default); the last step (to 0) returns the prediction."""
    if len(sigmas) <= 1:
        return x
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(x, sigmas[i]))
        _notify(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = _t(sigmas[i]), _t(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        old_denoised, h_last = denoised, h
    return x


def sample_dpmpp_sde(model: Denoiser, x, sigmas, noise_sampler, callback: Callback = None, eta: float = 1.0,
                     s_noise: float = 1.0, r: float = 0.5, **_):
    """DPM-Solver++ (stochastic, two model calls per step: at the log-SNR point r of the way, then the end)."""
    if len(sigmas) <= 1:
        return x
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(x, sigmas[i]))
        _notify(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = _t(sigmas[i]), _t(sigmas[i + 1])
        h = lambda_t - lambda_s
        lambda_s_1 = lambda_s + r * h
        fac = 1 / (2 * r)
        sigma_s_1 = _sigma(lambda_s_1)
        alpha_s = sigmas[i] * lambda_s.exp()
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        # step 1: to the intermediate point
        sd, su = ancestral_step(lambda_s.neg().exp(), lambda_s_1.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        x_2 = (alpha_s_1 / alpha_s) * (-h_).exp() * x - alpha_s_1 * (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s_1 * noise_sampler(sigmas[i], sigma_s_1) * s_noise * su
        denoised_2 = model(x_2, _batch(x, sigma_s_1))
        # step 2: to the end, with the two predictions combined
        sd, su = ancestral_step(lambda_s.neg().exp(), lambda_t.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


def sample_dpmpp_3m_sde(model: Denoiser, x, sigmas, noise_sampler, callback: Callback = None, eta: float = 1.0,
                        s_noise: float = 1.0, **_):
    """DPM-Solver++(3M) SDE: third order from the two previous predictions (second order on the second step,
    first on the first); the last step (to 0) returns the prediction."""
    if len(sigmas) <= 1:
        return x
    denoised_1, denoised_2, h, h_1, h_2 = None, None, None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(x, sigmas[i]))
        _notify(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = _t(sigmas[i]), _t(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - denoised_1) / r0, (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                d1 = (denoised - denoised_1) / (h_1 / h)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + (alpha_t * phi_2) * d1
            if eta > 0 and s_noise > 0:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def _ddpm_step(x, sigma, sigma_next, eps, noise_sampler):
    """One ancestral DDPM step (Ho et al. 2020) on the variance-preserving latent ``x``, written in sigmas."""
    alpha_cumprod = 1 / ((sigma * sigma) + 1)
    alpha_cumprod_next = 1 / ((sigma_next * sigma_next) + 1)
    alpha = alpha_cumprod / alpha_cumprod_next
    mean = (1.0 / alpha).sqrt() * (x - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
    if sigma_next > 0:
        mean = mean + ((1 - alpha) * (1.0 - alpha_cumprod_next) / (1.0 - alpha_cumprod)).sqrt() * noise_sampler(sigma, sigma_next)
    return mean


def sample_ddpm(model: Denoiser, x, sigmas, noise_sampler, callback: Callback = None, **_):
    """DDPM's ancestral sampler: each step taken on x / sqrt(1 + sigma²) with the predicted noise, then scaled back."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(x, sigmas[i]))
        _notify(callback, i, x, denoised)
        x = _ddpm_step(x / torch.sqrt(1.0 + sigmas[i] ** 2.0), sigmas[i], sigmas[i + 1], (x - denoised) / sigmas[i],
                       noise_sampler)
        if sigmas[i + 1] != 0:
            x = x * torch.sqrt(1.0 + sigmas[i + 1] ** 2.0)
    return x


def sample_lcm(model: Denoiser, x, sigmas, noise_sampler, callback: Callback = None, **_):
    """Latent consistency sampling: jump to the prediction, then noise it afresh to the next sigma."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(x, sigmas[i]))
        _notify(callback, i, x, denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] + x
    return x


def sample_euler_cfg_pp(model, x, sigmas, callback: Callback = None, **_):
    """Euler with CFG++ (Chung et al. 2024): the guided prediction is where a step lands, the negative prompt's
    prediction the direction it keeps. The denoiser must offer ``with_uncond(x, sigma) -> (guided, negative)``
    (nodes/comfy/guidance.py's runs the negative even at cfg 1, as ComfyUI does for this sampler)."""
    for i in range(len(sigmas) - 1):
        denoised, uncond = model.with_uncond(x, _batch(x, sigmas[i]))
        _notify(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            alpha_s = sigmas[i] * _t(sigmas[i]).exp()  # 1 up to rounding for SD's (epsilon / v) models
            alpha_t = sigmas[i + 1] * _t(sigmas[i + 1]).exp()
            d = to_d(x, sigmas[i], alpha_s * uncond)
            x = alpha_t * denoised + alpha_t * (sigmas[i + 1] / alpha_t) * d
    return x


@dataclass(frozen=True)
class KSampler:
    """One of ComfyUI's sampler names: the function and the per-step noise it needs (None, "default", "brownian")."""

    name: str
    function: Callable
    noise: str | None = None


def _unipc(model, x, sigmas, callback: Callback = None, **_):
    from .unipc import sample_unipc

    return sample_unipc(model, x, sigmas, callback=callback)


def _unipc_bh2(model, x, sigmas, callback: Callback = None, **_):
    from .unipc import sample_unipc

    return sample_unipc(model, x, sigmas, callback=callback, variant="bh2")


KSAMPLERS: dict[str, KSampler] = {
    s.name: s
    for s in (
        KSampler("euler", sample_euler),
        KSampler("euler_cfg_pp", sample_euler_cfg_pp),
        KSampler("euler_ancestral", sample_euler_ancestral, "default"),
        KSampler("heun", sample_heun),
        KSampler("dpm_2", sample_dpm_2),
        KSampler("dpm_2_ancestral", sample_dpm_2_ancestral, "default"),
        KSampler("lms", sample_lms),
        KSampler("dpmpp_2s_ancestral", sample_dpmpp_2s_ancestral, "default"),
        KSampler("dpmpp_sde", sample_dpmpp_sde, "brownian"),
        KSampler("dpmpp_2m", sample_dpmpp_2m),
        KSampler("dpmpp_2m_sde", sample_dpmpp_2m_sde, "brownian"),
        KSampler("dpmpp_3m_sde", sample_dpmpp_3m_sde, "brownian"),
        KSampler("ddpm", sample_ddpm, "default"),
        KSampler("lcm", sample_lcm, "default"),
        # ComfyUI's "ddim" is its Euler sampler (the DDIM schedule is the ddim_uniform scheduler); only the
        # inpainting noise differs (nodes/comfy/ksampler.py)
        KSampler("ddim", sample_euler),
        KSampler("uni_pc", _unipc),
        KSampler("uni_pc_bh2", _unipc_bh2),
    )
}
