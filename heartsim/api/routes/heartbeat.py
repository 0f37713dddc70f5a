"""Heartbeat data: the latest sample, the history, the stream's documentation and schema."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from heartsim.api.context import Ctx, PersonParam, context_of, read_guard
from heartsim.api.errors import ApiError, error_response, error_responses
from heartsim.api.ws import Refusal, admit
from heartsim.hub import resume_after
from heartsim.schema import (
    MAX_EPOCH_LENGTH,
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
    epoch: Annotated[
        str | None,
        Query(
            max_length=MAX_EPOCH_LENGTH,
            description="The epoch ``since`` belongs to; if it is not this run's (the server "
            "restarted), ``since`` is ignored and reading starts at the oldest buffered message",
        ),
    ] = None,
) -> Response:
    """Buffered messages of one person (the last 10 minutes by default), oldest first.

    With ``since``: the first ``limit`` messages after it (page on with ``since`` = the last
    seq received, while ``more`` is true); ``missed`` counts those no longer buffered.
    Without: the newest ``limit`` messages.
    """
    since, restarted = resume_after(since, epoch, ctx.engine.epoch)
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
        "epoch": ctx.engine.epoch,
        "restarted": restarted,
    }
    # The messages are already JSON: splice them in rather than decoding and re-encoding.
    body = orjson.dumps(head)[:-1] + b',"messages":[' + b",".join(m.payload for m in messages)
    return Response(content=body + b"]}", media_type=_JSON)


_WS_DOC = f"""Upgrade this URL to a WebSocket for the live stream. A plain GET runs the handshake's
checks and answers their error (what a browser's WebSocket API cannot show), or 426 when a
handshake would be accepted.

**Query parameters**: `person` (person id, default person if omitted), `since` (replay the
buffered messages with seq > since, then go live, with no gap and no duplicate), `epoch` (the
`epoch` of the connected message that `since` came from: if the server has restarted since,
its seq numbering is new, so `since` is ignored, the replay starts at the oldest buffered
message of the new run and the connected message says `"restarted": true`).

**Token** (when the server requires one): `Authorization: Bearer TOKEN`; browsers offer the
subprotocols `heartsim` and `heartsim.token.<base64url(TOKEN)>` (the server selects
`heartsim`); `?token=TOKEN` still works but puts the secret in URLs.

**Refused handshakes** get an HTTP error with the usual JSON body: 400 unknown `Host`, 403
foreign `Origin`, 429 too many handshakes from this address (`Retry-After`), 401 missing or
wrong token, 404 unknown person, 422 bad `since`, 503 too many clients (`Retry-After`).

**Server to client** (JSON text, schema version {SCHEMA_VERSION}, see GET /schema/messages):
first `{{"type": "connected", "message": "Connected to heartbeat stream", "state", "base_bpm",
"person_id", "schema_version", "tick_hz", "latest_seq", "since", "replayed", "missed", "epoch",
"restarted"}}`, then
one `{{"type": "heartbeat", ...}}` per tick (2 Hz by default); `{{"type": "pong"}}` answers a
text `ping`.

**Client to server**: only `ping` (other messages are ignored; over 4 KiB closes with 1009).
The server never waits for the client to send anything.

**Close codes**, one per cause (counted in GET /health `clients_dropped_by_cause`): 1008 too
slow to keep up (its send buffer overflowed), 1011 no answer to the protocol-level ping in
time (keepalive), 1009 message too big; 1000 the person was removed; 1001 server shutting down.
"""


@router.get(
    "/ws/heartbeat",
    status_code=426,
    responses={
        426: {"model": None, "description": "A WebSocket handshake would be accepted"},
        **error_responses(
            401,
            403,
            404,
            422,
            503,
            descriptions={
                403: "A browser page on an origin other than this server or --cors-origin",
                404: "Unknown person",
                422: "since is not an integer >= 0",
                503: "Too many clients; retry after Retry-After seconds",
            },
        ),
    },
    summary="WebSocket stream (documentation and handshake check)",
    description=_WS_DOC,
)
async def websocket_doc(request: Request) -> Response:
    """Plain HTTP on the WebSocket URL: the handshake's refusal, or how to connect."""
    admission = admit(request, context_of(request), handshake=False)
    if isinstance(admission, Refusal):
        return error_response(admission.error)
    body = {
        "error": "Upgrade Required",
        "message": "Connect with a WebSocket client to ws://HOST/ws/heartbeat (see /docs)",
    }
    return Response(
        orjson.dumps(body), status_code=426, media_type=_JSON, headers={"Upgrade": "websocket"}
    )
