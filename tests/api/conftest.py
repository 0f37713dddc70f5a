"""Fixtures: real heartsim servers (uvicorn on a free loopback port) and clients for them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import websockets

from heartsim.server import HeartsimServer

#: Fast ticks keep tests short wherever the cadence itself is not under test.
FAST_HZ = 20.0

ServerFactory = Callable[..., Awaitable[HeartsimServer]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    """Start servers on free ports (``port=0``) with the given settings; stops them afterwards."""
    servers: list[HeartsimServer] = []

    async def factory(**settings: Any) -> HeartsimServer:
        settings.setdefault("port", 0)
        settings.setdefault("tick_hz", FAST_HZ)
        settings.setdefault("seed", 7)
        server = HeartsimServer(**settings)
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await asyncio.wait_for(server.stop(), 10)


@pytest.fixture
async def server(make_server: ServerFactory) -> HeartsimServer:
    """A default server (one person, 20 Hz, not started)."""
    return await make_server()


@pytest.fixture
async def client(server: HeartsimServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``server``."""
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        yield http


async def recv_json(ws: websockets.ClientConnection, timeout: float = 3.0) -> dict[str, Any]:
    """The next message of ``ws``, decoded (fails after ``timeout`` s)."""
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def heartbeats(
    ws: websockets.ClientConnection, n: int, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """The next ``n`` heartbeat messages of ``ws`` (other types skipped)."""
    out: list[dict[str, Any]] = []

    async def collect() -> None:
        while len(out) < n:
            message = json.loads(await ws.recv())
            if message["type"] == "heartbeat":
                out.append(message)

    await asyncio.wait_for(collect(), timeout)
    return out


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` every 10 ms until true; fail after ``timeout`` s."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)
