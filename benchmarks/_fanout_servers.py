"""The two baseline servers of ``bench_fanout.py``, each run in its own process.

``python benchmarks/_fanout_servers.py original|plain --tick-hz HZ [--port 0]`` binds
127.0.0.1, prints ``PORT <n>`` on stdout and serves ``WS /ws/heartbeat`` (one heartbeat message
per tick, the same fields and about the same size as heartsim's, ``seq`` and ``ts`` included)
and ``GET /health`` (tick counters and lag) until SIGINT or SIGTERM.

``original``
    The design heartsim replaced, as the audit report shows it: a FastAPI app served by uvicorn
    (its default WebSocket implementation; compression is not negotiated because the load
    generator offers none), whose tick loop builds a pydantic model, then awaits
    ``client.send_json(model.dict())`` for every client in turn, then sleeps one period.
    (``model_dump()`` is pydantic 2's name for ``.dict()``; the deprecated alias would only add
    a warning per call.) Each client thus costs a model dump, a JSON encoding and a framing, and
    the loop ticks late as soon as the sends take a noticeable part of a period.
``plain``
    The practical floor: a bare ``websockets`` server (``websockets.asyncio.server.serve``,
    compression off) that encodes each message once with orjson and pushes it with
    ``websockets.broadcast`` from a drift-free tick loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import orjson
import uvicorn
import websockets
from _fanout_load import raise_nofile
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

_CONNECTED = {
    "type": "connected",
    "message": "Connected to heartbeat stream",
    "state": "running",
    "base_bpm": 72.0,
}
_PONG = '{"type":"pong"}'


class HeartbeatData(BaseModel):
    """The heartbeat message, field for field heartsim's (so sizes match within a few bytes)."""

    type: str = "heartbeat"
    seq: int
    person_id: str = "p0"
    t: float
    timestamp: str
    ts: float
    bpm: int
    variability: float
    stress_level: float
    systolic: int
    diastolic: int
    state: str = "running"
    prediction: str | None = None
    confidence: float | None = None
    stress_score: float | None = None
    rr_ms: list[float]
    label: str = "rest"
    respiration_rate: float


def sample(seq: int, period_s: float, rng: random.Random) -> dict[str, Any]:
    """One heartbeat sample like heartsim's, stamped ``ts = time.time()`` (production time)."""
    now = time.time()
    bpm = 72 + rng.randint(-3, 3)
    return {
        "type": "heartbeat",
        "seq": seq,
        "person_id": "p0",
        "t": round(seq * period_s, 3),
        "timestamp": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        "ts": now,
        "bpm": bpm,
        "variability": round(rng.uniform(20.0, 30.0), 2),
        "stress_level": 0.0,
        "systolic": 120 + rng.randint(0, 8),
        "diastolic": 80 + rng.randint(0, 5),
        "state": "running",
        "prediction": None,
        "confidence": None,
        "stress_score": None,
        "rr_ms": [round(60000.0 / bpm + rng.uniform(-20.0, 20.0), 1)],
        "label": "rest",
        "respiration_rate": round(rng.uniform(14.0, 16.0), 1),
    }


class TickLog:
    """Tick counters and the lag of the recent ticks (ms), served at ``GET /health``."""

    def __init__(self, window: int = 1024) -> None:
        self.ticks = 0
        self.skipped = 0
        self.lags_ms: deque[float] = deque(maxlen=window)

    def record(self, lag_s: float) -> None:
        """Count one tick that fired ``lag_s`` seconds after it was due."""
        self.ticks += 1
        self.lags_ms.append(max(0.0, lag_s) * 1e3)

    def health(self, clients: int) -> dict[str, Any]:
        """The ``/health`` body."""
        lags = sorted(self.lags_ms)
        p99 = lags[max(0, math.ceil(0.99 * len(lags)) - 1)] if lags else 0.0
        return {
            "status": "healthy",
            "websocket_clients": clients,
            "ticks": self.ticks,
            "ticks_skipped": self.skipped,
            "tick_lag_ms": {"p99": round(p99, 3), "max": round(lags[-1] if lags else 0.0, 3)},
        }


# ----- (a) the original design ---------------------------------------------------------------
def build_original_app(tick_hz: float) -> FastAPI:
    """The audit report's design: per tick a pydantic model, then a sequential ``send_json``."""
    period = 1.0 / tick_hz
    clients: list[WebSocket] = []
    ticks = TickLog()
    rng = random.Random(1)

    async def broadcast_to_websockets(data: HeartbeatData) -> None:
        disconnected = []
        for client in list(clients):
            try:
                await client.send_json(data.model_dump())
            except Exception:  # as in the original
                disconnected.append(client)
        for client in disconnected:
            if client in clients:
                clients.remove(client)

    async def simulation_loop() -> None:
        seq = 0
        previous: float | None = None
        while True:
            seq += 1
            now = time.monotonic()
            # The original sleeps one period after broadcasting, so each tick is "due" one
            # period after the previous one: its lag is how much longer the interval was.
            ticks.record(now - previous - period if previous is not None else 0.0)
            previous = now
            data = HeartbeatData(**sample(seq, period, rng))
            await broadcast_to_websockets(data)
            await asyncio.sleep(period)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(simulation_loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return ticks.health(len(clients))

    @app.websocket("/ws/heartbeat")
    async def websocket_heartbeat(websocket: WebSocket) -> None:
        await websocket.accept()
        clients.append(websocket)
        try:
            await websocket.send_json(_CONNECTED)
            while True:
                try:
                    message = await websocket.receive_text()
                    if message == "ping":
                        await websocket.send_json({"type": "pong"})
                except WebSocketDisconnect:
                    break
                except Exception:  # as in the original
                    break
        finally:
            if websocket in clients:
                clients.remove(websocket)

    return app


async def serve_original(sock: socket.socket, tick_hz: float) -> None:
    """Serve the original design on ``sock`` with uvicorn until SIGINT/SIGTERM."""
    config = uvicorn.Config(
        build_original_app(tick_hz),
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    await uvicorn.Server(config).serve(sockets=[sock])


# ----- (b) the plain websockets server ---------------------------------------------------------
async def serve_plain(sock: socket.socket, tick_hz: float) -> None:
    """Serve encode-once + ``websockets.broadcast`` on ``sock`` until SIGINT/SIGTERM."""
    period = 1.0 / tick_hz
    clients: set[ServerConnection] = set()
    ticks = TickLog()
    rng = random.Random(1)
    connected = json.dumps(_CONNECTED)

    async def handler(connection: ServerConnection) -> None:
        clients.add(connection)
        try:
            await connection.send(connected)
            async for message in connection:
                if message == "ping":
                    await connection.send(_PONG)
        except websockets.ConnectionClosed:
            pass
        finally:
            clients.discard(connection)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/health":
            body = json.dumps(ticks.health(len(clients))).encode()
            headers = Headers([("Content-Type", "application/json")])
            return Response(HTTPStatus.OK.value, "OK", headers, body)
        return None

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        handler,
        sock=sock,
        backlog=4096,
        compression=None,
        process_request=process_request,
    ):
        anchor, k, seq = loop.time(), 0, 0
        while not stop.is_set():
            k += 1
            due = anchor + k * period
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, due - loop.time()))
                break
            lag = loop.time() - due
            ticks.record(lag)
            if lag >= period:  # skip ahead instead of bursting, like heartsim's runner
                late = int(lag // period)
                ticks.skipped += late
                k += late
            seq += 1
            websockets.broadcast(clients, orjson.dumps(sample(seq, period, rng)), text=True)


def main(argv: list[str] | None = None) -> int:
    """Bind, announce the port, serve until signalled."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("original", "plain"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tick-hz", type=float, default=2.0)
    parser.add_argument("--max-clients", type=int, default=10_000, help="sizes RLIMIT_NOFILE")
    args = parser.parse_args(argv)
    raise_nofile(args.max_clients + 256)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    runner = serve_original if args.kind == "original" else serve_plain
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner(sock, args.tick_hz))
    return 0


if __name__ == "__main__":
    sys.exit(main())
