"""Access control: optional token, per-client rate limit, same-origin check for control routes.

- Token: ``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` (browsers cannot set WebSocket
  headers), compared in constant time (:func:`hmac.compare_digest`), so response timing does
  not reveal how much of a guess was right.
- Rate limit: a token bucket per client address on control routes; 429 with ``Retry-After``.
- Origin: a browser page on another origin can send a "simple" cross-site POST without any
  preflight (CSRF); control routes therefore refuse requests whose ``Origin`` is neither this
  server nor one of ``cors_origins``. Requests without ``Origin`` (scripts, curl) are unaffected.
"""

from __future__ import annotations

import collections
import hmac
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from heartsim.api.errors import ApiError


@dataclass(frozen=True)
class RateLimit:
    """Per-client limit on control requests: ``burst`` at once, then ``per_s`` per second.

    Parameters
    ----------
    per_s
        Sustained requests per second and client (> 0).
    burst
        Requests allowed at once (>= 1).
    """

    per_s: float = 10.0
    burst: int = 40

    def __post_init__(self) -> None:
        if not (self.per_s > 0 and math.isfinite(self.per_s)) or self.burst < 1:
            raise ValueError(f"RateLimit needs per_s > 0 and burst >= 1, got {self}")


class RateLimiter:
    """Token buckets keyed by client; remembers at most ``max_keys`` clients (LRU).

    Parameters
    ----------
    limit
        The rate and burst.
    max_keys
        Clients tracked at once; the least recently seen is forgotten first.
    clock
        Monotonic time source, s (injectable for tests).
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.max_keys = max_keys
        self.clock = clock
        self.rejected = 0
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def acquire(self, key: str) -> float:
        """Take one request for ``key``: 0.0 if allowed, else seconds until one would be."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (float(self.limit.burst), now))
        tokens = min(float(self.limit.burst), tokens + (now - last) * self.limit.per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.limit.per_s
            self.rejected += 1
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


class TokenAuth:
    """Checks a presented token against the configured one (``None``: everyone is let in)."""

    def __init__(self, token: str | None) -> None:
        if token is not None and not token:
            raise ValueError("token must be a non-empty string or None")
        self._token = token.encode() if token is not None else None

    @property
    def enabled(self) -> bool:
        """Whether a token is required at all."""
        return self._token is not None

    def accepts(self, presented: str | None) -> bool:
        """Whether ``presented`` is the token (always ``True`` when no token is configured)."""
        if self._token is None:
            return True
        if presented is None:
            return False
        return hmac.compare_digest(presented.encode(), self._token)


def presented_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token from ``Authorization: Bearer X`` or else from ``?token=``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or None


def unauthorized() -> ApiError:
    """401 with a ``WWW-Authenticate`` challenge."""
    return ApiError(
        401,
        "Unauthorized",
        "This server requires a token: send 'Authorization: Bearer TOKEN' or '?token=TOKEN'",
        headers={"WWW-Authenticate": 'Bearer realm="heartsim"'},
    )


def too_many_requests(wait_s: float) -> ApiError:
    """429 with ``Retry-After`` (whole seconds, at least 1)."""
    retry = max(1, math.ceil(wait_s))
    return ApiError(
        429,
        "Too many requests",
        f"Rate limit exceeded for control routes; retry after {retry} s",
        headers={"Retry-After": str(retry)},
    )


def origin_allowed(origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a request with this ``Origin`` may use control routes.

    No ``Origin`` (non-browser clients), the server's own origin, and ``allowed`` origins pass.
    """
    if origin is None:
        return True
    if origin in allowed or "*" in allowed:
        return True
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()
