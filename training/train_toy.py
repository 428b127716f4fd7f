"""Train ``toy-shapes``: a few-megabyte Stable Diffusion (real SD 1.x classes) that draws what its prompt says.

Run from any folder (``pip install -e .`` installs the ``training`` package too; about 30 minutes on a free
2-core CPU):

    python -m training.train_toy --out nodes/models/toy-shapes
    python -m training.train_toy --out /tmp/toy-smoke --smoke     # 1-2 minute check of the whole path
    python -m training.train_toy --out /tmp/toy --set caption_dropout=0.2   # any Config field
    python -m training.evaluate --model /tmp/toy                   # its checks of meaning, as the card's table

Stages, all seeded from ``--seed`` (same seed, config and thread count -> same weights on the same torch build):
1. data: ``training.shapes.make_dataset`` (64x64 flat shapes with captions, and a smaller 128x128 set);
2. VAE (AutoencoderKL, 3 blocks, 64x64 RGB -> 16x16x4): L1 + MSE reconstruction of a posterior sample
   plus a small KL term; then ``scaling_factor`` = 1 / std of the latent means, so diffusion sees unit-std latents;
3. both datasets encoded once (posterior mean and std kept; each UNet step draws a fresh sample);
4. UNet2DConditionModel + CLIPTextModel trained jointly with SD's objective: epsilon prediction on the
   scaled_linear DDPM schedule (``SD_SCHEDULER_CONFIG``, 1000 steps), uniform timesteps, min-SNR-5 loss
   weights (faster convergence), offset noise 0.1 (so colours far from the latent mean can be drawn),
   10% empty captions so classifier-free guidance works, every third step on 128x128 pictures (16x16 and
   32x32 latents, so a hires fix's second pass is familiar ground), EMA of the weights;
5. saved as a StableDiffusionPipeline folder (safetensors) with the real CLIP BPE tokenizer and an Euler
   scheduler on SD 1.5's noise schedule, plus ``training.json`` (config, losses, wall times).

Hyperparameters are the fields of ``Config`` below (defaults = the shipped model).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nodes.builtin_models import (SD_SCHEDULER_CONFIG, clip_text_encoder, clip_tokenizer, pipeline_components,
                                  save_diffusers_folder)
from training.shapes import make_dataset

TEXT_WIDTH = 32  # CLIP hidden size = UNet cross-attention width; keeps the 49408-row embedding at 6 MB


@dataclass
class Config:
    seed: int = 0
    dataset_size: int = 12000
    # Two threads on a free 2-core machine (0.21 s per UNet step against 0.29 s with one). When other jobs
    # share the CPU use --threads 1: two OpenMP threads per process then thrash (measured 3-10x slower).
    threads: int = 2
    # VAE
    vae_channels: tuple = (32, 32, 64)
    vae_steps: int = 500
    vae_batch: int = 16
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    # UNet + text encoder
    unet_channels: tuple = (32, 64, 64)
    unet_layers_per_block: int = 1
    text_layers: int = 3
    unet_steps: int = 7000
    unet_batch: int = 32
    unet_lr: float = 1e-3
    text_lr: float = 2e-3  # the text encoder starts from random too; a faster pace teaches colour words sooner
    warmup_steps: int = 100
    caption_dropout: float = 0.1
    # Hires fix: its second pass denoises latents twice the native size. A UNet that never saw them drifts in
    # colour there (measured 5/10 kept), so every ``hires_every``-th step trains on 128x128 pictures instead,
    # with a quarter of the batch (the same number of latent pixels, so about the same step time).
    hires_size: int = 128
    hires_dataset_size: int = 3000
    hires_every: int = 3
    min_snr_gamma: float = 5.0
    # Offset noise: SD's schedule leaves 7% of the image at t=999, so a model trained on plain noise reads the
    # colour from the zero-mean starting noise and never makes strongly off-mean colours (measured: red
    # never drawn, white backgrounds came out grey). A per-channel constant in the noise teaches it to move them.
    offset_noise: float = 0.1
    ema_decay: float = 0.999
    # wall-time guard per stage (minutes): a stage stops early, with a warning, if the machine is too slow
    vae_max_minutes: float = 8.0
    unet_max_minutes: float = 30.0
    log_every: int = 50

    def smoke(self) -> "Config":
        return dataclasses.replace(
            self, dataset_size=512, hires_dataset_size=64, vae_steps=30, unet_steps=40, warmup_steps=5, log_every=10
        )


# ---------------------------------------------------------------- models


def build_vae(cfg: Config):
    from diffusers import AutoencoderKL

    blocks = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def build_text_encoder(cfg: Config):
    return clip_text_encoder(TEXT_WIDTH, layers=cfg.text_layers, intermediate=4 * TEXT_WIDTH)


def build_unet(cfg: Config, latent_size: int):
    from diffusers import UNet2DConditionModel

    # Cross-attention only at the two coarse levels: colour and shape are global, and 16x16 attention
    # would double the cost of a step.
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=tuple(cfg.unet_channels),
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=16,
    )


# ---------------------------------------------------------------- helpers


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def to_model_pixels(images_uint8: np.ndarray) -> torch.Tensor:
    """(N,H,W,3) uint8 -> (N,3,H,W) float in -1..1, the VAE's pixel range."""
    return torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class Ema:
    """Exponential moving average of parameters (the averaged copy is what gets saved)."""

    def __init__(self, modules, decay: float):
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # short memory early on
        for avg, p in zip(self.shadow, self.params):
            avg.lerp_(p.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for avg, p in zip(self.shadow, self.params):
            p.copy_(avg)


class Log:
    def __init__(self):
        self.start = time.time()
        self.records: list[dict] = []

    def __call__(self, stage: str, step: int, **values) -> None:
        rec = {"stage": stage, "step": step, "minutes": round((time.time() - self.start) / 60, 2), **values}
        self.records.append(rec)
        print(" ".join(f"{k}={v:.5f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()), flush=True)


# ---------------------------------------------------------------- stages


def train_vae(cfg: Config, images: np.ndarray, log: Log):
    torch.manual_seed(cfg.seed + 1)
    vae = build_vae(cfg).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    order = torch.Generator().manual_seed(cfg.seed + 2)
    started, running = time.time(), []
    for step in range(cfg.vae_steps):
        set_lr(optimizer, lr_at(step, cfg.vae_steps, cfg.vae_lr, cfg.warmup_steps))
        index = torch.randint(len(images), (cfg.vae_batch,), generator=order).numpy()
        x = to_model_pixels(images[index])
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=order)).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        kl = posterior.kl().mean()
        loss = rec + cfg.vae_kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        running.append(rec.item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.vae_steps:
            log("vae", step + 1, recon=float(np.mean(running)), kl=kl.item())
            running = []
        if time.time() - started > cfg.vae_max_minutes * 60:
            print(f"WARNING: VAE stage hit its {cfg.vae_max_minutes} min guard at step {step + 1}", flush=True)
            log("vae-stopped", step + 1)
            break
    return vae.eval()


@dataclass
class LatentSet:
    """A dataset encoded once: posterior means and stds (unscaled) and each picture's caption."""

    mean: torch.Tensor
    std: torch.Tensor
    captions: list[str]


@torch.no_grad()
def encode_dataset(vae, images: np.ndarray, captions: list[str], batch: int = 256) -> LatentSet:
    means, stds = [], []
    for start in range(0, len(images), batch):
        dist = vae.encode(to_model_pixels(images[start : start + batch])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return LatentSet(torch.cat(means), torch.cat(stds), captions)


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids exactly as StableDiffusionPipeline makes them (pad to 77, truncate)."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """min(SNR, gamma) / SNR: down-weights the easy low-noise steps (Hang et al. 2023, epsilon form)."""
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    return torch.clamp(snr, max=gamma) / snr


def train_unet(cfg: Config, native: LatentSet, hires: LatentSet, scaling: float, log: Log):
    from diffusers import DDPMScheduler

    tokenizer = clip_tokenizer()
    unique = sorted(set(native.captions) | set(hires.captions) | {""})
    unique_ids = tokenize(tokenizer, unique)
    position = {caption: i for i, caption in enumerate(unique)}
    empty_index = position[""]
    hires_batch = max(1, cfg.unet_batch * native.mean.shape[-1] ** 2 // hires.mean.shape[-1] ** 2)
    # (latents, batch size, each picture's row in unique_ids) for the two kinds of step
    native_draw = (native, cfg.unet_batch, torch.tensor([position[c] for c in native.captions]))
    hires_draw = (hires, hires_batch, torch.tensor([position[c] for c in hires.captions]))

    torch.manual_seed(cfg.seed + 3)
    text_encoder = build_text_encoder(cfg).train()
    unet = build_unet(cfg, native.mean.shape[-1]).train()
    noise_schedule = DDPMScheduler.from_config(SD_SCHEDULER_CONFIG)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": list(unet.parameters()), "peak": cfg.unet_lr}, {"params": list(text_encoder.parameters()), "peak": cfg.text_lr}],
        lr=cfg.unet_lr,
        weight_decay=1e-2,
    )
    ema = Ema([unet, text_encoder], cfg.ema_decay)
    rng = torch.Generator().manual_seed(cfg.seed + 4)
    started, running = time.time(), []
    for step in range(cfg.unet_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.unet_steps, group["peak"], cfg.warmup_steps)
        data, batch, caption_rows = hires_draw if cfg.hires_every and step % cfg.hires_every == cfg.hires_every - 1 else native_draw
        index = torch.randint(len(data.mean), (batch,), generator=rng)
        latents = (data.mean[index] + data.std[index] * torch.randn(data.mean[index].shape, generator=rng)) * scaling
        which = caption_rows[index].clone()
        which[torch.rand(batch, generator=rng) < cfg.caption_dropout] = empty_index
        noise = torch.randn(latents.shape, generator=rng)
        noise += cfg.offset_noise * torch.randn((batch, latents.shape[1], 1, 1), generator=rng)
        timesteps = torch.randint(0, noise_schedule.config.num_train_timesteps, (batch,), generator=rng)
        noisy = noise_schedule.add_noise(latents, noise, timesteps)
        text = text_encoder(unique_ids[which])[0]
        prediction = unet(noisy, timesteps, text).sample
        per_sample = F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * min_snr_weights(noise_schedule, timesteps, cfg.min_snr_gamma)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema.update(step)
        running.append(per_sample.mean().item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.unet_steps:
            log("unet", step + 1, eps_mse=float(np.mean(running)), lr=optimizer.param_groups[0]["lr"])
            running = []
        if time.time() - started > cfg.unet_max_minutes * 60:
            print(f"WARNING: UNet stage hit its {cfg.unet_max_minutes} min guard at step {step + 1}", flush=True)
            log("unet-stopped", step + 1)
            break
    ema.copy_to_params()
    return unet.eval(), text_encoder.eval()


def save(out: Path, vae, unet, text_encoder, cfg: Config, log: Log) -> None:
    """Write the pipeline folder next to ``out`` and swap it in (keeping an existing README.md model card)."""
    from diffusers import EulerDiscreteScheduler

    # The folder names Euler (SD 1.5's betas), graphflow's default sampler: with PNDM, diffusers' own default,
    # this model's colours overshoot at cfg 7 (measured: "a red circle" drawn red 0/10, against 10/10 with Euler).
    # "leading" spacing as SD 1.5's own scheduler has it (Euler's default would be "linspace").
    scheduler = EulerDiscreteScheduler.from_config(SD_SCHEDULER_CONFIG, timestep_spacing="leading")
    components = pipeline_components(unet, vae, text_encoder, scheduler)
    fresh = out.with_name(out.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    save_diffusers_folder(components, fresh)
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    (fresh / "training.json").write_text(json.dumps({"config": config, "log": log.records}, indent=1))
    if (out / "README.md").exists():
        shutil.copy2(out / "README.md", fresh / "README.md")
    shutil.rmtree(out, ignore_errors=True)
    fresh.rename(out)


def with_overrides(cfg: Config, assignments: list[str]) -> Config:
    """``cfg`` with ``FIELD=VALUE`` strings applied; values are parsed as JSON (so 0.2, 4, [32, 64])."""
    fields = {f.name for f in dataclasses.fields(Config)}
    changes = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set expects FIELD=VALUE with FIELD one of {sorted(fields)}, got {assignment!r}")
        parsed = json.loads(value)
        changes[name] = tuple(parsed) if isinstance(parsed, list) else parsed
    return dataclasses.replace(cfg, **changes)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="pipeline folder to write (replaced)")
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--smoke", action="store_true", help="tiny step counts, to check the whole path")
    parser.add_argument("--vae-steps", type=int)
    parser.add_argument("--unet-steps", type=int)
    parser.add_argument("--dataset-size", type=int)
    parser.add_argument("--threads", type=int, help="torch threads (1 is faster when other jobs share the CPU)")
    parser.add_argument("--vae", type=Path, help="reuse the VAE of an earlier run (a pipeline folder) instead of stage 2")
    parser.add_argument("--unet-minutes", type=float, help="wall-time guard of the UNet stage")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override any Config field")
    args = parser.parse_args(argv)

    cfg = Config(seed=args.seed)
    if args.smoke:
        cfg = cfg.smoke()
    flags = {"vae_steps": args.vae_steps, "unet_steps": args.unet_steps, "threads": args.threads,
             "dataset_size": args.dataset_size, "unet_max_minutes": args.unet_minutes}
    cfg = dataclasses.replace(cfg, **{name: value for name, value in flags.items() if value is not None})
    cfg = with_overrides(cfg, args.set)
    torch.set_num_threads(cfg.threads)
    print(json.dumps(dataclasses.asdict(cfg)), flush=True)

    log = Log()
    images, captions = make_dataset(cfg.dataset_size, cfg.seed)
    log("data", 0, images=len(images))
    if args.vae is not None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.vae, subfolder="vae").eval()
        log("vae-reused", 0, folder=str(args.vae))
    else:
        vae = train_vae(cfg, images, log)
    native = encode_dataset(vae, images, captions)
    hires = encode_dataset(vae, *make_dataset(cfg.hires_dataset_size, cfg.seed + 100, cfg.hires_size))
    scaling = 1.0 / native.mean.std().item()
    vae.register_to_config(scaling_factor=scaling)
    log("latents", 0, scaling_factor=scaling, posterior_std=native.std.mean().item(), hires=len(hires.mean))
    unet, text_encoder = train_unet(cfg, native, hires, scaling, log)
    save(args.out, vae, unet, text_encoder, cfg, log)
    log("saved", 0, folder=str(args.out))


if __name__ == "__main__":
    main()
