"""The dashboard, health, metrics and the message schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import FileResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from heartsim.api.context import Ctx, PersonParam, read_guard
from heartsim.api.errors import error_responses
from heartsim.api.health import assess
from heartsim.api.ws import clients_dropped_by_cause
from heartsim.schema import ClientsDropped, Health, ModelStatus, TickLag, message_json_schema

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["meta"])


@router.get(
    "/",
    response_class=FileResponse,
    responses={200: {"content": {"text/html": {}}, "description": "The dashboard page"}},
    summary="Live dashboard",
)
async def dashboard() -> FileResponse:
    """The live HTML dashboard (no CDN; its assets are under /static/)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get(
    "/health",
    response_model=Health,
    responses={
        503: {
            "model": Health,
            "description": "Degraded or unhealthy: the body is the same, `reasons` says why",
        },
        **error_responses(404, 422),
    },
    summary="Service health",
)
async def health(ctx: Ctx, person: PersonParam, response: Response) -> Health:
    """Status, simulation state, clients, delivery counters, tick timing and the attached model.

    200 with ``status: "healthy"``; 503 with ``"degraded"`` (messages flow, but a tick failed
    or ticks ran late recently, or a registered check failed) or ``"unhealthy"`` (no messages
    are produced: the tick loop crashed, stopped or is blocked), and ``reasons`` saying why.
    The thresholds are ``AppContext.health`` (:class:`heartsim.api.health.HealthSettings`).

    Always public (liveness probes need no token). ``base_bpm`` is the person's (default
    person's) resting heart rate. ``model.errors`` counts prediction failures (their messages
    carried nulls; the stream went on). ``history_*``: the memory the message history takes,
    its budget, the messages the budget dropped and how far back replay reaches.
    """
    status, reasons = assess(ctx)
    if status != "healthy":
        response.status_code = 503
    engine = ctx.engine
    hub = ctx.hub.stats()
    ticks = ctx.runner.stats()
    model = ctx.runner.model_stats()
    dropped = clients_dropped_by_cause(ctx)
    return Health(
        status=status,
        reasons=reasons,
        simulation_state=engine.state.value,
        base_bpm=engine.profile(person).resting_hr_bpm,
        websocket_clients=ctx.websocket_clients,
        uptime_s=round(ctx.uptime_s, 3),
        version=ctx.version,
        messages_published=hub.messages_published,
        messages_sent=hub.messages_sent,
        messages_dropped=hub.messages_dropped,
        clients_dropped=sum(dropped.values()),
        clients_dropped_by_cause=ClientsDropped(**dropped),
        tick_lag_ms=TickLag(
            p50=round(ticks.lag_ms_p50, 3),
            p99=round(ticks.lag_ms_p99, 3),
            max=round(ticks.lag_ms_max, 3),
            jitter=round(ticks.jitter_ms, 3),
        ),
        ticks=ticks.ticks,
        ticks_skipped=ticks.ticks_skipped,
        tick_errors=ticks.tick_errors,
        tick_hz=engine.tick_hz,
        clock=ctx.runner.clock,
        persons=len(engine.person_ids),
        default_person=engine.default_person,
        model=ModelStatus(
            attached=model.attached,
            name=model.name,
            features=list(model.features),
            errors=model.errors,
            last_error=model.last_error,
        ),
        max_persons=engine.max_persons,
        history_bytes=hub.history_bytes,
        history_budget_bytes=hub.history_budget_bytes,
        history_evicted=hub.history_evicted,
        history_window_s=round(hub.history_window_s, 3),
    )


@router.get(
    "/metrics",
    dependencies=[Depends(read_guard)],
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        **error_responses(401),
    },
    summary="Prometheus metrics",
)
async def metrics(ctx: Ctx) -> Response:
    """Counters and gauges in the Prometheus text format (a per-app registry)."""
    return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/schema/messages",
    summary="JSON Schema of the stream messages",
    response_description="JSON Schema (draft 2020-12) with its version",
)
def messages_schema() -> dict[str, Any]:
    """The JSON Schema of every WebSocket message (heartbeat, connected, pong), versioned."""
    # Plain def: it reads no state, and building the schema (~2 ms) is better off the loop.
    return message_json_schema()
