"""HeartsimServer on foreign loops, its failure modes, and the ``heartsim serve`` command."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx
import pytest

from heartsim.hub import Backend, Message
from heartsim.options import add_serve_arguments
from heartsim.server import HeartsimServer, is_loopback, run_serve

from .conftest import ServerFactory


async def test_port_zero_picks_a_free_port_and_urls_follow(server: HeartsimServer) -> None:
    assert server.port > 0 and server.started
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.ws_url == f"ws://127.0.0.1:{server.port}/ws/heartbeat"
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.url + "/health")).status_code == 200


async def test_a_busy_port_raises_oserror_in_the_caller(make_server: ServerFactory) -> None:
    first = await make_server()
    second = HeartsimServer(port=first.port)
    with pytest.raises(OSError):
        await second.start()
    assert not second.started
    async with httpx.AsyncClient() as http:  # the first one is unharmed
        assert (await http.get(first.url + "/health")).status_code == 200


class FailingBackend(Backend):
    async def start(self) -> None:
        raise ConnectionError("backend unreachable")

    def publish(self, messages: list[Message]) -> None:  # pragma: no cover
        raise AssertionError


async def test_a_startup_failure_is_a_runtime_error_not_system_exit() -> None:
    server = HeartsimServer(port=0)
    server.hub.backend = FailingBackend()
    with pytest.raises(RuntimeError, match="exited with code 3"):
        await server.start()
    await server.stop()


async def test_no_signal_handlers_are_installed(make_server: ServerFactory) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    await make_server()
    # uvicorn's capture_signals would have replaced both with its handle_exit while serving.
    assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_stop_is_idempotent_and_restart_works(make_server: ServerFactory) -> None:
    server = await make_server()
    await server.stop()
    await server.stop()
    assert not server.started
    await server.start()
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.url + "/health")).status_code == 200


def test_serves_from_a_background_thread_loop() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = HeartsimServer(port=0, tick_hz=20, autostart=True)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        # Blocking calls from this thread do not deadlock: the server's loop is elsewhere.
        assert httpx.get(server.url + "/health", timeout=5).json()["simulation_state"] == "running"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_serve_arguments_and_defaults() -> None:
    args = parse()
    assert (args.host, args.port, args.persons, args.tick_hz) == ("127.0.0.1", 8001, 1, 2.0)
    assert args.cors_origins == [] and not args.insecure and args.max_clients == 1000
    args = parse("--port", "0", "--persons", "3", "--tick-hz", "5", "--seed", "1", "--token", "t",
                 "--cors-origin", "http://a", "http://b", "--cors-origin", "http://c",
                 "--spontaneous-per-h", "2", "--max-clients", "5")  # fmt: skip
    assert args.cors_origins == ["http://a", "http://b", "http://c"]
    assert (args.persons, args.tick_hz, args.seed, args.token) == (3, 5.0, 1, "t")
    assert args.spontaneous_per_h == 2.0 and args.max_clients == 5


def test_non_loopback_host_without_token_is_refused(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEARTSIM_TOKEN", raising=False)
    assert run_serve(parse("--host", "0.0.0.0", "--port", "0")) == 2
    assert "--token" in caplog.text
    with pytest.raises(ValueError, match="without a token"):
        HeartsimServer(host="0.0.0.0")
    HeartsimServer(host="0.0.0.0", token="t")  # fine with a token, or with insecure=True
    HeartsimServer(host="0.0.0.0", insecure=True)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_serve_busy_port_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert run_serve(parse("--port", str(taken.getsockname()[1]))) == 1


def test_serve_command_prints_the_dashboard_url_and_stops_on_ctrl_c() -> None:
    code = (
        "import argparse, sys\n"
        "from heartsim.options import add_serve_arguments\n"
        "from heartsim.server import run_serve\n"
        "p = argparse.ArgumentParser(); add_serve_arguments(p)\n"
        "sys.exit(run_serve(p.parse_args(sys.argv[1:])))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--start"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # blocks until the server is up (bounded by the timeout)
        assert line.startswith("heartsim dashboard: http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].strip()
        assert httpx.get(url + "health", timeout=5).json()["simulation_state"] == "running"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


async def test_keep_alive_responses_are_not_delayed_by_nagle(client: httpx.AsyncClient) -> None:
    # A pre-bound socket without proto=IPPROTO_TCP left TCP_NODELAY off: ~40 ms per response.
    await client.get("/health")
    durations_s = []
    for _ in range(10):
        started = time.perf_counter()
        await client.get("/health")
        durations_s.append(time.perf_counter() - started)
    # Nagle delays every response; a busy machine delays a few: the median tells them apart.
    assert statistics.median(durations_s) < 0.02, durations_s
