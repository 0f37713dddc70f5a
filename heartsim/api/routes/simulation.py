"""Simulation control: start, stop, pause, resume, stress, baseline and configuration.

Every route is ``async def`` and never awaits: it runs on the event loop between two ticks,
the engine's only owner (see :mod:`heartsim.api.context`). Each answer names the transition
it made ("started", "resumed", "already running", ...).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from heartsim.api.context import Ctx, PersonParam, control_guard, read_guard
from heartsim.api.errors import engine_value_error, error_responses, not_running
from heartsim.engine import DEFAULT_STRESS_DURATION_S, SimulationState
from heartsim.schema import (
    RANGES,
    BaselineSet,
    SimulationConfig,
    SimulationStatus,
    StressTriggered,
)

router = APIRouter(prefix="/simulation", tags=["simulation"])
_CONTROL = [Depends(control_guard)]
_CONTROL_ERRORS = error_responses(401, 403, 404, 422, 429)


def _status(message: str, state: SimulationState) -> SimulationStatus:
    return SimulationStatus(message=message, state=state.value)


@router.post(
    "/start",
    response_model=SimulationStatus,
    dependencies=_CONTROL,
    responses=_CONTROL_ERRORS,
    summary="Start the simulation",
)
async def start(ctx: Ctx, person: PersonParam) -> SimulationStatus:
    """Start ticking with every person back at baseline (resumes if paused).

    Idempotent: when already running, answers 200 ``{"message": "Simulation already running",
    "state": "running"}`` and changes nothing.
    """
    engine = ctx.engine
    was = engine.state
    if not engine.start():
        return _status("Simulation already running", engine.state)
    return _status(
        "Simulation resumed" if was is SimulationState.PAUSED else "Simulation started",
        engine.state,
    )


@router.post(
    "/stop",
    response_model=SimulationStatus,
    dependencies=_CONTROL,
    responses=_CONTROL_ERRORS,
    summary="Stop the simulation",
)
async def stop(ctx: Ctx, person: PersonParam) -> SimulationStatus:
    """Stop gracefully: no more messages until the next start (WebSocket clients stay connected).

    Idempotent: when already stopped, answers 200 ``{"message": "Simulation already stopped",
    "state": "stopped"}``; from pause the message is "Simulation stopped (it was paused)".
    """
    engine = ctx.engine
    was = engine.state
    if not engine.stop():
        return _status("Simulation already stopped", engine.state)
    if was is SimulationState.PAUSED:
        return _status("Simulation stopped (it was paused)", engine.state)
    return _status("Simulation stopped", engine.state)


@router.post(
    "/pause",
    response_model=SimulationStatus,
    dependencies=_CONTROL,
    responses=_CONTROL_ERRORS,
    summary="Pause the simulation",
)
async def pause(ctx: Ctx, person: PersonParam) -> SimulationStatus:
    """Freeze simulated time (no messages) without resetting anyone; idempotent."""
    engine = ctx.engine
    if engine.pause():
        return _status("Simulation paused", engine.state)
    return _status(f"Simulation not paused: it is {engine.state.value}", engine.state)


@router.post(
    "/resume",
    response_model=SimulationStatus,
    dependencies=_CONTROL,
    responses=_CONTROL_ERRORS,
    summary="Resume a paused simulation",
)
async def resume(ctx: Ctx, person: PersonParam) -> SimulationStatus:
    """Continue after pause; idempotent."""
    engine = ctx.engine
    if engine.resume():
        return _status("Simulation resumed", engine.state)
    return _status(f"Simulation not resumed: it is {engine.state.value}", engine.state)


@router.post(
    "/trigger-stress",
    response_model=StressTriggered,
    dependencies=_CONTROL,
    responses=error_responses(400, 401, 403, 404, 422, 429),
    summary="Trigger an acute stress episode",
)
async def trigger_stress(
    ctx: Ctx,
    person: PersonParam,
    stress_level: Annotated[
        float,
        Query(
            ge=RANGES["stress_level"][0],
            le=RANGES["stress_level"][1],
            description="Intensity of the stressor, 0 (ends any episode) to 1",
        ),
    ] = 0.8,
    duration_s: Annotated[
        float | None,
        Query(
            ge=RANGES["duration_s"][0],
            le=RANGES["duration_s"][1],
            description=f"Length of the episode, s (default {DEFAULT_STRESS_DURATION_S:g})",
        ),
    ] = None,
) -> StressTriggered:
    """Start a stress episode for the person now; it replaces their current and pending ones.

    400 unless the simulation is running; 422 (naming the field and its range) when a value
    is out of range, with nothing changed.
    """
    engine = ctx.engine
    if engine.state is not SimulationState.RUNNING:
        raise not_running(engine.state.value)
    try:
        episode = engine.trigger_stress(stress_level, duration_s, person=person)
    except ValueError as exc:
        raise engine_value_error(exc) from None
    return StressTriggered(
        message=f"Stress event triggered for {person} (level {stress_level:g})",
        person_id=person,
        stress_level=episode.level,
        duration_s=episode.end_s - episode.start_s,
        start_t=episode.start_s,
        end_t=episode.end_s,
        state=engine.state.value,
    )


@router.post(
    "/set-baseline",
    response_model=BaselineSet,
    dependencies=_CONTROL,
    responses=_CONTROL_ERRORS,
    summary="Set the resting heart rate",
)
async def set_baseline(
    ctx: Ctx,
    person: PersonParam,
    bpm: Annotated[
        float,
        Query(
            ge=RANGES["bpm"][0],
            le=RANGES["bpm"][1],
            description="Resting heart rate, beats per minute",
        ),
    ],
) -> BaselineSet:
    """Set the person's resting heart rate (works whether or not the simulation runs)."""
    try:
        ctx.engine.set_baseline(bpm, person=person)
    except ValueError as exc:
        raise engine_value_error(exc) from None
    return BaselineSet(
        message=f"Baseline of {person} set to {bpm:g} bpm", person_id=person, base_bpm=bpm
    )


def _config(ctx: Ctx) -> SimulationConfig:
    engine = ctx.engine
    return SimulationConfig(
        tick_hz=engine.tick_hz,
        spontaneous_stress_per_h=engine.spontaneous_stress_per_h,
        clock=ctx.runner.clock,
        state=engine.state.value,
        persons=len(engine.person_ids),
        default_person=engine.default_person,
    )


@router.get(
    "/config",
    response_model=SimulationConfig,
    dependencies=[Depends(read_guard)],
    responses=error_responses(401, 404, 422),
    summary="Simulation parameters",
)
async def get_config(ctx: Ctx, person: PersonParam) -> SimulationConfig:
    """The tick rate and spontaneous stress rate (profiles: GET /persons)."""
    return _config(ctx)


@router.post(
    "/config",
    response_model=SimulationConfig,
    dependencies=_CONTROL,
    responses=_CONTROL_ERRORS,
    summary="Change simulation parameters",
)
async def set_config(
    ctx: Ctx,
    person: PersonParam,
    tick_hz: Annotated[
        float | None,
        Query(
            ge=RANGES["tick_hz"][0],
            le=RANGES["tick_hz"][1],
            description="Messages per second and person",
        ),
    ] = None,
    spontaneous_stress_per_h: Annotated[
        float | None,
        Query(
            ge=RANGES["spontaneous_stress_per_h"][0],
            le=RANGES["spontaneous_stress_per_h"][1],
            description="Mean spontaneous stress episodes per hour and person (0 disables)",
        ),
    ] = None,
) -> SimulationConfig:
    """Change the given parameters (validated first: on 422 nothing changes).

    Person profile fields are changed with PATCH /persons/{person_id}.
    """
    try:
        if spontaneous_stress_per_h is not None:
            ctx.engine.configure(spontaneous_stress_per_h=spontaneous_stress_per_h)
        if tick_hz is not None:
            ctx.runner.set_tick_hz(tick_hz)
    except ValueError as exc:
        raise engine_value_error(exc) from None
    return _config(ctx)
