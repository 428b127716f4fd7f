"""graphflow's HTTP server: submit workflows as jobs, follow them over a WebSocket, download their images.

    python server.py [--host 127.0.0.1] [--port 8188] [--data-dir DIR] [--token TOKEN]
    graphflow serve  [same options]

    graphflow serve --ray [ADDRESS] [--workers N]   (jobs run on a pool of Ray worker actors)

Modules: ``store`` (SQLite job queue and history), ``dispatch`` (hands queued jobs to workers, records results),
``routing`` (which worker: cache affinity), ``worker`` (running one job; the in-process worker), ``ray_pool``
(worker actors on a Ray cluster), ``hub`` (WebSocket fan-out), ``files`` (safe output paths, verified uploads),
``limits`` (request limits), ``app`` (routes and middlewares). Like the rest of the engine this package knows no node domain.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from .. import env
from ..argtypes import positive_int
from ..paths import UnusableFolder
from .app import LOOPBACK_HOSTS, ServerConfig, create_app
from .limits import Limits

__all__ = ["ServerConfig", "Limits", "create_app", "build_parser", "config_from_args", "serve_from_args", "main"]


def build_parser(prog: str = "server.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run the graphflow job server.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port_number, default=8188, help="TCP port, 1 to 65535, or 0 for any free one (default 8188)")
    parser.add_argument("--data-dir", type=Path, default=Path("graphflow-data"),
                        help="jobs.sqlite, outputs/ and uploads/ live here (default ./graphflow-data)")
    parser.add_argument("--token", default=None,
                        help="require 'Authorization: Bearer TOKEN' on every route but /health (default $GRAPHFLOW_TOKEN)")
    parser.add_argument("--models-dir", type=Path, default=None, help="models directory (default $GRAPHFLOW_MODELS_DIR or ./models)")
    parser.add_argument("--assets", action="append", type=Path, default=None, metavar="DIR",
                        help="read-only folder of example files that input names also find, after the uploads and models"
                             " (repeatable; default: the shipped workflows/assets/ when it exists, so every shipped"
                             " workflow runs as it is; --assets '' for none)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also accept this Host header name (e.g. behind a reverse proxy); repeatable")
    defaults = Limits()
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-body", type=int, default=defaults.max_body_bytes, metavar="BYTES", help="JSON request body")
    limits.add_argument("--max-upload", type=int, default=defaults.max_upload_bytes, metavar="BYTES", help="one uploaded image")
    limits.add_argument("--max-upload-pixels", type=int, default=defaults.max_upload_pixels, metavar="N",
                        help="pixels of one uploaded image")
    limits.add_argument("--max-nodes", type=int, default=defaults.max_nodes, metavar="N", help="nodes in one workflow")
    limits.add_argument("--max-queued", type=int, default=defaults.max_queued, metavar="N", help="jobs waiting to run")
    limits.add_argument("--max-pixels", type=int, default=defaults.max_pixels, metavar="N",
                        help="pixels made by one node, for node types that declare a pixel count")
    limits.add_argument("--max-literal", action="append", default=[], metavar="NAME=MAX", type=literal_limit,
                        help="upper bound for every literal input with this name; repeatable (defaults: what the "
                             "installed node packs declare)")
    limits.add_argument("--max-run", action="append", default=[], metavar="NAME=MAX", type=literal_limit,
                        help="upper bound on what nodes make while they run, by name (pixels is --max-pixels; "
                             "defaults: what the installed node packs declare, e.g. prompt_chunks=32); repeatable")
    scale = parser.add_argument_group("many GPUs, many machines (needs the 'ray' extra)")
    scale.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                       help="run jobs on Ray worker actors: without ADDRESS on a Ray started here, 'auto' or HOST:PORT "
                            "on the cluster that `ray start` made")
    scale.add_argument("--workers", type=positive_int, default=None, metavar="N",
                       help="with --ray: N workers (default: one per GPU of the cluster, or one per machine without GPUs)")
    scale.add_argument("--worker-cpus", type=float, default=1.0, metavar="N", help="with --ray: CPUs each worker reserves (default 1)")
    scale.add_argument("--ray-namespace", default="graphflow", metavar="NAME",
                       help="with --ray: the Ray namespace of this server's workers (two servers on one cluster need two)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = None
    if port is None or not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return port


def literal_limit(text: str) -> tuple[str, float]:
    """``count=150`` → ("count", 150.0), for --max-literal."""
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER (e.g. count=150), got {text!r}") from None


def ray_options(args: argparse.Namespace):
    """The Ray pool's options, or None for the in-process worker."""
    if args.ray is None:
        return None
    from .ray_pool import RayOptions

    return RayOptions(address=args.ray or None, workers=args.workers, worker_cpus=args.worker_cpus,
                      namespace=args.ray_namespace)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    max_literal = dict(args.max_literal)  # the server adds the node packs' defaults under these
    limits = Limits(max_body_bytes=args.max_body, max_upload_bytes=args.max_upload,
                    max_upload_pixels=args.max_upload_pixels, max_nodes=args.max_nodes,
                    max_queued=args.max_queued, max_pixels=args.max_pixels, max_literal=max_literal,
                    max_run=dict(args.max_run))
    token = args.token if args.token is not None else env.read("GRAPHFLOW_TOKEN")
    loopback = args.host in LOOPBACK_HOSTS
    allowed_hosts = LOOPBACK_HOSTS | {h.lower() for h in args.allow_host} if loopback else None
    return ServerConfig(data_dir=args.data_dir, token=token or None, models_dir=args.models_dir,
                        limits=limits, allowed_hosts=allowed_hosts, ray=ray_options(args),
                        asset_dirs=asset_folders(args.assets))


SHIPPED_ASSETS = Path(__file__).resolve().parents[2] / "workflows" / "assets"  # in a source checkout


def asset_folders(chosen: list[Path] | None) -> tuple[Path, ...]:
    """The asset folders: those given (an empty name gives none), else the shipped examples' when present."""
    if chosen is None:
        return (SHIPPED_ASSETS,) if SHIPPED_ASSETS.is_dir() else ()
    return tuple(folder for folder in chosen if str(folder) not in ("", "."))


def serve_from_args(argv: Sequence[str] | None = None, prog: str = "graphflow serve") -> int:
    from aiohttp import web

    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.ray is None and (args.workers is not None or args.worker_cpus != 1.0 or args.ray_namespace != "graphflow"):
        parser.error("--workers, --worker-cpus and --ray-namespace apply only with --ray")
    problems = env.check_environment()
    if problems:
        for line in problems:
            print(f"error: cannot start the server: {line}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    config = config_from_args(args)
    if args.host not in LOOPBACK_HOSTS and not config.token:
        print(f"warning: listening on {args.host} without --token: anyone who can reach this port can run jobs",
              file=sys.stderr)
    try:
        app = create_app(config)  # discovers the node modules: a broken node pack stops us here
    except Exception as exc:
        print(f"error: cannot start the server: {exc if isinstance(exc, (RuntimeError, env.EnvironmentInvalid, UnusableFolder)) else f'{type(exc).__name__}: {exc}'}",
              file=sys.stderr)
        return 1
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    listening = f"graphflow server on http://{url_host}:{args.port} (data in {config.data_dir.resolve()})"
    if config.ray is not None:
        listening += f"\njobs run on Ray workers ({config.ray.address or 'a Ray started here'}, namespace {config.ray.namespace})"
    try:  # run_app calls print once the socket is bound: the line never announces a server that failed to start
        web.run_app(app, host=args.host, port=args.port, print=lambda _: print(listening, file=sys.stderr),
                    access_log=logging.getLogger("aiohttp.access") if args.verbose else None)
    except OSError as exc:  # the port is taken or privileged, the host is no address of this machine
        reason = exc.strerror or str(exc)
        print(f"error: cannot listen on {url_host}:{args.port}: {reason}", file=sys.stderr)
        return 2
    return 0


def main() -> int:
    return serve_from_args(sys.argv[1:], prog="server.py")
