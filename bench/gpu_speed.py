"""Sampling speed and peak GPU memory with LoadCheckpoint's options, against diffusers' pipeline with the same options.

    python bench/gpu_speed.py                      # on a CUDA GPU: SD 1.5- and SDXL-shaped random weights, fp16
    python bench/gpu_speed.py --shape sd1 --options sdpa model --runs 3
    python bench/gpu_speed.py --shape tiny-sd --device cpu --dtype float32 --size 64 --steps 3 --runs 1 \\
        --options sdpa sliced                      # seconds on a CPU: what tests/bench/test_gpu_speed.py runs

For each shape a random-weight pipeline folder is written once (the shipped configs, weights drawn on the device),
then for each option one FRESH process per side (their order swapped from one option to the next) loads it and runs
a txt2img (cfg 7.5, euler) once to warm up (compiling, for ``compile``) and ``--runs`` more times. graphflow: an
Engine running LoadCheckpoint → TextEncode → EmptyLatent → Schedule → AddNoise → Sample → VAEDecode with the option
on LoadCheckpoint; diffusers: the pipeline ``from_pretrained`` of the same folder with the matching call
(``enable_attention_slicing``, ``enable_model_cpu_offload``, ``enable_sequential_cpu_offload``, ``unet.compile()``,
the same pinned SDPA processor). Reported per side: sampling it/s (the steps after the first, from the per-step
progress events / ``callback_on_step_end``), the run's wall seconds, peak GPU memory (``max_memory_allocated``: the
process's whole peak, weights included; none on the CPU), the graphflow/diffusers ratios, and the max |difference|
of the two pictures (random weights: a check that both ran the same model, not a picture). Writes
``bench/gpu_speed.json`` (or ``--out``) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OPTIONS = {  # option name → LoadCheckpoint inputs
    "sdpa": {}, "sdpa_flash": {"attention": "sdpa_flash"}, "sliced": {"attention": "sliced"},
    "model": {"offload": "model"}, "sequential": {"offload": "sequential"}, "compile": {"compile_unet": True},
}
DEFAULT_OPTIONS = ("sdpa", "sdpa_flash", "sliced", "model", "sequential", "compile")
SIZES = {"sd1": 512, "sdxl": 1024, "tiny-sd": 64, "tiny-sdxl": 64}
PROMPT, NEGATIVE, SEED = "a red circle on a white background", "blurry", 7


def random_folder(shape: str, work: Path, device: str, dtype: str) -> Path:
    """A diffusers pipeline folder of ``shape``: the built-in tiny models as they are; SD 1.5 / SDXL shapes from the
    shipped configs with random weights (drawn on ``device``, saved once in ``dtype``)."""
    import diffusers
    import torch
    import transformers

    from bench.load_cost import diffusers_config
    from nodes.checkpoints import read_json

    config = diffusers_config(shape, work)
    if shape.startswith("tiny"):
        return config
    folder = work / f"{shape}-random-{dtype}"
    if (folder / "model_index.json").is_file():
        return folder
    index = read_json(config / "model_index.json")
    torch.manual_seed(0)
    parts = {}
    with torch.device(device):
        for name, spec in index.items():
            if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
                continue
            library, class_name = spec
            cls = getattr(diffusers if library == "diffusers" else transformers, class_name)
            if name.startswith("tokenizer"):
                parts[name] = cls.from_pretrained(config / name)
            elif name == "scheduler":
                parts[name] = cls.from_config(read_json(config / name / "scheduler_config.json"))
            elif library == "diffusers":
                parts[name] = cls.from_config(read_json(config / name / "config.json")).to(getattr(torch, dtype))
            else:
                text_config = transformers.CLIPTextConfig.from_dict(read_json(config / name / "config.json"))
                parts[name] = cls(text_config).to(getattr(torch, dtype))
    pipeline = getattr(diffusers, index["_class_name"])(**parts, **({"safety_checker": None, "feature_extractor": None,
                                                                     "requires_safety_checker": False}
                                                                    if "safety_checker" in index else {}))
    tmp = work / f".{folder.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    pipeline.save_pretrained(tmp)
    tmp.rename(folder)
    return folder


# ------------------------------------------------------------------------------------------------- one side, one process

def graphflow_side(args: dict) -> dict:
    import time

    from bench import sides
    from graphflow.context import Settings
    from graphflow.events import Progress

    folder = Path(args["folder"])
    settings = Settings(models_dir=folder.parent, input_dir=folder.parent, output_dir=Path(args["scratch"]))
    engine = sides.make_engine(settings, keep_values=False)
    size = args["size"]
    ckpt = {"name": folder.name, "dtype": args["dtype"], "device": args["device"], **OPTIONS[args["option"]]}
    clip = {"from": "ckpt", "output": "clip"}
    workflow = {"graphflow": 1, "nodes": {
        "ckpt": {"type": "LoadCheckpoint", "inputs": ckpt},
        "positive": {"type": "TextEncode", "inputs": {"clip": clip, "text": PROMPT}},
        "negative": {"type": "TextEncode", "inputs": {"clip": clip, "text": NEGATIVE}},
        "empty": {"type": "EmptyLatent", "inputs": {"width": size, "height": size, "vae": {"from": "ckpt", "output": "vae"}}},
        "schedule": {"type": "Schedule", "inputs": {"model": {"from": "ckpt", "output": "model"}, "sampler": "euler",
                                                    "steps": args["steps"]}},
        "noise": {"type": "AddNoise", "inputs": {"latent": {"from": "empty", "output": "latent"},
                                                 "schedule": {"from": "schedule", "output": "schedule"}, "seed": SEED}},
        "sample": {"type": "Sample", "inputs": {"model": {"from": "ckpt", "output": "model"}, "cfg": 7.5,
                                                "positive": {"from": "positive", "output": "conditioning"},
                                                "negative": {"from": "negative", "output": "conditioning"},
                                                "latent": {"from": "noise", "output": "latent"}}},
        "decode": {"type": "VAEDecode", "inputs": {"vae": {"from": "ckpt", "output": "vae"},
                                                   "latent": {"from": "sample", "output": "latent"}}},
        "keep": {"type": "KeepImage", "inputs": {"images": {"from": "decode", "output": "image"}}},
    }}
    engine.run(workflow)  # loads the model (into the model pool) and warms up

    def run():
        stamps = []
        on_event = lambda e: stamps.append(time.perf_counter()) if isinstance(e, Progress) and e.node == "sample" else None  # noqa: E731
        report = engine.run(workflow, on_event=on_event)
        return stamps, report.values["decode"]["image"].pixels

    return measured(run, args)


def diffusers_side(args: dict) -> dict:
    import time

    import diffusers
    import torch

    folder = Path(args["folder"])
    index = json.loads((folder / "model_index.json").read_text())
    dtype, device, option = getattr(torch, args["dtype"]), args["device"], args["option"]
    pipe = getattr(diffusers, index["_class_name"]).from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    if option == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif option == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if option == "sliced":
        pipe.enable_attention_slicing()
    elif option == "sdpa_flash":
        from nodes.speed import pinned_sdpa

        pipe.unet.set_attn_processor(pinned_sdpa("FLASH_ATTENTION"))
    elif option == "compile":
        from nodes import speed

        pipe.unet.compile(backend=speed.COMPILE_BACKEND)

    def run():
        stamps = []

        def on_step(pipeline, step, timestep, kwargs):
            stamps.append(time.perf_counter())
            return kwargs

        images = pipe(PROMPT, negative_prompt=NEGATIVE, height=args["size"], width=args["size"],
                      num_inference_steps=args["steps"], guidance_scale=7.5, output_type="pt",
                      generator=torch.Generator("cpu").manual_seed(SEED), callback_on_step_end=on_step).images
        return stamps, images.permute(0, 2, 3, 1).float().cpu()

    run()  # warm-up
    return measured(run, args)


def measured(run, args: dict) -> dict:
    import time

    import torch

    cuda = args["device"].startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    its, seconds = [], []
    pixels = None
    for _ in range(args["runs"]):
        start = time.perf_counter()
        stamps, pixels = run()
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        its.append((len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan"))
    torch.save(pixels, args["pixels"])
    return {"it_s": statistics.median(its), "it_s_all": its, "seconds": statistics.median(seconds),
            "peak_gpu_bytes": torch.cuda.max_memory_allocated() if cuda else None}


SIDES = {"graphflow": graphflow_side, "diffusers": diffusers_side}


# ------------------------------------------------------------------------------------------------------------ driver

def child(side: str, args: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRAPHFLOW_CHECK_MUTATIONS": "0", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", side, json.dumps(args)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_shape(shape: str, options: list[str], ns: argparse.Namespace, work: Path) -> list[dict]:
    import torch

    folder = random_folder(shape, work, ns.device, ns.dtype)
    rows = []
    for number, option in enumerate(options):
        order = ["graphflow", "diffusers"] if number % 2 == 0 else ["diffusers", "graphflow"]
        result = {"shape": shape, "option": option, "size": ns.size or SIZES[shape], "steps": ns.steps,
                  "dtype": ns.dtype, "device": ns.device, "first": order[0]}
        for side in order:
            args = {"folder": str(folder), "size": result["size"], "steps": ns.steps, "runs": ns.runs,
                    "dtype": ns.dtype, "device": ns.device, "option": option, "scratch": str(work),
                    "pixels": str(work / f"{side}.pt")}
            result[side] = child(side, args)
        g, d = result["graphflow"], result["diffusers"]
        if "error" not in g and "error" not in d:
            result["it_s_ratio"] = g["it_s"] / d["it_s"]
            result["seconds_ratio"] = g["seconds"] / d["seconds"]
            if g["peak_gpu_bytes"] is not None:
                result["peak_ratio"] = g["peak_gpu_bytes"] / d["peak_gpu_bytes"]
            a, b = torch.load(work / "graphflow.pt"), torch.load(work / "diffusers.pt")
            result["max_abs_diff"] = float((a - b).abs().max())
        rows.append(result)
        print(json.dumps(result), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    def gib(value):
        return "—" if value is None else f"{value / 2**30:.2f} GiB"

    lines = ["| shape | option | graphflow it/s | diffusers it/s | it/s ratio | graphflow peak | diffusers peak | "
             "peak ratio | max abs diff |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g, d = r["graphflow"], r["diffusers"]
        if "error" in g or "error" in d:
            lines.append(f"| {r['shape']} | {r['option']} | {g.get('error', '')} | {d.get('error', '')} | | | | | |")
            continue
        peak = f"{r['peak_ratio']:.3f}" if "peak_ratio" in r else "—"
        lines.append(f"| {r['shape']} {r['size']}² {r['dtype']} | {r['option']} | {g['it_s']:.2f} | {d['it_s']:.2f} | "
                     f"{r['it_s_ratio']:.3f} | {gib(g['peak_gpu_bytes'])} | {gib(d['peak_gpu_bytes'])} | {peak} | "
                     f"{r['max_abs_diff']:.2e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(SIDES[argv[1]](json.loads(argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", nargs="+", default=["sd1", "sdxl"], choices=sorted(SIZES))
    parser.add_argument("--options", nargs="+", default=list(DEFAULT_OPTIONS), choices=sorted(OPTIONS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--size", type=int, default=0, help="side in pixels (default: 512 for sd1, 1024 for sdxl)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="where the random folders go (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu_speed.json")
    ns = parser.parse_args(argv)
    work = ns.work or Path(tempfile.mkdtemp(prefix="gpu-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = [row for shape in ns.shape for row in measure_shape(shape, ns.options, ns, work)]
    ns.out.write_text(json.dumps({"command": "python bench/gpu_speed.py " + " ".join(argv), "rows": rows}, indent=1))
    print(table(rows))
    return 0 if all("error" not in r["graphflow"] and "error" not in r["diffusers"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
