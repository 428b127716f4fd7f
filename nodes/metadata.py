"""What an output file says about how it was made: the AUTOMATIC1111 "parameters" text of a PNG.

:func:`describe` reads a :class:`Generation` off the run's provenance (``ctx.graph``: the checked nodes
upstream of the output, their resolved literals and their values), :func:`a1111_parameters` writes it the way
the A1111 web UI writes its infotext::

    PROMPT (with <lora:name:weight> tags)
    Negative prompt: NEGATIVE
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: …, …

A hires fix (a second Sample with denoise < 1 whose latent comes from a first Sample, through a latent or
pixel upscale) is recorded as A1111 records one: the first pass's steps, seed and size, then
``Denoising strength``, ``Hires upscale``, ``Hires steps`` and ``Hires upscaler``.
"""
# No `from __future__ import annotations`: node modules are imported as they are, and this one imports them.

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from graphflow.node import spec_of
from graphflow.provenance import Provenance, UpstreamNode

from .image import ImageScale
from .latent import LatentUpscale
from .loaders import CHECKPOINT_SUFFIXES, LoadCheckpoint, checkpoint_dirs, is_checkpoint_folder, resolve
from .lora import LoraLoader
from .merge import MergeClip, MergeModels
from .sampling import SAMPLERS, AddNoise, Sample, Schedule
from .text import TextEncode, Tokenize
from .upscale import LoadUpscaleModel, UpscaleWithModel
from .values import CLIP, IMAGE, LATENT, MODEL

# Node types by the name they are registered under: renaming a node changes these with it.
SAMPLE, ADD_NOISE, SCHEDULE = spec_of(Sample).name, spec_of(AddNoise).name, spec_of(Schedule).name
TEXT_NODES = (spec_of(TextEncode).name, spec_of(Tokenize).name)
CHECKPOINT, LORA = spec_of(LoadCheckpoint).name, spec_of(LoraLoader).name
MERGES = (spec_of(MergeModels).name, spec_of(MergeClip).name)
LATENT_UPSCALE, IMAGE_SCALE = spec_of(LatentUpscale).name, spec_of(ImageScale).name
MODEL_UPSCALE, UPSCALE_MODEL_LOADER = spec_of(UpscaleWithModel).name, spec_of(LoadUpscaleModel).name

# A1111's names for its hires upscalers: the latent modes (interpolation, antialias) and the pixel filters.
A1111_LATENT_UPSCALERS = {
    "bilinear": "Latent", "bilinear-antialiased": "Latent (antialiased)", "bicubic": "Latent (bicubic)",
    "bicubic-antialiased": "Latent (bicubic antialiased)", "nearest-exact": "Latent (nearest-exact)",
}
A1111_PIXEL_UPSCALERS = {"lanczos": "Lanczos", "nearest": "Nearest"}  # A1111 has no bicubic/bilinear upscaler
# A1111 ≥ 1.9 names a k-diffusion sampler without its schedule ("DPM++ 2M") and reads the schedule from
# "Schedule type"; left out, it takes the sampler's default, which is Karras for DPM++ 2M. Our non-Karras
# samplers space their timesteps evenly: A1111's "Uniform".
A1111_SCHEDULED = {"Euler", "Euler a", "Heun", "DPM2", "DPM2 a", "LMS", "DPM++ 2M", "DPM++ 2M SDE"}
LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")


@dataclass(frozen=True)
class Pass:
    """One sampling pass: the Sample node and the literals that shaped it."""

    sample: UpstreamNode
    sampler: str
    steps: int
    denoise: float
    cfg: float
    seed: int
    prompt: str | None
    negative: str | None
    clip_skip: int


@dataclass(frozen=True)
class Hires:
    """The second pass of a hires fix and how its input was enlarged."""

    second: Pass
    upscaler: str | None  # A1111's name; None when A1111 has none for the method used
    resize: tuple[int, int]  # the second pass's image size


@dataclass(frozen=True)
class Generation:
    first: Pass
    size: tuple[int, int]  # one image of the first pass (a grid's cell, not the grid)
    hires: Hires | None
    checkpoint: UpstreamNode | None  # None when the model is a merge (no file holds it)
    loras: tuple[tuple[str, float, float], ...]  # (name, text-encoder weight, UNet weight), as applied


def describe(graph: Provenance, input_name: str = "images") -> Generation | None:
    """The generation behind the output's ``input_name``, or None when no Sample produced it."""
    final = graph.nearest(graph.output_node, SAMPLE, input_name)
    if final is None:
        return None
    last = _pass(graph, final)
    earlier = graph.nearest(final, SAMPLE, "latent") if last is not None and last.denoise < 1 else None
    first = _pass(graph, earlier) if earlier is not None else last
    if first is None:  # a latent noised by some other node pack's node: nothing A1111 could describe
        return None
    final_size = _image_size(graph, final, input_name)
    hires = None
    if earlier is not None:
        (first_w, first_h), (final_w, final_h) = _latent_side(graph, earlier), _latent_side(graph, final)
        size = (round(final_size[0] * first_w / final_w), round(final_size[1] * first_h / final_h))
        hires = Hires(last, _upscaler(graph, final), final_size)
    else:
        size = final_size
    checkpoint, loras = _model_sources(graph, first.sample)
    return Generation(first, size, hires, checkpoint, loras)


def a1111_parameters(generation: Generation | None, size: tuple[int, int], model_hash: str | None = None) -> str:
    """A1111's infotext for ``generation`` (``size``: of the saved image, used when nothing generated it)."""
    if generation is None:
        return f"Size: {size[0]}x{size[1]}"
    first, hires = generation.first, generation.hires
    sampler, schedule = a1111_sampler(first.sampler)
    fields: dict[str, Any] = {
        "Steps": first.steps, "Sampler": sampler, "Schedule type": schedule, "CFG scale": first.cfg,
        "Seed": first.seed, "Size": "{}x{}".format(*generation.size),
    }
    if generation.checkpoint is not None:
        fields["Model hash"] = model_hash
        fields["Model"] = file_stem(generation.checkpoint.literals["name"], CHECKPOINT_SUFFIXES)
    if first.clip_skip > 1:  # A1111 writes it only when it skips a layer
        fields["Clip skip"] = first.clip_skip
    if hires is not None:
        second = hires.second
        scale = (hires.resize[0] / generation.size[0], hires.resize[1] / generation.size[1])
        fields["Denoising strength"] = second.denoise
        if scale[0] == scale[1]:
            fields["Hires upscale"] = scale[0]
        else:
            fields["Hires resize"] = "{}x{}".format(*hires.resize)
        fields["Hires steps"] = second.steps
        fields["Hires upscaler"] = hires.upscaler
        if second.sampler != first.sampler:
            fields["Hires sampler"] = a1111_sampler(second.sampler)[0]
        if second.prompt != first.prompt:
            fields["Hires prompt"] = second.prompt
        if second.negative != first.negative:
            fields["Hires negative prompt"] = second.negative
    elif first.denoise < 1:
        fields["Denoising strength"] = first.denoise
    lines = []
    tags = " ".join(_lora_tag(*lora) for lora in generation.loras)
    prompt = " ".join(part for part in (first.prompt or "", tags) if part)
    if prompt:
        lines.append(prompt)
    if first.negative:
        lines.append(f"Negative prompt: {first.negative}")
    lines.append(", ".join(f"{key}: {_quote(_number(value))}" for key, value in fields.items() if value is not None))
    return "\n".join(lines)


def a1111_sampler(name: str) -> tuple[str, str | None]:
    """(A1111's sampler name, its "Schedule type" or None) for one of our sampler names."""
    a1111 = SAMPLERS[name].a1111
    if a1111.endswith(" Karras"):
        return a1111.removesuffix(" Karras"), "Karras"
    return a1111, "Uniform" if a1111 in A1111_SCHEDULED else None


def file_stem(name: str, suffixes: tuple[str, ...]) -> str:
    """How A1111 names a model file: its base name without the extension (``sub/x.safetensors`` → ``x``)."""
    base = PurePath(name).name
    return next((base[:-len(s)] for s in suffixes if base.lower().endswith(s)), base)


def short_hash(path: Path) -> str:
    """A1111's short model hash: the first 10 hex digits of the sha256 of the whole file."""
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()[:10]


_HASHES: dict[tuple[str, int, int], str] = {}


def checkpoint_hash(generation: Generation | None, settings: Any) -> str | None:
    """The short hash of the single-file checkpoint ``generation`` loaded (None for folders and merges).

    Hashes are remembered per path, size and modification time: a checkpoint is hashed once per process."""
    if generation is None or generation.checkpoint is None:
        return None
    path = resolve(generation.checkpoint.literals["name"], checkpoint_dirs(settings.models_dir), CHECKPOINT_SUFFIXES,
                   is_checkpoint_folder)
    if not path.is_file():
        return None
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = short_hash(path)
    return _HASHES[key]


# ---------------------------------------------------------------------------------------------- reading the graph


def _pass(graph: Provenance, sample: UpstreamNode) -> Pass | None:
    """The pass ``sample`` ran, or None when its latent was not noised by AddNoise for a Schedule."""
    noise = graph.nearest(sample, ADD_NOISE, "latent")
    schedule = graph.nearest(noise, SCHEDULE, "schedule") if noise is not None else None
    if schedule is None:
        return None
    seed = sample.literals["seed"]
    if seed < 0:  # -1 continues AddNoise's generator, whose seed is the one that counts
        seed = noise.literals["seed"]
    encoder = next((n for n in graph.upstream(sample, "positive") if "clip_skip" in n.literals), None)
    return Pass(sample, schedule.literals["sampler"], schedule.literals["steps"], schedule.literals["denoise"],
                sample.literals["cfg"], seed, _prompt(graph, sample, "positive"), _prompt(graph, sample, "negative"),
                encoder.literals["clip_skip"] if encoder is not None else 1)


def _prompt(graph: Provenance, sample: UpstreamNode, input_name: str) -> str | None:
    """The text behind a conditioning: the nearest text node upstream of it."""
    text = next((n for n in graph.upstream(sample, input_name) if n.type in TEXT_NODES), None)
    return text.literals["text"] if text is not None else None


def _latent_side(graph: Provenance, sample: UpstreamNode) -> tuple[int, int]:
    """(width, height) of a Sample's output latent."""
    samples = graph.value(sample, "latent").samples
    return int(samples.shape[-1]), int(samples.shape[-2])


def _image_size(graph: Provenance, final: UpstreamNode, input_name: str) -> tuple[int, int]:
    """(width, height) of one image made from the final Sample's latent (its decode: a grid tiles such
    images, and the grid's size is not theirs); the saved image's size if no node decoded that latent."""
    for node in graph.nodes.values():
        for source in node.links.values():
            producer = graph.nodes[source.node]
            if source.type == IMAGE and any(s.node == final.id and s.type == LATENT for s in producer.links.values()):
                image = graph.value(producer, source.output)
                return image.width, image.height
    link = graph.output_node.links[input_name]
    image = graph.value(link.node, link.output)
    return image.width, image.height


def _upscaler(graph: Provenance, final: UpstreamNode) -> str | None:
    """A1111's name for how the first pass's result was enlarged for the second."""
    def between(below: UpstreamNode, name: str, source) -> bool:  # up to the first pass, not into the models
        return (below is final or below.type != SAMPLE) and source.type != MODEL

    types = {node.type: node for node in graph.upstream(final, "latent", follow=between)}
    if MODEL_UPSCALE in types:
        loader = graph.nearest(types[MODEL_UPSCALE], UPSCALE_MODEL_LOADER)
        return file_stem(loader.literals["name"], (".safetensors", ".pth", ".pt", ".ckpt")) if loader else None
    if LATENT_UPSCALE in types:
        return A1111_LATENT_UPSCALERS.get(types[LATENT_UPSCALE].literals["method"])
    if IMAGE_SCALE in types:
        return A1111_PIXEL_UPSCALERS.get(types[IMAGE_SCALE].literals["method"])
    return None


def _model_sources(graph: Provenance, sample: UpstreamNode) -> tuple[UpstreamNode | None, tuple[tuple[str, float, float], ...]]:
    """The checkpoint behind the Sample's model (None if merged) and the LoRAs applied to it and its text encoder."""
    model_chain = _chain(graph, sample, "model", MODEL)
    text = next((n for n in graph.upstream(sample, "positive") if n.type in TEXT_NODES), None)
    clip_chain = _chain(graph, text, "clip", CLIP) if text is not None else []
    merged = any(node.type in MERGES for node in model_chain)
    checkpoint = None if merged else next((n for n in model_chain if n.type == CHECKPOINT), None)
    on_model = {n.id for n in model_chain if n.type == LORA}
    on_clip = {n.id for n in clip_chain if n.type == LORA}
    loras = []
    for node in reversed(list({n.id: n for n in model_chain + clip_chain}.values())):
        if node.type == LORA:
            te = node.literals["strength_clip"] if node.id in on_clip else 0.0
            unet = node.literals["strength_model"] if node.id in on_model else 0.0
            loras.append((file_stem(node.literals["name"], LORA_SUFFIXES), te, unet))
    return checkpoint, tuple(loras)


def _chain(graph: Provenance, start: UpstreamNode, input_name: str, socket_type: str) -> list[UpstreamNode]:
    """The nodes a value of ``socket_type`` passed through on its way into ``start.input_name``, nearest first,
    up to the first merge or loader (a merge's parents made a model that no longer exists as a file)."""
    chain: list[UpstreamNode] = []
    node = graph.source(start, input_name)
    while node is not None:
        chain.append(node)
        if node.type in MERGES:
            break
        typed = [name for name, source in node.links.items() if source.type == socket_type]
        node = graph.source(node, typed[0]) if typed else None
    return chain


def _lora_tag(name: str, te: float, unet: float) -> str:
    """A1111's prompt tag: ``<lora:name:w>``, or ``<lora:name:te:unet>`` when the two weights differ."""
    return f"<lora:{name}:{te:g}>" if te == unet else f"<lora:{name}:{te:g}:{unet:g}>"


def _number(value: Any) -> Any:
    return f"{value:g}" if isinstance(value, float) else value


def _quote(value: Any) -> str:
    """A1111 writes a value that holds a comma, colon or newline as a JSON string."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text
