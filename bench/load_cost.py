"""Loading cost of an original-layout single file: LoadCheckpoint's loader against diffusers' ``from_single_file``.

    python bench/load_cost.py --shape sd1 sdxl --pairs 3   # SD 1.5- and SDXL-shaped random fp16 files (2.1 / 6.9 GB)
    python bench/load_cost.py --shape tiny-sd tiny-sdxl      # seconds: the built-in tiny models (keeps the script working)

Each file is written once, streamed tensor by tensor (random float16 weights in the published layout, from the
shipped config folders, built on the meta device), then loaded on the CPU by each side in a FRESH process, the sides
alternating. SD 1.x shapes load as float32, SDXL as float16 on both sides (``--dtype`` overrides): SDXL's 13.9 GB of
float32 weights, at diffusers' 1.5× peak measured on sd1 (about 21 GB), do not fit the shared 24 GB machine this runs on.
Reported per shape: median wall seconds of the load (imports excluded), its CPU seconds, and peak resident memory
(VmHWM) above the RSS after the imports, over the loaded weight bytes, for graphflow and diffusers, and their ratios;
then the same once every page of every weight has been read ("ready to run": diffusers leaves float16 weights of a
float16 file as views of the file's memory map, read on first use), and the machine's rate of writing memory new to
a process, which a loader that owns its weights pays for every byte. The issue's targets: load time ≤ 1.0×
diffusers', peak RSS ≤ 1.1× the loaded weights. Results go into bench/load_cost.json (one entry per
full-size shape, each with its run's date and machine, so measuring one shape keeps the others; the tiny shapes
are only printed, their peaks being the libraries' fixed overhead rather than weights), from which
``scripts/update_readme.py`` writes the README's table (:func:`markdown`); the script prints that table too.
"""
from __future__ import annotations

import argparse
import json
import math
import os
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
import json, resource, sys, time
import torch, diffusers, transformers  # imports are not part of the load: both sides' classes are imported here
from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection
from nodes.checkpoints import load_single_file
def status(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) * 1024
side, path, config, dtype = sys.argv[1:5]
dtype = getattr(torch, dtype)
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
base = status("VmRSS")
start, cpu_start = time.perf_counter(), cpu()
if side == "graphflow":
    parts = load_single_file(path, dtype=dtype)
    modules = [parts.unet, parts.vae, parts.text_encoder] + ([parts.text_encoder_2] if parts.text_encoder_2 is not None else [])
else:
    index = json.load(open(config + "/model_index.json"))
    pipe = getattr(diffusers, index["_class_name"]).from_single_file(path, config=config, torch_dtype=dtype,
                                                                    local_files_only=True)
    modules = [getattr(pipe, n) for n in ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipe, n, None) is not None]
seconds, cpu_seconds, peak = time.perf_counter() - start, cpu() - cpu_start, status("VmHWM") - base
# Ready to run: every page of every weight read once (a weight left as a view of the file's memory map, as
# diffusers leaves float16 weights of a float16 file, is only read from the file here).
start = time.perf_counter()
for storage in {t.untyped_storage().data_ptr(): t.untyped_storage() for m in modules for t in m.state_dict().values()}.values():
    torch.empty(0, dtype=torch.uint8).set_(storage)[::4096].sum()
touch = time.perf_counter() - start
weights = sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak": peak, "ready_seconds": seconds + touch,
                  "ready_peak": status("VmHWM") - base, "weights": weights}))
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
    """The random float16 single file of a shape, written once and tensor by tensor (a full-size model never sits
    in memory: its modules are on the meta device, each tensor is drawn, written and dropped)."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
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
        encoders = [e for e in encoders if e is not None]
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
    shapes = {key: tuple(t.shape) for key, t in sorted(layout.items())}
    header, offset = {}, 0
    for key, dims in shapes.items():
        size = 2 * math.prod(dims)
        header[key] = {"dtype": "F16", "shape": list(dims), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as file:
        file.write(len(encoded).to_bytes(8, "little") + encoded)
        for dims in shapes.values():
            tensor = (torch.randn(dims, generator=generator) * 0.02).to(torch.float16)
            file.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    partial.rename(path)
    return path


FIRST_TOUCH = r"""
import time, torch
memory = torch.empty(2**30, dtype=torch.uint8)
start = time.perf_counter()
memory.fill_(1)  # 1 GiB the process has never touched
fresh = time.perf_counter() - start
start = time.perf_counter()
memory.fill_(2)  # the same pages again
print(2**30 / fresh / 1e9, 2**30 / (time.perf_counter() - start) / 1e9)
"""


def first_touch_rates() -> list[float]:
    """GB/s of writing memory new to a fresh process, and of writing it again: every byte a loader puts in memory of
    its own is first-touched (page faults, and on a virtual machine the host backing the page), which is what a
    load that owns its weights costs beyond reading the file; a weight left as a view of the file's page cache
    skips it."""
    done = subprocess.run([sys.executable, "-c", FIRST_TOUCH], capture_output=True, text=True, check=True)
    return [round(float(x), 2) for x in done.stdout.split()]


def measure(side: str, path: Path, config: Path, dtype: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, side, str(path), str(config), dtype], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def default_dtype(shape: str) -> str:
    return "float16" if shape == "sdxl" else "float32"


def touch_rates(row: dict) -> str:
    """The row's CPU-time ratio (steadier than wall time on a shared machine) and first-touch rate, where measured."""
    text = f"; CPU time ratio {row['cpu_ratio']:.2f}" if "cpu_ratio" in row else ""
    if "first_touch_gb_s" in row:
        text += f"; new memory {row['first_touch_gb_s']:.2f} GB/s (rewritten {row['rewrite_gb_s']:.1f})"
    return text


def markdown(results: dict) -> str:
    """The table of bench/load_cost.json's shapes, with each row's dtype, run date and load average."""
    lines = ["| shape | file | loaded as | weights | graphflow load | diffusers load | time ratio (≤ 1.0) | "
             "graphflow peak / weights (≤ 1.1) | diffusers peak / weights | ready to run: graphflow / diffusers "
             "(time ratio; peaks / weights) | run |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for shape, r in results.items():
        g, d = r["graphflow"], r["diffusers"]
        lines.append(f"| {shape} | {r['file_gb']:.2f} GB | {r['dtype']} | {g['weights_gb']:.2f} GB | {g['seconds']:.2f} s "
                     f"[{g['min_seconds']:.2f}–{g['max_seconds']:.2f}] | {d['seconds']:.2f} s [{d['min_seconds']:.2f}–"
                     f"{d['max_seconds']:.2f}] | {r['time_ratio']:.2f} | {g['peak_over_weights']:.3f} | "
                     f"{d['peak_over_weights']:.3f} | {g['ready_seconds']:.2f} s / {d['ready_seconds']:.2f} s "
                     f"({r['ready_ratio']:.2f}; {g['ready_peak_over_weights']:.3f} / {d['ready_peak_over_weights']:.3f}) | "
                     f"{r['date'][:16]}, n={r['pairs']}, load {r['load_average_start'][0]}{touch_rates(r)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", nargs="+", default=["sd1", "sdxl"], choices=["sd1", "sdxl", "tiny-sd", "tiny-sdxl"])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                        help="what both sides load as (default: float16 for sdxl, float32 otherwise)")
    parser.add_argument("--work", type=Path, default=None, help="where the files are written (kept between runs)")
    args = parser.parse_args()
    from bench.common import load_average, machine

    work = args.work or Path(tempfile.gettempdir()) / "graphflow-load-cost"
    work.mkdir(parents=True, exist_ok=True)
    saved = ROOT / "bench" / "load_cost.json"
    results = json.loads(saved.read_text())["results"] if saved.exists() else {}
    for shape in args.shape:
        path, config = write_file(shape, work), diffusers_config(shape, work)
        dtype, started, touch = args.dtype or default_dtype(shape), load_average(), first_touch_rates()
        runs: dict[str, list[dict]] = {"graphflow": [], "diffusers": []}
        for pair in range(args.pairs):
            for side in (("graphflow", "diffusers") if pair % 2 == 0 else ("diffusers", "graphflow")):
                runs[side].append(measure(side, path, config, dtype))
        summary = {side: {"seconds": statistics.median(r["seconds"] for r in rs),
                          "cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
                          "ready_seconds": statistics.median(r["ready_seconds"] for r in rs),
                          "ready_peak_over_weights": statistics.median(r["ready_peak"] / r["weights"] for r in rs),
                          "min_seconds": min(r["seconds"] for r in rs), "max_seconds": max(r["seconds"] for r in rs),
                          "peak_over_weights": statistics.median(r["peak"] / r["weights"] for r in rs),
                          "peaks_gb": [round(r["peak"] / 1e9, 3) for r in rs],
                          "runs_seconds": [round(r["seconds"], 3) for r in rs],
                          "weights_gb": rs[0]["weights"] / 1e9} for side, rs in runs.items()}
        summary.update(time_ratio=summary["graphflow"]["seconds"] / summary["diffusers"]["seconds"],
                       cpu_ratio=summary["graphflow"]["cpu_seconds"] / summary["diffusers"]["cpu_seconds"],
                       ready_ratio=summary["graphflow"]["ready_seconds"] / summary["diffusers"]["ready_seconds"],
                       file_gb=path.stat().st_size / 1e9, dtype=dtype, pairs=args.pairs,
                       date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), load_average_start=started,
                       first_touch_gb_s=touch[0], rewrite_gb_s=touch[1],
                       load_average_end=load_average(),
                       machine=machine())
        results[shape] = summary
    full_size = {shape: r for shape, r in results.items() if not shape.startswith("tiny")}
    saved.write_text(json.dumps({"command": "python bench/load_cost.py --shape sd1 sdxl", "results": full_size},
                                indent=2) + "\n")
    print(markdown({shape: results[shape] for shape in args.shape}), end="")


if __name__ == "__main__":
    main()
