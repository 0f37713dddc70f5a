"""``create_app``: the FastAPI application of one engine, hub and runner."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from heartsim._version import __version__
from heartsim.api.context import AppContext, WebSocketSettings
from heartsim.api.errors import install_error_handlers
from heartsim.api.health import HealthSettings
from heartsim.api.limits import (
    DEFAULT_MAX_BODY_BYTES,
    BodySizeLimit,
    PredictGate,
    PredictLimits,
    RefusedRequests,
)
from heartsim.api.logs import redact_logs
from heartsim.api.metrics import HeartsimCollector
from heartsim.api.openapi import install_openapi
from heartsim.api.routes import docs, heartbeat, meta, persons, predict, simulation
from heartsim.api.routes.meta import STATIC_DIR
from heartsim.api.security import (
    DEFAULT_RATE_LIMIT,
    DEFAULT_WS_CONNECT_LIMIT,
    AllowedHosts,
    HostGuard,
    RateLimit,
    RateLimiter,
    TokenAuth,
)
from heartsim.api.ws import TransportProbe
from heartsim.engine import Engine
from heartsim.hub import Hub
from heartsim.runner import Runner
from heartsim.schema import SCHEMA_VERSION

logger = logging.getLogger(__name__)

_DESCRIPTION = f"""Virtual persons whose hearts respond to stress, streamed live.

* **Stream**: `WS /ws/heartbeat` (documented under GET /ws/heartbeat), one JSON message per tick
  and person; schema version {SCHEMA_VERSION} at GET /schema/messages.
* **Persons**: every route takes `?person=ID` (GET /persons); without it, the default person.
* **Stress model**: with a model attached (`heartsim serve --model FILE`), messages carry its
  `prediction`, `confidence` and `stress_score`, and POST /predict scores RR intervals sent by
  a client (GET /health: `model`).
* **Errors**: always `{{"error": ..., "message": ...}}`; 422 bodies name the field and its
  allowed range.
* **Security**: when the server has a token, control routes (POST, PATCH, DELETE), POST
  /predict (its scoring costs CPU) and the WebSocket need it (`Authorization: Bearer TOKEN`;
  `?token=TOKEN` is still accepted); read routes too when public reads are off. Each
  operation's `security` below says what this server requires. Control routes, POST /predict
  and WebSocket handshakes are rate-limited per client, each in its own bucket (429 +
  Retry-After); requests whose `Host` is not a name of this server get 400 (DNS rebinding
  protection).
* **Limits**: request bodies over 1 MiB (the default) get 413; POST /predict scores at most
  10000 RR intervals, a few requests at once (503 + Retry-After when all slots stay busy);
  POST /persons beyond the server's max_persons gets 409. The message history shares one
  memory budget: once full, the oldest messages go first and replays report them as
  `missed` (GET /health: `history_window_s`).
"""


def create_app(
    engine: Engine | None = None,
    *,
    hub: Hub | None = None,
    runner: Runner | None = None,
    token: str | None = None,
    public_read: bool = True,
    cors_origins: Iterable[str] = (),
    max_clients: int = 1000,
    rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
    websocket: WebSocketSettings | None = None,
    allowed_hosts: Iterable[str] = (),
    ws_connect_limit: RateLimit | None = DEFAULT_WS_CONNECT_LIMIT,
    health: HealthSettings | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    predict_limits: PredictLimits | None = None,
) -> FastAPI:
    """Build the heartsim API for one simulation.

    Parameters
    ----------
    engine
        The simulation (a one-person ``Engine()`` if ``None``; ``runner.engine`` if a runner is
        given).
    hub
        The fan-out (a new :class:`~heartsim.hub.Hub` if ``None``).
    runner
        Drives the engine; a real-time :class:`~heartsim.runner.Runner` if ``None``. The app's
        lifespan starts it and stops it again (unless it was already running).
    token
        If set, control routes and the WebSocket require it (and read routes when
        ``public_read`` is false).
    public_read
        Whether read-only routes (current, history, persons, config, metrics) skip the token.
    cors_origins
        Browser origins allowed cross-origin access (CORS is off when empty).
    max_clients
        WebSocket handshakes beyond this many connections are refused (HTTP 503).
    rate_limit
        Per-client limit on control routes (``None``: unlimited).
    websocket
        WebSocket delivery tuning (slow-client bounds, message size cap).
    allowed_hosts
        Host names served besides ``localhost``, ``*.localhost`` and IP addresses
        (``"*.example.org"`` for subdomains, ``"*"`` for any); other ``Host`` headers get 400.
    ws_connect_limit
        Per-client limit on WebSocket handshakes (``None``: unlimited).
    health
        When ``GET /health`` answers 503 (tick lag limit, time window); checks can be added
        to ``app.state.heartsim.health_checks``.
    max_body_bytes
        Largest HTTP request body accepted, bytes; larger ones get 413 before they are read
        (default 1 MiB, room for POST /predict's largest request).
    predict_limits
        Bounds on POST /predict (concurrent scorings, wait for a slot, per-client rate);
        :class:`~heartsim.api.limits.PredictLimits` defaults if ``None``.

    Returns
    -------
    FastAPI
        The app; its context is ``app.state.heartsim``.
    """
    if runner is not None:
        if engine is not None and engine is not runner.engine:
            raise ValueError("engine and runner.engine must be the same object")
        if hub is not None and hub is not runner.hub:
            raise ValueError("hub and runner.hub must be the same object")
        engine, hub = runner.engine, runner.hub
    engine = engine if engine is not None else Engine()
    hub = hub if hub is not None else Hub()
    runner = runner if runner is not None else Runner(engine, hub)
    if max_clients < 0:
        raise ValueError(f"max_clients must be >= 0, got {max_clients!r}")
    refused = RefusedRequests()
    ctx = AppContext(
        engine=engine,
        hub=hub,
        runner=runner,
        auth=TokenAuth(token),
        public_read=public_read,
        cors_origins=tuple(cors_origins),
        max_clients=max_clients,
        limiter=RateLimiter(rate_limit) if rate_limit is not None else None,
        ws=websocket if websocket is not None else WebSocketSettings(),
        version=__version__,
        allowed_hosts=AllowedHosts(allowed_hosts),
        ws_connect_limiter=RateLimiter(ws_connect_limit) if ws_connect_limit is not None else None,
        health=health if health is not None else HealthSettings(),
        refused=refused,
        predict=PredictGate(predict_limits, refused),
    )
    # The stream's handshakes are logged with their query string (?token=): redact them.
    redact_logs()
    ctx.registry.register(HeartsimCollector(ctx))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = not runner.running
        await hub.backend.start()
        runner.start()
        try:
            yield
        finally:
            if owned:
                await runner.stop()
            hub.close_all()
            await hub.backend.close()

    app = FastAPI(
        title="heartsim",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load from a CDN; docs.install serves them offline
        redoc_url=None,
        # The API is where this document is (a relative server URL resolves against the
        # document's own URL), so /docs' "Try it out" keeps a proxy's path prefix.
        servers=[{"url": ".", "description": "This server (where this document was loaded)"}],
        openapi_tags=[
            {"name": "simulation", "description": "Start, stop, stress, baseline, parameters"},
            {"name": "heartbeat", "description": "Latest sample, history, the stream"},
            {"name": "persons", "description": "Virtual persons and their profiles"},
            {"name": "model", "description": "Stress predictions of the attached model"},
            {"name": "meta", "description": "Dashboard, health, metrics, schema"},
        ],
    )
    app.state.heartsim = ctx
    install_error_handlers(app)
    routers = (meta.router, simulation.router, heartbeat.router, persons.router, predict.router)
    for router in routers:
        app.include_router(router)
    docs.install(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Inside CORS, so that a browser can read the 413.
    app.add_middleware(BodySizeLimit, max_body_bytes=max_body_bytes, refused=refused)
    if ctx.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(ctx.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # Last added = outermost. TransportProbe must see the server's own send (HostGuard, outside
    # it, passes send on unchanged) and serves /ws/heartbeat itself.
    app.add_middleware(TransportProbe)
    app.add_middleware(HostGuard, ctx=ctx)
    install_openapi(app)
    return app
