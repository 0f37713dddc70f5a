"""Secrets never reach the logs: a filter that redacts tokens in log records.

uvicorn logs every WebSocket handshake with its query string (``"WebSocket /ws/heartbeat?
token=..." [accepted]``), its access log does the same for HTTP requests, and at debug level
the ``websockets`` protocol logs every request header (``Authorization``,
``Sec-WebSocket-Protocol``). :class:`RedactSecrets` rewrites, in a record's message and in each
of its arguments:

- ``token=VALUE`` (any ``*token=`` query parameter, e.g. ``access_token=``) to ``token=***``;
- ``Bearer VALUE`` / ``Basic VALUE`` to ``Bearer ***`` / ``Basic ***``;
- ``heartsim.token.VALUE`` (the stream's token subprotocol) to ``heartsim.token.***``.

Arguments are redacted one by one, keeping their number and types, so formatters that unpack
them (uvicorn's ``AccessFormatter``) keep working.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

#: Loggers whose records carry request paths or headers (uvicorn's, and websockets' when
#: uvicorn does not hand it its own logger).
REQUEST_LOGGERS = ("uvicorn.access", "uvicorn.error", "websockets.server")

_SECRETS = re.compile(
    r"(?P<key>token=)[^&\s\"'#;,]+"
    r"|(?P<scheme>\b(?:bearer|basic)\s+)[^\s\"',;]+"
    r"|(?P<proto>heartsim\.token\.)[A-Za-z0-9_\-=]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every token value replaced by ``***``."""
    return _SECRETS.sub(lambda m: (m["key"] or m["scheme"] or m["proto"]) + "***", text)


def _redact_arg(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("latin-1")).encode("latin-1")
    return value


class RedactSecrets(logging.Filter):
    """Rewrites tokens in each record's message and arguments (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in args)
        elif isinstance(args, dict):
            record.args = {key: _redact_arg(value) for key, value in args.items()}
        return True


def redact_logs(
    loggers: Iterable[str] = REQUEST_LOGGERS, handlers: Iterable[logging.Handler] = ()
) -> None:
    """Install :class:`RedactSecrets` on ``loggers`` (by name) and ``handlers``; idempotent.

    A filter on a logger sees the records logged to that logger only; one on a handler sees
    every record the handler writes, whichever logger it came from.
    """
    targets: list[logging.Filterer] = [logging.getLogger(name) for name in loggers]
    targets.extend(handlers)
    for target in targets:
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())
