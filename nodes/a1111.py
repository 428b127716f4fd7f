"""From an AUTOMATIC1111 "parameters" text back to a workflow: ``graphflow import-a1111 "TEXT"``.

The text is read as the web UI writes it (see :mod:`nodes.metadata`): prompt lines, a ``Negative prompt:``
line, and a last line of ``Key: value`` pairs (a value with a comma, colon or newline is a JSON string).
The workflow built is the shipped ``txt2img.json`` shape, or ``hires_fix.json``'s when Hires fields are present,
with ``<lora:name:weight>`` tags turned into LoraLoader nodes. Whatever would make a different picture and
cannot be built (an unknown sampler or schedule, an img2img text) is an error naming the field.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .metadata import A1111_LATENT_UPSCALERS, A1111_PIXEL_UPSCALERS, a1111_sampler
from .sampling import SAMPLERS

LORA_TAG = re.compile(r"\s*<lora:([^:>]+)(?::([^:>]*))?(?::([^:>]*))?>")
# Fields read by the hires part, or that describe the run without changing the picture.
HIRES_OR_DESCRIPTIVE = {"Model hash", "Lora hashes", "TI hashes", "Version", "Hires upscale", "Hires resize", "Hires steps",
               "Hires upscaler", "Hires sampler", "Hires prompt", "Hires negative prompt", "Denoising strength",
               "Schedule type"}
USED = {"Steps", "Sampler", "CFG scale", "Seed", "Size", "Model", "Clip skip"}


class InfotextError(ValueError):
    """The text cannot be read, or asks for something graphflow cannot build; the message says which field."""


@dataclass
class Infotext:
    prompt: str
    negative: str
    fields: dict[str, str] = field(default_factory=dict)


def parse_infotext(text: str) -> Infotext:
    """Prompt, negative prompt and the ``Key: value`` fields of an A1111 parameters text."""
    lines = text.strip("\n").split("\n")
    fields = _fields(lines[-1]) if lines else {}
    if len(fields) >= 3:  # A1111's own rule: a last line with fewer pairs is still prompt
        lines = lines[:-1]
    else:
        fields = {}
    prompt: list[str] = []
    negative: list[str] | None = None
    for line in lines:
        if negative is None and line.startswith("Negative prompt:"):
            negative = [line.removeprefix("Negative prompt:").strip()]
        elif negative is not None:
            negative.append(line)
        else:
            prompt.append(line)
    if not fields:
        raise InfotextError("no parameters line: expected a last line like 'Steps: 20, Sampler: Euler a, CFG scale: 7, "
                            "Seed: 1, Size: 512x512'")
    return Infotext("\n".join(prompt).strip(), "\n".join(negative or []).strip(), fields)


_PAIR = re.compile(r'\s*([\w][\w \-/+().]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def _fields(line: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = _PAIR.match(line, position)
        if match is None or match.end() == position:
            return {}
        key, value = match.group(1).strip(), match.group(2).strip()
        if value.startswith('"'):
            value = json.loads(value)
        fields[key] = value
        position = match.end()
    return fields


def workflow_from_infotext(text: str, upscale_model: Callable[[str], str] | None = None,
                           warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A graphflow workflow making the picture the text describes.

    ``upscale_model(name)`` gives the file name of the upscale model A1111 calls ``name`` (A1111 names them
    by file stem); without it, ``name.safetensors``. ``warn`` hears about fields that are left out."""
    info = parse_infotext(text)
    fields = info.fields
    ignored = sorted(k for k in fields if k not in USED | HIRES_OR_DESCRIPTIVE)
    if ignored and warn is not None:
        warn(f"left out (graphflow does not build them): {', '.join(ignored)}")
    prompt, loras = _loras(info.prompt)
    hires = any(key in fields for key in ("Hires upscale", "Hires resize", "Hires upscaler", "Hires steps"))
    if "Denoising strength" in fields and not hires:
        raise InfotextError("Denoising strength without Hires fields is an img2img text; import-a1111 builds txt2img "
                            "and hires-fix workflows (use workflows/img2img.json with these settings)")
    width, height = _size(fields.get("Size", "512x512"), "Size")
    sampler = _sampler(fields.get("Sampler", "Euler a"), fields.get("Schedule type"), "Sampler")
    steps = _number(fields, "Steps", int, 20)
    seed = _number(fields, "Seed", int, 0)
    if seed < 0:
        raise InfotextError(f"Seed: {seed} is not a seed that ran (A1111 writes the seed it drew)")
    cfg = _number(fields, "CFG scale", float, 7.0)
    clip_skip = _number(fields, "Clip skip", int, 1)

    nodes: dict[str, Any] = {"ckpt": {"type": "LoadCheckpoint", "inputs": {"name": fields.get("Model", "toy-shapes")}}}
    model, clip = _link("ckpt", "model"), _link("ckpt", "clip")
    for index, (name, te, unet) in enumerate(loras):
        node_id = f"lora{index + 1}" if len(loras) > 1 else "lora"
        nodes[node_id] = {"type": "LoraLoader", "inputs": {"model": model, "clip": clip, "name": name,
                                                           "strength_model": unet, "strength_clip": te}}
        model, clip = _link(node_id, "model"), _link(node_id, "clip")
    vae = _link("ckpt", "vae")

    def encode(node_id: str, text_value: str) -> dict[str, Any]:
        inputs = {"clip": clip, "text": text_value}
        if clip_skip > 1:
            inputs["clip_skip"] = clip_skip
        nodes[node_id] = {"type": "TextEncode", "inputs": inputs}
        return _link(node_id, "conditioning")

    positive, negative = encode("positive", prompt), encode("negative", info.negative)
    nodes["empty"] = {"type": "EmptyLatent", "inputs": {"width": width, "height": height, "batch_size": 1, "vae": vae}}
    latent = _sampling(nodes, "", model, positive, negative, _link("empty", "latent"), sampler, steps, 1.0, seed, cfg)
    if hires:
        latent = _hires(nodes, fields, info, latent, model, vae, encode, positive, negative, (width, height), sampler,
                        steps, seed, cfg, upscale_model)
    suffix = "2" if hires else ""
    nodes[f"decode{suffix}"] = {"type": "VAEDecode", "inputs": {"vae": vae, "latent": latent}}
    nodes[f"save{suffix}"] = {"type": "SaveImage", "inputs": {"images": _link(f"decode{suffix}", "image"),
                                                              "filename_prefix": "a1111"}}
    return {"graphflow": 1, "nodes": nodes}


def _sampling(nodes, suffix, model, positive, negative, latent, sampler, steps, denoise, seed, cfg) -> dict[str, str]:
    """Schedule → AddNoise → Sample, as the shipped workflows name them (a suffix for the second pass)."""
    nodes[f"schedule{suffix}"] = {"type": "Schedule", "inputs": {"model": model, "sampler": sampler, "steps": steps,
                                                                 "denoise": denoise}}
    nodes[f"noise{suffix}"] = {"type": "AddNoise", "inputs": {"latent": latent, "schedule": _link(f"schedule{suffix}", "schedule"),
                                                              "seed": seed}}
    nodes[f"sample{suffix}"] = {"type": "Sample", "inputs": {"model": model, "positive": positive, "negative": negative,
                                                             "latent": _link(f"noise{suffix}", "latent"), "cfg": cfg}}
    return _link(f"sample{suffix}", "latent")


def _hires(nodes, fields, info, latent, model, vae, encode, positive, negative, size, sampler, steps, seed, cfg,
           upscale_model) -> dict[str, str]:
    """The second pass of a hires fix: enlarge the first pass's latent as ``Hires upscaler`` says, then refine."""
    if "Hires resize" in fields:
        target = _size(fields["Hires resize"], "Hires resize")
    else:
        scale = _number(fields, "Hires upscale", float, 2.0)
        target = (round(size[0] * scale), round(size[1] * scale))
    upscaler = fields.get("Hires upscaler", "Latent")  # A1111's default
    latent_methods = {name: method for method, name in A1111_LATENT_UPSCALERS.items()}
    pixel_methods = {name: method for method, name in A1111_PIXEL_UPSCALERS.items()}
    if upscaler in latent_methods:
        nodes["upscale"] = {"type": "LatentUpscale", "inputs": {"latent": latent, "method": latent_methods[upscaler],
                                                               "width": target[0], "height": target[1], "vae": vae}}
        enlarged = _link("upscale", "latent")
    elif upscaler in ("None", "Latent (nearest)"):
        raise InfotextError(f"Hires upscaler: {upscaler} has no graphflow equivalent; use one of "
                            f"{sorted(latent_methods) + sorted(pixel_methods)} or an upscale model's name")
    else:
        nodes["decode"] = {"type": "VAEDecode", "inputs": {"vae": vae, "latent": latent}}
        image = _link("decode", "image")
        if upscaler not in pixel_methods:  # a model: A1111 names upscale models by their file's stem
            file_name = upscale_model(upscaler) if upscale_model else f"{upscaler}.safetensors"
            nodes["upscaler"] = {"type": "LoadUpscaleModel", "inputs": {"name": file_name}}
            nodes["upscale"] = {"type": "UpscaleWithModel", "inputs": {"upscale_model": _link("upscaler", "upscale_model"),
                                                                       "image": image}}
            image = _link("upscale", "image")
        method = pixel_methods.get(upscaler, "lanczos")  # after a model, A1111 resizes to the target with Lanczos
        nodes["resize"] = {"type": "ImageScale", "inputs": {"image": image, "method": method, "width": target[0],
                                                            "height": target[1]}}
        nodes["encode"] = {"type": "VAEEncode", "inputs": {"vae": vae, "image": _link("resize", "image")}}
        enlarged = _link("encode", "latent")
    hires_sampler = _sampler(fields["Hires sampler"], fields.get("Schedule type"), "Hires sampler") \
        if "Hires sampler" in fields else sampler
    hires_steps = _number(fields, "Hires steps", int, 0) or steps  # A1111: 0 = as many as the first pass
    denoise = _number(fields, "Denoising strength", float, 0.7)
    if "Hires prompt" in fields:
        positive = encode("positive2", _loras(fields["Hires prompt"])[0])
    if "Hires negative prompt" in fields:
        negative = encode("negative2", fields["Hires negative prompt"])
    return _sampling(nodes, "2", model, positive, negative, enlarged, hires_sampler, hires_steps, denoise, seed, cfg)


def _sampler(name: str, schedule: str | None, key: str) -> str:
    """Our sampler for A1111's sampler name and schedule type (``DPM++ 2M Karras`` as older versions write it
    is the same as ``DPM++ 2M`` with ``Schedule type: Karras``). No schedule type: the uniform one."""
    if schedule in (None, "Automatic"):
        schedule = None
    for ours, spec in SAMPLERS.items():
        if spec.a1111 == name and schedule in (None, a1111_sampler(ours)[1]):
            return ours
    matches = [ours for ours in SAMPLERS if a1111_sampler(ours)[0] == name]
    for ours in matches:
        if a1111_sampler(ours)[1] == (schedule or "Uniform"):
            return ours
    if matches:
        offered = sorted({a1111_sampler(ours)[1] for ours in matches} - {None})
        raise InfotextError(f"Schedule type: {schedule} is not available for {name} in graphflow; "
                            f"one of {offered}")
    known = sorted({a1111_sampler(ours)[0] for ours in SAMPLERS})
    raise InfotextError(f"{key}: unknown sampler {name!r}; graphflow has {', '.join(known)}")


def _loras(prompt: str) -> tuple[str, list[tuple[str, float, float]]]:
    """The prompt without its ``<lora:name:te[:unet]>`` tags, and the tags as (name, te, unet)."""
    loras = []
    for match in LORA_TAG.finditer(prompt):
        name, te, unet = match.group(1), match.group(2), match.group(3)
        try:
            te_weight = float(te) if te not in (None, "") else 1.0
            unet_weight = float(unet) if unet not in (None, "") else te_weight
        except ValueError:
            raise InfotextError(f"prompt: LoRA tag {match.group(0).strip()!r} has a weight that is no number") from None
        loras.append((name, te_weight, unet_weight))
    return LORA_TAG.sub("", prompt).strip(), loras


def _size(text: str, key: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if match is None:
        raise InfotextError(f"{key}: expected WIDTHxHEIGHT such as 512x512, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _number(fields: dict[str, str], key: str, kind: type, default: Any) -> Any:
    if key not in fields:
        return default
    try:
        value = float(fields[key])
        return int(value) if kind is int and value.is_integer() else kind(fields[key])
    except ValueError:
        raise InfotextError(f"{key}: expected a{'n integer' if kind is int else ' number'}, got {fields[key]!r}") from None


def _link(node: str, output: str) -> dict[str, str]:
    return {"from": node, "output": output}


def run_import(args: Any) -> int:
    """``graphflow import-a1111 TEXT [-o OUT.json] [--models DIR]``: print or write the workflow; exit 0, or 2
    with the reason (an error in the text, or a workflow the registry refuses)."""
    import sys
    from pathlib import Path

    from graphflow.context import Settings
    from graphflow.errors import WorkflowFormatError
    from graphflow.registry import default_registry
    from graphflow.validate import validate
    from graphflow.workflow import parse

    from .upscale import available_models

    text = sys.stdin.read() if args.text == "-" else args.text
    settings = Settings.from_env(models_dir=args.models)

    def upscale_model(name: str) -> str:
        files = available_models(settings)
        found = [f for f in files if Path(f).stem == name or f == name]
        if not found:
            raise InfotextError(f"Hires upscaler: no upscale model named {name!r} in {settings.models_dir}/upscale_models "
                                f"(A1111 names them by file name without extension); there: {files or 'none'}")
        return found[0]

    try:
        document = workflow_from_infotext(text, upscale_model, warn=lambda message: print(f"warning: {message}", file=sys.stderr))
    except InfotextError as exc:
        raise WorkflowFormatError(f"A1111 parameters: {exc}") from None
    validate(parse(document), default_registry())  # WorkflowInvalid (exit 2) lists every problem
    rendered = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        Path(args.output).write_text(rendered, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(rendered)
    return 0
