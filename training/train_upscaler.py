"""Train the example 4x upscaler: a small Real-ESRGAN Compact network (SRVGGNetCompact) for the toy domain.

Run from the repository root (a few minutes on one CPU thread; same seed, config and thread count -> the
same weights on the same torch build):

    python -m training.train_upscaler --out workflows/assets/upscale_models/toy-compact-x4.safetensors
    python -m training.train_upscaler --out /tmp/up.safetensors --smoke     # a 20-second check of the path

Pairs: a picture from ``training.shapes.random_sample`` at 256x256 (drawn at 4x and box-filtered, like the
toy dataset) is the target; the input is the same picture box-filtered to 64x64 and passed through the
``toy-shapes`` VAE (encode to the mean, decode), which is exactly what a hires fix feeds the upscaler: a
decoded 64x64 picture, slightly soft. Training crops 24x24 input patches (96x96 targets), L1 loss, AdamW
with a cosine learning rate. The network is spandrel's own ``SRVGGNetCompact`` (spandrel identifies the
saved file as "RealESRGAN Compact"), so the file loads wherever Real-ESRGAN's compact models load.
At the end it prints PSNR against the 256x256 target for 64 held-out pictures, for the model and for a
lanczos enlargement of the same input: the numbers in the model's README.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

from nodes.loaders import TOY_SHAPES
from training.shapes import random_sample

SCALE = 4


@dataclass
class Config:
    seed: int = 0
    # One thread: on a shared 2-core machine two OpenMP threads thrash (measured 0.25 s per step with one,
    # 7 s with two, at a load of 16); on a free machine two are about twice as fast.
    threads: int = 1
    pictures: int = 600  # training pairs
    held_out: int = 64
    high: int = 256  # target size; inputs are high // 4
    num_feat: int = 32
    num_conv: int = 8
    steps: int = 2400
    batch: int = 16
    patch: int = 24  # input patch side (targets are 4x that)
    lr: float = 2e-3


def network(config: Config) -> torch.nn.Module:
    from spandrel.architectures.Compact import Compact

    return Compact(num_in_ch=3, num_out_ch=3, num_feat=config.num_feat, num_conv=config.num_conv, upscale=SCALE,
                   act_type="prelu")


def to_tensor(images: list[PILImage.Image]) -> torch.Tensor:
    """PIL RGB pictures -> (N, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])).permute(0, 3, 1, 2)


def vae_round_trip(pixels: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """(N, 3, 64, 64) in [0, 1] -> the toy VAE's decoding of its encoding (the mode), as a hires fix sees it."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(TOY_SHAPES, subfolder="vae").eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch):
            chunk = 2.0 * pixels[start:start + batch] - 1.0
            decoded = vae.decode(vae.encode(chunk).latent_dist.mode()).sample
            out.append((decoded * 0.5 + 0.5).clamp(0, 1))
    return torch.cat(out)


def make_pairs(count: int, seed: int, high: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (N, 3, high/4, high/4), targets (N, 3, high, high)), identical for the same seed."""
    rng = np.random.default_rng(seed)
    targets = [random_sample(rng, high).image for _ in range(count)]
    small = [image.reduce(SCALE) for image in targets]
    return vae_round_trip(to_tensor(small)), to_tensor(targets)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / F.mse_loss(a.clamp(0, 1), b)))


def lanczos(inputs: torch.Tensor) -> torch.Tensor:
    pictures = [PILImage.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for x in inputs]
    return to_tensor([p.resize((p.width * SCALE, p.height * SCALE), PILImage.LANCZOS) for p in pictures])


def train(config: Config, log=lambda line: print(line, flush=True)) -> tuple[torch.nn.Module, dict]:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    started = time.time()
    inputs, targets = make_pairs(config.pictures, config.seed, config.high)
    test_inputs, test_targets = make_pairs(config.held_out, config.seed + 1000, config.high)
    log(f"data: {len(inputs)} pairs, {time.time() - started:.1f} s")
    model = network(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps)))
    generator = torch.Generator().manual_seed(config.seed)
    low_side, patch = inputs.shape[-1], config.patch
    losses = []
    for step in range(config.steps):
        index = torch.randint(len(inputs), (config.batch,), generator=generator)
        corner = torch.randint(low_side - patch + 1, (config.batch, 2), generator=generator)
        x = torch.stack([inputs[i, :, y:y + patch, c:c + patch] for i, (y, c) in zip(index.tolist(), corner.tolist())])
        t = torch.stack([targets[i, :, SCALE * y:SCALE * (y + patch), SCALE * c:SCALE * (c + patch)]
                         for i, (y, c) in zip(index.tolist(), corner.tolist())])
        loss = F.l1_loss(model(x), t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % 250 == 0 or step + 1 == config.steps:
            log(f"step {step + 1}/{config.steps}: L1 {np.mean(losses[-250:]):.4f} ({time.time() - started:.0f} s)")
    model.eval()
    with torch.no_grad():
        upscaled = torch.cat([model(test_inputs[i:i + 16]) for i in range(0, len(test_inputs), 16)])
    report = {
        "config": dataclasses.asdict(config),
        "minutes": round((time.time() - started) / 60, 1),
        "final_l1": round(float(np.mean(losses[-250:])), 4),
        "psnr_model": round(psnr(upscaled, test_targets), 2),
        "psnr_lanczos": round(psnr(lanczos(test_inputs), test_targets), 2),
    }
    log(json.dumps(report))
    return model, report


def save(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only checks the whole path works")
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--threads", type=int, default=Config.threads)
    args = parser.parse_args(argv)
    config = Config(seed=args.seed, threads=args.threads)
    if args.smoke:
        config = dataclasses.replace(config, pictures=32, held_out=8, steps=20)
    model, report = train(config)
    save(model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
