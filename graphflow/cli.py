"""The command line: ``graphflow run | validate | convert | nodes | schema | serve``, plus the commands node packs add.

Exit codes: 0 success, 1 a node failed at run time, 2 the input is invalid (bad JSON, bad workflow,
bad --set), 130 cancelled (Ctrl-C). Errors go to stderr as readable text, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from .argtypes import positive_int
from .context import CancelToken, Settings
from .env import EnvironmentInvalid
from .errors import Cancelled, GraphflowError, NodeFailed, WorkflowFormatError, WorkflowInvalid
from .events import Event, NodeCached, NodeFinished, Progress, RunFailed, Warning_
from .paths import UnusableFolder

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 0, 1, 2, 130


def parse_assignment(text: str) -> tuple[tuple[str, str], Any]:
    """``NODE.INPUT=VALUE``; VALUE is read as JSON when it parses (numbers, true, lists), else as a string.
    JSON that cannot be used (a 5000-digit integer, NaN, nesting hundreds deep) is an error, not a string."""
    from .workflow import InvalidJson, decode_json

    target, sep, raw = text.partition("=")
    node_id, dot, name = target.partition(".")
    if not sep or not dot or not node_id or not name:
        raise WorkflowFormatError(f"--set {text[:200]!r}: expected NODE.INPUT=VALUE")
    try:
        value = decode_json(raw, f"--set {target}")
    except InvalidJson:
        value = raw
    return (node_id, name), value


class ProgressPrinter:
    """Draws a one-line progress bar on stderr for long nodes and a line per finished node."""

    def __init__(self, stream: TextIO | None = None, bar: int = 30):
        # sys.stderr as it is now, not as it was when this module was imported (a test's capture may be gone)
        self.stream, self.bar = stream or sys.stderr, bar

    def __call__(self, event: Event) -> None:
        if isinstance(event, Progress):
            filled = int(self.bar * event.value / max(event.max, 1))
            self.stream.write(f"\r  {event.node} [{'#' * filled}{'.' * (self.bar - filled)}] {event.value}/{event.max}")
            self.stream.flush()
        elif isinstance(event, NodeFinished):
            self.stream.write(f"\r  {event.node} ({event.node_type}) {event.seconds:.2f}s{' ' * self.bar}\n")
        elif isinstance(event, NodeCached):
            self.stream.write(f"  {event.node} ({event.node_type}) cached\n")
        elif isinstance(event, Warning_):  # a node's warning (e.g. no face found): worth a line of its own
            self.stream.write(f"\r  {event.node}: warning: {event.message}{' ' * self.bar}\n")
        elif isinstance(event, RunFailed):
            self.stream.write("\n")


def _source(args: argparse.Namespace) -> Path:
    """The workflow file, or the PNG of ``run --from-png``."""
    from_png = getattr(args, "from_png", None)
    if (args.workflow is None) == (from_png is None):
        raise WorkflowFormatError("give a workflow file or --from-png IMAGE.png (one of them)")
    return Path(args.workflow or from_png)


def _settings(args: argparse.Namespace) -> Settings:
    """The folders from the options, plus the ``assets/`` folder next to the workflow file (shipped examples)."""
    settings = Settings.from_env(models_dir=args.models, input_dir=args.inputs, output_dir=args.out)
    return settings.with_asset_dir(_source(args).resolve().parent / "assets")


def _workflow(args: argparse.Namespace):
    """The workflow (from its file, JSON in any format a node pack reads or a PNG carrying one, or from the PNG
    of ``--from-png``) with the --set overrides applied."""
    from .documents import read_file, read_png

    source = _source(args)
    workflow = read_png(source) if getattr(args, "from_png", None) else read_file(source)
    return workflow.with_values(dict(parse_assignment(a) for a in args.set or []))


def prepare_output_folder(args: argparse.Namespace, folder: Path) -> None:
    """Before anything runs: a file or a read-only folder as the output folder would otherwise fail only at the
    first save, after all the work. Then sweep what interrupted writes left there: only our own hidden
    temporaries, and only those untouched for 10 minutes (another graphflow may be writing in this folder now)."""
    from .paths import check_writable_folder, sweep_temporaries

    label = "--out" if args.out else "GRAPHFLOW_OUTPUT_DIR" if os.environ.get("GRAPHFLOW_OUTPUT_DIR") else "output folder"
    check_writable_folder(folder, label)
    if folder.is_dir():
        sweep_temporaries(folder, older_than=600)


def cmd_run(args: argparse.Namespace) -> int:
    from .disk_cache import DiskCache
    from .execute import Engine
    from .seeds import offset_seeds

    workflow = _workflow(args)
    engine = Engine(settings=_settings(args), disk_cache=DiskCache.from_env(args.disk_cache))
    prepare_output_folder(args, Path(engine.settings.output_dir))
    cancel = CancelToken()
    for index in range(args.repeat):  # A1111's batch count: fixed seeds count up, random ones draw anew
        try:
            report = engine.run(offset_seeds(workflow, engine.registry, index), outputs=args.output or None,
                                on_event=ProgressPrinter(), cancel=cancel)
        except KeyboardInterrupt:
            cancel.cancel()
            raise
        for files in report.files.values():  # every file written, whatever its kind (images, checkpoints, ...)
            for item in files:
                print(Path(engine.settings.output_dir) / item.filename)
        run = f"run {index + 1}/{args.repeat} " if args.repeat > 1 else ""
        seeds = ", ".join(f"{node}.{name}={seed}" for node, used in report.seeds.items() for name, seed in used.items())
        print(f"{run}done in {report.seconds:.2f}s: {len(report.executed)} executed, {len(report.cached)} cached"
              + (f"; seed {seeds}" if seeds else ""), file=sys.stderr)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from .execute import Engine

    Engine(settings=_settings(args)).validate(_workflow(args), outputs=args.output or None)
    print(f"{args.workflow}: valid")
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    """Write the graphflow workflow equivalent to a document in another format (or a PNG carrying one)."""
    from .documents import read_file
    from .paths import atomic_write

    text = json.dumps(read_file(args.workflow).to_json(), indent=2, ensure_ascii=False) + "\n"
    if args.output:
        atomic_write(Path(args.output), lambda file: file.write(text.encode("utf-8")), replace=True)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_nodes(args: argparse.Namespace) -> int:
    from .registry import default_registry

    catalog = default_registry().catalog()
    if args.json:
        print(json.dumps(catalog, indent=2, default=str))
        return EXIT_OK
    for name, info in catalog.items():
        print(f"{name}  [{info['category']}]  {info['description']}")
        for input_name, spec in info["inputs"].items():
            if spec["kind"] == "socket":
                print(f"    in  {input_name}: {spec['type']}{'' if spec['required'] else ' (optional)'}")
            else:
                default = f" = {spec['default']!r}" if "default" in spec else ""
                print(f"    in  {input_name}: {_literal_text(spec['schema'])}{default}")
        for output_name, type_name in info["outputs"].items():
            print(f"    out {output_name}: {type_name}")
    return EXIT_OK


def _literal_text(schema: dict[str, Any]) -> str:
    from .validate import describe_expected

    return describe_expected(schema)


def cmd_schema(args: argparse.Namespace) -> int:
    from .workflow import document_schema

    print(json.dumps(document_schema(), indent=2))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve_from_args

    return serve_from_args(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphflow", description="Run and check node-graph workflows.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_dirs(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--models", help="models directory (default ./models or $GRAPHFLOW_MODELS_DIR)")
        p.add_argument("--inputs", help="input images directory (default ./inputs or $GRAPHFLOW_INPUT_DIR)")
        p.add_argument("--out", help="output directory (default ./outputs or $GRAPHFLOW_OUTPUT_DIR)")
        return p

    def with_workflow_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE", help="override a literal input (repeatable)")
        p.add_argument("--output", action="append", metavar="NODE", help="only produce these output nodes (repeatable)")
        return p

    run = with_workflow_options(with_dirs(sub.add_parser("run", help="run a workflow")))
    run.add_argument("workflow", nargs="?", help="a workflow JSON file (any format a node pack reads) or a PNG carrying one")
    run.add_argument("--from-png", metavar="IMAGE.png", help="rerun the workflow a PNG carries (saved by graphflow, or by a tool a node pack reads)")
    run.add_argument("--disk-cache", metavar="DIR", help="keep small node outputs in DIR across runs "
                     "(default $GRAPHFLOW_DISK_CACHE; off when neither is set)")
    run.add_argument("--repeat", type=positive_int, default=1, metavar="N",
                     help="run N times (A1111's batch count): a fixed seed counts up by one per run, -1/random draws anew")
    run.set_defaults(handler=cmd_run)

    check = with_workflow_options(with_dirs(sub.add_parser("validate", help="check a workflow and the files it names without running it")))
    check.add_argument("workflow", help="a workflow JSON file (any format a node pack reads) or a PNG carrying one")
    check.set_defaults(handler=cmd_validate)

    convert = sub.add_parser("convert", help="write the graphflow workflow equivalent to a workflow in another format")
    convert.add_argument("workflow", metavar="IN", help="a workflow JSON file (any format a node pack reads) or a PNG carrying one")
    convert.add_argument("-o", "--output", metavar="OUT.json", help="write it there instead of to stdout")
    convert.set_defaults(handler=cmd_convert)

    nodes = sub.add_parser("nodes", help="list node types with their inputs and outputs")
    nodes.add_argument("--json", action="store_true", help="the full catalog with JSON Schemas")
    nodes.set_defaults(handler=cmd_nodes)

    schema = sub.add_parser("schema", help="print the JSON Schema of the workflow format")
    schema.set_defaults(handler=cmd_schema)

    serve = sub.add_parser("serve", help="start the HTTP server (same options as server.py)", add_help=False)
    serve.add_argument("rest", nargs=argparse.REMAINDER)
    serve.set_defaults(handler=cmd_serve)
    add_pack_commands(sub)
    return parser


def add_pack_commands(sub: Any) -> None:
    """Commands node packs add: a pack's module may define ``add_commands(subparsers)`` (each command's handler
    takes the parsed arguments and returns an exit code). Importing a pack's module must stay cheap."""
    from .registry import import_pack, pack_modules

    for name in pack_modules():
        add = getattr(import_pack(name), "add_commands", None)
        if add is not None:
            add(sub)


def refuse_bad_environment() -> int | None:
    """Refuse to start, exit 2, when a GRAPHFLOW_* variable holds a bad value: one line per variable."""
    from .env import check_environment

    problems = check_environment()
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_INVALID if problems else None


class CtrlC:
    """Whether Ctrl-C was pressed during this command. A library can swallow the KeyboardInterrupt (diffusers'
    lazy imports turn one that lands mid-import into a RuntimeError), and the node then fails; the user still
    cancelled, and is told so."""

    pressed = False

    @classmethod
    def install(cls) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, cls._handle)

    @classmethod
    def _handle(cls, signum, frame) -> None:
        cls.pressed = True
        raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """The entry point. Ctrl-C at any moment, even while the first imports of a command run, exits 130 quietly."""
    return interruptible(lambda: run_command(argv))


def interruptible(command: Callable[[], int]) -> int:
    """``command()``'s exit status, or 130 with one line and no traceback when Ctrl-C lands anywhere in it (also
    ``python server.py``'s entry: its imports take seconds, and nothing else could catch Ctrl-C there)."""
    try:
        return command()
    except KeyboardInterrupt:
        print("\ncancelled", file=sys.stderr)
        return EXIT_CANCELLED


def run_command(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:  # the server parses its own options (same as server.py) and checks the environment
        return cmd_serve(argparse.Namespace(rest=argv[1:]))
    CtrlC.install()  # not for the server: asyncio handles Ctrl-C there only while Python's own handler is set
    refused = refuse_bad_environment()  # before the parser, which imports the node packs GRAPHFLOW_NODES names
    if refused is not None:
        return refused
    try:
        args = build_parser().parse_args(argv)
    except EnvironmentInvalid as exc:  # a node pack GRAPHFLOW_NODES names that does not exist
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        return args.handler(args)
    except (WorkflowFormatError, WorkflowInvalid, EnvironmentInvalid, UnusableFolder) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except NodeFailed as exc:
        if CtrlC.pressed:
            raise KeyboardInterrupt from None
        print(f"\nerror: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (Cancelled, KeyboardInterrupt):
        print("\ncancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except GraphflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
