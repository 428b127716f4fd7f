"""Peak memory and time of one VAE decode, tiled against untiled, on the CPU.

    python bench/vae_tiling.py                                   # SD's VAE shape, 1024² picture, 3 pairs
    python bench/vae_tiling.py --channels 32 64 128 128 --pairs 5  # the same architecture at a quarter of the width
    python bench/vae_tiling.py --size 128 --channels 8 16 32 32 --pairs 1 --out /tmp/x.json  # seconds (the test)

A random-weight AutoencoderKL with SD's layout (4 blocks, 8× downscale, 2 layers per block; ``--channels`` sets the
block widths, SD's are 128 256 512 512) decodes one random latent of ``size/8``² through ``nodes.vae.decode_latents``
— what VAEDecode runs — untiled, and tiled with ``--tile`` / ``--overlap`` pixels (VAEDecode's ``tile_size`` /
``tile_overlap``). Each decode runs in a FRESH process (so its peak resident memory, VmHWM, is its own), the two
kinds alternating (untiled first in even pairs, tiled first in odd ones). Reported: median [min–max] of the decode's
wall seconds and of the peak RSS above the RSS before the decode (the VAE's weights and the latent are already
there), and the tiled/untiled ratios. Writes bench/vae_tiling.json (or ``--out``) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402


def decode_once(args: dict) -> dict:
    """One decode in this (fresh) process: seconds and peak RSS above the RSS before it."""
    import time

    import torch
    from diffusers import AutoencoderKL

    from nodes.vae import decode_latents
    from nodes.values import Vae

    torch.manual_seed(0)
    channels = args["channels"]
    vae = AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * len(channels),
                        up_block_types=["UpDecoderBlock2D"] * len(channels), block_out_channels=channels,
                        layers_per_block=2, latent_channels=4, norm_num_groups=min(32, channels[0])).eval()
    factor = 2 ** (len(channels) - 1)
    latent = torch.randn(1, 4, args["size"] // factor, args["size"] // factor, generator=torch.Generator().manual_seed(1))
    before = common.proc_status_bytes("VmRSS")
    start = time.perf_counter()
    pixels = decode_latents(Vae(vae, "bench"), latent, args["tile"] if args["tiled"] else 0, args["overlap"])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_above": common.proc_status_bytes("VmHWM") - before,
            "shape": list(pixels.shape), "mean": float(pixels.mean())}


def child(args: dict, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(ns: argparse.Namespace) -> dict:
    base = {"size": ns.size, "channels": ns.channels, "tile": ns.tile, "overlap": ns.overlap}
    runs: dict[str, list[dict]] = {"untiled": [], "tiled": []}
    for index in range(ns.pairs):
        order = ["untiled", "tiled"] if index % 2 == 0 else ["tiled", "untiled"]
        for kind in order:
            runs[kind].append(child({**base, "tiled": kind == "tiled"}, ns.threads))
    result = {**base, "pairs": ns.pairs, "threads": ns.threads, "machine": common.machine(), "runs": runs}
    for kind in runs:
        result[kind] = {"seconds": common.summary([r["seconds"] for r in runs[kind]]),
                        "peak_above": common.summary([r["peak_above"] for r in runs[kind]])}
    result["time_ratio"] = common.summary([t["seconds"] / u["seconds"] for t, u in zip(runs["tiled"], runs["untiled"])])
    result["peak_ratio"] = common.summary([t["peak_above"] / u["peak_above"]
                                           for t, u in zip(runs["tiled"], runs["untiled"])])
    return result


def table(result: dict) -> str:
    def span(stats: dict, scale: float = 1.0, unit: str = "") -> str:
        return (f"{stats['median'] * scale:.2f}{unit} [{stats['min'] * scale:.2f}–{stats['max'] * scale:.2f}], "
                f"n={stats['n']}")

    mib = 1 / 2**20
    lines = [f"VAE decode of a {result['size']}² picture on the CPU ({result['threads']} thread(s)), block widths "
             f"{result['channels']}, tiles {result['tile']} px overlapping {result['overlap']} px:", "",
             "| decode | seconds | peak RSS above the loaded VAE (MiB) |", "|---|---|---|"]
    for kind in ("untiled", "tiled"):
        lines.append(f"| {kind} | {span(result[kind]['seconds'])} | {span(result[kind]['peak_above'], mib)} |")
    lines.append(f"| tiled / untiled | {span(result['time_ratio'])} | {span(result['peak_ratio'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(decode_once(json.loads(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="picture side in pixels")
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 256, 512, 512], help="VAE block widths")
    parser.add_argument("--tile", type=int, default=512, help="VAEDecode's tile_size")
    parser.add_argument("--overlap", type=int, default=64, help="VAEDecode's tile_overlap")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "vae_tiling.json")
    ns = parser.parse_args(argv)
    result = measure(ns)
    result["command"] = "python bench/vae_tiling.py " + " ".join(argv)
    ns.out.write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
