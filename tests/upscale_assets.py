"""Tiny random super-resolution model files for tests: real ESRGAN key layout, a few hundred kB.

``write_tiny_esrgan`` builds spandrel's own ESRGAN network (the "old" RRDBNet layout that
RealESRGAN_x4plus.pth and the original ESRGAN releases share) with 8 features and one RRDB block,
so spandrel identifies the file exactly as it identifies a real one. Its receptive field reaches
18 input pixels in theory, but the residual scaling inside RRDB blocks makes anything beyond ~4 pixels
contribute less than 1e-4, so tiles with a 16-pixel overlap reproduce an untiled pass.
"""
from __future__ import annotations

from pathlib import Path

import torch

def tiny_esrgan_state_dict(scale: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    from spandrel.architectures.ESRGAN import ESRGAN

    if scale not in (1, 2, 4, 8):
        raise ValueError(f"scale must be 1, 2, 4 or 8, got {scale}")
    torch.manual_seed(seed)
    network = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)
    with torch.no_grad():
        # Default initialisation gives a nearly flat, partly negative output that clamping would hide;
        # a grey bias and a stronger last layer keep the output in (0, 1) and clearly dependent on the input.
        last = network.model[-1]
        last.weight.mul_(8.0)
        last.bias.fill_(0.5)
    return {k: v.contiguous() for k, v in network.state_dict().items()}


def write_tiny_esrgan(path: str | Path, scale: int = 4, seed: int = 0) -> Path:
    """Write a tiny random ESRGAN model to ``path`` (.pth via torch.save, or .safetensors) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = tiny_esrgan_state_dict(scale, seed)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif path.suffix in (".pth", ".pt", ".ckpt"):
        torch.save(state, path)
    else:
        raise ValueError(f"write .pth or .safetensors, not {path.suffix!r}")
    return path
