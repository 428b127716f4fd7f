"""Loading cost of an original-layout single file: LoadCheckpoint's loader against diffusers' ``from_single_file``.

    python bench/load_cost.py --shape sd1 sdxl --pairs 3   # SD 1.5- and SDXL-shaped random fp16 files (2.1 / 6.9 GB)
    python bench/load_cost.py --shape tiny-sd tiny-sdxl      # seconds: the built-in tiny models (keeps the script working)

Each file is written once (random float16 weights in the published layout, from the shipped config folders, built
on the meta device and filled one tensor at a time), then loaded as float32 on the CPU by each side in a FRESH
process, the sides alternating. Reported per shape: median wall seconds of the load (imports excluded) and peak
resident memory (VmHWM) above the RSS after the imports, over the loaded fp32 weight bytes, for graphflow and diffusers, and their ratios. The
issue's targets: load time ≤ 1.0× diffusers', peak RSS ≤ 1.1× the loaded weights. Writes bench/load_cost.json and
prints a markdown table. Full-size shapes need RAM for the fp32 weights plus the file's page cache (about 2.5× the
fp32 weights: 11 GB for sd1, 35 GB for sdxl): run them on a machine that may hold full-size models.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time
import torch, diffusers, transformers  # imports are not part of the load
from nodes.checkpoints import load_single_file
def status(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) * 1024
side, path, config = sys.argv[1:4]
base = status("VmRSS")
start = time.perf_counter()
if side == "graphflow":
    parts = load_single_file(path, dtype=torch.float32)
    modules = [parts.unet, parts.vae, parts.text_encoder] + ([parts.text_encoder_2] if parts.text_encoder_2 is not None else [])
else:
    index = json.load(open(config + "/model_index.json"))
    pipe = getattr(diffusers, index["_class_name"]).from_single_file(path, config=config, torch_dtype=torch.float32,
                                                                    local_files_only=True)
    modules = [getattr(pipe, n) for n in ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipe, n, None) is not None]
seconds = time.perf_counter() - start
weights = sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())
print(json.dumps({"seconds": seconds, "peak": status("VmHWM") - base, "weights": weights}))
"""


def diffusers_config(shape: str, work: Path) -> Path:
    """A pipeline config folder diffusers' from_single_file can read offline: the shipped configs (or the tiny
    model's folder) with the CLIP vocabulary put into each tokenizer folder."""
    from nodes.builtin_models import CLIP_BPE, tiny_sd_folder
    from nodes.builtin_sdxl import tiny_sdxl_folder
    from nodes.checkpoints import CONFIGS

    if shape.startswith("tiny"):
        return tiny_sdxl_folder() if shape == "tiny-sdxl" else tiny_sd_folder()
    folder = work / f"{shape}-config"
    if not folder.exists():
        shutil.copytree(CONFIGS / shape, folder)
        for tokenizer in folder.glob("tokenizer*"):
            for name in ("vocab.json", "merges.txt"):
                shutil.copy(CLIP_BPE / name, tokenizer / name)
    return folder


def write_file(shape: str, work: Path) -> Path:
    """The random float16 single file of a shape, written once."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from nodes.checkpoints import load_diffusers_folder, original_state_dict, read_json
    from nodes.values import Clip, Model, Vae

    path = work / f"{shape}.safetensors"
    if path.exists():
        return path
    folder = diffusers_config(shape, work)
    if shape.startswith("tiny"):
        parts = load_diffusers_folder(folder)
        unet, vae, encoders, family = parts.unet, parts.vae, [parts.text_encoder, parts.text_encoder_2], parts.family
    else:
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(read_json(folder / "unet" / "config.json"))
            vae = AutoencoderKL.from_config(read_json(folder / "vae" / "config.json"))
            encoders = [CLIPTextModel(CLIPTextConfig.from_dict(read_json(folder / "text_encoder" / "config.json")))]
            if (folder / "text_encoder_2").is_dir():
                encoders.append(CLIPTextModelWithProjection(CLIPTextConfig.from_dict(
                    read_json(folder / "text_encoder_2" / "config.json"))))
        family = "sdxl" if len(encoders) == 2 else "sd1"
    clip = Clip(None, encoders[0], family, shape, text_encoder_2=encoders[1] if len(encoders) > 1 else None)
    layout = original_state_dict(Model(unet, {}, family, "epsilon", shape), clip, Vae(vae, shape))
    generator = torch.Generator().manual_seed(0)
    tensors = {key: (torch.randn(tuple(t.shape), generator=generator) * 0.02).to(torch.float16)
               for key, t in layout.items()}
    save_file(tensors, str(path))
    return path


def measure(side: str, path: Path, config: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, side, str(path), str(config)], capture_output=True, text=True,
                          cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", nargs="+", default=["sd1", "sdxl"], choices=["sd1", "sdxl", "tiny-sd", "tiny-sdxl"])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="where the files are written (kept between runs)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.gettempdir()) / "graphflow-load-cost"
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for shape in args.shape:
        path, config = write_file(shape, work), diffusers_config(shape, work)
        runs: dict[str, list[dict]] = {"graphflow": [], "diffusers": []}
        for pair in range(args.pairs):
            for side in (("graphflow", "diffusers") if pair % 2 == 0 else ("diffusers", "graphflow")):
                runs[side].append(measure(side, path, config))
        summary = {side: {"seconds": statistics.median(r["seconds"] for r in rs),
                          "peak_over_weights": statistics.median(r["peak"] / r["weights"] for r in rs),
                          "weights_gb": rs[0]["weights"] / 1e9} for side, rs in runs.items()}
        summary["time_ratio"] = summary["graphflow"]["seconds"] / summary["diffusers"]["seconds"]
        summary["file_gb"] = path.stat().st_size / 1e9
        results[shape] = summary
    (ROOT / "bench" / "load_cost.json").write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                               "pairs": args.pairs, "results": results}, indent=2) + "\n")
    print("| shape | file | fp32 weights | graphflow load | diffusers load | time ratio (≤ 1.0) | graphflow peak / weights (≤ 1.1) | diffusers peak / weights |")
    print("|---|---|---|---|---|---|---|---|")
    for shape, r in results.items():
        g, d = r["graphflow"], r["diffusers"]
        print(f"| {shape} | {r['file_gb']:.2f} GB | {g['weights_gb']:.2f} GB | {g['seconds']:.2f} s | {d['seconds']:.2f} s | "
              f"{r['time_ratio']:.2f} | {g['peak_over_weights']:.2f} | {d['peak_over_weights']:.2f} |")


if __name__ == "__main__":
    main()
