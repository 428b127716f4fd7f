"""Random-weight face models in the real architectures' layouts, for the tests and the example workflow.

They prove that files load, are recognised and run, not that they restore or find anything: a random
restorer scrambles a face, and a random detector's scores stay near 0.5, far under the 0.97 a face needs,
so it finds none (the example workflow's detector is trained instead: ``training/train_face_detector.py``).
RestoreFormer's sizes are read from its weights, so it can be tiny; spandrel builds GFPGAN at its one real size
(86 M parameters) and CodeFormer's autoencoder too, so those are full-size.
"""
from __future__ import annotations

from pathlib import Path

import torch

TINY_RESTOREFORMER = {"n_embed": 32, "embed_dim": 32, "ch": 32, "ch_mult": (1, 1, 1, 1, 1, 1), "num_res_blocks": 1,
                      "z_channels": 32, "resolution": 512, "attn_resolutions": (16,), "head_size": 8}
ASSET_SEED = 20261201
RESTORER_ASSET = "facerestore_models/tiny-restoreformer.safetensors"


def restoreformer_state(seed: int = ASSET_SEED, **sizes) -> dict[str, torch.Tensor]:
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(seed)
    return RestoreFormer(**{**TINY_RESTOREFORMER, **sizes}).state_dict()


def gfpgan_state(seed: int = ASSET_SEED) -> dict[str, torch.Tensor]:
    """GFPGAN v1.3/1.4's clean architecture at its real size, as spandrel builds it."""
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(seed)
    model = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                   num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    return model.state_dict()


def codeformer_state(seed: int = ASSET_SEED) -> dict[str, torch.Tensor]:
    """CodeFormer with a small transformer (1 layer, 64 wide, 64 codes) on its fixed-size autoencoder."""
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(seed)
    return CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=64, latent_size=256,
                      connect_list=["32", "64"]).state_dict()


def retinaface_state(network: str = "mobile0.25", seed: int = ASSET_SEED) -> dict[str, torch.Tensor]:
    from .detection import retinaface

    torch.manual_seed(seed)
    return retinaface(network).state_dict()


def save_state(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype | None = None) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(tensors, str(path))
    return path


def write_restorer_asset(root: Path) -> Path:
    """The example workflow's restorer under ``root`` (float16: half the bytes; loading casts to float32)."""
    return save_state(restoreformer_state(), root / RESTORER_ASSET, torch.float16)
