"""Built-in models that need no download.

``tiny-sd``: a random-weight model with the real SD 1.x architecture at test-suite size (UNet 32/64
channels, VAE 32/64, 5-layer CLIP text encoder with the real 49408-token CLIP BPE tokenizer). It is
built deterministically from a fixed seed the first time it is asked for and written as a diffusers
folder into the cache directory, so from then on it loads through the same code as any user model.
Its images are noise: it proves that tensors flow, not that prompts are followed (``toy-shapes`` does).
"""
from __future__ import annotations

from pathlib import Path

import torch

from graphflow import env
from graphflow.paths import atomic_folder

PACKAGE_MODELS = Path(__file__).resolve().parent / "models"
CLIP_BPE = PACKAGE_MODELS / "clip_bpe"
TINY_SEED = 20241121
TINY_NAME = "tiny-sd"
TINY_VERSION = 1

# SD 1.x scheduler settings (the PNDM config every SD 1.5 checkpoint ships with).
SD_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "prediction_type": "epsilon",
}


def cache_dir() -> Path:
    return env.read("GRAPHFLOW_CACHE_DIR", Path.home() / ".cache" / "graphflow")


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """The real CLIP BPE tokenizer from the shipped vocabulary (SD 1.x pads with <|endoftext|>, SD 2.x with '!')."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(
        vocab=str(CLIP_BPE / "vocab.json"),
        merges=str(CLIP_BPE / "merges.txt"),
        pad_token=pad_token,
        model_max_length=77,
    )


def clip_text_encoder(width: int, layers: int, intermediate: int, heads: int = 4):
    """A fresh CLIPTextModel over the full CLIP BPE vocabulary with SD's special-token ids.

    transformers pools at the first ``eos_token_id``, so the ids must be the real tokenizer's."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=width,
            intermediate_size=intermediate,
            num_attention_heads=heads,
            num_hidden_layers=layers,
            max_position_embeddings=77,
            projection_dim=width,
            hidden_act="quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )


def pipeline_components(unet, vae, text_encoder, scheduler=None) -> dict:
    """The five parts of an SD 1.x pipeline folder: the given models, the CLIP tokenizer, and ``scheduler``
    (SD 1.5's own PNDM scheduler if none is given)."""
    if scheduler is None:
        from diffusers import PNDMScheduler

        scheduler = PNDMScheduler.from_config(SD_SCHEDULER_CONFIG)
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": clip_tokenizer(),
        "scheduler": scheduler,
    }


def build_tiny_components(seed: int = TINY_SEED, in_channels: int = 4, cross_attention_dim: int = 32) -> dict:
    """Fresh tiny components (UNet, VAE, text encoder, tokenizer, scheduler), identical for the same seed.

    ``in_channels=9`` gives the inpainting variant; ``cross_attention_dim`` is also the text width."""
    torch.manual_seed(seed)  # torch before diffusers: importing torch.fft first would trip the lazy torch (nodes/__init__.py)
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    torch.manual_seed(seed + 2)
    text_encoder = clip_text_encoder(cross_attention_dim, layers=5, intermediate=37)
    return pipeline_components(unet, vae, text_encoder)


def save_diffusers_folder(components: dict, folder: Path) -> Path:
    """Write components as a diffusers StableDiffusionPipeline folder (atomically: no half-written folder)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return save_built(pipe, folder)


def save_built(model, folder: Path) -> Path:
    """``model.save_pretrained`` into ``folder``, atomically (no half-written folder): how every built-in is written."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_folder(folder, lambda staging: model.save_pretrained(staging, safe_serialization=True))
    except FileExistsError:  # another process finished first; its copy is identical (same seed)
        pass
    return folder


def tiny_sd_folder(in_channels: int = 4) -> Path:
    """Path of the built-in tiny model's diffusers folder, building it on first use."""
    name = TINY_NAME if in_channels == 4 else f"{TINY_NAME}-inpainting"
    folder = cache_dir() / "builtin" / f"{name}-v{TINY_VERSION}"
    if not (folder / "model_index.json").exists():
        save_diffusers_folder(build_tiny_components(in_channels=in_channels), folder)
    return folder


TINY_CONTROLNET_NAME = "tiny-sd-controlnet"


def build_tiny_controlnet(seed: int = TINY_SEED + 3):
    """A fresh random ControlNet for the tiny UNet (same blocks, 32-wide text), identical for the same seed.

    Its hint encoder halves the control image once, as the tiny VAE does (SD's full-size hint encoder and VAE
    both divide by 8). A ControlNet's training starts with all-zero output convolutions (the hint encoder's last
    one and one per residual); these are random (std 1 and 0.1), so the control image and the residuals visibly change
    what the UNet predicts and parity tests measure something."""
    torch.manual_seed(seed)  # before diffusers' import, as in build_tiny_components
    from diffusers import ControlNetModel

    controlnet = ControlNetModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        in_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        cross_attention_dim=32,
        conditioning_embedding_out_channels=(16, 32),
    )
    return randomized_output_convolutions(controlnet).eval()


def randomized_output_convolutions(controlnet):
    """``controlnet`` with random instead of all-zero output convolutions (the hint encoder's last one: std 1, each
    residual's: std 0.1), so that the control image and the residuals change what a tiny random UNet predicts."""
    hint_out = controlnet.controlnet_cond_embedding.conv_out
    for convolution, std in [(hint_out, 1.0), *((c, 0.1) for c in controlnet.controlnet_down_blocks),
                             (controlnet.controlnet_mid_block, 0.1)]:
        torch.nn.init.normal_(convolution.weight, std=std)
        torch.nn.init.normal_(convolution.bias, std=std)
    return controlnet


def tiny_controlnet_folder() -> Path:
    """Path of the built-in tiny ControlNet's diffusers folder, building it on first use."""
    folder = cache_dir() / "builtin" / f"{TINY_CONTROLNET_NAME}-v{TINY_VERSION}"
    if not (folder / "config.json").exists():
        save_built(build_tiny_controlnet(), folder)
    return folder
