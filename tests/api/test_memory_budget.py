"""The memory budget on a real server: the persons cap, the history byte budget in /health and
in replays, the serve options, and a server's memory levelling off at a high message rate."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets
from support import stop_process

import heartsim
from heartsim.options import add_serve_arguments

from .conftest import ServerFactory, recv_json, wait_until

ROOT = Path(heartsim.__file__).resolve().parent.parent  # this checkout, not the cwd's


async def test_adding_a_person_beyond_max_persons_is_409_naming_the_limit(
    make_server: ServerFactory,
) -> None:
    server = await make_server(persons=2, max_persons=3)
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        assert (await http.post("/persons", json={})).status_code == 201
        refused = await http.post("/persons", json={"person_id": "dora"})
        persons = (await http.get("/persons")).json()["persons"]
        health = (await http.get("/health")).json()
    assert refused.status_code == 409
    assert refused.json()["error"] == "Too many persons"
    assert "max_persons (3) reached" in refused.json()["message"]
    assert [p["person_id"] for p in persons] == ["p0", "p1", "p2"]  # nothing added
    assert health["max_persons"] == 3 and health["persons"] == 3


async def test_health_shows_the_history_budget_and_replays_report_what_it_dropped(
    make_server: ServerFactory,
) -> None:
    budget = 200_000  # ~400 messages: 20 persons keep ~10 s of a 2 Hz stream
    server = await make_server(
        persons=20, tick_hz=2.0, clock="virtual", history_bytes=budget, autostart=True
    )
    await wait_until(lambda: server.hub.history_evicted > 2_000, timeout=20.0)
    server.engine.pause()
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        health = (await http.get("/health")).json()
        page = (await http.get("/heartbeat/history", params={"person": "p3", "since": 1})).json()
        metrics = (await http.get("/metrics")).text.splitlines()
    assert health["history_budget_bytes"] == budget
    assert 0 < health["history_bytes"] <= budget
    assert health["history_evicted"] > 2_000
    assert 5.0 < health["history_window_s"] < 60.0  # far less than the 600 s kept by time
    oldest, latest = page["oldest_seq"], page["latest_seq"]
    assert page["missed"] == oldest - 2  # seq 2 .. oldest-1 are gone, and said so
    assert [m["seq"] for m in page["messages"]] == list(range(oldest, latest + 1))
    # close_timeout: a paused stream's server answers the closing handshake late (~10 s).
    async with websockets.connect(f"{server.ws_url}?person=p3&since=1", close_timeout=0.5) as ws:
        hello = await recv_json(ws)
        first = await recv_json(ws)
    assert hello["type"] == "connected" and hello["missed"] == oldest - 2
    assert first["seq"] == oldest and hello["replayed"] == latest - oldest + 1
    assert f"heartsim_history_bytes {float(health['history_bytes'])}" in metrics


def test_serve_has_max_persons_and_history_mb_options() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    help_text = parser.format_help()
    assert "--max-persons" in help_text and "--history-mb" in help_text
    defaults = parser.parse_args([])
    assert (defaults.max_persons, defaults.history_mb) == (1000, 512.0)


def _serve(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heartsim.cli", "serve", "--port", "0", *args],
        capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--persons", "1001"], "persons (1001) exceeds max_persons (1000)"),
        (["--history-mb", "0"], "history_mb must be a number > 0"),
    ],
)
def test_serve_refuses_settings_beyond_the_budget_with_exit_2(args: list[str], says: str) -> None:
    done = _serve(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr
    assert "heartsim dashboard" not in done.stdout


def _vmrss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_server_memory_levels_off_at_the_history_budget() -> None:
    # 200 persons x 50 Hz: ~5 MB of history per second; a 16 MiB budget is full within ~5 s.
    proc = subprocess.Popen(
        [sys.executable, "-m", "heartsim.cli", "serve", "--port", "0", "--start",
         "--persons", "200", "--tick-hz", "50", "--history-mb", "16"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("heartsim dashboard: "), line
        url = line.split(": ", 1)[1].strip().rstrip("/")
        with httpx.Client(base_url=url, timeout=10.0) as http:
            deadline = time.monotonic() + 30.0
            while http.get("/health").json()["history_evicted"] < 10_000:
                assert time.monotonic() < deadline, "the budget never filled"
                time.sleep(0.5)
            rss_full = _vmrss_mb(proc.pid)
            published = http.get("/health").json()["messages_published"]
            time.sleep(10.0)
            rss_later = _vmrss_mb(proc.pid)
            health = http.get("/health").json()
    finally:
        stop_process(proc)
    streamed = health["messages_published"] - published
    # ~50,000+ messages (~25 MB of history without a budget) went by in those 10 s.
    assert streamed > 20_000, json.dumps(health)
    assert health["history_bytes"] <= 16 * 2**20
    assert rss_later - rss_full < 8.0, (rss_full, rss_later)
