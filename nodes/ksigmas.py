"""Noise levels for k-diffusion-style sampling: a model's discrete sigmas, ComfyUI's schedulers, and seeded noise.

A discrete-time SD model is trained on 1000 noise levels. Written as k-diffusion's sigmas,
``sigma_t = sqrt((1 - alphas_cumprod_t) / alphas_cumprod_t)``, they are what :class:`DiscreteSigmas` holds
(ComfyUI's ``ModelSamplingDiscrete``: the betas in float64, their cumulative product rounded to float32, the
nearest training step for a sigma, log-linear interpolation between steps). A *scheduler* picks ``steps``
sigmas from them, highest first, with a final 0 (:func:`scheduler_sigmas`); :func:`ksampler_sigmas` adds what
ComfyUI's KSampler does around that (denoise < 1, samplers that drop the penultimate sigma) and
:func:`trim_sigmas` what KSamplerAdvanced does (start/end step, leftover noise).

The noise functions draw exactly what ComfyUI draws for a seed: :func:`initial_noise` (its ``prepare_noise``,
one CPU stream for the whole batch), :func:`default_noise_sampler` (the per-step noise of the ancestral
samplers: a CPU generator seeded with seed + 1) and :func:`brownian_noise_sampler` (the SDE samplers'
Brownian tree, from ``torchsde``).

Pure functions of their arguments; nothing here touches torch's global random state.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from graphflow.errors import InvalidArgument

NoiseSampler = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]

SCHEDULER_NAMES = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta", "linear_quadratic",
                   "kl_optimal")
# ComfyUI runs these samplers one step longer and drops the next-to-last sigma (they overshoot the last steps).
DISCARD_PENULTIMATE = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})
KARRAS_RHO = 7.0


def alphas_cumprod_from_config(config: dict) -> "torch.Tensor":
    """The model's cumulative alphas (float64) from a diffusers scheduler config, as ComfyUI computes them:
    the betas in float64 (diffusers makes them in float32; the difference is ~1e-7)."""
    steps = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
    else:
        start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
        schedule = config.get("beta_schedule", "scaled_linear")
        if schedule == "scaled_linear":  # ComfyUI calls this one "linear"
            betas = torch.linspace(start ** 0.5, end ** 0.5, steps, dtype=torch.float64) ** 2
        elif schedule == "linear":
            betas = torch.linspace(start, end, steps, dtype=torch.float64)
        else:
            raise InvalidArgument("model", f"beta schedule {schedule!r} has no k-diffusion sigmas here",
                                  "scaled_linear or linear", schedule)
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True, eq=False)
class DiscreteSigmas:
    """A discrete-time model's noise levels, lowest first (index = training timestep)."""

    sigmas: "torch.Tensor"  # (T,) float32

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: "torch.Tensor") -> "DiscreteSigmas":
        alphas = alphas_cumprod.float()
        return cls((((1 - alphas) / alphas) ** 0.5).float())

    @classmethod
    def from_config(cls, config: dict) -> "DiscreteSigmas":
        return cls.from_alphas_cumprod(alphas_cumprod_from_config(config))

    @property
    def log_sigmas(self) -> "torch.Tensor":
        return self.sigmas.log()

    @property
    def sigma_min(self) -> "torch.Tensor":
        return self.sigmas[0]

    @property
    def sigma_max(self) -> "torch.Tensor":
        return self.sigmas[-1]

    def timestep(self, sigma: "torch.Tensor") -> "torch.Tensor":
        """The training step whose sigma is nearest in log space (what the UNet is told)."""
        distances = sigma.log().reshape(1, -1) - self.log_sigmas.reshape(-1, 1)
        return distances.abs().argmin(dim=0).reshape(sigma.shape)

    def sigma(self, timestep: "torch.Tensor") -> "torch.Tensor":
        """The sigma of a (fractional) timestep: log sigma interpolated linearly between the two steps."""
        t = timestep.float().clamp(0, len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigmas = self.log_sigmas
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


# ---------------------------------------------------------------------------------------------------
# Schedulers: `steps` sigmas, highest first, then 0
# ---------------------------------------------------------------------------------------------------


def _with_zero(sigmas: "torch.Tensor") -> "torch.Tensor":
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = KARRAS_RHO) -> "torch.Tensor":
    """Karras et al. (2022): evenly spaced in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, steps)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _with_zero((high + ramp * (low - high)) ** rho)


def exponential_sigmas(steps: int, sigma_min: float, sigma_max: float) -> "torch.Tensor":
    """Evenly spaced in log sigma."""
    return _with_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def normal_sigmas(model: DiscreteSigmas, steps: int, sgm: bool = False) -> "torch.Tensor":
    """Timesteps evenly spaced from the last training step to the first (``sgm``: steps + 1 of them, the last
    dropped), each turned into its sigma. A model whose lowest sigma is 0 ends there instead of on an added 0."""
    start, end = model.timestep(model.sigma_max), model.timestep(model.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(model.sigma(end)), 0, abs_tol=1e-5):
            steps, append_zero = steps + 1, False
        timesteps = torch.linspace(start, end, steps)
    values = [float(model.sigma(t)) for t in timesteps] + ([0.0] if append_zero else [])
    return torch.tensor(values, dtype=torch.float32)


def simple_sigmas(model: DiscreteSigmas, steps: int) -> "torch.Tensor":
    """Every (T/steps)-th training sigma, from the top."""
    stride = len(model.sigmas) / steps
    return torch.tensor([float(model.sigmas[-(1 + int(i * stride))]) for i in range(steps)] + [0.0], dtype=torch.float32)


def ddim_uniform_sigmas(model: DiscreteSigmas, steps: int) -> "torch.Tensor":
    """Training sigmas 1, 1 + T//steps, 1 + 2·T//steps, ... reversed, then 0 (DDIM's uniform timesteps)."""
    values = []
    if math.isclose(float(model.sigmas[1]), 0, abs_tol=1e-5):
        steps += 1
    else:
        values = [0.0]
    stride = max(len(model.sigmas) // steps, 1)
    values += [float(s) for s in model.sigmas[1::stride]]
    return torch.tensor(values[::-1], dtype=torch.float32)


def beta_sigmas(model: DiscreteSigmas, steps: int, alpha: float = 0.6, beta: float = 0.6) -> "torch.Tensor":
    """Training sigmas at the Beta(alpha, beta) quantiles of 1, 1 - 1/steps, ... (Lee et al. 2024, "Beta
    sampling is all you need"): denser at both ends; a timestep that repeats is taken once, so a schedule may
    come out shorter than ``steps``."""
    import numpy
    from scipy.stats import beta as beta_distribution

    last_timestep = len(model.sigmas) - 1
    quantiles = 1 - numpy.linspace(0, 1, steps, endpoint=False)
    timesteps = numpy.rint(beta_distribution.ppf(quantiles, alpha, beta) * last_timestep)
    values, previous = [], None
    for t in timesteps:
        if t != previous:
            values.append(float(model.sigmas[int(t)]))
        previous = t
    return torch.tensor(values + [0.0], dtype=torch.float32)


def linear_quadratic_sigmas(model: DiscreteSigmas, steps: int, threshold_noise: float = 0.025,
                            linear_steps: int | None = None) -> "torch.Tensor":
    """Mochi's schedule in fractions of the highest sigma: the first half of the steps fall linearly from 1 by
    ``threshold_noise`` in all, the rest quadratically to 0 (value and slope continuous at the joint)."""
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        linear = steps // 2 if linear_steps is None else linear_steps
        quadratic = steps - linear
        shortfall = linear - threshold_noise * steps
        a = shortfall / (linear * quadratic ** 2)
        b = threshold_noise / linear - 2 * shortfall / (quadratic ** 2)
        c = a * (linear ** 2)
        rising = [i * threshold_noise / linear for i in range(linear)] + [a * i ** 2 + b * i + c for i in range(linear, steps)]
        fractions = [1.0 - v for v in rising + [1.0]]
    return torch.tensor(fractions, dtype=torch.float32) * model.sigma_max


def kl_optimal_sigmas(steps: int, sigma_min: float, sigma_max: float) -> "torch.Tensor":
    """Evenly spaced in arctan(sigma) (the KL-optimal schedule of Sabour et al. 2024, as the WebUI has it). One
    step is sigma_max alone (the formula divides by steps - 1)."""
    ramp = torch.arange(steps, dtype=torch.float32).div_(max(steps - 1, 1))
    sigmas = ramp.new_zeros(steps + 1)
    sigmas[:-1] = (ramp * math.atan(sigma_min) + (1 - ramp) * math.atan(sigma_max)).tan_()
    return sigmas


def scheduler_sigmas(model: DiscreteSigmas, scheduler: str, steps: int) -> "torch.Tensor":
    """ComfyUI's ``calculate_sigmas``: ``steps + 1`` float32 sigmas for a scheduler name (beta: at most)."""
    if scheduler == "normal":
        return normal_sigmas(model, steps)
    if scheduler == "sgm_uniform":
        return normal_sigmas(model, steps, sgm=True)
    if scheduler == "karras":
        return karras_sigmas(steps, float(model.sigma_min), float(model.sigma_max))
    if scheduler == "exponential":
        return exponential_sigmas(steps, float(model.sigma_min), float(model.sigma_max))
    if scheduler == "simple":
        return simple_sigmas(model, steps)
    if scheduler == "ddim_uniform":
        return ddim_uniform_sigmas(model, steps)
    if scheduler == "beta":
        return beta_sigmas(model, steps)
    if scheduler == "linear_quadratic":
        return linear_quadratic_sigmas(model, steps)
    if scheduler == "kl_optimal":
        return kl_optimal_sigmas(steps, float(model.sigma_min), float(model.sigma_max))
    raise InvalidArgument("scheduler", "unknown scheduler", ", ".join(SCHEDULER_NAMES), scheduler)


def ksampler_sigmas(model: DiscreteSigmas, scheduler: str, sampler: str, steps: int, denoise: float = 1.0) -> "torch.Tensor":
    """The sigmas ComfyUI's KSampler runs: for denoise < 1 the schedule is made for ``int(steps / denoise)``
    steps and its last ``steps + 1`` sigmas kept (so the start is lower, the step sizes those of the longer
    schedule); denoise ≤ 0 runs nothing. Samplers in :data:`DISCARD_PENULTIMATE` get a schedule one step
    longer with its next-to-last sigma removed."""
    if denoise <= 0.0:
        return torch.zeros([0])

    def calculate(count: int) -> "torch.Tensor":
        if sampler in DISCARD_PENULTIMATE:
            sigmas = scheduler_sigmas(model, scheduler, count + 1)
            return torch.cat([sigmas[:-2], sigmas[-1:]])
        return scheduler_sigmas(model, scheduler, count)

    if denoise > 0.9999:
        return calculate(steps)
    return calculate(int(steps / denoise))[-(steps + 1):]


def trim_sigmas(sigmas: "torch.Tensor", start_step: int | None = None, last_step: int | None = None,
                force_full_denoise: bool = False) -> "torch.Tensor | None":
    """KSamplerAdvanced's window on a schedule: stop after ``last_step`` (ending on 0 when
    ``force_full_denoise``), begin at ``start_step``. None when no step is left (the latent passes unchanged)."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step >= len(sigmas) - 1:
            return None
        sigmas = sigmas[start_step:]
    return sigmas


# ---------------------------------------------------------------------------------------------------
# Noise, seeded as ComfyUI seeds it
# ---------------------------------------------------------------------------------------------------


def initial_noise(shape: tuple[int, ...], seed: int, batch_index: tuple[int, ...] | None = None) -> "torch.Tensor":
    """ComfyUI's ``prepare_noise``: one float32 draw on the CPU for the whole batch from a generator seeded with
    ``seed`` (image i of a batch is therefore not the image the same seed gives alone). With ``batch_index``
    (images taken out of a bigger batch) the stream is drawn image by image up to the highest index and each
    image gets the draw of its index, so it has the noise it had in the bigger batch."""
    generator = torch.Generator("cpu").manual_seed(seed)
    if batch_index is None:
        return torch.randn(shape, dtype=torch.float32, generator=generator, device="cpu")
    one = (1, *shape[1:])
    draws = [torch.randn(one, dtype=torch.float32, generator=generator, device="cpu") for _ in range(max(batch_index) + 1)]
    return torch.cat([draws[i] for i in batch_index])


def default_noise_sampler(x: "torch.Tensor", seed: int) -> NoiseSampler:
    """Fresh standard-normal noise shaped like ``x`` at every call, from one generator on x's device. ComfyUI
    seeds it with seed + 1 on the CPU (so it does not repeat the initial noise) and with the seed elsewhere."""
    generator = torch.Generator(device=x.device)
    generator.manual_seed((seed + 1) % 2**64 if x.device.type == "cpu" else seed)
    return lambda sigma, sigma_next: torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device,
                                                 generator=generator)


def brownian_noise_sampler(x: "torch.Tensor", sigmas: "torch.Tensor", seed: int) -> NoiseSampler:
    """Noise from a Brownian motion over sigma (torchsde's BrownianTree on the CPU, entropy = seed), normalised
    to unit variance per step: the SDE samplers' default in ComfyUI (and k-diffusion), so that the noise of a
    step depends on the sigma interval it covers, not on how many draws came before."""
    try:
        import torchsde
    except ImportError as exc:
        raise InvalidArgument("sampler_name", "the SDE samplers need the torchsde package (pip install torchsde)") from exc
    positive = sigmas[sigmas > 0]
    t0, t1 = positive.min().detach().cpu(), sigmas.max().detach().cpu()
    tree = torchsde.BrownianTree(t0, torch.zeros_like(x).cpu(), t1, entropy=seed)

    def sample(sigma: "torch.Tensor", sigma_next: "torch.Tensor") -> "torch.Tensor":
        a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        low, high, sign = (a, b, 1) if a < b else (b, a, -1)
        with warnings.catch_warnings():  # torchsde notes float rounding at the interval's ends ("should have ta>=t0")
            warnings.simplefilter("ignore", UserWarning)
            w = tree(low.detach().cpu().float(), high.detach().cpu().float()).to(device=x.device, dtype=x.dtype)
        # the tree's increment from the lower sigma to the higher; sampling walks down, so it flips sign
        return w * sign / (b - a).abs().sqrt()

    return sample
