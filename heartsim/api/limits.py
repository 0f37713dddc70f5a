"""Bounds on the work one HTTP request can cause: body size, and ``POST /predict``'s scoring.

:class:`BodySizeLimit` is a pure ASGI middleware. A request whose ``Content-Length`` exceeds
the cap is answered 413 before the app sees it; a body without ``Content-Length`` (chunked) is
counted as the app reads it, and the read that crosses the cap fails with 413. Nothing buffers
an oversized body. 413 responses carry ``Connection: close``: the server stops reading the
upload. Closing a connection with unread data resets it, and a client still sending may then
lose the 413 (blocking clients such as ``httpx.Client`` read it; asyncio-based ones may report
a reset instead); so before answering, up to another ``max_body_bytes`` of the body are read
and discarded (for at most :data:`LINGER_S`): a body at most twice the cap ends cleanly.

FastAPI 0.13x+ has a built-in ``max_body_size``; heartsim supports older FastAPI releases, and
wants its own error body (:class:`~heartsim.schema.ErrorBody`) on every 413, including for
routes that never read their body.

:class:`PredictLimits` bounds the scoring of ``POST /predict``: it runs on worker threads, at
most ``concurrency`` at once, rate-limited per client in its own bucket (:class:`PredictGate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heartsim.api.errors import ApiError
from heartsim.api.security import RateLimit, RateLimiter, too_many_requests
from heartsim.schema import MAX_PREDICT_INTERVALS, ErrorBody

#: Bytes the longest sensible JSON number with its separator takes ("2999.9999999999995, ").
_MAX_NUMBER_BYTES = 24
#: Default cap on every request body, bytes: room for ``POST /predict``'s most intervals
#: written at full float precision (10,000 x 24 bytes = 240 kB) four times over; every other
#: route's body is under 1 kB.
DEFAULT_MAX_BODY_BYTES = 1 << 20
if DEFAULT_MAX_BODY_BYTES < 2 * MAX_PREDICT_INTERVALS * _MAX_NUMBER_BYTES:  # pragma: no cover
    raise RuntimeError("DEFAULT_MAX_BODY_BYTES must hold POST /predict's largest request")

_TITLE = "Content too large"
#: Longest wait (s) for the rest of a refused body before the 413 (see the module docstring).
LINGER_S = 1.0


def _too_large_message(max_body_bytes: int) -> str:
    return (
        f"The request body exceeds this server's limit of {max_body_bytes} bytes "
        "(max_body_bytes); POST /predict takes at most "
        f"{MAX_PREDICT_INTERVALS} RR intervals"
    )


@dataclass
class RefusedRequests:
    """Requests refused by the bounds since the app started, by cause (``/metrics``)."""

    #: 413: the body exceeded ``max_body_bytes``.
    body_too_large: int = 0
    #: 429 of ``POST /predict``: the client's bucket was empty.
    predict_rate_limited: int = 0
    #: 503 of ``POST /predict``: every scoring slot stayed busy.
    predict_busy: int = 0


class BodyTooLargeError(HTTPException):
    """Raised by the guarded ``receive`` once the body read so far exceeds the cap (413)."""

    def __init__(self, max_body_bytes: int) -> None:
        super().__init__(413, _too_large_message(max_body_bytes), headers={"Connection": "close"})


class BodySizeLimit:
    """ASGI middleware: 413 for HTTP request bodies over ``max_body_bytes``.

    Parameters
    ----------
    app
        The wrapped ASGI app.
    max_body_bytes
        Largest request body accepted, bytes (>= 0).
    refused
        Where refusals are counted (a new :class:`RefusedRequests` if ``None``).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        refused: RefusedRequests | None = None,
    ) -> None:
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
            raise ValueError(f"max_body_bytes must be an integer, got {max_body_bytes!r}")
        if max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be >= 0, got {max_body_bytes!r}")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.refused = refused if refused is not None else RefusedRequests()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            if declared <= 2 * limit:  # a near miss: take it all in, so the 413 arrives cleanly
                await _discard_body(receive, declared)
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if message.get("more_body", False):
                        await _discard_body(receive, limit)
                    raise BodyTooLargeError(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] == 413:  # the app answered the BodyTooLargeError
                    self.refused.body_too_large += 1
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLargeError:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.refused.body_too_large += 1
        body = ErrorBody(error=_TITLE, message=_too_large_message(self.max_body_bytes))
        response = JSONResponse(
            body.model_dump(mode="json"), status_code=413, headers={"Connection": "close"}
        )
        await response(scope, receive, send)


async def _discard_body(receive: Receive, budget_bytes: int) -> None:
    """Read and drop the rest of the request body: at most ``budget_bytes``, for at most
    :data:`LINGER_S` seconds."""

    async def discard() -> None:
        left = budget_bytes
        while left > 0:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            left -= len(message.get("body", b""))

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(discard(), LINGER_S)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# ----- POST /predict ---------------------------------------------------------------------------
#: Default per-client limit of ``POST /predict``: 2 per second, bursts of 10.
DEFAULT_PREDICT_RATE = RateLimit(per_s=2.0, burst=10)


@dataclass(frozen=True)
class PredictLimits:
    """Bounds on ``POST /predict``, whose scoring costs CPU.

    Parameters
    ----------
    concurrency
        Scorings running at once, each on a worker thread off the event loop (>= 1).
    wait_s
        How long a request waits for a free scoring slot before 503 (>= 0 s).
    rate
        Per-client request limit, a bucket of its own (control routes have theirs); ``None``:
        unlimited.
    """

    concurrency: int = 2
    wait_s: float = 2.0
    rate: RateLimit | None = DEFAULT_PREDICT_RATE

    def __post_init__(self) -> None:
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int):
            raise ValueError(f"concurrency must be an integer >= 1, got {self.concurrency!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency!r}")
        if not (math.isfinite(self.wait_s) and self.wait_s >= 0):
            raise ValueError(f"wait_s must be a finite number >= 0, got {self.wait_s!r}")


class PredictGate:
    """Admission to ``POST /predict``: the per-client rate limit, then a scoring slot.

    At most ``limits.concurrency`` scorings run at once; the excess waits up to
    ``limits.wait_s`` for a slot, then gets 503. Used from one event loop (the server's).
    Refusals are counted in ``refused`` (a new :class:`RefusedRequests` if ``None``).
    """

    def __init__(
        self, limits: PredictLimits | None = None, refused: RefusedRequests | None = None
    ) -> None:
        self.limits = limits if limits is not None else PredictLimits()
        self.refused = refused if refused is not None else RefusedRequests()
        self.limiter = RateLimiter(self.limits.rate) if self.limits.rate is not None else None
        self._semaphore = asyncio.Semaphore(self.limits.concurrency)
        #: Scorings running now.
        self.busy = 0

    def admit(self, client: str) -> None:
        """Take one request of ``client`` from its bucket; 429 if it is empty."""
        if self.limiter is None:
            return
        wait_s = self.limiter.acquire(client)
        if wait_s > 0.0:
            self.refused.predict_rate_limited += 1
            raise too_many_requests(wait_s, "POST /predict")

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one scoring slot; 503 (``Retry-After``) if none frees up within ``wait_s``."""
        semaphore = self._semaphore
        if semaphore.locked():
            try:
                await asyncio.wait_for(semaphore.acquire(), self.limits.wait_s)
            except TimeoutError:
                self.refused.predict_busy += 1
                raise ApiError(
                    503,
                    "Server busy",
                    f"All {self.limits.concurrency} prediction slots stayed busy for "
                    f"{self.limits.wait_s:g} s; retry after Retry-After seconds",
                    headers={"Retry-After": "1"},
                ) from None
        else:
            await semaphore.acquire()
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            semaphore.release()


__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PREDICT_RATE",
    "BodySizeLimit",
    "BodyTooLargeError",
    "PredictGate",
    "PredictLimits",
    "RefusedRequests",
]
