"""Memory measurements that need a process of their own (rows 5 and 6).

    python -m bench.children KIND '{"models_dir": ..., ...}'

prints one JSON object on its last line. KIND is

* ``shared-weights`` (row 5): txt2img, then img2img on the same checkpoint in one engine; resident memory before
  and after the second, and — as a control — after img2img once more on a second engine that loads its own copy
  of the weights;
* ``peak-graphflow`` / ``peak-diffusers`` (row 6): the same latent hires fix through an Engine, or through
  diffusers' txt2img and img2img pipelines by hand; peak resident memory (VmHWM) of the whole process.
"""
from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import proc_status_bytes  # noqa: E402  (after the path fix above)


def settle() -> int:
    """Resident bytes once Python garbage is collected (so a freed-but-uncollected cycle is not counted)."""
    gc.collect()
    return proc_status_bytes("VmRSS")


def trimmed() -> int:
    """Resident bytes after also handing the C heap's free pages back to the system (glibc ``malloc_trim``):
    what is still in use, without whatever the allocator happens to keep cached from earlier activations."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figure is then the plain resident size
        pass
    return proc_status_bytes("VmRSS")


def settings_of(args: dict[str, Any]):
    from graphflow.context import Settings

    return Settings(models_dir=Path(args["models_dir"]), input_dir=Path(args["input_dir"]), output_dir=Path(args["output_dir"]))


def shared_weights(args: dict[str, Any]) -> dict[str, Any]:
    from bench import sides
    from bench.small_model import weight_bytes

    settings = settings_of(args)
    picture = sides.test_picture(settings.input_dir / f"bench_{args['size']}.png", args["size"])
    registry = sides.bench_registry()
    engine = sides.make_engine(settings, registry)
    first = engine.run(sides.txt2img(args["ckpt"], args["size"], args["steps"], seed=1))
    before = trimmed()
    value_bytes_before = engine.cache.value_bytes
    second = engine.run(sides.img2img(args["ckpt"], picture, args["steps"], seed=2))
    after_raw = settle()
    after = trimmed()
    # control: the same second workflow on an engine of its own, which has to load the checkpoint again
    other = sides.make_engine(settings, registry)
    control = other.run(sides.img2img(args["ckpt"], picture, args["steps"], seed=2))
    after_control = trimmed()
    loaded = first.values["ckpt"]
    return {
        "weights": weight_bytes(loaded["model"].unet, loaded["vae"].vae, loaded["clip"].text_encoder),
        "rss_before_second": before,
        "rss_after_second": after,
        "rss_after_control": after_control,
        "growth": after - before,
        "growth_untrimmed": after_raw - before,
        "control_growth": after_control - after,
        "new_cached_value_bytes": engine.cache.value_bytes - value_bytes_before,
        "checkpoint_cached": "ckpt" in second.cached,
        "same_unet_object": second.values["ckpt"]["model"].unet is loaded["model"].unet,
        "control_loaded_again": "ckpt" in control.executed,
    }


def png_digest(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as picture:
        return hashlib.sha256(picture.convert("RGB").tobytes()).hexdigest()[:16]


def peak_graphflow(args: dict[str, Any]) -> dict[str, Any]:
    from graphflow.execute import Engine
    from graphflow.registry import default_registry

    from bench import sides

    after_imports = proc_status_bytes("VmRSS")
    settings = settings_of(args)
    engine = Engine(default_registry(), settings, check_mutations=False)
    started = time.perf_counter()
    report = engine.run(sides.hires_fix(args["ckpt"], args["size"], args["steps"]))
    seconds = time.perf_counter() - started
    saved = settings.output_dir / report.outputs["save2"]["images"][0]["filename"]
    return {"peak": proc_status_bytes("VmHWM"), "rss_after_imports": after_imports, "seconds": seconds,
            "image": png_digest(saved)}


def peak_diffusers(args: dict[str, Any]) -> dict[str, Any]:
    """The hires fix written with diffusers alone: txt2img to latents, bicubic ×2, img2img from those latents."""
    import torch
    import torch.nn.functional as F
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    from bench import sides

    after_imports = proc_status_bytes("VmRSS")
    workflow = sides.hires_fix(args["ckpt"], args["size"], args["steps"])
    text = {name: sides.literal(workflow, name, "text") for name in ("positive", "negative")}
    started = time.perf_counter()
    if args["ckpt"] == "tiny-sd":
        from nodes.builtin_models import tiny_sd_folder

        folder = tiny_sd_folder()
    else:
        folder = Path(args["models_dir"]) / args["ckpt"]
    txt2img = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False,
                                                      local_files_only=True)
    txt2img.scheduler = DPMSolverMultistepScheduler.from_config(txt2img.scheduler.config)
    txt2img.set_progress_bar_config(disable=True)
    latents = txt2img(text["positive"], negative_prompt=text["negative"], height=args["size"], width=args["size"],
                      num_inference_steps=args["steps"], guidance_scale=sides.literal(workflow, "sample", "cfg"),
                      generator=torch.Generator("cpu").manual_seed(sides.literal(workflow, "noise", "seed")),
                      output_type="latent").images
    upscaled = F.interpolate(latents, scale_factor=sides.literal(workflow, "upscale", "scale_by"), mode="bicubic",
                             align_corners=False)
    img2img = StableDiffusionImg2ImgPipeline(**txt2img.components)
    img2img.set_progress_bar_config(disable=True)
    picture = img2img(text["positive"], image=upscaled, strength=sides.literal(workflow, "schedule2", "denoise"),
                      negative_prompt=text["negative"], num_inference_steps=args["steps"],
                      guidance_scale=sides.literal(workflow, "sample2", "cfg"),
                      generator=torch.Generator("cpu").manual_seed(sides.literal(workflow, "noise2", "seed")),
                      output_type="pil").images[0]
    saved = Path(args["output_dir"]) / "diffusers_hires.png"
    saved.parent.mkdir(parents=True, exist_ok=True)
    picture.save(saved)
    seconds = time.perf_counter() - started
    return {"peak": proc_status_bytes("VmHWM"), "rss_after_imports": after_imports, "seconds": seconds,
            "image": png_digest(saved)}


KINDS = {"shared-weights": shared_weights, "peak-graphflow": peak_graphflow, "peak-diffusers": peak_diffusers}


def main() -> None:
    kind, args = sys.argv[1], json.loads(sys.argv[2])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args["threads"])
    rss_torch = proc_status_bytes("VmRSS")  # the common floor of both sides of row 6
    print(json.dumps({**KINDS[kind](args), "rss_torch": rss_torch}))


if __name__ == "__main__":
    main()
