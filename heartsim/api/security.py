"""Access control: optional token, per-client rate limits, Host and Origin checks.

- Token: ``Authorization: Bearer TOKEN``; from a browser's WebSocket API, which cannot set
  headers, the subprotocol ``heartsim.token.<base64url(TOKEN)>`` offered next to ``heartsim``
  (:func:`token_subprotocol`); ``?token=TOKEN`` still works for older clients but puts the
  secret in URLs (logs redact it, see :mod:`heartsim.api.logs`). Compared in constant time
  (:func:`hmac.compare_digest`), so response timing does not reveal how much of a guess was
  right.
- Rate limits: token buckets per client address, one on control routes and one on WebSocket
  handshakes; 429 with ``Retry-After``. The address is the TCP peer's unless the server trusts
  forwarded headers (``--forwarded-allow-ips``).
- Host: a page on any domain can make the victim's browser resolve that domain to 127.0.0.1
  (DNS rebinding); its requests then look same-origin. :class:`AllowedHosts` only lets in the
  names this server is meant to be reached by (:class:`HostGuard` checks every request).
- Origin: a browser page on another origin can send a "simple" cross-site POST without any
  preflight (CSRF), and open a WebSocket; control routes and the stream therefore refuse
  requests whose ``Origin`` is neither this server nor one of ``cors_origins``. Requests without
  ``Origin`` (scripts, curl) are unaffected.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hmac
import ipaddress
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from heartsim.api.errors import ApiError, error_response

if TYPE_CHECKING:
    from heartsim.api.context import AppContext

#: The WebSocket subprotocol of the stream; the server selects it whenever a client offers it.
SUBPROTOCOL = "heartsim"
#: Prefix of the subprotocol that carries the token: ``heartsim.token.<base64url(TOKEN)>``.
TOKEN_SUBPROTOCOL_PREFIX = "heartsim.token."
#: Scope key of the server's WebSocket protocol object (set by ``api.ws.TransportProbe``).
WS_PROTOCOL_SCOPE_KEY = "heartsim.ws_protocol"


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


#: Control routes: 40 at once, then 10 per second and client.
DEFAULT_RATE_LIMIT = RateLimit()
#: WebSocket handshakes: 200 at once, then 20 per second and client address. Sized for a class
#: behind one NAT address: ~100 dashboards reconnecting together after a server restart fit in
#: the burst; a client reconnecting in a tight loop, or guessing tokens, is held to 20/s.
DEFAULT_WS_CONNECT_LIMIT = RateLimit(per_s=20.0, burst=200)


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
        if token is not None:
            check_token(token)
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


def check_token(token: str) -> str:
    """``token`` if usable as the server's token; ``ValueError`` naming ``--token`` otherwise.

    Empty or whitespace-only tokens are refused (a blank ``$HEARTSIM_TOKEN`` must not become a
    token anyone can send), and so are surrounding blanks, which a bearer header cannot carry.
    """
    if not isinstance(token, str) or not token.strip():
        raise ValueError(
            f"the token (--token, $HEARTSIM_TOKEN, token=) must not be empty or whitespace, "
            f"got {token!r}"
        )
    if token != token.strip():
        raise ValueError(
            "the token (--token, $HEARTSIM_TOKEN, token=) must not start or end with whitespace"
        )
    return token


def token_subprotocol(token: str) -> str:
    """The WebSocket subprotocol that carries ``token`` (offer it after :data:`SUBPROTOCOL`)."""
    encoded = base64.urlsafe_b64encode(token.encode()).rstrip(b"=").decode("ascii")
    return TOKEN_SUBPROTOCOL_PREFIX + encoded


def subprotocol_token(subprotocols: Sequence[str]) -> str | None:
    """The token carried by a ``heartsim.token.*`` subprotocol, if one was offered.

    A malformed value yields ``""`` (a token that never matches), not ``None``.
    """
    for offered in subprotocols:
        if offered.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            encoded = offered[len(TOKEN_SUBPROTOCOL_PREFIX) :]
            try:
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
                return raw.decode()
            except (binascii.Error, ValueError):
                return ""
    return None


def presented_token(
    authorization: str | None, query_token: str | None, subprotocol: str | None = None
) -> str | None:
    """The token from ``Authorization: Bearer X``, else the subprotocol's, else ``?token=``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if subprotocol is not None:
        return subprotocol
    return query_token or None


def unauthorized() -> ApiError:
    """401 with a ``WWW-Authenticate`` challenge."""
    return ApiError(
        401,
        "Unauthorized",
        "This server requires a token: send 'Authorization: Bearer TOKEN' (browsers' "
        "WebSockets: the subprotocols 'heartsim' and 'heartsim.token.<base64url TOKEN>')",
        headers={"WWW-Authenticate": 'Bearer realm="heartsim"'},
    )


def too_many_requests(wait_s: float, what: str = "control routes") -> ApiError:
    """429 with ``Retry-After`` (whole seconds, at least 1)."""
    retry = max(1, math.ceil(wait_s))
    return ApiError(
        429,
        "Too many requests",
        f"Rate limit exceeded for {what}; retry after {retry} s",
        headers={"Retry-After": str(retry)},
    )


def forbidden_origin(origin: str | None) -> ApiError:
    """403 for a browser page on an origin that may not use this route."""
    return ApiError(
        403,
        "Forbidden origin",
        f"Origin {origin!r} may not control or stream from this server; start it with "
        "--cors-origin to allow it",
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


# ----- Host ----------------------------------------------------------------------------------
class AllowedHosts:
    """The ``Host`` header names a server answers to: its defence against DNS rebinding.

    Always allowed: ``localhost`` and ``*.localhost``, any IP address literal (a rebinding page
    always sends its own domain name, and a page whose origin is an IP address is served by that
    address), and requests without ``Host`` (HTTP/1.0 scripts; browsers always send one). Any
    port. ``names`` adds more: ``example.org`` (exactly), ``*.example.org`` (its subdomains)
    or ``*`` (anything: no check).

    Parameters
    ----------
    names
        Further host names (case-insensitive, without port).
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = tuple(dict.fromkeys(name.strip().lower().rstrip(".") for name in names))
        for name in self.names:
            wildcard_ok = name == "*" or (name.startswith("*.") and "*" not in name[1:])
            if not name or ("*" in name and not wildcard_ok):
                raise ValueError(
                    f"allowed host {name!r} must be a host name, '*.example.org' or '*'"
                )
        self.any = "*" in self.names
        self._exact = frozenset(n for n in self.names if not n.startswith("*"))
        self._suffixes = tuple(n[1:] for n in self.names if n.startswith("*."))

    def allows(self, host_header: str | None) -> bool:
        """Whether a request with this ``Host`` header may be served."""
        if self.any or host_header is None:
            return True
        try:
            name = urlsplit("//" + host_header.strip()).hostname
        except ValueError:  # e.g. an unbalanced '[' in an IPv6 literal
            return False
        if not name:
            return False
        name = name.rstrip(".")
        if name == "localhost" or name.endswith(".localhost") or name in self._exact:
            return True
        if any(name.endswith(suffix) for suffix in self._suffixes):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def __repr__(self) -> str:
        return f"AllowedHosts({list(self.names)!r})"


def bad_host(host: str | None) -> ApiError:
    """400 for a ``Host`` this server does not answer to."""
    shown = (host or "")[:100]
    return ApiError(
        400,
        "Invalid host",
        f"Host {shown!r} is not a name of this server (DNS rebinding protection); start it "
        f"with --allowed-host {shown.rsplit(':', 1)[0] or 'NAME'} to allow it",
    )


class HostGuard:
    """ASGI middleware: refuses HTTP requests (400) and WebSocket handshakes (HTTP 400 denial)
    whose ``Host`` is not in the app's :class:`AllowedHosts`; counts them.

    Outermost layer of the app; it passes the server's ``send`` on unchanged (the stream's fast
    path needs it, see :class:`heartsim.api.ws.TransportProbe`).
    """

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host")
            if not self.ctx.allowed_hosts.allows(host):
                self.ctx.hosts_refused += 1
                await deny(scope, receive, send, bad_host(host))
                return
        await self.app(scope, receive, send)


async def deny(scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
    """Answer ``error`` as an HTTP response, also to a WebSocket handshake (before accepting).

    Where the server lacks the ASGI WebSocket denial-response extension, the handshake is
    refused without a body (the server's default answer, usually 403).
    """
    if scope["type"] != "websocket":
        await error_response(error)(scope, receive, send)
        return
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
        return
    # The extension's messages, sent here rather than by Response.__call__, which prefixes
    # them with "websocket." only in newer Starlette versions.
    response = error_response(error)
    await send(
        {
            "type": "websocket.http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "websocket.http.response.body", "body": response.body})
    # uvicorn's websockets-sansio protocol (0.54) does not mark the handshake done after a
    # denial response and logs "ASGI callable returned without completing handshake." at
    # ERROR for every refusal (fixed upstream by Kludex/uvicorn#3138; wsproto does it already).
    protocol = scope.get(WS_PROTOCOL_SCOPE_KEY) or getattr(send, "__self__", None)
    if getattr(protocol, "initial_response", None) is not None:
        protocol.handshake_complete = True  # type: ignore[union-attr]
