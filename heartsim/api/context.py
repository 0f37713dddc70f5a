"""Per-app state and the FastAPI dependencies that reach it.

Each app built by :func:`heartsim.api.create_app` carries one :class:`AppContext` in
``app.state.heartsim``; nothing lives at module level, so several apps (tests, notebooks) coexist.

The engine, hub and runner belong to the event loop (see :mod:`heartsim.runner`). FastAPI runs
plain ``def`` routes and dependencies on a thread pool, so every route and dependency that
touches them is ``async def`` and never awaits while doing so: it then runs on the loop,
between two ticks.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from starlette.requests import HTTPConnection

from heartsim.api.errors import unknown_person
from heartsim.api.health import HealthCheck, HealthSettings
from heartsim.api.limits import PredictGate, RefusedRequests
from heartsim.api.security import (
    AllowedHosts,
    RateLimiter,
    TokenAuth,
    forbidden_origin,
    origin_allowed,
    presented_token,
    too_many_requests,
    unauthorized,
)
from heartsim.engine import Engine
from heartsim.hub import Hub
from heartsim.runner import Runner
from heartsim.schema import MAX_PERSON_ID_LENGTH


@dataclass
class WebSocketSettings:
    """Tuning of WebSocket delivery.

    Parameters
    ----------
    client_buffer_bytes
        Bytes a client may have waiting in the server's user-space send buffer before it is
        considered too slow and disconnected (close 1008).
    socket_send_buffer_bytes
        ``SO_SNDBUF`` set on each WebSocket connection (``None`` keeps the kernel's autotuning).
        A cap bounds the kernel memory a stalled client can pin and makes it detected sooner.
    queue_size
        Messages queued per client on the fallback path (servers other than uvicorn's
        websockets-sansio protocol, where frames cannot be written to the transport directly).
    close_grace_s
        After closing a slow client, seconds its connection may take to flush before it is
        aborted.
    max_message_bytes
        Largest inbound message accepted (clients only ever need to send ``ping``); bigger
        ones close the connection with 1009.
    ping_interval_s, ping_timeout_s
        Protocol-level keepalive: a ping every ``ping_interval_s`` s, and a client that does
        not answer within ``ping_timeout_s`` s is closed (1011, counted as ``keepalive``;
        ``None`` disables). Applied by :class:`heartsim.server.HeartsimServer` (they are
        settings of the uvicorn server).
    """

    client_buffer_bytes: int = 256 * 1024
    socket_send_buffer_bytes: int | None = 64 * 1024
    queue_size: int = 512
    close_grace_s: float = 2.0
    max_message_bytes: int = 4096
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0


@dataclass
class AppContext:
    """Everything routes need: the engine, hub, runner and access-control settings."""

    engine: Engine
    hub: Hub
    runner: Runner
    auth: TokenAuth
    public_read: bool
    cors_origins: tuple[str, ...]
    max_clients: int
    limiter: RateLimiter | None
    ws: WebSocketSettings
    version: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    refused: RefusedRequests = field(default_factory=RefusedRequests)
    predict: PredictGate = field(default_factory=PredictGate)
    started_at: float = field(default_factory=time.monotonic)
    websocket_clients: int = 0
    #: Host names served (DNS rebinding defence), and requests refused for their Host.
    allowed_hosts: AllowedHosts = field(default_factory=AllowedHosts)
    hosts_refused: int = 0
    #: Per-client limit on WebSocket handshakes (``None``: unlimited).
    ws_connect_limiter: RateLimiter | None = None
    #: WebSocket handshakes refused, and connections the server ended, by cause (see api.ws).
    ws_refused: collections.Counter[str] = field(default_factory=collections.Counter)
    ws_dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    health: HealthSettings = field(default_factory=HealthSettings)
    #: Extra checks of ``GET /health`` (see :mod:`heartsim.api.health`), e.g. a store's.
    health_checks: list[HealthCheck] = field(default_factory=list)

    @property
    def uptime_s(self) -> float:
        """Seconds since the app was created."""
        return time.monotonic() - self.started_at


def context_of(connection: HTTPConnection) -> AppContext:
    """The :class:`AppContext` of the app serving ``connection`` (request or WebSocket)."""
    return connection.app.state.heartsim


async def get_ctx(request: Request) -> AppContext:
    """Dependency: the app's context (async: no thread-pool hop, see the module docstring)."""
    return context_of(request)


Ctx = Annotated[AppContext, Depends(get_ctx)]

_bearer = HTTPBearer(
    auto_error=False,
    description="The server's token, when it has one (control routes and WebSocket; read routes "
    "too if public_read is off)",
)
_query_token = APIKeyQuery(
    name="token",
    auto_error=False,
    description="The token as ?token= (kept for older clients; it puts the secret in URLs, "
    "which logs redact: prefer the Authorization header)",
)


def _check_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    query_token: str | None,
) -> None:
    ctx = context_of(request)
    if not ctx.auth.enabled:
        return
    bearer = f"Bearer {credentials.credentials}" if credentials is not None else None
    if not ctx.auth.accepts(presented_token(bearer, query_token)):
        raise unauthorized()


def _check_origin(request: Request) -> None:
    ctx = context_of(request)
    if not origin_allowed(
        request.headers.get("origin"), request.headers.get("host"), ctx.cors_origins
    ):
        raise forbidden_origin(request.headers.get("origin"))


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def control_guard(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    query_token: Annotated[str | None, Depends(_query_token)],
) -> None:
    """Dependency of control routes: same-origin check, rate limit, then token."""
    _check_origin(request)
    ctx = context_of(request)
    if ctx.limiter is not None:
        wait = ctx.limiter.acquire(_client(request))
        if wait > 0.0:
            raise too_many_requests(wait)
    _check_token(request, credentials, query_token)


async def predict_guard(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    query_token: Annotated[str | None, Depends(_query_token)],
) -> None:
    """Dependency of ``POST /predict`` (it costs CPU): as control routes, with its own bucket."""
    _check_origin(request)
    context_of(request).predict.admit(_client(request))
    _check_token(request, credentials, query_token)


async def read_guard(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    query_token: Annotated[str | None, Depends(_query_token)],
) -> None:
    """Dependency of read-only routes: a token only when ``public_read`` is off."""
    if not context_of(request).public_read:
        _check_token(request, credentials, query_token)


def resolve_person(ctx: AppContext, person: str | None) -> str:
    """``person`` if it exists, the default person if ``None``; 404 if unknown."""
    if person is None:
        return ctx.engine.default_person
    try:
        ctx.engine.profile(person)
    except (ValueError, KeyError):
        raise unknown_person(person, ctx.engine.person_ids) from None
    return person


async def person_param(
    request: Request,
    person: Annotated[
        str | None,
        Query(
            max_length=MAX_PERSON_ID_LENGTH,
            description="Person id (GET /persons); the default person if omitted",
            examples=["p0"],
        ),
    ] = None,
) -> str:
    """Dependency: the ``?person=`` id, resolved (404 if unknown)."""
    return resolve_person(context_of(request), person)


PersonParam = Annotated[str, Depends(person_param)]
