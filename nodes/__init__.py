"""graphflow's Stable Diffusion node library: one module per stage family.

Importing this package puts Hugging Face libraries in offline mode before they are imported: graphflow
loads models from local files only and never downloads behind the user's back. It also quiets them (no
progress bars, errors only in their logs), so graphflow's progress is all a run prints.

It also makes ``import torch`` in the node modules free until torch is first used: discovering the nodes
(``graphflow validate``, ``graphflow nodes``, the server's catalog) needs their signatures, not torch, whose
import is most of a second. Until then ``sys.modules["torch"]`` holds a stand-in that imports the real torch on
its first attribute access and hands every attribute on; from then on ``import torch`` gives the real module.
So node modules must not touch torch at import time (module-level constants, defaults, decorators):
``tests/nodes/test_lazy_torch.py`` keeps them honest."""
import importlib
import importlib.abc
import importlib.util
import os
import sys
import threading
import types

from graphflow.registry import NodePack

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Their progress bars ("Loading weights ...") and info/warning logs would interleave with graphflow's own
# progress on stderr; loading local files needs neither. Set these variables yourself to see them again.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


class LazyModule(types.ModuleType):
    """Stands for module ``name`` until an attribute is read; then imports it and delegates to it.

    ``__spec__`` is the real one (so ``import name`` returns this stand-in instead of importing); ``__path__`` is
    not, so importing a submodule (``import torch.nn``) loads the real package first."""

    __graphflow_node__ = None  # a module is no node: node discovery asks every module global, torch included

    def __init__(self, name: str, spec=None):
        super().__init__(name)
        self.__spec__ = spec
        self.__loader__ = spec.loader if spec is not None else None
        self._lazy_lock = threading.RLock()
        self._lazy_real = None

    def _load(self) -> types.ModuleType:
        if self._lazy_real is not None:
            return self._lazy_real
        with self._lazy_lock:
            if self._lazy_real is None:
                if sys.modules.get(self.__name__) is self:
                    del sys.modules[self.__name__]
                # no copy of the real module's attributes: a later ``monkeypatch.setattr(torch, ...)`` must be seen
                self._lazy_real = importlib.import_module(self.__name__)
        return self._lazy_real

    def __getattr__(self, attribute: str):
        if attribute.startswith("_lazy_"):
            raise AttributeError(attribute)
        return getattr(self._load(), attribute)

    def __dir__(self):
        return dir(self._load())


class _ImportedMeanwhile(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``from torch.fft import x`` as torch's first use: to find ``torch.fft`` the import system reads the stand-in's
    ``__path__``, which imports the real torch, whose own start imports ``torch.fft``; the import system then runs
    ``torch/fft/__init__.py`` a second time (it checked sys.modules before) and torch refuses ("already has a
    docstring"). A submodule of such a package asked for while it is in sys.modules (and not to be reloaded:
    ``target``) can only be such a one: it is handed over as it is."""

    packages: set[str] = set()  # the top-level packages a LazyModule stood for

    def find_spec(self, name, path=None, target=None):
        if target is not None or name.partition(".")[0] not in self.packages or name not in sys.modules:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        return sys.modules[spec.name]

    def exec_module(self, module) -> None:
        pass


def lazy_module(name: str) -> types.ModuleType:
    """``name`` when it is already imported, else a :class:`LazyModule` standing for it. A top-level package's
    stand-in goes into ``sys.modules``, so that every ``import name`` gets it; a submodule's (``F =
    lazy_module("torch.nn.functional")``) is only returned, as looking it up would import its parents."""
    if name in sys.modules:
        return sys.modules[name]
    if "." in name:
        return LazyModule(name)
    spec = importlib.util.find_spec(name)
    if spec is None:
        return importlib.import_module(name)  # not installed: the usual ImportError, right here
    module = LazyModule(name, spec)
    sys.modules[name] = module
    _ImportedMeanwhile.packages.add(name)
    if not any(isinstance(finder, _ImportedMeanwhile) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ImportedMeanwhile())
    return module


lazy_module("torch")

# What a shared server bounds by default (its --max-literal overrides), and the output node hints name.
# prompt_chunks: 75-token windows of one prompt (each BREAK starts one); 32 windows are 2,400 tokens.
GRAPHFLOW_PACK = NodePack(literal_limits={"steps": 200, "batch_size": 16}, output_example="SaveImage",
                          run_limits={"prompt_chunks": 32})


def add_commands(subparsers) -> None:
    """The node library's own command (graphflow's CLI asks every node pack): ``graphflow import-a1111``."""
    command = subparsers.add_parser(
        "import-a1111", help="build a txt2img / hires-fix workflow from an AUTOMATIC1111 parameters text")
    command.add_argument("text", help='the parameters text as A1111 writes it (its "PNG Info"), or - to read stdin')
    command.add_argument("-o", "--output", metavar="OUT.json", help="write the workflow there instead of to stdout")
    command.add_argument("--models", help="models directory whose upscale_models/ the Hires upscaler is looked up in "
                                          "(default ./models or $GRAPHFLOW_MODELS_DIR)")

    def handler(args) -> int:
        from .a1111 import run_import  # the command's work imports torch: only when it runs

        return run_import(args)

    command.set_defaults(handler=handler)
