"""The values that travel on Stable Diffusion sockets.

Each is a frozen dataclass: nodes build new values and never mutate what they receive (the engine's cache hands
the same object to every consumer). Tensors stay on the device they were made on. ``nbytes`` lets the engine's
byte-budgeted cache size a value; ``__graphflow_digest__`` lets its mutation guard (on in tests) prove that a node
left its inputs untouched.
"""
from __future__ import annotations

import hashlib
import math
import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from graphflow.cache import is_container, walk
from graphflow.disk_cache import register_value

from .speed import execution_device

# Socket type names used by the node library.
MODEL, CLIP, VAE = "MODEL", "CLIP", "VAE"
TOKENS, CONDITIONING = "TOKENS", "CONDITIONING"
LATENT, IMAGE, MASK = "LATENT", "IMAGE", "MASK"
SCHEDULE = "SCHEDULE"
UPSCALE_MODEL = "UPSCALE_MODEL"
CONTROL_NET, T2I_ADAPTER = "CONTROL_NET", "T2I_ADAPTER"


def tensor_digest(tensor: torch.Tensor, hasher: "hashlib._Hash") -> None:
    t = tensor.detach().to("cpu").contiguous()
    hasher.update(f"{t.dtype}{tuple(t.shape)}".encode())
    # reshape: a 0-dim tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes as it is
    hasher.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def module_digest(module: torch.nn.Module, hasher: "hashlib._Hash") -> None:
    for name, tensor in module.state_dict().items():
        hasher.update(name.encode())
        tensor_digest(tensor, hasher)


def _is_weights(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, torch.nn.Module))


def digest_of(value: Any) -> str:
    """Content digest of a socket value (tensors by bytes, modules by state dict), over the engine's :func:`walk`."""
    hasher = hashlib.sha256()
    for path, part in walk(value, is_leaf=_is_weights):
        hasher.update(path.encode("utf-8", "backslashreplace") + b"\0")
        if isinstance(part, torch.Tensor):
            tensor_digest(part, hasher)
        elif isinstance(part, torch.nn.Module):
            module_digest(part, hasher)
        else:
            hasher.update((type(part).__name__ if is_container(part) else repr(part)).encode("utf-8", "backslashreplace"))
    return hasher.hexdigest()


def nbytes_of(value: Any) -> int:
    """Bytes of the tensors a value holds (a module's by its state dict); nothing else counts. A loaded model held
    by reference inside another value (a conditioning's ControlNet or T2I-Adapter) is the model pool's, not counted."""
    total = 0

    def is_leaf(part: Any) -> bool:
        return _is_weights(part) or (part is not value and isinstance(part, (ControlNet, T2IAdapter)))

    for _, part in walk(value, is_leaf=is_leaf):
        if part is not value and isinstance(part, (ControlNet, T2IAdapter)):
            continue
        if isinstance(part, torch.Tensor):
            total += part.numel() * part.element_size()
        elif isinstance(part, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in part.state_dict().values())
    return total


class SocketValue:
    """Mixin giving socket dataclasses the engine's size and digest hooks."""

    @property
    def nbytes(self) -> int:
        return nbytes_of(self)

    def __graphflow_digest__(self) -> str:
        return digest_of(self)

    def replace(self, **changes: Any):
        return replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Model(SocketValue):
    """MODEL: the denoising UNet plus the scheduler configuration it was trained with.

    ``family`` is "sd1" / "sd2" / "sdxl" / "sdxl-refiner"; ``prediction_type`` is "epsilon" or "v_prediction";
    ``patches`` names what was applied on top of the loaded weights (LoRAs, merges), for metadata.
    ``vae_scale_factor`` is how many pixels one latent pixel spans with the checkpoint's VAE (SDXL's size
    conditioning defaults to the image size); ``zero_empty_negative`` is the pipeline's
    ``force_zeros_for_empty_prompt`` (SDXL base): an empty negative prompt is all zeros, not the encoded empty prompt."""

    unet: torch.nn.Module
    scheduler_config: dict[str, Any]
    family: str
    prediction_type: str
    name: str
    patches: tuple[str, ...] = ()
    vae_scale_factor: int = 8
    zero_empty_negative: bool = False

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def is_inpainting(self) -> bool:
        return self.in_channels == 9

    @property
    def device(self) -> torch.device:
        """Where the UNet computes (an offloaded one's weights rest in CPU memory: nodes/speed.py)."""
        return execution_device(self.unet)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


@dataclass(frozen=True, eq=False)
class Clip(SocketValue):
    """CLIP: tokenizer + text encoder. ``embeddings`` maps textual-inversion names to (n_vectors, dim) tensors.

    SDXL base has a second encoder (OpenCLIP ViT-bigG, with its own tokenizer): ``text_encoder_2`` /
    ``tokenizer_2``. The SDXL refiner has only that one, held as ``text_encoder`` / ``tokenizer``."""

    tokenizer: Any
    text_encoder: torch.nn.Module
    family: str
    name: str
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    patches: tuple[str, ...] = ()
    # The text encoder layer comfy.CLIPSetLastLayer chose for comfy.CLIPTextEncode: -1 = the last, -2 = the one
    # before (A1111's clip skip 2), ...; None = the family's default (ComfyUI: the last for SD 1.x, the one before
    # for SD 2.x). graphflow's own encode nodes take clip_skip as an input instead.
    stop_at_layer: int | None = None
    text_encoder_2: torch.nn.Module | None = None
    tokenizer_2: Any = None


@dataclass(frozen=True, eq=False)
class Vae(SocketValue):
    """VAE: the autoencoder; latents are stored already multiplied by ``scaling_factor``."""

    vae: torch.nn.Module
    name: str

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        """Where the VAE computes (an offloaded one's weights rest in CPU memory: nodes/speed.py)."""
        return execution_device(self.vae)


@dataclass(frozen=True, eq=False)
class Tokens(SocketValue):
    """TOKENS: token ids (B, 77·k) with a per-token weight of the same shape, and the prompt they came from.

    ``chunks`` is k, the number of 77-token windows; weights are 1.0 for plain prompts.
    ``attention_mask`` (same shape, 1 = real token) is the tokenizer's; only text encoders whose config sets
    ``use_attention_mask`` read it, as in diffusers."""

    input_ids: torch.Tensor
    weights: torch.Tensor
    text: tuple[str, ...]
    chunks: int = 1
    attention_mask: torch.Tensor | None = None
    # Textual inversion (nodes/prompt.py): negative ids -1-j in input_ids stand for row j of these (m, C) vectors.
    embedding_vectors: torch.Tensor | None = None
    second: Tokens | None = None  # SDXL: the tokens of the second text encoder (its own tokenizer, maybe text_2)


@dataclass(frozen=True, eq=False)
class ControlNet(SocketValue):
    """CONTROL_NET: a diffusers ControlNetModel and the model family it was trained for ("sd1", "sd2", "sdxl")."""

    module: torch.nn.Module
    family: str
    name: str

    @property
    def downscale(self) -> int:
        """How much smaller than the control image the hint encoder's output is: the latent's factor."""
        return 2 ** (len(self.module.config.conditioning_embedding_out_channels) - 1)

    @property
    def global_pool(self) -> bool:
        """Whether it averages its residuals over the picture (the shuffle ControlNet): diffusers then always uses
        guess mode."""
        return bool(self.module.config.global_pool_conditions)


@dataclass(frozen=True, eq=False)
class Control(SocketValue):
    """One ApplyControlNet on a conditioning: the ControlNet, its control image and when and how strongly it acts.

    ``start`` / ``end`` are shares of the steps Sample runs (diffusers' ``control_guidance_start`` / ``_end``);
    ``guess_mode`` scales the residuals from 0.1 (first block) up to 1 (middle block), diffusers' guess mode."""

    control_net: ControlNet
    image: torch.Tensor  # (1 or B, H, W, 3) in [0, 1]: an IMAGE's pixels
    strength: float
    start: float
    end: float
    guess_mode: bool = False


@dataclass(frozen=True, eq=False)
class T2IAdapter(SocketValue):
    """T2I_ADAPTER: a diffusers T2IAdapter, whose features go into the UNet's down blocks (nodes/t2i_adapter.py)."""
    module: torch.nn.Module
    name: str


@dataclass(frozen=True, eq=False)
class AdapterControl(SocketValue):
    """One ApplyT2IAdapter: adapter, control image (1 or B, H, W, 3), feature scale, share of the steps it acts on."""
    adapter: T2IAdapter
    image: torch.Tensor
    strength: float
    end: float


@dataclass(frozen=True, eq=False)
class Conditioning(SocketValue):
    """CONDITIONING: text embeddings (B, 77·k, C) for the UNet's cross-attention, and the ControlNets applied to
    them (``controls``, in the order they were applied; Sample adds up their residuals) and T2I-Adapters (``adapters``).

    SDXL adds ``pooled`` (B, P), the pooled prompt embedding, and ``sizes``: the size / crop / aesthetic-score
    conditioning set with SDXLSizes (keys of nodes.sdxl.SIZE_KEYS; a key left out takes the pipeline's default)."""

    embeds: torch.Tensor
    text: tuple[str, ...] = ()
    # The empty prompt encoded alike (1, 77, C): pads the shorter of positive/negative for CFG (pad_conditionings).
    empty_chunk: torch.Tensor | None = None
    # ComfyUI's conditioning: a list of entries, each maybe confined to an area of the latent (comfy.ConditioningCombine
    # / comfy.ConditioningSetArea; only comfy.KSampler composes them): ``area`` (height, width, y, x) in latent pixels,
    # ComfyUI's order; ``strength`` weighs the entry; ``also`` holds the entries after this one.
    area: tuple[int, ...] | None = None
    strength: float = 1.0
    also: tuple["Conditioning", ...] = ()
    controls: tuple[Control, ...] = ()
    pooled: torch.Tensor | None = None
    sizes: dict[str, float] = field(default_factory=dict)
    # ComfyUI's InpaintModelConditioning: the masked picture's latents (B, C, h, w) and the mask (B, 1, h, w) an
    # inpainting UNet reads with this entry instead of the latent's own (only comfy.KSampler reads them).
    inpaint_latent: torch.Tensor | None = None
    inpaint_mask: torch.Tensor | None = None
    adapters: tuple[AdapterControl, ...] = ()

    @property
    def entries(self) -> tuple["Conditioning", ...]:
        """Every entry, this one first (each without ``also``)."""
        return (replace(self, also=()), *self.also) if self.also else (self,)

    @property
    def is_plain(self) -> bool:
        """One entry over the whole latent at strength 1: what graphflow's own Sample takes."""
        return not self.also and self.area is None and self.strength == 1.0


@dataclass(frozen=True, eq=False)
class ScheduleValue(SocketValue):
    """SCHEDULE: a sampler over a fixed number of steps, and where denoising starts.

    ``start_index`` indexes ``timesteps``: 0 for txt2img, later for img2img (strength < 1) and for a schedule
    that resumes a stopped one (``denoising_start``); ``end_index`` is where a schedule stops early.
    ``scheduler_config`` is complete (model config + sampler overrides) so a fresh scheduler can be
    built from it for every run — diffusers schedulers are stateful."""

    sampler: str
    steps: int
    denoise: float
    scheduler_class: str
    scheduler_config: dict[str, Any]
    timesteps: torch.Tensor
    start_index: int
    # Where denoising stops (exclusive; None = at the end): diffusers' denoising_end, a base model handing over.
    end_index: int | None = None
    # Started at diffusers' denoising_start: the latent is already noised to this step (a stopped Sample's result).
    resumes: bool = False


@dataclass(frozen=True, eq=False)
class Latent(SocketValue):
    """LATENT: latents (B, 4, h, w), already scaled by the VAE's scaling factor.

    After AddNoise a latent also carries the schedule it was noised for (``schedule``), the clean latents it started
    from (``clean``, used when inpainting), the noise that was added (``noise``), and the random generator state
    right after drawing that noise (``rng_state``), so a sampler that needs more noise continues the same random
    stream as diffusers' pipelines do (one state, or a (B, state) stack when each image has its own stream).
    ``noise_mask`` (B, 1, h, w) is 1 where the sampler may repaint; ``masked_image`` holds the masked-image latents
    for 9-channel UNets. ``paste_pixels`` (B, H, W, 3) and ``paste_mask`` (B, H, W), from InpaintEncode, are the
    original picture and the blurred mask VAEDecode composites with after decoding (the WebUI's paste-back);
    AddNoise and Sample carry them, nodes that resize a latent drop them. ``batch_index`` numbers the images of a
    batch taken out of (or repeated from) a bigger one, so a sampler can give each the noise it had there (ComfyUI's
    LatentFromBatch / RepeatLatentBatch); None means 0, 1, 2, ..."""

    samples: torch.Tensor
    noise_mask: torch.Tensor | None = None
    masked_image: torch.Tensor | None = None
    paste_pixels: torch.Tensor | None = None
    paste_mask: torch.Tensor | None = None
    schedule: ScheduleValue | None = None
    clean: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    rng_state: torch.Tensor | None = None
    batch_index: tuple[int, ...] | None = None

    @property
    def batch_size(self) -> int:
        return int(self.samples.shape[0])


@dataclass(frozen=True, eq=False)
class Image(SocketValue):
    """IMAGE: pixels as a float tensor (B, H, W, 3) in [0, 1], channels last (the layout PIL and PNG use).

    ``flagged``: per image, whether SafetyCheck flagged it (None: not checked); nodes that make new pixels
    drop it, so check right before saving."""

    pixels: torch.Tensor
    flagged: tuple[bool, ...] | None = None

    @property
    def batch_size(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[2])


@dataclass(frozen=True, eq=False)
class Mask(SocketValue):
    """MASK: (B, H, W) float in [0, 1]; 1 marks pixels to repaint."""

    mask: torch.Tensor


# ---------------------------------------------------------------------------------------------------------------
# Persistent disk cache (graphflow/disk_cache.py): how the small values are written. Models are never stored.
# ---------------------------------------------------------------------------------------------------------------

def value_to_disk(value: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A stored socket value as named CPU tensors plus a JSON tree that says where each field's content is.

    Tensors are copied (two fields may share one tensor; safetensors stores each apart) and remember their
    device; nested stored values (a Latent's ScheduleValue) are walked; anything else is refused with TypeError."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(item: Any, path: str) -> dict[str, Any]:
        if isinstance(item, torch.Tensor):
            tensors[path] = item.detach().to("cpu").contiguous().clone()
            return {"tensor": path, "device": str(item.device)}
        if isinstance(item, float) and not math.isfinite(item):  # JSON has no infinity (DPM++'s lambda_min_clipped)
            return {"float": repr(item)}
        if item is None or isinstance(item, (bool, int, float, str)):
            return {"json": item}
        if isinstance(item, (tuple, list)):
            return {type(item).__name__: [encode(v, f"{path}.{i}") for i, v in enumerate(item)]}
        if isinstance(item, dict) and all(isinstance(k, str) for k in item):
            return {"dict": {k: encode(v, f"{path}.{k}") for k, v in item.items()}}
        if type(item) in STORED_TAGS:
            return {"value": STORED_TAGS[type(item)],
                    "fields": {f.name: encode(getattr(item, f.name), f"{path}.{f.name}") for f in fields(item)}}
        raise TypeError(f"a {type(item).__name__} cannot be stored on disk")

    return tensors, encode(value, "v")


def value_from_disk(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Any:
    """The value :func:`value_to_disk` wrote; raises on any tree, field or type that does not fit the classes."""

    def decode(node: Any) -> Any:
        if not isinstance(node, dict):
            raise ValueError("malformed value description")
        if "tensor" in node:
            tensor = tensors[node["tensor"]]
            return tensor if node["device"] == "cpu" else tensor.to(node["device"])
        if "json" in node:
            return node["json"]
        if "float" in node:
            if node["float"] not in ("inf", "-inf", "nan"):
                raise ValueError(f"not a special float: {node['float']!r}")
            return float(node["float"])
        if "tuple" in node or "list" in node:
            items = [decode(v) for v in node.get("tuple", node.get("list"))]
            return tuple(items) if "tuple" in node else items
        if "dict" in node:
            return {str(k): decode(v) for k, v in node["dict"].items()}
        cls = STORED_TYPES[node["value"]]
        names = {f.name for f in fields(cls)}
        if set(node["fields"]) != names:
            raise ValueError(f"{cls.__name__} fields differ: stored {sorted(node['fields'])}, expected {sorted(names)}")
        hints = typing.get_type_hints(cls)
        values = {name: decode(part) for name, part in node["fields"].items()}
        for name, item in values.items():
            if not matches(item, hints[name]):
                raise TypeError(f"{cls.__name__}.{name}: a stored {type(item).__name__} is not a {hints[name]}")
        return cls(**values)

    return decode(meta)


def matches(item: Any, hint: Any) -> bool:
    """Whether a decoded field fits its annotation (tensors, plain types, optionals, tuples, dicts, Any)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(item, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return item is None
    if origin is tuple:
        return isinstance(item, tuple) and all(matches(v, typing.get_args(hint)[0]) for v in item)
    if origin is dict:
        return isinstance(item, dict)
    return isinstance(item, origin or hint)


STORED_TYPES = {"tokens": Tokens, "conditioning": Conditioning, "schedule": ScheduleValue, "latent": Latent,
                "image": Image, "mask": Mask}
STORED_TAGS = {cls: tag for tag, cls in STORED_TYPES.items()}
for _tag, _cls in STORED_TYPES.items():
    register_value(_cls, f"sd.{_tag}", value_to_disk, value_from_disk)
