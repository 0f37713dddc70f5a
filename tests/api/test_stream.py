"""WS /ws/heartbeat against a real server: handshake, messages, cadence, persons, resume."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from heartsim.api.ws import FrameSink
from heartsim.schema import ConnectedMessage, HeartbeatMessage, PongMessage, validate_message
from heartsim.server import WS_MAX_SIZE, HeartsimServer

from .conftest import ServerFactory, heartbeats, recv_json, wait_until


async def test_first_message_is_connected_then_heartbeats_that_match_the_schema(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    async with websockets.connect(server.ws_url) as ws:
        hello = await recv_json(ws)
        connected = ConnectedMessage.model_validate(hello)
        assert hello["message"] == "Connected to heartbeat stream"
        assert connected.state == "stopped" and connected.person_id == "p0"
        assert connected.base_bpm == server.engine.profile().resting_hr_bpm
        assert connected.schema_version == "1.1"
        await client.post("/simulation/start")
        messages = await heartbeats(ws, 30)
    for message in messages:
        assert isinstance(validate_message(message), HeartbeatMessage)
        assert isinstance(message["bpm"], int) and isinstance(message["systolic"], int)
        assert message["label"] in ("rest", "stress", "recovery")
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + 30))
    rr_ms = [rr for m in messages for rr in m["rr_ms"]]
    assert 1 <= len(rr_ms) <= 4  # 30 messages at 20 Hz: 1.5 s of beats
    assert all(300 < rr < 2000 for rr in rr_ms)


async def test_the_server_uses_the_direct_frame_path(server: HeartsimServer) -> None:
    async with websockets.connect(server.ws_url) as ws:
        await recv_json(ws)
        await wait_until(lambda: server.hub.subscriber_count("p0") == 1)
        (sink,) = server.hub._subscribers["p0"].values()
        assert isinstance(sink, FrameSink)


async def test_ping_gets_pong_and_other_text_is_ignored(server: HeartsimServer) -> None:
    async with websockets.connect(server.ws_url) as ws:
        await recv_json(ws)
        await ws.send("hello")
        await ws.send("ping")
        assert PongMessage.model_validate(await recv_json(ws)).type == "pong"
        await ws.send('{"type": "ping"}')
        assert await recv_json(ws) == {"type": "pong"}


async def test_oversized_inbound_messages_close_the_connection(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    # Over the app's 4096 bytes, and over the protocol's frame limit (WS_MAX_SIZE), which
    # uvicorn enforces before the app sees the message: both counted.
    for size in (10_000, WS_MAX_SIZE + 1):
        async with websockets.connect(server.ws_url) as ws:
            await recv_json(ws)
            await ws.send("x" * size)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 3)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, size
    await wait_until(lambda: server.app.state.heartsim.websocket_clients == 0)
    health = (await client.get("/health")).json()
    assert health["clients_dropped"] == 2
    assert health["clients_dropped_by_cause"] == {"slow": 0, "keepalive": 0, "too_big": 2}


async def test_stream_never_waits_for_the_client_to_send(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    # The audit's bug: a handler blocked on receive_text() never forwarded heartbeats.
    await client.post("/simulation/start")
    async with websockets.connect(server.ws_url) as ws:
        await recv_json(ws)
        assert len(await heartbeats(ws, 5, timeout=2.0)) == 5


async def test_cadence_is_2_hz_at_tick_hz_2(make_server: ServerFactory) -> None:
    server = await make_server(tick_hz=2.0, autostart=True)
    async with websockets.connect(server.ws_url) as ws:
        await recv_json(ws)
        await heartbeats(ws, 1)
        arrivals, messages = [], []
        for _ in range(6):
            messages += await heartbeats(ws, 1, timeout=2.0)
            arrivals.append(time.monotonic())
    # Each message is one 0.5 s period of simulated time (a tick more than a period late would
    # skip ahead); on the wall clock the 5 periods take 2.5 s, give or take a busy machine's
    # hiccup. Drift and jitter are checked exactly in test_runner.py, measured in benchmarks/.
    steps = [b["t"] - a["t"] for a, b in itertools.pairwise(messages)]
    assert steps == pytest.approx([0.5] * 5), steps
    assert 2.25 < arrivals[-1] - arrivals[0] < 2.75, arrivals


async def test_each_person_has_its_own_stream(make_server: ServerFactory) -> None:
    server = await make_server(persons=3, autostart=True)
    received = {}
    for person in ("p1", "p2"):
        async with websockets.connect(f"{server.ws_url}?person={person}") as ws:
            assert (await recv_json(ws))["person_id"] == person
            received[person] = await heartbeats(ws, 5)
    for person, messages in received.items():
        assert {m["person_id"] for m in messages} == {person}
        seqs = [m["seq"] for m in messages]
        assert seqs == sorted(seqs) and len(set(seqs)) == 5
    async with websockets.connect(server.ws_url) as ws:  # no ?person=: the default person
        assert (await recv_json(ws))["person_id"] == "p0"
        assert {m["person_id"] for m in await heartbeats(ws, 3)} == {"p0"}


async def test_unknown_person_or_bad_since_refuses_the_handshake(server: HeartsimServer) -> None:
    for query, status in (("person=nobody", 404), ("since=abc", 422), ("since=-3", 422)):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(f"{server.ws_url}?{query}"):
                pass
        response = refused.value.response
        assert response.status_code == status
        assert query.split("=")[1] in json.loads(response.body)["message"]


async def test_resume_after_reconnect_has_no_gap_and_no_duplicate(
    make_server: ServerFactory,
) -> None:
    server = await make_server(autostart=True)
    async with websockets.connect(server.ws_url) as ws:
        await recv_json(ws)
        first = await heartbeats(ws, 5)
    last_seen = first[-1]["seq"]
    # Away for a while: messages keep being produced.
    await wait_until(lambda: server.hub.latest("p0").seq >= last_seen + 8)
    async with websockets.connect(f"{server.ws_url}?since={last_seen}") as ws:
        hello = await recv_json(ws)
        assert hello["since"] == last_seen and hello["missed"] == 0
        assert hello["replayed"] >= 8
        assert hello["latest_seq"] == last_seen + hello["replayed"]
        second = await heartbeats(ws, hello["replayed"] + 10)
    seqs = [m["seq"] for m in first + second]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


class _NONE:
    seq = 0


async def test_resume_reports_messages_no_longer_buffered(make_server: ServerFactory) -> None:
    server = await make_server(autostart=True)
    server.hub.max_history = 5  # applies to histories created from now on
    server.hub._histories.clear()
    await wait_until(lambda: (server.hub.latest("p0") or _NONE).seq >= 15)
    oldest = server.hub.history("p0").oldest_seq
    async with websockets.connect(f"{server.ws_url}?since={oldest - 4}") as ws:
        hello = await recv_json(ws)
        replay = await heartbeats(ws, hello["replayed"])
    assert len(server.hub.history("p0")) == 5
    assert hello["missed"] >= 3
    assert replay[0]["seq"] == hello["since"] + hello["missed"] + 1


async def test_removing_a_person_closes_its_streams(make_server: ServerFactory) -> None:
    server = await make_server(persons=2, autostart=True)
    async with (
        websockets.connect(f"{server.ws_url}?person=p1") as ws,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        await recv_json(ws)
        await http.delete("/persons/p1")
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(100):
                await asyncio.wait_for(ws.recv(), 3)
    assert closed.value.rcvd.code == 1000 and "removed" in closed.value.rcvd.reason


async def test_clients_are_counted_in_health(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    async with websockets.connect(server.ws_url) as a, websockets.connect(server.ws_url) as b:
        await recv_json(a)
        await recv_json(b)
        assert (await client.get("/health")).json()["websocket_clients"] == 2
    await wait_until(lambda: server.app.state.heartsim.websocket_clients == 0)
    assert server.hub.subscriber_count() == 0


async def test_server_stop_closes_streams_with_going_away(make_server: ServerFactory) -> None:
    server = await make_server(autostart=True)
    async with websockets.connect(server.ws_url) as ws:
        await recv_json(ws)
        started = time.monotonic()
        await server.stop()
        assert time.monotonic() - started < 2.0
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(1000):
                await asyncio.wait_for(ws.recv(), 3)
    assert closed.value.rcvd.code in (1001, 1012)


async def test_resuming_with_another_runs_epoch_replays_this_run_instead_of_splicing(
    make_server: ServerFactory, client: httpx.AsyncClient
) -> None:
    server = await make_server(autostart=True)
    async with websockets.connect(server.ws_url) as ws:
        hello = await recv_json(ws)
        assert hello["epoch"] == server.engine.epoch and hello["restarted"] is False
    await wait_until(lambda: (server.hub.latest("p0") or _NONE).seq >= 12)
    # Same epoch: an ordinary resume.
    url = f"{server.ws_url}?since=10&epoch={server.engine.epoch}"
    async with websockets.connect(url) as ws:
        hello = await recv_json(ws)
        assert hello["restarted"] is False and hello["since"] == 10
        assert (await heartbeats(ws, 1))[0]["seq"] == 11
    # A seq from another run (the server restarted): not spliced at 10, replayed from the start.
    async with websockets.connect(f"{server.ws_url}?since=10&epoch=an-old-run") as ws:
        hello = await recv_json(ws)
        assert hello["restarted"] is True and hello["since"] == 0
        assert hello["epoch"] == server.engine.epoch
        assert (await heartbeats(ws, 1))[0]["seq"] == 1


async def test_history_carries_the_epoch_and_notices_a_restart(make_server: ServerFactory) -> None:
    server = await make_server(autostart=True)
    await wait_until(lambda: (server.hub.latest("p0") or _NONE).seq >= 6)
    async with httpx.AsyncClient(base_url=server.url) as http:
        page = (await http.get("/heartbeat/history", params={"since": 4})).json()
        assert page["epoch"] == server.engine.epoch and page["restarted"] is False
        assert page["messages"][0]["seq"] == 5
        mine = {"since": 4, "epoch": server.engine.epoch}
        assert (await http.get("/heartbeat/history", params=mine)).json()["restarted"] is False
        stale = {"since": 4, "epoch": "an-old-run"}
        page = (await http.get("/heartbeat/history", params=stale)).json()
        assert page["restarted"] is True and page["messages"][0]["seq"] == 1
        too_long = {"since": 4, "epoch": "x" * 65}
        assert (await http.get("/heartbeat/history", params=too_long)).status_code == 422
