"""The fallback delivery path (queue + ``send_text``) under a server whose transport we cannot use.

uvicorn's legacy ``websockets`` protocol hides its transport behind its own flow control, so the
app must fall back to :class:`~heartsim.api.ws.QueueSink`; the contract stays the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
import websockets
from fastapi import FastAPI

from heartsim import Engine
from heartsim.api import WebSocketSettings, create_app
from heartsim.api.ws import QueueSink

from .conftest import heartbeats, recv_json, wait_until
from .test_slow_clients import open_frozen_client

pytestmark = pytest.mark.filterwarnings("ignore:remove second argument:DeprecationWarning")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@pytest.fixture
async def legacy() -> AsyncIterator[tuple[str, FastAPI]]:
    """An app served by uvicorn's legacy ``websockets`` protocol; yields (ws url, app)."""
    engine = Engine(seed=5, tick_hz=20.0)
    app = create_app(engine, websocket=WebSocketSettings(queue_size=4, close_grace_s=0.5))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        ws="websockets",
        log_config=None,
        log_level="warning",
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy implementation is deprecated
        config.load()
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await wait_until(lambda: server.started)
    yield f"ws://127.0.0.1:{sock.getsockname()[1]}/ws/heartbeat", app
    server.should_exit = True
    await asyncio.wait_for(task, 10)


def sinks(app: FastAPI) -> list[Any]:
    hub = app.state.heartsim.hub
    return [s for subs in hub._subscribers.values() for s in subs.values()]


async def test_fallback_streams_the_same_messages(legacy: tuple[str, FastAPI]) -> None:
    url, app = legacy
    ctx = app.state.heartsim
    async with websockets.connect(url) as ws:
        assert (await recv_json(ws))["type"] == "connected"
        assert isinstance(sinks(app)[0], QueueSink)
        ctx.engine.start()
        first = await heartbeats(ws, 5)
        await ws.send("ping")
        rest = await heartbeats(ws, 3)
    seqs = [m["seq"] for m in first + rest]
    assert seqs == list(range(seqs[0], seqs[0] + 8))
    async with websockets.connect(f"{url}?since={seqs[-1]}") as ws:
        hello = await recv_json(ws)
        resumed = await heartbeats(ws, hello["replayed"] + 2)
    assert resumed[0]["seq"] == seqs[-1] + 1
    assert [m["seq"] for m in resumed] == list(range(seqs[-1] + 1, seqs[-1] + 1 + len(resumed)))


async def test_fallback_drops_a_frozen_client_only(legacy: tuple[str, FastAPI]) -> None:
    url, app = legacy
    hub = app.state.heartsim.hub
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    async with websockets.connect(url, max_size=None) as normal:
        await recv_json(normal)
        frozen = await open_frozen_client("127.0.0.1", port)
        try:
            await wait_until(lambda: len(sinks(app)) == 2)
            pad = "x" * 200_000  # big messages fill the frozen client's socket buffers fast
            received = 0
            for seq in range(1, 200):
                hub.publish([{"type": "heartbeat", "seq": seq, "person_id": "p0", "t": seq,
                              "pad": pad}])  # fmt: skip
                assert (await recv_json(normal, timeout=5))["seq"] == seq
                received += 1
                if hub.clients_dropped:
                    break
            assert hub.clients_dropped == 1 and received < 199
            hub.publish([{"type": "heartbeat", "seq": received + 1, "person_id": "p0",
                          "t": received + 1}])  # fmt: skip
            assert (await recv_json(normal))["seq"] == received + 1
        finally:
            frozen.close()
