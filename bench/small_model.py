"""The bench's "small" model: the SD 1.x architecture at a size where the UNet dominates a 256×256 run.

Random weights, built deterministically from a fixed seed (like ``tiny-sd`` in nodes/builtin_models.py, but with
a three-level UNet (64, 128, 256; 16 M parameters), a VAE with SD's 8× downscale, and 64-wide text embeddings). It is saved as a
diffusers folder under a cache directory so LoadCheckpoint loads it by name through the ordinary loader code.
"""
from __future__ import annotations

from pathlib import Path

import torch

SMALL_SEED = 20250101
SMALL_NAME = "small-sd-v1"  # bump the suffix when the architecture below changes
SMALL_WIDTH = 64  # cross-attention / text width


def build_small_components(seed: int = SMALL_SEED) -> dict:
    """Fresh small components (UNet, VAE, text encoder, tokenizer, scheduler), identical for the same seed."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from nodes.builtin_models import clip_text_encoder, pipeline_components

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(64, 128, 256),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        # attention on the two lower levels only: at 256×256 the top level (32×32 latent) would spend most of
        # the step in attention over 1024 tokens, which says nothing more about the engine
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=SMALL_WIDTH,
        attention_head_dim=8,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(  # four levels: 8× downscale as in SD, narrow so the UNet dominates
        block_out_channels=[16, 32, 64, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=16,
        layers_per_block=1,
    )
    torch.manual_seed(seed + 2)
    text_encoder = clip_text_encoder(SMALL_WIDTH, layers=4, intermediate=256)
    return pipeline_components(unet, vae, text_encoder)


def small_sd_folder(models_dir: Path) -> Path:
    """``models_dir/small-sd-v1``, built and saved on first use (LoadCheckpoint name: :data:`SMALL_NAME`)."""
    from nodes.builtin_models import save_diffusers_folder

    folder = Path(models_dir) / SMALL_NAME
    if not (folder / "model_index.json").exists():
        save_diffusers_folder(build_small_components(), folder)
    return folder


def weight_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of parameters and buffers of the given modules."""
    return sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())
