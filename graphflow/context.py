"""What a running node may touch: settings (directories, options), progress, previews, the cancel flag."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import env
from .errors import Cancelled
from .events import Event, Preview, Progress, Warning_

if TYPE_CHECKING:
    from .provenance import Provenance


@dataclass(frozen=True)
class Settings:
    """Where nodes find models and inputs and write outputs, plus free-form options for node packs.

    Every directory can come from the environment (``GRAPHFLOW_MODELS_DIR``, ``GRAPHFLOW_INPUT_DIR``,
    ``GRAPHFLOW_OUTPUT_DIR``) so the CLI, the server and tests agree without passing flags around."""

    models_dir: Path = Path("models")
    input_dir: Path = Path("inputs")
    output_dir: Path = Path("outputs")
    # Read-only folders searched after models_dir / input_dir: shipped example assets (the CLI adds the
    # `assets/` folder next to the workflow file it runs, so shipped workflows run as-is).
    asset_dirs: tuple[Path, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    # Upper bounds on what nodes make, by name ("pixels": of one image or latent batch, "prompt_chunks", ...): a
    # shared server sets them, nodes check them with RunContext.check_limit before allocating. Empty: no bounds.
    limits: dict[str, float] = field(default_factory=dict)

    def with_asset_dir(self, folder: Path) -> "Settings":
        if folder in self.asset_dirs or not folder.is_dir():
            return self
        return replace(self, asset_dirs=(*self.asset_dirs, folder))

    @classmethod
    def from_env(cls, **overrides: Any) -> "Settings":
        given = {"models_dir": env.read("GRAPHFLOW_MODELS_DIR"), "input_dir": env.read("GRAPHFLOW_INPUT_DIR"),
                 "output_dir": env.read("GRAPHFLOW_OUTPUT_DIR")}
        values = {k: v for k, v in given.items() if v is not None}
        values.update({k: (Path(v) if k.endswith("_dir") else v) for k, v in overrides.items() if v is not None})
        return cls(**values)


class CancelToken:
    """Cooperative cancellation: whoever owns the run calls ``cancel()``; nodes poll ``ctx.check_cancelled()``."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class RunContext:
    """Handed to a node function that asks for ``ctx``. One per node execution.

    ``graph`` is given to output nodes only: what produced their inputs (:class:`~graphflow.provenance.Provenance`)."""

    run_id: str
    node_id: str
    node_type: str
    settings: Settings
    emit: Callable[[Event], None]
    cancel_token: CancelToken
    graph: "Provenance | None" = None

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.cancelled

    def check_cancelled(self) -> None:
        """Call between pieces of long work: raises :class:`Cancelled` once the run was cancelled."""
        if self.cancel_token.cancelled:
            raise Cancelled(self.node_id)

    def check_limit(self, name: str, value: float, input_name: str, what: str) -> None:
        """Raise :class:`~graphflow.errors.NodeInputError` on ``input_name`` when ``value`` (what this node is
        about to make: ``what`` says what it counts) is over the settings' limit ``name``; call before allocating."""
        limit = self.settings.limits.get(name)
        if limit is not None and value > limit:
            from .errors import NodeInputError

            shown = int(limit) if float(limit).is_integer() else limit
            raise NodeInputError(input_name, f"{what}: {value} is over this server's limit of {shown} ({name})",
                                 f"at most {shown}", value)

    def progress(self, value: int, maximum: int) -> None:
        self.emit(Progress(self.run_id, self.node_id, value, maximum))
        self.check_cancelled()

    def preview(self, image_png: bytes, step: int | None = None) -> None:
        self.emit(Preview(self.run_id, self.node_id, image_png, step))

    def warn(self, message: str) -> None:
        self.emit(Warning_(self.run_id, self.node_id, message))
