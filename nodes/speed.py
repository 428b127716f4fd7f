"""Memory and speed options of the loaders: the attention kernel, CPU offload and ``torch.compile`` of the UNet.

They change how a model computes, not what: the same weights, results equal up to float rounding (offload:
exactly equal; measured in tests/nodes/test_speed.py). LoadCheckpoint declares them ``neutral``: each choice is its
own loaded object, but what is computed downstream is cached once whatever the choice.

Attention (the UNet's, through diffusers' attention processors):

- ``sdpa``: PyTorch's ``scaled_dot_product_attention``, which picks the fastest kernel for the device (default);
- ``sdpa_flash`` / ``sdpa_efficient`` / ``sdpa_cudnn`` / ``sdpa_math``: the same call pinned to one of PyTorch's
  kernels (flash attention, memory-efficient attention, cuDNN, the plain reference); a kernel the device cannot run
  is refused when the model loads;
- ``sliced`` / ``sliced_max``: diffusers' sliced attention, a few heads at a time (half the head dimension's worth;
  ``sliced_max``: one at a time): less peak memory for a little speed, as ``pipe.enable_attention_slicing()``.

Offload (needs an accelerator; on the CPU the weights already live in CPU memory):

- ``model``: every model of the checkpoint (UNet, text encoders, VAE) waits in CPU memory and moves whole to the
  accelerator when it runs, sending the one that ran before back (``pipe.enable_model_cpu_offload()``): the GPU
  holds one model at a time;
- ``sequential``: each layer moves to the accelerator for its own forward and back right after
  (``pipe.enable_sequential_cpu_offload()``): the least memory, much slower.

Both are forward pre-hooks on every submodule rather than accelerate's hooks: graphflow's text encoding calls the
encoder's layers one by one (accelerate's model hook watches the top-level forward only), and accelerate's
sequential offload swaps the weights for meta tensors, which LoRA, merges and the cache's digests read. Here the
weights stay real tensors, in CPU memory while at rest.
"""
from __future__ import annotations

import weakref
from typing import Annotated, Literal

import torch
from pydantic import Field

from graphflow.errors import NodeInputError

SDPA_KERNELS = {"sdpa_flash": "FLASH_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION",
                "sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_math": "MATH"}
AttentionName = Literal["sdpa", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "sdpa_math", "sliced", "sliced_max"]
OffloadName = Literal["none", "model", "sequential"]
Attention = Annotated[AttentionName, Field(description="the UNet's attention kernel: sdpa = PyTorch's choice; "
                                           "sdpa_* pins one kernel; sliced = less memory, a little slower")]
Offload = Annotated[OffloadName, Field(description="model: one model at a time on the GPU; sequential: one layer "
                                       "at a time (least memory, slow); needs a GPU")]
Compile = Annotated[bool, Field(description="torch.compile the UNet: the first steps are slow (compiling), later ones faster")]
# Loader inputs that change how, not what (graphflow.node's neutral inputs).
NEUTRAL_INPUTS = ("attention", "offload", "compile_unet")
OFFLOAD_DEVICE = "_graphflow_offload_device"  # set on an offloaded module: where it runs
OFFLOAD_GROUP = "_graphflow_offload_group"  # set on a model-offloaded module: the group it takes turns in


def execution_device(module: torch.nn.Module) -> torch.device:
    """Where ``module`` computes: its offload device when offloaded (its weights rest in CPU memory), else its weights'."""
    offloaded = getattr(module, OFFLOAD_DEVICE, None)
    return torch.device(offloaded) if offloaded is not None else next(module.parameters()).device


# ---------------------------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------------------------

def pinned_sdpa(kernel: str):
    """diffusers' SDPA processor with PyTorch's kernel choice pinned to ``kernel`` (an ``SDPBackend`` name)."""
    from diffusers.models.attention_processor import AttnProcessor2_0
    from torch.nn.attention import SDPBackend, sdpa_kernel

    class PinnedSDPA(AttnProcessor2_0):
        def __init__(self, backend: SDPBackend):
            super().__init__()
            self.backend = backend

        def __call__(self, *args, **kwargs):
            with sdpa_kernel(self.backend):
                return super().__call__(*args, **kwargs)

    return PinnedSDPA(getattr(SDPBackend, kernel))


def check_kernel(kernel: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether PyTorch's ``kernel`` runs attention of this device and dtype (a tiny call, as the UNet makes it)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.zeros(1, 2, 16, 64, device=device, dtype=dtype)
    try:
        with sdpa_kernel(getattr(SDPBackend, kernel)):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
    except RuntimeError:
        return False
    return True


def set_attention(unet: torch.nn.Module, attention: AttentionName, device: torch.device, dtype: torch.dtype) -> None:
    """Give a freshly loaded UNet the chosen attention processors (the loader's own object: nobody else holds it)."""
    if attention in SDPA_KERNELS:
        kernel = SDPA_KERNELS[attention]
        if not check_kernel(kernel, device, dtype):
            working = ["sdpa", "sliced", "sliced_max"] + [name for name, k in SDPA_KERNELS.items()
                                                          if k != kernel and check_kernel(k, device, dtype)]
            raise NodeInputError("attention", f"PyTorch's {kernel} kernel cannot run on {device.type} in {dtype}",
                                 expected=working, received=attention)
        unet.set_attn_processor(pinned_sdpa(kernel))
    elif attention == "sliced":
        unet.set_attention_slice("auto")
    elif attention == "sliced_max":
        unet.set_attention_slice("max")
    # "sdpa": diffusers' default processors already call it


def attention_kinds(unet: torch.nn.Module) -> set[str]:
    """The class names of a UNet's attention processors (what a test or a report reads)."""
    return {type(p).__name__ for p in unet.attn_processors.values()}


# ---------------------------------------------------------------------------------------------------------------
# CPU offload
# ---------------------------------------------------------------------------------------------------------------

# (a module's _parameters or _buffers, name, the tensor at rest); a string, for annotations only: torch stays unloaded
Moved = "list[tuple[dict, str, torch.Tensor]]"


def move_tensors(modules, device: torch.device) -> Moved:
    """Copies of the modules' own weights on ``device`` put in their place; what :func:`restore` needs to put the
    tensors at rest back. Restoring (rather than copying back) keeps every CPU tensor the one it was, still shared
    with the LoRA clones and merges made from this model (nodes/patching.py), so memory is never duplicated."""
    moved: Moved = []
    for module in modules:
        for table in (module._parameters, module._buffers):
            for name, tensor in table.items():
                if tensor is None or tensor.device == device:
                    continue
                moved.append((table, name, tensor))
                copy = tensor.detach().to(device, non_blocking=True)
                table[name] = torch.nn.Parameter(copy, tensor.requires_grad) if isinstance(tensor, torch.nn.Parameter) else copy
    return moved


def restore(moved: Moved) -> None:
    for table, name, tensor in moved:
        table[name] = tensor


class OffloadGroup:
    """Models that take turns on one accelerator: the one about to run moves there, the one that ran before returns
    to its tensors at rest in CPU memory.

    A deep copy of a member (LoRA, merges: :func:`nodes.patching.clone_with_weights`) keeps this same group."""

    def __init__(self, device: torch.device):
        self.device = device
        self.active: weakref.ref | None = None
        self.moved: Moved = []

    def __deepcopy__(self, memo) -> "OffloadGroup":
        return self

    def activate(self, module: torch.nn.Module) -> None:
        if self.active is not None and self.active() is module:
            return
        self.rest()
        self.moved = move_tensors(module.modules(), self.device)
        self.active = weakref.ref(module)

    def rest(self) -> None:
        """Put the active model's tensors at rest back (the next forward moves it again)."""
        restore(self.moved)
        self.moved, self.active = [], None


def at_rest_for_copying(original: torch.nn.Module) -> None:
    """Before a LoRA or merge copies an offloaded model: its tensors at rest (CPU memory) are the ones to read and
    share, not the accelerator's copies of the model's turn."""
    group = getattr(original, OFFLOAD_GROUP, None)
    if group is not None and group.active is not None and group.active() is original:
        group.rest()


def copy_rests_too(original: torch.nn.Module, copy: torch.nn.Module) -> None:
    """An offloaded model's copy keeps its new weights in CPU memory too, and runs where the original runs."""
    if getattr(original, OFFLOAD_DEVICE, None) is not None:
        copy.to("cpu")


class _Activate:
    """Forward pre-hook of every submodule of a model-offloaded ``owner`` (the text encoder runs layer by layer)."""

    def __init__(self, group: OffloadGroup, owner: torch.nn.Module):
        self.group, self.owner = group, owner

    def __call__(self, submodule, args) -> None:
        self.group.activate(self.owner)


class _Layer:
    """Sequential offload: a layer's own weights on the accelerator for its forward, at rest again right after."""

    def __init__(self, device: torch.device):
        self.device = device
        self.moved: dict[int, Moved] = {}

    def __deepcopy__(self, memo) -> "_Layer":
        return _Layer(self.device)

    def before(self, layer, args) -> None:
        self.moved[id(layer)] = move_tensors([layer], self.device)

    def after(self, layer, args, output) -> None:
        restore(self.moved.pop(id(layer), []))


def _own_tensors(module: torch.nn.Module) -> bool:
    return any(t is not None for t in (*module._parameters.values(), *module._buffers.values()))


def offload(modules: list[torch.nn.Module], mode: OffloadName, device: torch.device) -> None:
    """Install ``mode``'s hooks on a checkpoint's freshly loaded models (their weights in CPU memory), to run on
    ``device``. ``device`` may be the CPU itself: nothing then moves (the tests check hooks and results that way)."""
    if mode == "none":
        return
    device = torch.empty(0, device=device).device  # "cuda" → "cuda:0", as the copies' device reads
    group = OffloadGroup(device)
    for module in modules:
        setattr(module, OFFLOAD_DEVICE, str(device))
        if mode == "model":
            setattr(module, OFFLOAD_GROUP, group)
        for sub in module.modules():
            if mode == "model":
                sub.register_forward_pre_hook(_Activate(group, module))
            elif _own_tensors(sub):
                layer = _Layer(device)
                sub.register_forward_pre_hook(layer.before)
                sub.register_forward_hook(layer.after)


def check_offload(mode: OffloadName, device: torch.device) -> None:
    if mode != "none" and device.type == "cpu":
        raise NodeInputError("offload", "offload keeps the weights in CPU memory and runs them on a GPU; on the CPU "
                             "they are there already", expected="none (or a CUDA / MPS device)", received=mode)


# ---------------------------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------------------------

COMPILE_BACKEND = "inductor"  # torch.compile's default; the tests use "eager" (inductor takes minutes on a small CPU)
COMPILED_WITH = "_graphflow_compile_backend"


def compile_module(module: torch.nn.Module, backend: str | None = None) -> None:
    """``torch.compile`` a module in place (``Module.compile``: its weights keep their names, so LoRA and merges read
    them as before). Compiling happens at its first call, and again for each new input shape."""
    backend = backend or COMPILE_BACKEND
    module.compile(backend=backend)
    setattr(module, COMPILED_WITH, backend)


def compile_copy(original: torch.nn.Module, copy: torch.nn.Module) -> None:
    """Compile a deep copy of a compiled module anew: the copied compiled function would still call the original's
    forward (with the original's weights)."""
    if getattr(original, "_compiled_call_impl", None) is not None:
        copy._compiled_call_impl = None
        compile_module(copy, getattr(original, COMPILED_WITH, None))
