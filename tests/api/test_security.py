"""Token auth, public reads, rate limit, origin check, CORS and the connection cap."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from heartsim.api import RateLimit
from heartsim.api.security import RateLimiter, TokenAuth, origin_allowed, presented_token

from .conftest import ServerFactory, recv_json

TOKEN = "s3cret-token"


async def closed_code(url: str, **connect: object) -> tuple[int, str]:
    """Connect, then return the close code and reason the server sends."""
    async with websockets.connect(url, **connect) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(10):
                await asyncio.wait_for(ws.recv(), 3)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_control_routes_need_the_token(make_server: ServerFactory) -> None:
    server = await make_server(token=TOKEN)
    async with httpx.AsyncClient(base_url=server.url) as http:
        missing = await http.post("/simulation/start")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert set(missing.json()) == {"error", "message"}
        wrong = await http.post("/simulation/start", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await http.post("/persons", json={})).status_code == 401
        assert (await http.delete("/persons/p0")).status_code == 401
        assert server.engine.state.value == "stopped"

        bearer = await http.post("/simulation/start", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        query = await http.post("/simulation/stop", params={"token": TOKEN})
        assert query.status_code == 200 and query.json()["state"] == "stopped"
        # Read routes stay public by default.
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/persons")).status_code == 200
        assert (await http.get("/heartbeat/history")).status_code == 200


async def test_websocket_needs_the_token(make_server: ServerFactory) -> None:
    server = await make_server(token=TOKEN)
    code, reason = await closed_code(server.ws_url)
    assert code == 1008 and "token" in reason
    code, _ = await closed_code(f"{server.ws_url}?token=wrong")
    assert code == 1008
    async with websockets.connect(f"{server.ws_url}?token={TOKEN}") as ws:
        assert (await recv_json(ws))["type"] == "connected"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
        assert (await recv_json(ws))["type"] == "connected"


async def test_private_reads_need_the_token_too(make_server: ServerFactory) -> None:
    server = await make_server(token=TOKEN, public_read=False)
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path in ("/heartbeat/current", "/heartbeat/history", "/persons", "/metrics",
                     "/simulation/config"):  # fmt: skip
            assert (await http.get(path)).status_code == 401, path
            assert (await http.get(path, params={"token": TOKEN})).status_code in (200, 404)
        assert (await http.get("/health")).status_code == 200  # liveness probes need no token
        assert (await http.get("/")).status_code == 200


async def test_control_routes_are_rate_limited_with_retry_after(make_server: ServerFactory) -> None:
    server = await make_server(rate_limit=RateLimit(per_s=1.0, burst=3))
    async with httpx.AsyncClient(base_url=server.url) as http:
        statuses = [(await http.post("/simulation/stop")).status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200]
        assert statuses[3:] == [429, 429]
        limited = await http.post("/simulation/start")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "retry after" in limited.json()["message"]
        assert server.engine.state.value == "stopped"  # the limited start did nothing
        assert (await http.get("/health")).status_code == 200  # reads are not limited
        assert "heartsim_rate_limited_total 3.0" in (await http.get("/metrics")).text


async def test_connection_cap_closes_with_1013(make_server: ServerFactory) -> None:
    server = await make_server(max_clients=2)
    async with websockets.connect(server.ws_url) as a, websockets.connect(server.ws_url) as b:
        await recv_json(a)
        await recv_json(b)
        code, reason = await closed_code(server.ws_url)
        assert code == 1013 and "too many" in reason
    # Capacity frees up when clients leave.
    async with websockets.connect(server.ws_url) as c:
        assert (await recv_json(c))["type"] == "connected"


async def test_cross_origin_control_needs_an_allowed_origin(make_server: ServerFactory) -> None:
    plain = await make_server()
    async with httpx.AsyncClient(base_url=plain.url) as http:
        evil = await http.post("/simulation/start", headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403
        same = await http.post("/simulation/start", headers={"Origin": plain.url})
        assert same.status_code == 200
        assert "access-control-allow-origin" not in same.headers  # CORS off by default

    allowed = "http://localhost:3000"
    server = await make_server(cors_origins=[allowed])
    async with httpx.AsyncClient(base_url=server.url) as http:
        ok = await http.post("/simulation/start", headers={"Origin": allowed})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == allowed
        preflight = await http.options(
            "/simulation/stop",
            headers={"Origin": allowed, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200


def test_token_comparison_and_extraction() -> None:
    auth = TokenAuth("abc")
    assert auth.accepts("abc") and not auth.accepts("abd") and not auth.accepts(None)
    assert TokenAuth(None).accepts(None)
    assert presented_token("Bearer abc", None) == "abc"
    assert presented_token("bearer  abc ", "zzz") == "abc"
    assert presented_token("Basic abc", "q") == "q"
    with pytest.raises(ValueError):
        TokenAuth("")


def test_rate_limiter_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimit(per_s=2.0, burst=2), max_keys=2, clock=lambda: now[0])
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == pytest.approx(0.5)
    now[0] = 0.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("b") == 0.0 and limiter.acquire("c") == 0.0
    assert len(limiter._buckets) == 2  # least recently seen client forgotten


def test_origin_rules() -> None:
    assert origin_allowed(None, "h:1", ())
    assert origin_allowed("http://h:1", "h:1", ())
    assert not origin_allowed("http://x:1", "h:1", ())
    assert origin_allowed("http://x:1", "h:1", ("http://x:1",))
