"""Train ``toy-shapes-canny``: a Canny-edge ControlNet for ``toy-shapes``, so a drawn outline says where the shape goes.

    python -m training.train_controlnet --out nodes/models/toy-shapes-canny
    python -m training.train_controlnet --out /tmp/cn-smoke --smoke      # a minute: the whole path
    python -m training.train_controlnet --measure nodes/models/toy-shapes-canny   # the card's position check

Recipe (``Config``): the pictures of ``training.shapes`` (64×64) with their captions, each picture's control image
its Canny edges as graphflow's Canny node computes them (thresholds 100 / 200); toy-shapes' VAE, UNet and text
encoder frozen; the ControlNet starts as a copy of the UNet's encoder (diffusers' ``ControlNetModel.from_unet``,
zero convolutions at zero) with a hint encoder that divides by 4, as the VAE does. Objective: the UNet's own
(epsilon, min-SNR-5, offset noise 0.1) with the ControlNet's residuals added; captions are dropped for a third of
the pictures, so the edges alone must place the shape.

The measurement: for held-out pictures (seed 1000), the outline of each goes through Canny → ControlImageResize →
ApplyControlNet into a graphflow txt2img run of its caption (20 Euler steps, cfg 7); the shape "lands" when the
largest blob of the result (``training.measure``) has its centre within 6 pixels of the outlined shape's centre.
The same runs without the ControlNet give the baseline.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.shapes import make_samples
from training.train_toy import Log, encode_dataset, lr_at, min_snr_weights, tokenize

TOY = Path(__file__).resolve().parent.parent / "nodes" / "models" / "toy-shapes"
LANDS_WITHIN = 6  # pixels between the drawn shape's centre and the outline's


@dataclass
class Config:
    seed: int = 0
    dataset_size: int = 6000
    threads: int = 1
    steps: int = 1500
    batch: int = 32
    lr: float = 5e-4
    warmup_steps: int = 50
    caption_dropout: float = 0.33
    hint_channels: tuple = (16, 32, 64)
    min_snr_gamma: float = 5.0
    offset_noise: float = 0.1
    max_minutes: float = 45.0
    log_every: int = 50

    def smoke(self) -> "Config":
        return dataclasses.replace(self, dataset_size=256, steps=20, log_every=5)


def edge_images(pictures: np.ndarray) -> torch.Tensor:
    """(N, 3, H, W) control images in [0, 1]: the Canny node's output for each picture."""
    from nodes.preprocessors import Canny
    from nodes.values import Image

    pixels = torch.from_numpy(np.array(pictures)).float() / 255  # a copy: arrays read from PIL are read-only
    return torch.cat([Canny(image=Image(pixels=p[None]), low_threshold=100, high_threshold=200).pixels
                      for p in pixels]).permute(0, 3, 1, 2).contiguous()


def train(cfg: Config, log: Log):
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from nodes.builtin_models import SD_SCHEDULER_CONFIG, clip_tokenizer

    vae = AutoencoderKL.from_pretrained(TOY, subfolder="vae").eval()
    unet = UNet2DConditionModel.from_pretrained(TOY, subfolder="unet").eval().requires_grad_(False)
    text_encoder = CLIPTextModel.from_pretrained(TOY, subfolder="text_encoder").eval()
    samples = make_samples(cfg.dataset_size, cfg.seed)
    pictures = np.stack([np.asarray(s.image, dtype=np.uint8) for s in samples])
    captions = [s.caption for s in samples]
    hints = edge_images(pictures)
    latents = encode_dataset(vae, pictures, captions)
    scaling = float(vae.config.scaling_factor)
    unique = sorted(set(captions) | {""})
    with torch.no_grad():
        embeds = text_encoder(tokenize(clip_tokenizer(), unique))[0]  # frozen: every caption encoded once
    rows = torch.tensor([unique.index(c) for c in captions])
    log("data", 0, pictures=len(samples), with_edges=int((hints.flatten(1).amax(1) > 0).sum()))

    torch.manual_seed(cfg.seed + 1)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(cfg.hint_channels)).train()
    schedule = DDPMScheduler.from_config(SD_SCHEDULER_CONFIG)
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=cfg.lr, weight_decay=1e-2)
    rng = torch.Generator().manual_seed(cfg.seed + 2)
    started, running = time.time(), []
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps)
        index = torch.randint(len(samples), (cfg.batch,), generator=rng)
        clean = (latents.mean[index] + latents.std[index] * torch.randn(latents.mean[index].shape, generator=rng)) * scaling
        which = rows[index].clone()
        which[torch.rand(cfg.batch, generator=rng) < cfg.caption_dropout] = unique.index("")
        noise = torch.randn(clean.shape, generator=rng)
        noise += cfg.offset_noise * torch.randn((cfg.batch, clean.shape[1], 1, 1), generator=rng)
        timesteps = torch.randint(0, schedule.config.num_train_timesteps, (cfg.batch,), generator=rng)
        noisy = schedule.add_noise(clean, noise, timesteps)
        text = embeds[which]
        down, mid = controlnet(noisy, timesteps, encoder_hidden_states=text, controlnet_cond=hints[index], return_dict=False)
        prediction = unet(noisy, timesteps, text, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        per_sample = F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * min_snr_weights(schedule, timesteps, cfg.min_snr_gamma)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        running.append(per_sample.mean().item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log("controlnet", step + 1, eps_mse=float(np.mean(running)), lr=optimizer.param_groups[0]["lr"])
            running = []
        if time.time() - started > cfg.max_minutes * 60:
            print(f"WARNING: training hit its {cfg.max_minutes} min guard at step {step + 1}", flush=True)
            log("stopped", step + 1)
            break
    return controlnet.eval()


def save(out: Path, controlnet, cfg: Config, log: Log) -> None:
    """Write the ControlNet folder (config.json + safetensors) and its training log, keeping a README.md card."""
    import shutil

    fresh = out.with_name(out.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    controlnet.save_pretrained(fresh, safe_serialization=True)
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    (fresh / "training.json").write_text(json.dumps({"config": config, "log": log.records}, indent=1))
    if (out / "README.md").exists():
        shutil.copy2(out / "README.md", fresh / "README.md")
    shutil.rmtree(out, ignore_errors=True)
    fresh.rename(out)


def measure(controlnet: Path | None, count: int = 20, seed: int = 1000) -> dict:
    """How often the drawn shape lands on its outline in graphflow runs (see the module docstring); without a
    ControlNet folder, the same runs without control (the baseline)."""
    import shutil
    import tempfile

    from PIL import Image as PILImage

    from graphflow import Engine, Settings
    from graphflow.builder import Graph
    from training.measure import as_array, foreground_mask, largest_blob

    root = Path(tempfile.mkdtemp(prefix="controlnet-measure-"))
    settings = Settings(models_dir=root / "models", input_dir=root / "inputs", output_dir=root / "outputs")
    settings.input_dir.mkdir(parents=True)
    if controlnet is not None:
        shutil.copytree(controlnet, settings.models_dir / "controlnet" / "measured")
    engine = Engine(settings=settings)
    lands = 0
    for i, sample in enumerate(make_samples(count, seed)):
        sample.image.save(settings.input_dir / f"picture{i}.png")
        g = Graph(engine.registry)
        ckpt = g.add("LoadCheckpoint", name="toy-shapes")
        positive = g.add("TextEncode", clip=ckpt.clip, text=sample.caption).conditioning
        negative = g.add("TextEncode", clip=ckpt.clip, text="").conditioning
        latent = g.add("EmptyLatent", width=64, height=64, vae=ckpt.vae).latent
        if controlnet is not None:
            net = g.add("LoadControlNet", name="measured").control_net
            edges = g.add("Canny", image=g.add("LoadImage", name=f"picture{i}.png").image).image
            fitted = g.add("ControlImageResize", image=edges, latent=latent, control_net=net).image
            applied = g.add("ApplyControlNet", positive=positive, negative=negative, control_net=net, image=fitted)
            positive, negative = applied.positive, applied.negative
        schedule = g.add("Schedule", model=ckpt.model, sampler="euler", steps=20).schedule
        noised = g.add("AddNoise", latent=latent, schedule=schedule, seed=i).latent
        result = g.add("Sample", model=ckpt.model, positive=positive, negative=negative, latent=noised, cfg=7.0).latent
        save = g.add("SaveImage", images=g.add("VAEDecode", vae=ckpt.vae, latent=result).image, filename_prefix="measured")
        [saved] = g.run(engine).outputs[save.id]["images"]
        with PILImage.open(settings.output_dir / saved["filename"]) as png:
            blob = largest_blob(foreground_mask(as_array(png)))
        left, top, right, bottom = sample.box
        if blob.any():
            ys, xs = np.nonzero(blob)
            centre = ((xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2)
            lands += int(np.hypot(centre[0] - (left + right) / 2, centre[1] - (top + bottom) / 2) <= LANDS_WITHIN)
    shutil.rmtree(root, ignore_errors=True)
    return {"controlnet": str(controlnet) if controlnet else None, "pictures": count, "lands": lands}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="ControlNet folder to write (replaced)")
    parser.add_argument("--smoke", action="store_true", help="tiny step counts, to check the whole path")
    parser.add_argument("--measure", type=Path, metavar="FOLDER", help="measure a ControlNet folder, and the baseline")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override any Config field")
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps([measure(args.measure), measure(None)]))
        return
    cfg = Config().smoke() if args.smoke else Config()
    for assignment in args.set:
        name, _, value = assignment.partition("=")
        parsed = json.loads(value)
        cfg = dataclasses.replace(cfg, **{name: tuple(parsed) if isinstance(parsed, list) else parsed})
    torch.set_num_threads(cfg.threads)
    print(json.dumps(dataclasses.asdict(cfg)), flush=True)
    log = Log()
    save(args.out, train(cfg, log), cfg, log)
    log("saved", 0, folder=str(args.out))


if __name__ == "__main__":
    main()
