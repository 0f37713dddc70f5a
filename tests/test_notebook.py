"""``heartsim.notebook``: start_server / stop_server and the server handle, without a kernel.

A script (a subprocess without asyncio) gets a thread-mode server and blocking ``stop()``; an
async test stands in for a kernel cell: its running loop is the loop a ``"loop"`` mode server
joins, and code between two awaits is what one cell runs. The real kernel is in
``test_notebook_kernel.py``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from support import bindable, free_port, listening
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from heartsim.hub import Backend, Message
from heartsim.notebook import ServerHandle, start_server, stop_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
async def stop_everything() -> AsyncIterator[None]:
    """No test leaves a server behind (stopped on the loop that runs them)."""
    yield
    await asyncio.wait_for(stop_server(), 15)


async def health(handle: ServerHandle) -> dict:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(handle.url + "/health")
        response.raise_for_status()
        return response.json()


# ----- a script: thread mode, blocking stop, no asyncio ----------------------------------------
SCRIPT = """
import asyncio, json, logging, socket, sys, time
import httpx
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
from heartsim.notebook import start_server

t0 = time.monotonic()
h = start_server(tick_hz=10, seed=1)
started_s = time.monotonic() - t0
status = httpx.get(h.url + "/health", timeout=5).json()
left = start_server(port={left_port}, tick_hz=5)  # never stopped: the atexit hook does it
t0 = time.monotonic()
result = h.stop()
stopped_s = time.monotonic() - t0
probe = socket.socket()
probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
probe.bind(("127.0.0.1", h.port))
probe.close()
print(json.dumps({{
    "mode": h.mode, "port": h.port, "started_s": started_s, "stopped_s": stopped_s,
    "health": status["status"], "simulation": status["simulation_state"],
    "state": h.state, "result": repr(result), "result_done": result.done(),
    "left": [left.port, left.state],
    "patched": hasattr(asyncio, "_nest_patched") or "nest_asyncio2" in sys.modules,
}}))
"""


def test_a_script_gets_a_thread_server_and_a_blocking_stop() -> None:
    left_port = free_port()
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(left_port=left_port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["mode"] == "thread"  # "loop" fell back: a script has no running loop
    assert "serving from a background thread instead" in proc.stderr
    assert result["health"] == "healthy" and result["simulation"] == "running"
    assert result["started_s"] < 5 and result["stopped_s"] < 5
    assert result["state"] == "stopped" and result["result_done"] is True
    assert result["result"].endswith(": stopped>")
    assert result["left"] == [left_port, "running"]
    assert result["patched"] is False
    # The atexit hook stopped the server left running; the process ended promptly.
    assert f"heartsim server at http://127.0.0.1:{left_port} stopped" in proc.stderr
    assert elapsed < 20
    assert not listening(result["port"]) and not listening(left_port)
    assert bindable(left_port)


def test_no_running_loop_falls_back_to_thread_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="heartsim.notebook"):
        h = start_server(tick_hz=20, seed=1)
    assert h.mode == "thread" and h.state == "running"
    assert any("mode='thread'" in r.getMessage() for r in caplog.records)
    assert h.loop is not None and h.loop.is_running()
    stopping = h.stop()  # blocking: done on return, and awaiting it would be harmless
    assert stopping.done() and h.state == "stopped"
    assert not listening(h.port)
    assert not h._thread.is_alive()  # type: ignore[union-attr]


def test_invalid_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="mode"):
        start_server(mode="process")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="port"):
        start_server(port=70000)
    with pytest.raises(ValueError, match="tick_hz"):
        start_server(tick_hz=0)
    with pytest.raises(ValueError, match="token"):
        start_server(host="0.0.0.0")


# ----- loop mode: the test's loop plays the kernel's ------------------------------------------
async def test_loop_mode_listens_before_the_call_returns_and_serves_once_the_loop_runs() -> None:
    h = start_server(port=None, tick_hz=10, seed=1)
    # Nothing has awaited yet, so the server's task has not run: the OS already accepts
    # connections into the listen backlog.
    assert h.mode == "loop" and h.state == "starting"
    assert h.loop is asyncio.get_running_loop()
    socket.create_connection(("127.0.0.1", h.port), timeout=2).close()
    assert (await h.wait_ready()) is h
    assert h.state == "running"
    body = await health(h)
    assert body["status"] == "healthy"
    assert body["simulation_state"] == "running"  # autostart
    assert body["tick_hz"] == 10


async def test_rerunning_returns_the_same_handle_and_new_arguments_restart_it() -> None:
    h = start_server(port=None, tick_hz=10, seed=1)
    await h.wait_ready()
    assert start_server(port=None, tick_hz=10, seed=1) is h
    assert start_server(port=h.port, tick_hz=10, seed=1) is h  # asked by its port

    h2 = start_server(port=None, tick_hz=5, seed=1)
    assert h2 is not h
    assert h.state in ("stopping", "stopped")
    assert h2.port == h.port  # the restart kept the port (links stay valid)
    socket.create_connection(("127.0.0.1", h2.port), timeout=2).close()
    assert (await health(await h2.wait_ready()))["tick_hz"] == 5
    await h.stop()  # waits for the shutdown the restart began
    assert h.state == "stopped"

    fixed = free_port()
    a = start_server(port=fixed, tick_hz=5)
    b = start_server(port=fixed, tick_hz=10)  # restarted on the same explicit port at once
    assert b is not a and b.port == fixed
    await b.wait_ready()
    assert (await health(b))["tick_hz"] == 10
    c = start_server(port=fixed, tick_hz=10, mode="thread")  # another mode: a restart too
    assert c is not b and c.mode == "thread" and c.port == fixed
    assert (await health(c))["tick_hz"] == 10


async def test_a_busy_port_raises_oserror_and_the_loop_carries_on() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        with pytest.raises(OSError) as info:
            start_server(port=port)
        assert info.value.errno == errno.EADDRINUSE
        assert "port=None" in str(info.value)
        with pytest.raises(OSError):
            start_server(port=port, mode="thread")
    await asyncio.sleep(0.05)  # the loop runs on
    h = start_server()
    assert (await health(await h.wait_ready()))["status"] == "healthy"


async def test_stop_frees_the_port_at_once_and_await_waits_for_the_rest() -> None:
    h = start_server(tick_hz=20)
    await h.wait_ready()
    async with connect(h.ws_url) as ws:
        await asyncio.wait_for(ws.recv(), 5)
        stopping = h.stop()
        assert not listening(h.port)  # before the shutdown task has even run
        assert not stopping.done() and "await it" in repr(stopping)
        await asyncio.wait_for(stopping, 10)
        assert stopping.done() and h.state == "stopped"
        # The open stream was closed by the shutdown ("going away").
        with pytest.raises(ConnectionClosed, match="1001"):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert bindable(h.port)
    await h.stop()  # idempotent
    assert start_server() is not h  # a stopped server is not returned again


async def test_stop_server_stops_every_server_of_both_modes() -> None:
    a = start_server(tick_hz=5)
    b = start_server(port=free_port(), tick_hz=5, mode="thread")
    await a.wait_ready()
    ports = [a.port, b.port]
    assert all(listening(p) for p in ports)
    await stop_server()
    assert a.state == b.state == "stopped"
    assert not any(listening(p) for p in ports)
    assert all(bindable(p) for p in ports)


async def test_stop_before_the_server_ever_ran() -> None:
    h = start_server()
    await h.stop()  # the start task never ran: it is cancelled, the socket closed
    assert h.state == "stopped" and bindable(h.port)
    with pytest.raises(RuntimeError, match="stopped before it was ready"):
        await h.wait_ready()


class FailingBackend(Backend):
    async def start(self) -> None:
        raise ConnectionError("backend unreachable")

    def publish(self, messages: list[Message]) -> None:  # pragma: no cover
        raise AssertionError


async def test_a_startup_failure_is_reported_not_raised_into_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = start_server()
    h.server.hub.backend = FailingBackend()  # before the start task first runs
    with pytest.raises(RuntimeError, match="exited with code 3"):  # uvicorn's sys.exit(3)
        await h.wait_ready()
    assert h.state == "failed" and "exited with code 3" in h.status()["error"]
    assert "failed to start" in caplog.text
    assert "Error: RuntimeError" in h._repr_html_()
    assert not listening(h.port)
    assert start_server() is not h  # re-running the cell starts afresh


async def test_a_stray_system_exit_never_reaches_the_loop() -> None:
    h = start_server()

    async def exits() -> None:
        raise SystemExit(4)

    h.server.start = exits  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="exited with code 4"):
        await h.wait_ready()
    assert h.state == "failed"
    await asyncio.sleep(0.05)  # still alive


async def test_status_and_html(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    h = start_server(persons=2, tick_hz=20, seed=1)
    await h.wait_ready()
    async with connect(h.ws_url) as ws:
        for _ in range(4):
            await asyncio.wait_for(ws.recv(), 5)
        status = h.status()
        page = h._repr_html_()
    assert status["state"] == "running" and status["mode"] == "loop"
    assert status["url"] == f"http://127.0.0.1:{h.port}"
    assert status["ws_url"] == f"ws://127.0.0.1:{h.port}/ws/heartbeat"
    assert status["dashboard_url"] == f"http://127.0.0.1:{h.port}/"
    assert status["simulation"] == "running" and status["persons"] == 2
    assert status["clients"] == 1 and status["subscribers"] == 1
    assert status["messages_sent"] >= 3 and status["messages_published"] >= 3
    assert status["messages_dropped"] == 0 and status["error"] is None
    assert 0 < status["uptime_s"] < 30 and status["tick_hz"] == 20
    assert f'<a href="http://127.0.0.1:{h.port}/" target="_blank"' in page
    assert f'href="http://127.0.0.1:{h.port}/docs"' in page
    assert f"ws://127.0.0.1:{h.port}/ws/heartbeat" in page
    assert "running" in page and "2 persons at 20 Hz" in page
    assert "1 WebSocket client " in page
    assert "loop mode" in page
    assert repr(h).startswith(f"<heartsim server http://127.0.0.1:{h.port} running")
    await h.stop()
    assert h.status()["state"] == "stopped" and h.status()["uptime_s"] == 0
    assert "stopped" in h._repr_html_()


async def test_jupyterhub_links_go_through_the_server_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = start_server(token="s3cret")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    assert h.dashboard_url == f"/user/ada/proxy/{h.port}/"
    assert h.docs_url == f"/user/ada/proxy/{h.port}/docs"
    assert h.url == f"http://127.0.0.1:{h.port}"  # the kernel itself connects directly
    page = h._repr_html_()
    assert f'href="/user/ada/proxy/{h.port}/"' in page
    assert "s3cret" not in page and "#token=" in page  # a hint, never the token itself
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada")  # no trailing slash
    assert h.dashboard_url == f"/user/ada/proxy/{h.port}/"
    # Whatever the environment holds is escaped, never interpreted.
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", '/user/"><script>x</script>/')
    page = h._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page


async def test_thread_mode_keeps_serving_while_the_calling_loop_is_blocked() -> None:
    h = start_server(port=None, tick_hz=20, seed=1, mode="thread")
    assert h.mode == "thread" and h.state == "running"  # returned once up
    assert h.loop is not asyncio.get_running_loop()
    before = h.status()["messages_published"]
    time.sleep(1.0)  # blocks this loop, as a long cell blocks the kernel
    assert h.status()["messages_published"] - before >= 15
    body = await health(h)
    assert body["simulation_state"] == "running"
    # Commands cross into the server's thread.
    episode = h.call(h.engine.trigger_stress, 0.8, duration_s=30)
    assert episode.level == 0.8
    stopping = h.stop()  # blocking here too: done on return
    assert stopping.done() and not listening(h.port)
    await stopping


def test_thread_mode_engine_is_changed_through_call_only() -> None:
    h = start_server(port=None, tick_hz=20, seed=1, mode="thread")  # no loop here: a script
    try:
        with pytest.raises(RuntimeError, match=r"Engine\.stop called from thread .*handle\.call"):
            h.engine.stop()  # from this thread it would race with the server's ticks
        assert h.engine.state.value == "running"  # refused: nothing changed
        assert h.call(h.engine.stop) is True
        assert h.engine.state.value == "stopped"
        with pytest.raises(RuntimeError, match=r"Runner\.attach_predictor called from thread"):
            h.runner.attach_predictor(None)
        h.detach_model()  # goes through call
    finally:
        h.stop()
    assert h.engine.start() is True  # the server's loop has ended: the engine is free again


@pytest.mark.parametrize("mode", ["loop", "thread"])
async def test_subscribe_delivers_messages_on_the_callers_loop(mode: str) -> None:
    h = start_server(tick_hz=20, seed=1, mode=mode)  # type: ignore[arg-type]
    await h.wait_ready()
    with h.subscribe() as subscription:
        seqs = []
        async for message in subscription:
            seqs.append(message.data()["seq"])
            if len(seqs) == 5:
                break
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    assert subscription.closed

    late = h.subscribe(since=0)  # replays what the history holds, then goes live
    first = await asyncio.wait_for(late.__aiter__().__anext__(), 5)
    assert first.seq == 1
    await h.stop()
    remaining = [m async for m in late]  # ends when the server stops
    assert late.closed and all(m.seq > 1 for m in remaining)
