"""Start the graphflow HTTP server: ``python server.py [--host 127.0.0.1] [--port 8188] [--data-dir DIR] [--token TOKEN]``.

Everything lives in :mod:`graphflow.server`; ``python server.py --help`` lists the limits that can be set."""
import sys

from graphflow.cli import interruptible  # a light import: Ctrl-C during the server's own imports exits 130 quietly


def serve() -> int:
    from graphflow.server import main

    return main()


if __name__ == "__main__":
    sys.exit(interruptible(serve))
