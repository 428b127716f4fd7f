"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework"), multistep, data prediction, B(h)
variants, over a k-diffusion denoiser — the form ComfyUI's ``uni_pc`` sampler runs.

The solver works in variance-preserving coordinates: ``x_vp = x / sqrt(1 + sigma²)``, ``alpha = 1 / sqrt(1 +
sigma²)``, ``std = sigma / sqrt(1 + sigma²)``, ``lambda = log(alpha / std)``; a final sigma of 0 is replaced by
0.001 (where lambda is finite) and the result is mapped back with ``/ alpha``. Order is min(3, steps - 1),
lowered towards the end; every step but the last is corrected with the model's prediction at its end point.
"""
from __future__ import annotations

import torch


def _log_alpha(sigma: "torch.Tensor") -> "torch.Tensor":
    return 0.5 * torch.log(1 / ((sigma * sigma) + 1))


def _alpha(sigma):
    return torch.exp(_log_alpha(sigma))


def _std(sigma):
    return torch.sqrt(1.0 - torch.exp(2.0 * _log_alpha(sigma)))


def _lambda(sigma):
    log_alpha = _log_alpha(sigma)
    return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


def _per_image(v: "torch.Tensor") -> "torch.Tensor":
    return v[(...,) + (None,) * 3]


class _UniPC:
    def __init__(self, denoiser, variant: str = "bh1"):
        self.denoiser, self.variant = denoiser, variant

    def data_prediction(self, x: "torch.Tensor", t: "torch.Tensor") -> "torch.Tensor":
        """x0 from the denoiser, through its noise prediction at the k-diffusion input (as ComfyUI computes it)."""
        sigma = t.view(t.shape[:1] + (1,) * (x.ndim - 1))
        k_input = x * ((sigma ** 2 + 1.0) ** 0.5)
        noise = (k_input - self.denoiser(k_input, t)) / sigma
        return (x - _per_image(_std(t)) * noise) / _per_image(_alpha(t))

    def update(self, x, model_prev, t_prev, t, order: int, use_corrector: bool = True):
        """One multistep predictor(-corrector) step from t_prev[-1] to t; returns (x_t, model at t or None)."""
        lambda_prev_0, lambda_t = _lambda(t_prev[-1]), _lambda(t)
        model_prev_0 = model_prev[-1]
        sigma_prev_0, sigma_t = _std(t_prev[-1]), _std(t)
        alpha_t = torch.exp(_log_alpha(t))
        h = lambda_t - lambda_prev_0
        rks, d1s = [], []
        for i in range(1, order):
            rk = ((_lambda(t_prev[-(i + 1)]) - lambda_prev_0) / h)[0]
            rks.append(rk)
            d1s.append((model_prev[-(i + 1)] - model_prev_0) / rk)
        rks = torch.stack([*rks, torch.tensor(1.0, device=x.device)])
        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial = 1
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        rows, b = [], []
        for i in range(1, order + 1):
            rows.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        r_matrix, b = torch.stack(rows), torch.stack(b)
        if d1s:
            d1s = torch.stack(d1s, dim=1)
            rhos_p = torch.tensor([0.5], device=x.device) if order == 2 else torch.linalg.solve(r_matrix[:-1, :-1], b[:-1])
        else:
            d1s = None
        x_t_ = _per_image(sigma_t / sigma_prev_0) * x - _per_image(alpha_t * h_phi_1) * model_prev_0
        prediction = torch.einsum("k,bkchw->bchw", rhos_p, d1s) if d1s is not None else 0
        x_t = x_t_ - _per_image(alpha_t * b_h) * prediction
        model_t = None
        if use_corrector:
            rhos_c = torch.tensor([0.5], device=x.device) if order == 1 else torch.linalg.solve(r_matrix, b)
            model_t = self.data_prediction(x_t, t)
            correction = torch.einsum("k,bkchw->bchw", rhos_c[:-1], d1s) if d1s is not None else 0
            x_t = x_t_ - _per_image(alpha_t * b_h) * (correction + rhos_c[-1] * (model_t - model_prev_0))
        return x_t, model_t

    def sample(self, x, timesteps, order: int, callback=None):
        steps = len(timesteps) - 1
        batch = x.shape[0]
        model_prev, t_prev = [], []
        for step_index in range(steps):
            if step_index == 0:
                t = timesteps[0].expand(batch)
                model_prev, t_prev = [self.data_prediction(x, t)], [t]
            elif step_index < order:  # warm-up: orders 1 .. order-1
                t = timesteps[step_index].expand(batch)
                x, model_x = self.update(x, model_prev, t_prev, t, step_index, use_corrector=True)
                model_prev.append(model_x if model_x is not None else self.data_prediction(x, t))
                t_prev.append(t)
            else:
                last = step_index == steps - 1
                for step in range(step_index, step_index + 1 + int(last)):
                    t = timesteps[step].expand(batch)
                    x, model_x = self.update(x, model_prev, t_prev, t, min(order, steps + 1 - step),
                                             use_corrector=step != steps)
                    for i in range(order - 1):
                        t_prev[i], model_prev[i] = t_prev[i + 1], model_prev[i + 1]
                    t_prev[-1] = t
                    if step < steps:
                        model_prev[-1] = model_x if model_x is not None else self.data_prediction(x, t)
            if callback is not None:
                callback(step_index, x, model_prev[-1])
        return x


def sample_unipc(model, x, sigmas, callback=None, variant: str = "bh1", **_):
    """UniPC over k-diffusion sigmas: ``x`` is noised to sigmas[0] as for every other sampler."""
    timesteps = sigmas.clone()
    if sigmas[-1] == 0:
        timesteps[-1] = 0.001
    x = x / torch.sqrt(1.0 + timesteps[0] ** 2.0)
    order = min(3, len(timesteps) - 2)
    x = _UniPC(model, variant).sample(x, timesteps, order, callback)
    return x / _alpha(timesteps[-1])
