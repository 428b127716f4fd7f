"""Pack nodes that are graphflow nodes under ComfyUI's input names: the same function, fingerprint and preflight,
with the inputs renamed (``ckpt_name`` → ``name``) and every error naming ComfyUI's input again."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator, Mapping

from graphflow.errors import NodeInputError
from graphflow.node import spec_of


def comfy_name(name: str) -> str:
    """A file name as ComfyUI writes it: sub-folders may be separated by backslashes (saved on Windows) and an
    input image may carry its folder as `` [input]``; graphflow looks names up with forward slashes."""
    for annotation in (" [input]", " [output]", " [temp]"):
        name = name.removesuffix(annotation)
    return name.replace("\\", "/")


class Renamed:
    """A graphflow node function called with ComfyUI's input names: ``names`` maps those ComfyUI names that
    differ to graphflow's; the ``file_inputs`` (ComfyUI's names) go through :func:`comfy_name`."""

    def __init__(self, function: Callable[..., Any], names: Mapping[str, str], file_inputs: tuple[str, ...] = ()):
        self.function, self.names, self.file_inputs = function, dict(names), file_inputs
        self.spec = spec_of(function)
        self.back = {theirs: ours for ours, theirs in self.names.items()}

    def literals(self, comfy_literals: Mapping[str, Any]) -> dict[str, Any]:
        return {self.names.get(k, k): comfy_name(v) if k in self.file_inputs and isinstance(v, str) else v
                for k, v in comfy_literals.items()}

    @contextmanager
    def errors(self) -> Iterator[None]:
        """A NodeInputError on a graphflow input becomes the same error on ComfyUI's input."""
        try:
            yield
        except NodeInputError as exc:
            if exc.input not in self.back:
                raise
            raise type(exc)(self.back[exc.input], exc.message, exc.expected, exc.received) from exc

    def __call__(self, ctx: Any = None, **comfy_inputs: Any) -> Any:
        given = self.literals(comfy_inputs)
        literals = {k: v for k, v in given.items() if k not in self.spec.sockets}
        # the graphflow node's defaults for what ComfyUI does not have (its Field defaults are no plain values);
        # no validation: the pack node validated ComfyUI's inputs, and ComfyUI's bounds may be wider
        arguments = {**dict(self.spec.literals.model_construct(**literals)), **given}
        if self.spec.wants_context:
            arguments["ctx"] = ctx
        with self.errors():
            return self.function(**arguments)

    def fingerprint(self, literals: Mapping[str, Any], settings: Any) -> str:
        with self.errors():
            return self.spec.fingerprint(self.literals(literals), settings)

    def preflight(self, literals: Mapping[str, Any], settings: Any) -> list:
        problems = self.spec.preflight(self.literals(literals), settings)
        return [replace(p, input=self.back.get(p.input, p.input)) for p in problems]
