"""New modules with some weights replaced, sharing every other tensor with the module they came from.

LoRA and checkpoint merging must not touch the MODEL / CLIP / VAE they receive (the engine hands the same
objects to every consumer and caches them). Copying a whole UNet for every LoRA would double memory, so
:func:`clone_with_weights` deep-copies the module *structure* while its tensors are shared:

- untouched parameters become new ``nn.Parameter`` objects over the SAME storage (no copy). They are
  distinct Parameter objects, so ``clone.to(...)``/``.half()`` on the clone rebinds the clone's
  parameters and leaves the original alone;
- buffers are shared as they are (``Module._apply`` replaces buffer entries, it does not write into them);
- replaced parameters get the new tensors given.

The one rule this relies on is the one every node already follows: nobody writes into a weight tensor
in place (``param.data.copy_``, ``add_`` ...); such a write would show in both modules.
"""
from __future__ import annotations

import copy
from typing import Mapping

import torch

from .speed import at_rest_for_copying, compile_copy, copy_rests_too


def clone_with_weights(module: torch.nn.Module, new_weights: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A copy of ``module`` whose parameters/buffers named in ``new_weights`` hold those tensors; the rest is shared
    (an offloaded module's tensors at rest, nodes/speed.py)."""
    at_rest_for_copying(module)
    params = dict(module.named_parameters(remove_duplicate=False))
    buffers = dict(module.named_buffers(remove_duplicate=False))
    unknown = [name for name in new_weights if name not in params and name not in buffers]
    if unknown:
        raise KeyError(f"{type(module).__name__} has no parameter or buffer {unknown[0]!r}")
    memo: dict[int, object] = {}
    everything = {**params, **buffers}
    for name in [*new_weights, *(n for n in everything if n not in new_weights)]:
        tensor = everything[name]
        if id(tensor) in memo:
            continue  # a tied weight already handled under another name
        new = new_weights.get(name)
        if new is not None and new.shape != tensor.shape:
            raise ValueError(f"new value for {name} has shape {tuple(new.shape)}, the module's {tuple(tensor.shape)}")
        if name in params:
            memo[id(tensor)] = torch.nn.Parameter(tensor.data if new is None else new, requires_grad=tensor.requires_grad)
        else:
            memo[id(tensor)] = tensor if new is None else new
    clone = copy.deepcopy(module, memo)
    compile_copy(module, clone)
    copy_rests_too(module, clone)
    return clone
