"""Start the graphflow HTTP server: ``python server.py [--host 127.0.0.1] [--port 8188] [--data-dir DIR] [--token TOKEN]``.

Everything lives in :mod:`graphflow.server`; ``python server.py --help`` lists the limits that can be set."""
import sys

from graphflow.server import main

if __name__ == "__main__":
    sys.exit(main())
