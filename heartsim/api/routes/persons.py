"""Virtual persons: list, add (with a validated profile), inspect, change, remove."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path

from heartsim.api.context import Ctx, control_guard, read_guard, resolve_person
from heartsim.api.errors import UNDECODABLE_BODY, ApiError, engine_value_error, error_responses
from heartsim.engine import PersonLimitError
from heartsim.physiology.profiles import PersonProfile
from heartsim.schema import (
    MAX_PERSON_ID_LENGTH,
    Person,
    PersonCreated,
    PersonList,
    PersonProfileIn,
    PersonRemoved,
    person_model,
)

router = APIRouter(prefix="/persons", tags=["persons"])

PersonPath = Annotated[
    str, Path(max_length=MAX_PERSON_ID_LENGTH, description="Person id", examples=["p1"])
]
ProfileBody = Annotated[
    PersonProfileIn | None,  # type: ignore[valid-type]
    Body(
        description="Profile fields; omitted ones take the typical-adult defaults. No body "
        "(or {}) draws a random realistic person.",
        examples=[{"resting_hr_bpm": 64, "hr_reactivity_bpm": 30}, {}],
    ),
]


def _person(ctx: Ctx, person_id: str) -> Any:
    engine = ctx.engine
    return person_model(engine.profile(person_id), is_default=person_id == engine.default_person)


def _fresh_id(existing: list[str]) -> str:
    taken = set(existing)
    k = len(existing)
    while f"p{k}" in taken:
        k += 1
    return f"p{k}"


@router.get(
    "",
    response_model=PersonList,
    dependencies=[Depends(read_guard)],
    responses=error_responses(401),
    summary="List persons",
)
async def list_persons(ctx: Ctx) -> PersonList:
    """Every simulated person with its profile; the default person first."""
    engine = ctx.engine
    return PersonList(
        default_person=engine.default_person,
        persons=[_person(ctx, pid) for pid in engine.person_ids],
    )


@router.post(
    "",
    response_model=PersonCreated,
    status_code=201,
    dependencies=[Depends(control_guard)],
    responses=error_responses(400, 401, 403, 409, 422, 429, descriptions={400: UNDECODABLE_BODY}),
    summary="Add a person",
)
async def add_person(ctx: Ctx, body: ProfileBody = None) -> PersonCreated:
    """Add a person, simulated from now on; returns its id (``person_id`` or a fresh ``pN``).

    Every field is range-checked (422 names the field and its range); ``diastolic_mmhg``
    must be at least 10 below ``systolic_mmhg``. 409 if the id exists, or if the server
    already simulates its most persons (``max_persons``, 1,000 by default; GET /health).
    """
    engine = ctx.engine
    given = body.model_dump(exclude_none=True) if body is not None else {}
    person_id = given.pop("person_id", None)
    if person_id is not None and person_id in engine.person_ids:
        raise ApiError(409, "Person exists", f"person {person_id!r} already exists")
    try:
        if not given and person_id is None:
            person_id = engine.add_person()
        else:
            profile = PersonProfile(person_id=person_id or _fresh_id(engine.person_ids), **given)
            person_id = engine.add_person(profile)
    except PersonLimitError as exc:
        raise ApiError(409, "Too many persons", str(exc)) from None
    except ValueError as exc:
        raise engine_value_error(exc, location="body") from None
    return PersonCreated(
        message=f"Person {person_id} added", person_id=person_id, person=_person(ctx, person_id)
    )


@router.get(
    "/{person_id}",
    response_model=Person,
    dependencies=[Depends(read_guard)],
    responses=error_responses(401, 404, 422),
    summary="One person",
)
async def get_person(ctx: Ctx, person_id: PersonPath) -> Any:
    """The person's profile."""
    return _person(ctx, resolve_person(ctx, person_id))


@router.patch(
    "/{person_id}",
    response_model=Person,
    dependencies=[Depends(control_guard)],
    responses=error_responses(400, 401, 403, 404, 422, 429, descriptions={400: UNDECODABLE_BODY}),
    summary="Change a person's profile",
)
async def update_person(ctx: Ctx, person_id: PersonPath, body: ProfileBody = None) -> Any:
    """Change profile fields of a live person (validated together: on 422 nothing changes)."""
    engine = ctx.engine
    person_id = resolve_person(ctx, person_id)
    given = body.model_dump(exclude_none=True) if body is not None else {}
    new_id = given.pop("person_id", person_id)
    if new_id != person_id:
        raise ApiError(422, "Invalid parameter", "person_id cannot be changed")
    try:
        engine.update_profile(person_id, **given)  # validated together: all or nothing
    except ValueError as exc:
        raise engine_value_error(exc, location="body") from None
    return _person(ctx, person_id)


@router.delete(
    "/{person_id}",
    response_model=PersonRemoved,
    dependencies=[Depends(control_guard)],
    responses=error_responses(401, 403, 404, 409, 422, 429),
    summary="Remove a person",
)
async def remove_person(ctx: Ctx, person_id: PersonPath) -> PersonRemoved:
    """Remove the person; its WebSocket clients are closed (1000). The last person stays (409)."""
    person_id = resolve_person(ctx, person_id)
    try:
        ctx.engine.remove_person(person_id)
    except ValueError as exc:
        raise ApiError(409, "Conflict", str(exc)) from None
    ctx.hub.drop_person(person_id)
    ctx.runner.forget_person(person_id)
    return PersonRemoved(message=f"Person {person_id} removed", person_id=person_id)
