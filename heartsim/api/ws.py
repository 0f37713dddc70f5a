"""``WS /ws/heartbeat``: the live stream, and how its frames reach the sockets.

Fan-out design
--------------
The hub hands every message to every subscriber synchronously (see :mod:`heartsim.hub`). For a
WebSocket client the subscriber is one of two sinks:

:class:`FrameSink` (fast path)
    The message's WebSocket frame was built once by the hub; the sink writes those same bytes
    straight to the client's asyncio transport. Per client and message this costs one
    ``get_write_buffer_size()`` check and one ``transport.write`` (usually a single ``send``
    syscall); no per-client JSON encoding, framing, task switch or ``await``. The transport's
    user-space write buffer *is* the client's bounded queue: once it holds more than
    ``client_buffer_bytes`` (the kernel socket buffer, capped with ``SO_SNDBUF``, is already
    full), the client is too slow and the hub disconnects it (close 1008).

    Why this is sound with uvicorn's ``websockets-sansio`` protocol (``uvicorn/protocols/
    websockets/websockets_sansio_impl.py``, the default ``ws="auto"`` choice when
    ``websockets`` is installed): its ``send()`` frames each ASGI message with the sans-I/O
    ``websockets.ServerProtocol`` and writes the bytes to ``self.transport`` synchronously.
    That protocol keeps no per-frame state for outgoing unfragmented data frames (only the
    connection state, checked here through ``close_sent``/``is_closing()``), so writing an
    identical frame ourselves is indistinguishable on the wire. All writes happen on the
    loop's thread, each whole frame in one ``write``, so frames never interleave. Server
    frames are unmasked, hence the same bytes suit every client. Compression is off
    (``ws_per_message_deflate=False``); even where a client negotiated permessage-deflate,
    an uncompressed message (RSV1 clear) remains valid (RFC 7692 §6).

    Closing stays on uvicorn's public path (``await websocket.close()``), so its state machine
    (``close_sent``, close timer, shutdown) remains consistent. That ``send()`` first awaits
    the protocol's ``writable`` event, which uvicorn clears when the transport's buffer passes
    its high-water mark; the sink raises that mark above its own bound, so closing a slow
    client never waits for the client.

:class:`QueueSink` (fallback)
    When the transport cannot be reached (another server or protocol implementation), a
    bounded in-memory queue and a sender task per client use ``await websocket.send_text``.
    A full queue means too slow, as above.

The protocol object is found by :class:`TransportProbe`, an ASGI middleware that records
``send.__self__`` (uvicorn passes its bound ``send`` method) before any other layer wraps it,
and that dispatches the stream itself, ahead of Starlette's middleware and router.

Admission
---------
Every check happens before the handshake is accepted; a refused handshake gets an HTTP error
response (the ASGI WebSocket denial-response extension) with the API's JSON error body, so
clients, proxies and browser developer tools see why. In order:

====  ==================  =======================================================
HTTP  cause (counted)     when
====  ==================  =======================================================
400   (hosts_refused)     ``Host`` is not a name of this server (``HostGuard``)
403   ``origin``          a browser page on an origin other than this server or
                          ``--cors-origin``
429   ``rate_limited``    too many handshakes from this client address
                          (``Retry-After``)
401   ``unauthorized``    missing or wrong token (``WWW-Authenticate: Bearer``)
404   ``unknown_person``  ``?person=`` does not exist
422   ``bad_since``       ``?since=`` is not an integer in range
503   ``capacity``        ``max_clients`` connections already (``Retry-After``)
====  ==================  =======================================================

Refusals are counted by cause (``/metrics``: ``heartsim_websocket_refused_total``; bad hosts
in ``heartsim_hosts_refused_total``, with HTTP requests). A plain
``GET /ws/heartbeat`` runs the same checks (rate limit aside) and answers the same error, or
426 when a handshake would be accepted: browsers, whose WebSocket API hides the status of a
refused handshake, learn the reason that way.

The token comes from ``Authorization: Bearer``, or, from browsers, the subprotocol
``heartsim.token.<base64url(TOKEN)>`` offered together with ``heartsim``: the server then
selects ``heartsim`` (never echoing the token), and the token stays out of URLs and logs.
``?token=`` still works.

Close codes
-----------
One code per cause; those that end a client for its behaviour are counted per cause in
``/health`` (``clients_dropped_by_cause``) and ``/metrics`` (``heartsim_clients_dropped_total``):

====  =============  ==============================================================
code  counted as     cause
====  =============  ==============================================================
1008  ``slow``       too slow: its send buffer overflowed (``client_buffer_bytes``)
1011  ``keepalive``  no answer to a protocol ping within ``ping_timeout_s`` (uvicorn's
                     keepalive; a frozen client often never reads the close frame)
1009  ``too_big``    sent a message over ``max_message_bytes`` (one over the server's
                     ``WS_MAX_SIZE``, 64 KiB, is closed by uvicorn itself, also counted)
1000  --             its person was removed
1001  --             the server is shutting down (1012 when uvicorn shuts down alone)
====  =============  ==============================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from heartsim.api.context import AppContext, WebSocketSettings, context_of
from heartsim.api.errors import ApiError, unknown_person, validation_error
from heartsim.api.security import (
    SUBPROTOCOL,
    WS_PROTOCOL_SCOPE_KEY,
    deny,
    forbidden_origin,
    origin_allowed,
    presented_token,
    subprotocol_token,
    too_many_requests,
    unauthorized,
)
from heartsim.hub import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    Message,
    QueueSubscriber,
    Subscriber,
    resume_after,
)
from heartsim.schema import RANGES, SCHEMA_VERSION, describe_range

logger = logging.getLogger(__name__)

try:  # the one protocol implementation whose internals the fast path relies on
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - uvicorn or websockets missing
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

#: Where the stream is served (by :class:`TransportProbe`).
HEARTBEAT_PATH = "/ws/heartbeat"
CLOSE_MESSAGE_TOO_BIG = 1009
#: What uvicorn's keepalive closes with when a client does not answer its ping in time.
CLOSE_KEEPALIVE_TIMEOUT = 1011
#: Causes of refused handshakes (:func:`admit`), in the order they are checked.
REFUSAL_CAUSES = (
    "origin", "rate_limited", "unauthorized", "unknown_person", "bad_since", "capacity"
)  # fmt: skip
#: Seconds a client refused for capacity is asked to wait (``Retry-After``).
_CAPACITY_RETRY_S = 5
_PONG = b'{"type":"pong"}'
#: Slack above the slow-client bound for uvicorn's own high-water mark (see module docstring).
_HIGH_WATER_SLACK = 1 << 20


class TransportProbe:
    """Outermost ASGI middleware of the app: records the server's WebSocket protocol object in
    the scope, and serves ``/ws/heartbeat`` itself.

    Dispatching the stream here, before Starlette's error and exception middleware and its
    router, spares every handshake their per-connection work and objects; it matters when
    thousands of clients connect at once. Other scopes pass through unchanged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[WS_PROTOCOL_SCOPE_KEY] = getattr(send, "__self__", None)
            if _route_path(scope) == HEARTBEAT_PATH:
                await heartbeat_socket(WebSocket(scope, receive, send))
                return
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The scope's path below the app's ``root_path`` (set when served under a prefix)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _fast_transport(websocket: WebSocket) -> asyncio.Transport | None:
    """The transport frames can be written to directly, or ``None`` (use the fallback)."""
    protocol = websocket.scope.get(WS_PROTOCOL_SCOPE_KEY)
    if WebSocketsSansIOProtocol is None or not isinstance(protocol, WebSocketsSansIOProtocol):
        return None
    extensions = getattr(protocol.conn, "extensions", None)
    if extensions is None or any(ext.name != "permessage-deflate" for ext in extensions):
        return None
    transport = protocol.transport
    if transport is None or transport.is_closing() or protocol.close_sent:
        return None
    return transport


class FrameSink(Subscriber):
    """Fast path: writes the hub's pre-built frames directly to the client's transport.

    Parameters
    ----------
    person_id
        Whose messages.
    transport
        The client connection's asyncio transport.
    limit_bytes
        Most bytes allowed in the transport's write buffer before the client counts as too slow.
    """

    def __init__(self, person_id: str, transport: asyncio.Transport, limit_bytes: int) -> None:
        super().__init__(person_id)
        self.transport = transport
        self._base = limit_bytes
        self._limit = limit_bytes
        self._raise_high_water()

    def _raise_high_water(self) -> None:
        self.transport.set_write_buffer_limits(high=self._limit + _HIGH_WATER_SLACK)

    def deliver(self, message: Message) -> bool:
        transport = self.transport
        if transport.is_closing():
            if transport.get_write_buffer_size() > 0 and not self.closed:
                # Closed under us (uvicorn's keepalive timeout) while the peer reads nothing:
                # asyncio waits forever to flush. End the subscription; the handler aborts it.
                self.close(CLOSE_GOING_AWAY, "connection closing")
            return True  # otherwise the client left; its handler unsubscribes it shortly
        size = transport.get_write_buffer_size()
        if size > self._limit:
            return False
        if self._limit != self._base and size <= self._base:
            self._limit = self._base  # a replay burst has drained
        transport.write(message.frame)
        return True

    def replay(self, messages: Sequence[Message]) -> None:
        self._limit = self._base + sum(len(message.frame) for message in messages)
        self._raise_high_water()
        for message in messages:
            self.transport.write(message.frame)

    def send_control(self, message: Message) -> bool:
        """Send a connected/pong message in order with the stream; ``False`` if too slow."""
        return self.deliver(message)

    def __repr__(self) -> str:
        peer = self.transport.get_extra_info("peername")
        return f"FrameSink(person_id={self.person_id!r}, peer={peer})"


class QueueSink(QueueSubscriber):
    """Fallback: a bounded queue drained by a task that awaits ``websocket.send_text``."""

    def __init__(self, person_id: str, websocket: WebSocket, maxsize: int) -> None:
        super().__init__(person_id, maxsize=maxsize)
        self.websocket = websocket

    def send_control(self, message: Message) -> bool:
        """Queue a connected/pong message in order with the stream; ``False`` if too slow."""
        return self.deliver(message)

    async def pump(self) -> None:
        """Send queued messages until the subscription closes or the client leaves."""
        async for message in self:
            await self.websocket.send_text(bytes(message.payload).decode())

    def __repr__(self) -> str:
        return f"QueueSink(person_id={self.person_id!r}, client={self.websocket.client})"


def _control(payload: dict[str, Any] | bytes) -> Message:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Message("", 0, 0.0, data)


def _tune_socket(transport: asyncio.Transport, settings: WebSocketSettings) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        # Each frame must leave at once: with Nagle, a frame written while the previous one is
        # unacknowledged waits for the peer's (possibly delayed, ~40 ms) ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if settings.socket_send_buffer_bytes is not None:
            size = settings.socket_send_buffer_bytes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError as exc:  # not fatal: only latency or stalled-client detection suffers
        logger.debug("could not tune the WebSocket socket: %s", exc)


async def heartbeat_socket(websocket: WebSocket) -> None:
    """The ``/ws/heartbeat`` endpoint (see the module docstring and API.md)."""
    ctx = context_of(websocket)
    admission = admit(websocket, ctx, handshake=True)
    if isinstance(admission, Refusal):
        ctx.ws_refused[admission.cause] += 1
        # The raw ASGI send: Starlette's WebSocket.send accepts denial responses only in newer
        # versions.
        await deny(websocket.scope, websocket.receive, websocket._send, admission.error)
        return
    person, since = admission
    ctx.websocket_clients += 1  # no await since admit() checked the cap: the cap holds
    try:
        await _serve(websocket, ctx, person, since)
    finally:
        ctx.websocket_clients -= 1


class Refusal:
    """Why a handshake is refused: the HTTP error to answer, and its counter's cause."""

    __slots__ = ("cause", "error")

    def __init__(self, cause: str, error: ApiError) -> None:
        self.cause = cause
        self.error = error


def admit(
    connection: HTTPConnection, ctx: AppContext, *, handshake: bool
) -> tuple[str, int | None] | Refusal:
    """``(person, since)`` if a stream may start, else the :class:`Refusal` (module docstring).

    ``handshake``: a real WebSocket handshake, which takes one from the client's connection
    budget; ``False`` for the plain-HTTP diagnosis at ``GET /ws/heartbeat``.
    """
    headers = connection.headers
    origin = headers.get("origin")
    if not origin_allowed(origin, headers.get("host"), ctx.cors_origins):
        return Refusal("origin", forbidden_origin(origin))
    if handshake and ctx.ws_connect_limiter is not None:
        client = connection.client.host if connection.client is not None else "unknown"
        wait_s = ctx.ws_connect_limiter.acquire(client)
        if wait_s > 0.0:
            return Refusal("rate_limited", too_many_requests(wait_s, "WebSocket connections"))
    params = connection.query_params
    offered = connection.scope.get("subprotocols", ())
    token = presented_token(
        headers.get("authorization"), params.get("token"), subprotocol_token(offered)
    )
    if not ctx.auth.accepts(token):
        return Refusal("unauthorized", unauthorized())
    person = params.get("person")
    if person is None:
        person = ctx.engine.default_person
    else:
        try:
            ctx.engine.profile(person)
        except (ValueError, KeyError):
            return Refusal("unknown_person", unknown_person(person[:64], ctx.engine.person_ids))
    since = None
    since_text = params.get("since")
    if since_text is not None:
        low, high = RANGES["since"]
        try:
            since = int(since_text)
        except ValueError:
            since = None
        if since is None or not low <= since <= high:
            message = f"since must be {describe_range('since')}, got {since_text[:32]!r}"
            return Refusal("bad_since", validation_error("since", message))
    if ctx.websocket_clients >= ctx.max_clients:
        return Refusal(
            "capacity",
            ApiError(
                503,
                "Too many clients",
                f"This server streams to at most {ctx.max_clients} clients; retry later",
                headers={"Retry-After": str(_CAPACITY_RETRY_S)},
            ),
        )
    return person, since


def clients_dropped_by_cause(ctx: AppContext) -> dict[str, int]:
    """Connections the server ended because of the client, by cause (module docstring)."""
    return {
        "slow": ctx.hub.clients_dropped,
        "keepalive": ctx.ws_dropped["keepalive"],
        "too_big": ctx.ws_dropped["too_big"],
    }


async def _serve(websocket: WebSocket, ctx: AppContext, person: str, since: int | None) -> None:
    offered = websocket.scope.get("subprotocols", ())
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)

    transport = _fast_transport(websocket)
    sink: FrameSink | QueueSink
    if transport is not None:
        _tune_socket(transport, ctx.ws)
        sink = FrameSink(person, transport, ctx.ws.client_buffer_bytes)
    else:
        sink = QueueSink(person, websocket, ctx.ws.queue_size)

    # From here to subscribe() nothing awaits: the connected message, the replay and the live
    # stream reach the client in this order, with no message missed or repeated in between.
    since, restarted = resume_after(since, websocket.query_params.get("epoch"), ctx.engine.epoch)
    preview = ctx.hub.replay_info(person, since)
    connected = {
        "type": "connected",
        "message": "Connected to heartbeat stream",
        "state": ctx.engine.state.value,
        "base_bpm": ctx.engine.profile(person).resting_hr_bpm,
        "person_id": person,
        "schema_version": SCHEMA_VERSION,
        "tick_hz": ctx.engine.tick_hz,
        "latest_seq": preview.latest_seq,
        "since": since,
        "replayed": preview.replayed,
        "missed": preview.missed,
        "epoch": ctx.engine.epoch,
        "restarted": restarted,
    }
    sink.send_control(_control(connected))
    ctx.hub.subscribe(sink, since=since)

    tasks = [
        asyncio.ensure_future(_read(websocket, sink, ctx.ws.max_message_bytes)),
        asyncio.ensure_future(sink.wait_closed()),
    ]
    if isinstance(sink, QueueSink):
        tasks.append(asyncio.ensure_future(sink.pump()))
    close: tuple[int, str] | None = None
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[0] in done and not tasks[0].cancelled() and tasks[0].exception() is None:
            close = tasks[0].result()
    finally:
        ctx.hub.unsubscribe(sink)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if sink.close_code is not None:
        close = (sink.close_code, sink.close_reason)
    protocol_close = _protocol_close_code(websocket)
    if (close is not None and close[0] == CLOSE_MESSAGE_TOO_BIG) or (
        protocol_close == CLOSE_MESSAGE_TOO_BIG  # a frame over WS_MAX_SIZE, refused by uvicorn
    ):
        ctx.ws_dropped["too_big"] += 1
    elif protocol_close == CLOSE_KEEPALIVE_TIMEOUT:
        ctx.ws_dropped["keepalive"] += 1
        logger.info("client %s closed by the keepalive (no pong in time)", websocket.client)
    if close is not None:
        await _close(websocket, transport, close, ctx.ws.close_grace_s)


def _protocol_close_code(websocket: WebSocket) -> int | None:
    """The close code uvicorn's protocol sent on its own, if it ended this connection: 1011
    (its keepalive: no pong in time) or 1009 (a frame over its size limit)."""
    conn = getattr(websocket.scope.get(WS_PROTOCOL_SCOPE_KEY), "conn", None)
    sent = getattr(conn, "close_sent", None)
    return getattr(sent, "code", None)


async def _read(
    websocket: WebSocket, sink: FrameSink | QueueSink, max_bytes: int
) -> tuple[int, str] | None:
    """Consume inbound messages (answering ``ping``) until the client leaves.

    Returns a close ``(code, reason)`` if the client misbehaves, ``None`` if it disconnected.
    """
    while True:
        event = await websocket.receive()
        if event["type"] == "websocket.disconnect":
            return None
        text = event.get("text")
        data = text if text is not None else event.get("bytes") or b""
        if len(data) > max_bytes:
            return CLOSE_MESSAGE_TOO_BIG, f"message too big (max {max_bytes} bytes)"
        if text is not None and _is_ping(text) and not sink.send_control(_control(_PONG)):
            return CLOSE_POLICY_VIOLATION, "too slow: send buffer overflow"


def _is_ping(text: str) -> bool:
    text = text.strip()
    if text == "ping":
        return True
    if text.startswith("{"):
        try:
            return orjson.loads(text).get("type") == "ping"
        except (orjson.JSONDecodeError, AttributeError):
            return False
    return False


async def _close(
    websocket: WebSocket,
    transport: asyncio.Transport | None,
    close: tuple[int, str],
    grace_s: float,
) -> None:
    code, reason = close
    if websocket.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(websocket.close(code, reason[:120]), grace_s)
    if transport is not None:
        # A stalled client never reads our close frame nor lets the buffer flush; without an
        # abort its connection (and buffer) would linger until TCP gives up.
        asyncio.get_running_loop().call_later(grace_s, _abort_if_stalled, transport)


def _abort_if_stalled(transport: asyncio.Transport) -> None:
    # A non-empty buffer means the connection is still open (asyncio clears the buffer when
    # the connection is lost); not closing means the closing handshake never finished. After
    # a completed close, abort() must not run: on Python 3.11 it would report the lost
    # connection to the protocol a second time.
    if transport.get_write_buffer_size() > 0 or not transport.is_closing():
        transport.abort()
