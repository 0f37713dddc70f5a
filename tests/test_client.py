"""heartsim.client against real servers (uvicorn on free loopback ports): async API, errors,
streaming with resume, collect, token auth, and the blocking twins outside any event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import logging
import re
import sys
import time
from typing import Any

import pandas as pd
import pytest
from api import conftest as api_conftest
from api.conftest import ServerFactory, wait_until

from heartsim import client as client_module
from heartsim.client import (
    HEARTBEAT_COLUMNS,
    TIMESTAMP_DTYPE,
    Client,
    HeartsimError,
    StreamRestartedError,
    messages_to_frame,
)
from heartsim.server import HeartsimServer

# The real-server fixtures of the API tests (tests/api/conftest.py), shared rather than copied.
make_server = api_conftest.make_server
server = api_conftest.server

#: The engine's fastest tick rate: streaming tests whose cadence does not matter run faster.
FAST_HZ = 50.0


def consecutive(seqs: list[int]) -> bool:
    """Whether ``seqs`` goes up by exactly one each time (no gap, no duplicate)."""
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def drop_stream_connections(server: HeartsimServer, how: str) -> None:
    """Drop every WebSocket client of ``server`` from the server side.

    ``"abort"`` resets the TCP connections (no close frame: what a network failure looks like);
    ``"going_away"`` closes every subscription with 1001, as a server shutting down does.
    """
    await wait_until(lambda: server.hub.subscriber_count() > 0)
    if how == "abort":
        for subscribers in server.hub._subscribers.values():
            for sink in subscribers.values():
                sink.transport.abort()  # type: ignore[attr-defined]
    else:
        server.hub.close_all()


# ----- REST ------------------------------------------------------------------------------------
async def test_health_persons_start_current_stop(make_server: ServerFactory) -> None:
    server = await make_server(persons=2)
    async with Client(server.url) as client:
        health = await client.health()
        assert health["status"] == "healthy" and health["simulation_state"] == "stopped"
        persons = await client.persons()
        assert persons["default_person"] == "p0"
        assert [p["person_id"] for p in persons["persons"]] == ["p0", "p1"]

        assert (await client.start())["state"] == "running"
        assert (await client.start())["message"] == "Simulation already running"
        await wait_until(lambda: server.hub.latest("p1") is not None)
        current = await client.current(person="p1")
        assert current["type"] == "heartbeat" and current["person_id"] == "p1"
        assert set(HEARTBEAT_COLUMNS) <= set(current)

        assert (await client.stop())["state"] == "stopped"
        assert (await client.health())["simulation_state"] == "stopped"


async def test_current_before_any_data_is_404_with_the_servers_message(
    server: HeartsimServer,
) -> None:
    async with Client(server.url) as client:
        with pytest.raises(HeartsimError) as info:
            await client.current()
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.status_code == 404 and err.error == "No data available"
    assert err.message == "Start simulation first using POST /simulation/start"
    assert "GET /heartbeat/current" in str(err)


async def test_control_errors_carry_status_field_and_server_message(
    server: HeartsimServer,
) -> None:
    async with Client(server.url) as client:
        with pytest.raises(HeartsimError) as info:
            await client.trigger_stress(0.8)
        assert info.value.status_code == 400
        assert "start it first" in info.value.message

        with pytest.raises(HeartsimError) as info:
            await client.set_baseline(300)
        err = info.value
        assert err.status_code == 422 and err.field == "bpm"
        assert "bpm" in err.message and "300" in err.message
        assert server.engine.profile().resting_hr_bpm != 300  # unchanged

        await client.start()
        with pytest.raises(HeartsimError) as info:
            await client.trigger_stress(2.0)
        assert info.value.status_code == 422 and info.value.field == "stress_level"

        episode = await client.trigger_stress(0.7, duration_s=20)
        assert episode["stress_level"] == pytest.approx(0.7)
        assert episode["duration_s"] == pytest.approx(20)
        baseline = await client.set_baseline(64)
        assert baseline["base_bpm"] == 64
        assert (await client.health())["base_bpm"] == 64


async def test_unknown_person_is_a_404_naming_it(server: HeartsimServer) -> None:
    async with Client(server.url) as client:
        with pytest.raises(HeartsimError, match="'nobody' is unknown") as info:
            await client.set_baseline(60, person="nobody")
    assert info.value.status_code == 404


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda c: c.set_baseline("fast"), "bpm"),
        (lambda c: c.set_baseline(True), "bpm"),
        (lambda c: c.trigger_stress(float("nan")), "level"),
        (lambda c: c.trigger_stress(0.5, duration_s="long"), "duration_s"),
        (lambda c: c.history(since=-1), "since"),
        (lambda c: c.history(limit=0), "limit"),
        (lambda c: c.current(person=""), "person"),
        (lambda c: c.collect(duration_s=0), "duration_s"),
        (lambda c: c.collect(duration_s=1, person=[]), "person"),
    ],
)
async def test_invalid_arguments_raise_value_error_naming_the_parameter(
    call: Any, parameter: str
) -> None:
    client = Client("http://127.0.0.1:9")  # never contacted
    with pytest.raises(ValueError, match=rf"^{parameter}\b"):
        await call(client)


def test_invalid_arguments_are_caught_before_any_connection() -> None:
    client = Client("http://127.0.0.1:9")
    with pytest.raises(ValueError, match=r"^since"):
        client.stream(since=-5)  # at call time, not at the first iteration
    with pytest.raises(ValueError, match=r"^limit"):
        client.sync.stream(limit=0)
    for kwargs, parameter in [
        ({"url": "ftp://host"}, "url"),
        ({"url": "127.0.0.1:8001"}, "url"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"token": ""}, "token"),
        ({"reconnect_attempts": -1}, "reconnect_attempts"),
    ]:
        with pytest.raises(ValueError, match=f"^{parameter}"):
            Client(**kwargs)


async def test_an_unreachable_server_is_a_clear_error() -> None:
    client = Client("http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(HeartsimError, match="cannot reach the heartsim server") as info:
        await client.health()
    assert info.value.status_code is None
    with pytest.raises(HeartsimError, match="cannot open the stream"):
        await anext(client.stream())


async def test_history_pages_through_the_buffer(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make_server(tick_hz=FAST_HZ)
    async with Client(server.url) as client:
        await client.start()
        live = [m async for m in client.stream(limit=30)]
        await client.stop()
        latest = server.hub.latest("p0")
        assert latest is not None

        everything = await client.history()
        seqs = [m["seq"] for m in everything]
        assert consecutive(seqs) and seqs[-1] == latest.seq
        assert {m["seq"] for m in live} <= set(seqs)

        newest = await client.history(limit=5)
        assert [m["seq"] for m in newest] == seqs[-5:]

        after = live[9]["seq"]
        monkeypatch.setattr(client_module, "_HISTORY_PAGE", 7)  # force several pages
        paged = await client.history(since=after)
        assert [m["seq"] for m in paged] == [s for s in seqs if s > after]
        first = await client.history(since=after, limit=10)
        assert [m["seq"] for m in first] == list(range(after + 1, after + 11))
        newest_paged = await client.history(limit=12)  # more than a page: paged, then the tail
        assert [m["seq"] for m in newest_paged] == seqs[-12:]


# ----- streaming -------------------------------------------------------------------------------
async def test_stream_yields_consecutive_heartbeats_up_to_limit(make_server: ServerFactory) -> None:
    server = await make_server(persons=2, tick_hz=FAST_HZ)
    async with Client(server.url) as client:
        await client.start()
        messages = [m async for m in client.stream(limit=25, person="p1")]
    assert len(messages) == 25
    assert all(m["type"] == "heartbeat" and m["person_id"] == "p1" for m in messages)
    assert consecutive([m["seq"] for m in messages])
    await wait_until(lambda: server.hub.subscriber_count() == 0)  # limit closed the socket


async def test_stream_since_replays_buffered_messages_first(make_server: ServerFactory) -> None:
    server = await make_server(tick_hz=FAST_HZ)
    async with Client(server.url) as client:
        await client.start()
        first = [m async for m in client.stream(limit=10)]
        await asyncio.sleep(0.3)  # more messages are produced meanwhile
        since = first[2]["seq"]
        replayed = [m async for m in client.stream(limit=20, since=since)]
    assert [m["seq"] for m in replayed] == list(range(since + 1, since + 21))


async def test_a_stream_stopped_after_a_long_replay_closes_at_once(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A replay longer than the client's receive queue (16 frames) stops the client reading, so
    # the server's close frame used to wait behind the queue until the close timeout. With a
    # one-minute close timeout, a regression hangs past the 10 s bound below.
    monkeypatch.setattr(client_module, "_CLOSE_TIMEOUT_S", 60.0)
    server = await make_server(tick_hz=FAST_HZ)
    async with Client(server.url) as client:
        await client.start()
        await wait_until(lambda: (server.engine.latest() or {}).get("seq", 0) >= 100)

        async def first_five() -> list[dict[str, Any]]:
            return [m async for m in client.stream(limit=5, since=0)]

        async def break_at_once() -> None:
            async with contextlib.aclosing(client.stream(since=0)) as stream:
                async for _ in stream:
                    break

        assert [m["seq"] for m in await asyncio.wait_for(first_five(), 10)] == [1, 2, 3, 4, 5]
        await asyncio.wait_for(break_at_once(), 10)
    await wait_until(lambda: server.hub.subscriber_count() == 0)


@pytest.mark.parametrize(("how", "close_code"), [("abort", 1006), ("going_away", 1001)])
async def test_stream_resumes_after_a_server_side_drop_without_gap_or_duplicate(
    make_server: ServerFactory, how: str, close_code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="heartsim.client")
    server = await make_server(tick_hz=FAST_HZ)
    # 0.2 s of backoff at 50 Hz: about ten messages are produced while disconnected.
    client = Client(server.url, reconnect_backoff_s=0.2)
    await client.start()
    received: list[dict[str, Any]] = []
    async with contextlib.aclosing(client.stream()) as stream:
        async for message in stream:
            received.append(message)
            if len(received) == 20:
                await drop_stream_connections(server, how)
            if len(received) == 60:
                break
    await client.aclose()
    assert consecutive([m["seq"] for m in received])
    assert f"dropped (close {close_code}" in caplog.text, caplog.text
    resumed = re.search(r"resumed after seq \d+ \((\d+) replayed\)", caplog.text)
    assert resumed is not None, caplog.text
    assert int(resumed.group(1)) >= 1  # the gap was filled by the server's replay


async def restart_on_the_same_port(
    make_server: ServerFactory, old: HeartsimServer, past_seq: int
) -> HeartsimServer:
    """Stop ``old`` and start a new server (a new run, same seed) on its port, running until
    its own seq passes ``past_seq``: what `kill` + `heartsim serve` again looks like."""
    port = old.port
    await old.stop()
    new = await make_server(port=port, tick_hz=FAST_HZ, autostart=True)
    await wait_until(lambda: (new.hub.latest("p0") or _NoMessage).seq > past_seq + 5)
    return new


class _NoMessage:
    seq = 0


async def test_a_restarted_server_is_marked_in_the_stream_never_spliced(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    old = await make_server(tick_hz=FAST_HZ, autostart=True)
    client = Client(old.url, reconnect_backoff_s=0.05)
    received: list[dict[str, Any]] = []
    async with contextlib.aclosing(client.stream()) as stream:
        async for message in stream:
            received.append(message)
            if len(received) == 10:
                new = await restart_on_the_same_port(make_server, old, message["seq"])
            if len(received) == 40:
                break
    await client.aclose()
    kinds = [m["type"] for m in received]
    cut = kinds.index("restart")
    assert kinds.count("restart") == 1
    marker, before, after = received[cut], received[:cut], received[cut + 1 :]
    assert consecutive([m["seq"] for m in before])
    assert marker["previous_epoch"] == old.engine.epoch and marker["epoch"] == new.engine.epoch
    assert marker["previous_seq"] == before[-1]["seq"] and marker["person_id"] == "p0"
    # The new run from its first message on, not from the old run's seq.
    assert [m["seq"] for m in after] == list(range(1, len(after) + 1))
    assert "the server restarted" in caplog.text


async def test_a_restart_raises_when_asked(make_server: ServerFactory) -> None:
    old = await make_server(tick_hz=FAST_HZ, autostart=True)
    client = Client(old.url, reconnect_backoff_s=0.05)
    seen: list[int] = []
    with pytest.raises(StreamRestartedError) as info:
        async for message in client.stream(on_restart="raise"):
            seen.append(message["seq"])
            if len(seen) == 5:
                new = await restart_on_the_same_port(make_server, old, message["seq"])
    await client.aclose()
    error = info.value
    assert (error.previous_epoch, error.epoch) == (old.engine.epoch, new.engine.epoch)
    assert error.previous_seq == seen[-1] and consecutive(seen)
    assert f"stream(since=0, epoch={new.engine.epoch!r})" in str(error)
    # Saved (epoch, seq) pairs resume later, and are checked against the run too.
    resumed = Client(new.url)
    first = await anext(resumed.stream(since=3, epoch=new.engine.epoch))
    assert first["seq"] == 4
    with pytest.raises(StreamRestartedError):
        await anext(resumed.stream(since=3, epoch=old.engine.epoch, on_restart="raise"))
    await resumed.aclose()


async def test_stream_gives_up_after_the_bounded_reconnections(make_server: ServerFactory) -> None:
    server = await make_server()
    client = Client(server.url, reconnect_attempts=2, reconnect_backoff_s=0.05)
    await client.start()
    stream = client.stream()
    seqs = [(await anext(stream))["seq"]]
    await server.stop()  # gone for good: every reconnection is refused
    started = time.monotonic()
    with pytest.raises(HeartsimError, match="2 reconnection attempts failed") as info:
        async for message in stream:  # what was already received, then the error
            seqs.append(message["seq"])
    assert time.monotonic() - started < 3
    assert consecutive(seqs)
    assert f"resume later with stream(since={seqs[-1]})" in str(info.value)
    await client.aclose()


async def test_a_refused_stream_is_not_retried(make_server: ServerFactory) -> None:
    server = await make_server(token="s3cret")
    started = time.monotonic()
    with pytest.raises(HeartsimError, match="HTTP 401: This server requires a token") as info:
        await anext(Client(server.url, token="wrong").stream())
    assert info.value.status_code == 401
    with pytest.raises(HeartsimError, match="HTTP 404: person 'nobody' is unknown") as info:
        await anext(Client(server.url, token="s3cret").stream(person="nobody"))
    assert info.value.status_code == 404
    assert time.monotonic() - started < 2  # no backoff spent on hopeless reconnections


# ----- collect ---------------------------------------------------------------------------------
async def test_collect_returns_a_tidy_frame_per_person(make_server: ServerFactory) -> None:
    server = await make_server(persons=2, tick_hz=20)
    async with Client(server.url) as client:
        await client.start()
        # A full collection of the test process's garbage can pause the loop for ~0.25 s and
        # skip ticks: collect it now, not during the timed second.
        gc.collect()
        frame = await client.collect(duration_s=1.0, person=["p0", "p1"])
        single = await client.collect(duration_s=0.5)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(HEARTBEAT_COLUMNS)
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert all(isinstance(rr, list) for rr in frame["rr_ms"])
    counts = frame.groupby("person_id").size()
    assert set(counts.index) == {"p0", "p1"}
    assert all(17 <= n <= 23 for n in counts), counts  # 1 s at 20 Hz
    for _, rows in frame.groupby("person_id"):
        assert consecutive(rows["seq"].tolist())
    assert set(single["person_id"]) == {"p0"} and 7 <= len(single) <= 13
    await wait_until(lambda: server.hub.subscriber_count() == 0)  # streams closed


def test_messages_to_frame_of_nothing_has_the_columns() -> None:
    frame = messages_to_frame([])
    assert frame.empty and list(frame.columns) == list(HEARTBEAT_COLUMNS)
    assert frame["timestamp"].dtype == TIMESTAMP_DTYPE


def test_timestamps_are_utc_nanoseconds_whatever_pandas_defaults_to() -> None:
    # pandas 3 parses strings at the coarsest unit that holds them (s, us); the frame does not.
    stamps = ["2025-01-01T00:00:00Z", "2025-01-01T01:00:00.5+01:00", "2025-01-01T00:00:01.25Z"]
    messages = [{"seq": i, "person_id": "p0", "timestamp": s} for i, s in enumerate(stamps)]
    frame = messages_to_frame(messages)
    assert frame["timestamp"].dtype == TIMESTAMP_DTYPE == "datetime64[ns, UTC]"
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2025-01-01T00:00:00Z"),
        pd.Timestamp("2025-01-01T00:00:00.5Z"),
        pd.Timestamp("2025-01-01T00:00:01.25Z"),
    ]


# ----- token -----------------------------------------------------------------------------------
async def test_token_is_sent_on_requests_and_the_stream(make_server: ServerFactory) -> None:
    server = await make_server(token="s3cret")
    async with Client(server.url) as anonymous:
        assert (await anonymous.health())["status"] == "healthy"  # public
        with pytest.raises(HeartsimError) as info:
            await anonymous.start()
        assert info.value.status_code == 401 and "token" in info.value.message
    async with Client(server.url, token="s3cret") as client:
        assert "s3cret" not in repr(client)
        assert (await client.start())["state"] == "running"
        messages = [m async for m in client.stream(limit=3)]
        assert len(messages) == 3


# ----- the blocking twins ----------------------------------------------------------------------
async def test_sync_twins_from_a_thread_without_event_loop(make_server: ServerFactory) -> None:
    server = await make_server(persons=2)

    def blocking_session() -> dict[str, Any]:
        with Client(server.url) as client:
            out: dict[str, Any] = {"health": client.sync.health()}
            out["persons"] = client.sync.persons()
            out["start"] = client.sync.start()
            out["stream"] = list(client.sync.stream(limit=10, person="p1"))
            out["current"] = client.sync.current()
            out["stress"] = client.sync.trigger_stress(0.6, duration_s=15)
            out["baseline"] = client.sync.set_baseline(70, person="p1")
            out["history"] = client.sync.history(limit=5)
            out["frame"] = client.sync.collect(duration_s=0.5)
            try:
                client.sync.set_baseline(300)
            except HeartsimError as exc:
                out["error"] = exc
            with pytest.raises(ValueError, match=r"^level"):
                client.sync.trigger_stress("high")
            early = client.sync.stream()
            out["early"] = next(early)
            early.close()  # closes the connection and the private loop
            out["stop"] = client.sync.stop()
        return out

    out = await asyncio.wait_for(asyncio.to_thread(blocking_session), 20)
    assert out["health"]["status"] == "healthy"
    assert len(out["persons"]["persons"]) == 2
    assert out["start"]["state"] == "running" and out["stop"]["state"] == "stopped"
    assert consecutive([m["seq"] for m in out["stream"]]) and len(out["stream"]) == 10
    assert {m["person_id"] for m in out["stream"]} == {"p1"}
    assert out["current"]["person_id"] == "p0"
    assert out["stress"]["stress_level"] == pytest.approx(0.6)
    assert out["baseline"]["base_bpm"] == 70
    assert len(out["history"]) == 5
    assert 7 <= len(out["frame"]) <= 13 and list(out["frame"].columns) == list(HEARTBEAT_COLUMNS)
    assert out["error"].status_code == 422 and out["error"].field == "bpm"
    assert out["early"]["type"] == "heartbeat"
    await wait_until(lambda: server.hub.subscriber_count() == 0)
    # No loop was running in that thread: nothing may have patched asyncio.
    assert not hasattr(asyncio, "_nest_patched")


_SCRIPT = """
import asyncio, json, sys
from heartsim.client import Client, HeartsimError

imported_nest = "nest_asyncio2" in sys.modules
client = Client(sys.argv[1])
out = {"health": client.sync.health()["status"], "start": client.sync.start()["state"]}
out["seqs"] = [m["seq"] for m in client.sync.stream(limit=5)]
out["rows"] = len(client.sync.collect(duration_s=0.5))
try:
    client.sync.set_baseline(300)
except HeartsimError as exc:
    out["error"] = [exc.status_code, exc.field]
out["stop"] = client.sync.stop()["state"]
out["nest_imported"] = imported_nest or "nest_asyncio2" in sys.modules
out["patched"] = hasattr(asyncio, "_nest_patched")
print(json.dumps(out))
"""


async def test_sync_twins_in_a_plain_script(server: HeartsimServer) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "always::ResourceWarning",  # a private loop or connection left open would show here
        "-c",
        _SCRIPT,
        server.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    assert out["health"] == "healthy" and out["start"] == "running" and out["stop"] == "stopped"
    assert consecutive(out["seqs"]) and len(out["seqs"]) == 5
    assert 7 <= out["rows"] <= 13
    assert out["error"] == [422, "bpm"]
    assert not out["nest_imported"] and not out["patched"]
    assert "ResourceWarning" not in stderr.decode(), stderr.decode()


# ----- parity with the API -----------------------------------------------------------------------
#: Every API operation and the Client method that calls it (and its blocking twin).
CLIENT_METHODS = {
    ("GET", "/health"): "health",
    ("GET", "/metrics"): "metrics",
    ("GET", "/schema/messages"): "message_schema",
    ("POST", "/simulation/start"): "start",
    ("POST", "/simulation/stop"): "stop",
    ("POST", "/simulation/pause"): "pause",
    ("POST", "/simulation/resume"): "resume",
    ("POST", "/simulation/trigger-stress"): "trigger_stress",
    ("POST", "/simulation/set-baseline"): "set_baseline",
    ("GET", "/simulation/config"): "config",
    ("POST", "/simulation/config"): "configure",
    ("GET", "/heartbeat/current"): "current",
    ("GET", "/heartbeat/history"): "history",
    ("GET", "/ws/heartbeat"): "stream",  # the route documents the WebSocket that stream() opens
    ("GET", "/persons"): "persons",
    ("POST", "/persons"): "add_person",
    ("GET", "/persons/{person_id}"): "person",
    ("PATCH", "/persons/{person_id}"): "update_person",
    ("DELETE", "/persons/{person_id}"): "remove_person",
    ("POST", "/predict"): "predict",
}
#: Operations a client has no use for, and why.
NOT_FOR_CLIENTS = {
    ("GET", "/"): "the dashboard page, for browsers",
    ("GET", "/docs"): "the API documentation page, for browsers",
    ("GET", "/redoc"): "the API documentation page, for browsers",
}


def test_every_api_operation_has_a_client_method_and_a_blocking_twin() -> None:
    from heartsim.api import create_app

    document = create_app().openapi()
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert operations - set(NOT_FOR_CLIENTS) == set(CLIENT_METHODS), (
        "a route without a Client method (or a method whose route is gone): "
        f"{sorted(operations ^ set(CLIENT_METHODS) - set(NOT_FOR_CLIENTS))}"
    )
    for name in CLIENT_METHODS.values():
        method, twin = getattr(Client, name), getattr(client_module.SyncClient, name)
        assert inspect.signature(method).parameters.keys() == (
            inspect.signature(twin).parameters.keys()
        ), name
        assert twin.__doc__ and f"Client.{name}" in twin.__doc__, name


async def test_pause_resume_config_and_person_methods_against_a_server(
    make_server: ServerFactory,
) -> None:
    server = await make_server(persons=1)
    async with Client(server.url) as client:
        await client.start()
        assert (await client.pause())["state"] == "paused"
        assert (await client.resume())["state"] == "running"
        config = await client.configure(tick_hz=10, spontaneous_stress_per_h=2)
        assert config["tick_hz"] == 10 and config["spontaneous_stress_per_h"] == 2
        assert await client.config() == config
        with pytest.raises(HeartsimError) as info:
            await client.configure(tick_hz=500)
        assert info.value.status_code == 422 and info.value.field == "tick_hz"

        added = await client.add_person("ann.1", resting_hr_bpm=58)
        assert added["person_id"] == "ann.1" and added["person"]["resting_hr_bpm"] == 58
        assert (await client.add_person())["person_id"] not in ("p0", "ann.1")
        changed = await client.update_person("ann.1", resting_hr_bpm=61)
        assert changed["resting_hr_bpm"] == 61 == (await client.person("ann.1"))["resting_hr_bpm"]
        with pytest.raises(HeartsimError) as info:
            await client.update_person("ann.1", resting_hr_bpm=500)
        assert info.value.status_code == 422
        assert (await client.person("ann.1"))["resting_hr_bpm"] == 61  # unchanged
        assert (await client.remove_person("ann.1"))["person_id"] == "ann.1"
        with pytest.raises(HeartsimError) as info:
            await client.person("ann.1")
        assert info.value.status_code == 404

        schema = await client.message_schema()
        assert "heartbeat" in json.dumps(schema)
        assert "heartsim_messages_published_total" in await client.metrics()
        with pytest.raises(ValueError, match="exactly one of rr_ms or features"):
            await client.predict()
        with pytest.raises(HeartsimError) as info:  # no model attached
            await client.predict(rr_ms=[800.0] * 100)
        assert info.value.status_code == 409 and "model" in info.value.message
    for bad in (None, "", 3):
        with pytest.raises(ValueError, match="person_id"):
            await Client(server.url).person(bad)  # type: ignore[arg-type]
