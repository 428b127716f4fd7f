"""Built-in tiny SDXL models that need no download: ``tiny-sdxl`` (base), ``tiny-sdxl-refiner`` and
``tiny-sdxl-controlnet`` (a random ControlNet copied from tiny-sdxl's UNet).

Random weights with SDXL's components at test-suite size: a three-level UNet with the added "text_time"
conditioning (pooled text + size / crop / aesthetic ids) and transformer depth 2 in its attention level, SDXL's
8x VAE (four levels, 32-64 channels wide), and the two text encoders of SDXL at different widths (a 5-layer
OpenAI-CLIP-style one, 32 wide, and a 10-layer OpenCLIP-style one, 64 wide, with a text projection: ten layers are
what SDXL single-file detection looks for). The refiner, like the real one, has only the second encoder and
conditions on an aesthetic score instead of a target size. Sized so the shipped SDXL workflows run at SDXL's
1024x1024 (a 128x128 latent) in seconds on a CPU: the UNet attends only at its lowest resolution, the VAE's
full-resolution level is 32 channels wide (its GroupNorm's 32 groups are the least that the shipped SDXL config
allows). Built deterministically from fixed seeds on first use and written as a diffusers folder into the cache,
so from then on they load through the same code as any user model. Their images are noise."""
from __future__ import annotations

from pathlib import Path

import torch

from .builtin_models import (PACKAGE_MODELS, TINY_SEED, cache_dir, clip_text_encoder, clip_tokenizer,
                             randomized_output_convolutions, save_built)

TINY_SDXL_VERSION = 2  # 2: the 8x VAE and a three-level UNet (1: a 2x VAE)
TINY_SDXL_NAMES = ("tiny-sdxl", "tiny-sdxl-refiner")
TIME_EMBED_DIM = 8  # width of each embedded size / crop / score id (SDXL: 256)
POOLED_DIM = 32  # the second encoder's text projection (SDXL: 1280)
SDXL_SCHEDULER = PACKAGE_MODELS / "configs" / "sdxl" / "scheduler" / "scheduler_config.json"


def openclip_text_encoder(width: int, layers: int, intermediate: int, heads: int, projection_dim: int):
    """A fresh CLIPTextModelWithProjection shaped like SDXL's OpenCLIP ViT-bigG tower (exact GELU, projection)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=49408, hidden_size=width, intermediate_size=intermediate, num_attention_heads=heads,
        num_hidden_layers=layers, max_position_embeddings=77, projection_dim=projection_dim, hidden_act="gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))


def build_tiny_sdxl_components(refiner: bool = False, seed: int = TINY_SEED + 100) -> dict:
    """Fresh tiny SDXL pipeline components, identical for the same seed: the keyword arguments of
    ``StableDiffusionXLPipeline`` (base) or ``StableDiffusionXLImg2ImgPipeline`` (refiner)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

    width_l, width_g = 32, 64
    time_ids = 5 if refiner else 6  # original size, crop, then target size (2) or aesthetic score (1)
    torch.manual_seed(seed)
    # SDXL's UNet also attends at its middle level; v1's did, and took 5x this one's time on a 128x128 latent
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64), layers_per_block=2, sample_size=128, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(1, 2, 4), use_linear_projection=True,
        cross_attention_dim=width_g if refiner else width_l + width_g, addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM, projection_class_embeddings_input_dim=TIME_EMBED_DIM * time_ids + POOLED_DIM,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=[32, 32, 32, 64], layers_per_block=1, in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        sample_size=1024, scaling_factor=0.13025, force_upcast=True,
    )
    torch.manual_seed(seed + 2)
    text_encoder = None if refiner else clip_text_encoder(width_l, layers=5, intermediate=37).eval()
    torch.manual_seed(seed + 3)
    text_encoder_2 = openclip_text_encoder(width_g, layers=10, intermediate=53, heads=2, projection_dim=POOLED_DIM).eval()
    scheduler = EulerDiscreteScheduler.from_config(EulerDiscreteScheduler.load_config(SDXL_SCHEDULER))
    parts = {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder, "text_encoder_2": text_encoder_2,
             "tokenizer": None if refiner else clip_tokenizer(), "tokenizer_2": clip_tokenizer("!"), "scheduler": scheduler}
    return parts


def sdxl_pipeline(components: dict, img2img: bool | None = None):
    """The diffusers SDXL pipeline over these components: Img2Img for a refiner (or when asked), else txt2img,
    with the real models' pipeline settings (refiner: aesthetic score, no zeroed empty negative). Without
    diffusers' invisible watermark, which it adds to pictures of 256 pixels and more when the package is
    installed: graphflow marks a picture only when asked (SaveImage's ``watermark``), so the pixels compare."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    refiner = components["text_encoder"] is None
    if img2img or (img2img is None and refiner):
        return StableDiffusionXLImg2ImgPipeline(**components, requires_aesthetics_score=refiner,
                                                force_zeros_for_empty_prompt=not refiner, add_watermarker=False)
    return StableDiffusionXLPipeline(**components, force_zeros_for_empty_prompt=True, add_watermarker=False)


def tiny_sdxl_folder(refiner: bool = False) -> Path:
    """Path of a built-in tiny SDXL model's diffusers folder, building it on first use."""
    name = TINY_SDXL_NAMES[1 if refiner else 0]
    folder = cache_dir() / "builtin" / f"{name}-v{TINY_SDXL_VERSION}"
    if not (folder / "model_index.json").exists():
        save_built(sdxl_pipeline(build_tiny_sdxl_components(refiner)), folder)
    return folder


TINY_SDXL_CONTROLNET_NAME = "tiny-sdxl-controlnet"


def build_tiny_sdxl_controlnet(components: dict | None = None, seed: int = TINY_SEED + 110):
    """A fresh random ControlNet for tiny-sdxl (``components``: its parts, built when not given), identical for the
    same seed: ``ControlNetModel.from_unet`` of its UNet, with a hint encoder that shrinks the control image by the
    VAE's factor (one stage per VAE downsampling, read from the VAE's config) and random output convolutions. Its
    hint encoder's convolutions keep the signal's variance (He's init): with diffusers' default init each stage
    shrinks it, and behind an 8× hint encoder the control image would barely reach the residuals."""
    from diffusers import ControlNetModel

    components = components or build_tiny_sdxl_components()
    stages = len(components["vae"].config.block_out_channels)  # a VAE halves the picture between its blocks
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(components["unet"],
                                           conditioning_embedding_out_channels=tuple(8 * 2 ** i for i in range(stages)))
    hint = controlnet.controlnet_cond_embedding
    for convolution in (hint.conv_in, *hint.blocks):  # variance-preserving through the SiLUs, as He et al.
        torch.nn.init.kaiming_normal_(convolution.weight, nonlinearity="relu")
    return randomized_output_convolutions(controlnet).eval()


def tiny_sdxl_controlnet_folder() -> Path:
    """Path of the built-in tiny SDXL ControlNet's diffusers folder, building it on first use."""
    folder = cache_dir() / "builtin" / f"{TINY_SDXL_CONTROLNET_NAME}-v{TINY_SDXL_VERSION}"
    if not (folder / "config.json").exists():
        save_built(build_tiny_sdxl_controlnet(), folder)
    return folder
