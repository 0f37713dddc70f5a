"""The ``heartsim serve`` options and the server's address defaults.

Kept apart from :mod:`heartsim.server` (FastAPI, uvicorn) so that the command line builds its
parser, and ``heartsim simulate`` runs, without importing the server stack.
"""

from __future__ import annotations

import argparse
import os

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
#: Most persons a server simulates at once (POST /persons beyond it: 409).
DEFAULT_MAX_PERSONS = 1000
#: Memory budget of all persons' message history together, MB (MiB).
DEFAULT_HISTORY_MB = 512.0


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``heartsim serve`` options to ``parser``."""
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s; 0: any free)"
    )
    parser.add_argument(
        "--persons", type=int, default=1, help="virtual persons (default %(default)s)"
    )
    parser.add_argument(
        "--max-persons",
        type=int,
        default=DEFAULT_MAX_PERSONS,
        help="most persons at once; POST /persons beyond it gets 409 (default %(default)s)",
    )
    parser.add_argument(
        "--history-mb",
        type=float,
        default=DEFAULT_HISTORY_MB,
        help="memory budget of all persons' message history (replay, GET /heartbeat/history), "
        "MiB; beyond it the oldest messages go first (default %(default)g)",
    )
    parser.add_argument(
        "--tick-hz",
        type=float,
        default=2.0,
        help="messages per second and person (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    parser.add_argument(
        "--token",
        default=os.environ.get("HEARTSIM_TOKEN"),
        help="token required for control routes and the WebSocket (default: $HEARTSIM_TOKEN)",
    )
    parser.add_argument(
        "--max-clients",
        type=int,
        default=1000,
        help="WebSocket connection cap (default %(default)s)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host without --token (anyone on the network controls it)",
    )
    parser.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="extend",
        nargs="+",
        default=[],
        metavar="ORIGIN",
        help="browser origin allowed cross-origin access, e.g. http://localhost:3000 (repeatable)",
    )
    parser.add_argument(
        "--spontaneous-per-h",
        type=float,
        default=0.0,
        help="spontaneous stress episodes per hour and person (default %(default)s)",
    )
    parser.add_argument("--start", action="store_true", help="start the simulation right away")
    parser.add_argument(
        "--model",
        metavar="FILE",
        default=None,
        help="StressClassifier file (StressClassifier.save) whose predictions fill every "
        "message and answer POST /predict; only load files you trust (joblib runs code)",
    )
