"""The ``heartsim serve`` options and the server's address defaults.

Kept apart from :mod:`heartsim.server` (FastAPI, uvicorn) so that the command line builds its
parser, and ``heartsim simulate`` runs, without importing the server stack.
"""

from __future__ import annotations

import argparse
import math
import os

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
#: Most persons a server simulates at once (POST /persons beyond it: 409).
DEFAULT_MAX_PERSONS = 1000
#: Memory budget of all persons' message history together, MB (MiB).
DEFAULT_HISTORY_MB = 512.0
#: Default WebSocket handshake limit per client address (heartsim.api's
#: ``DEFAULT_WS_CONNECT_LIMIT``, repeated here to keep the server stack out of the parser).
DEFAULT_WS_CONNECTS_PER_S = 20.0
DEFAULT_WS_CONNECT_BURST = 200


def _per_s(text: str) -> float:
    """A rate >= 0 (0: unlimited)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (0: unlimited), got {text!r}")
    return value


def _count(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _token(text: str) -> str:
    """``--token``: refused when empty or blank (as ``TokenAuth`` does)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "the token must not be empty or whitespace (check --token and $HEARTSIM_TOKEN)"
        )
    if text != text.strip():
        raise argparse.ArgumentTypeError("the token must not start or end with whitespace")
    return text


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
        type=_token,
        default=os.environ.get("HEARTSIM_TOKEN") or None,
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
        "--allowed-host",
        dest="allowed_hosts",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="host name the server is reached by, besides localhost and IP addresses, e.g. "
        "heartsim.example.org or *.example.org (repeatable; * allows any); requests naming "
        "another Host get 400 (DNS rebinding protection)",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        default=None,
        metavar="IPS",
        help="comma-separated proxy addresses (or *) whose X-Forwarded-For/-Proto headers are "
        "believed (default: nobody's; rate limits use the TCP peer's address)",
    )
    parser.add_argument(
        "--ws-connects-per-s",
        type=_per_s,
        default=DEFAULT_WS_CONNECTS_PER_S,
        help="WebSocket handshakes allowed per second and client address, after a burst of "
        "--ws-connect-burst (default %(default)s; 0: unlimited)",
    )
    parser.add_argument(
        "--ws-connect-burst",
        type=_count,
        default=DEFAULT_WS_CONNECT_BURST,
        help="WebSocket handshakes a client address may make at once (default %(default)s)",
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
