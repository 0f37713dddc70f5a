"""Heartbeat data: the latest sample, the history, the stream's documentation and schema."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Response

from heartsim.api.context import Ctx, PersonParam, read_guard
from heartsim.api.errors import ApiError, error_responses
from heartsim.schema import (
    MAX_HISTORY_LIMIT,
    RANGES,
    SCHEMA_VERSION,
    HeartbeatMessage,
    HistoryPage,
)

router = APIRouter(tags=["heartbeat"], dependencies=[Depends(read_guard)])

_JSON = "application/json"


def _json_bytes(content: bytes | memoryview) -> Response:
    return Response(content=bytes(content), media_type=_JSON)


@router.get(
    "/heartbeat/current",
    response_model=HeartbeatMessage,
    responses=error_responses(401, 404, 422),
    summary="Latest heartbeat sample",
)
async def current(ctx: Ctx, person: PersonParam) -> Response:
    """The person's latest heartbeat message (the same JSON as the stream's).

    404 ``{"error": "No data available", "message": "Start simulation first using POST
    /simulation/start"}`` before the first sample.
    """
    message = ctx.hub.latest(person)
    if message is not None:
        return _json_bytes(message.payload)
    sample = ctx.engine.latest(person)
    if sample is None:
        raise ApiError(
            404, "No data available", "Start simulation first using POST /simulation/start"
        )
    return _json_bytes(orjson.dumps(sample, option=orjson.OPT_SERIALIZE_NUMPY))


@router.get(
    "/heartbeat/history",
    response_model=HistoryPage,
    responses=error_responses(401, 404, 422),
    summary="Buffered heartbeat messages",
)
async def history(
    ctx: Ctx,
    person: PersonParam,
    since: Annotated[
        int | None,
        Query(
            ge=int(RANGES["since"][0]),
            le=int(RANGES["since"][1]),
            description="Return messages with seq > since (oldest first); omit for the newest",
        ),
    ] = None,
    limit: Annotated[
        int,
        Query(
            ge=int(RANGES["limit"][0]),
            le=MAX_HISTORY_LIMIT,
            description="Most messages returned",
        ),
    ] = 100,
) -> Response:
    """Buffered messages of one person (the last 10 minutes by default), oldest first.

    With ``since``: the first ``limit`` messages after it (page on with ``since`` = the last
    seq received, while ``more`` is true); ``missed`` counts those no longer buffered.
    Without: the newest ``limit`` messages.
    """
    buffer = ctx.hub.history(person)
    messages = buffer.after(since, limit) if buffer is not None else []
    info = ctx.hub.replay_info(person, since)
    more = False
    if buffer is not None and since is not None:
        more = buffer.count_after(since) > len(messages)
    head: dict[str, Any] = {
        "person_id": person,
        "since": since,
        "count": len(messages),
        "oldest_seq": buffer.oldest_seq if buffer is not None else None,
        "latest_seq": info.latest_seq,
        "missed": info.missed,
        "more": more,
    }
    # The messages are already JSON: splice them in rather than decoding and re-encoding.
    body = orjson.dumps(head)[:-1] + b',"messages":[' + b",".join(m.payload for m in messages)
    return Response(content=body + b"]}", media_type=_JSON)


_WS_DOC = f"""Upgrade this URL to a WebSocket for the live stream (a plain GET answers 426).

**Query parameters**: `person` (person id, default person if omitted), `since` (replay the
buffered messages with seq > since, then go live, with no gap and no duplicate), `token` (when
the server requires one; or the `Authorization: Bearer` header).

**Server to client** (JSON text, schema version {SCHEMA_VERSION}, see GET /schema/messages):
first `{{"type": "connected", "message": "Connected to heartbeat stream", "state", "base_bpm",
"person_id", "schema_version", "tick_hz", "latest_seq", "since", "replayed", "missed"}}`, then
one `{{"type": "heartbeat", ...}}` per tick (2 Hz by default); `{{"type": "pong"}}` answers a
text `ping`.

**Client to server**: only `ping` (other messages are ignored; over 4 KiB closes with 1009).
The server never waits for the client to send anything.

**Close codes**: 1008 missing/wrong token, unknown person, bad `since`, or a client too slow to
keep up (its send buffer overflowed); 1013 too many clients; 1001 server shutting down;
1000 the person was removed.
"""


@router.get(
    "/ws/heartbeat",
    status_code=426,
    responses={426: {"model": None, "description": "Use a WebSocket client"}},
    summary="WebSocket stream (documentation)",
    description=_WS_DOC,
)
async def websocket_doc() -> Response:
    """Plain HTTP on the WebSocket URL: explain how to connect."""
    body = {
        "error": "Upgrade Required",
        "message": "Connect with a WebSocket client to ws://HOST/ws/heartbeat (see /docs)",
    }
    return Response(
        orjson.dumps(body), status_code=426, media_type=_JSON, headers={"Upgrade": "websocket"}
    )
