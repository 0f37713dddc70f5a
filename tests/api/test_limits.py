"""Bounded request work: body size cap (413), POST /predict's interval cap, token, rate limit
and scoring slots, and what oversized requests cost a live server (stall, memory)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from support import stop_process
from websockets.sync.client import connect

import heartsim
from heartsim.api.limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit, PredictLimits
from heartsim.ml.classifier import DEFAULT_FEATURES
from heartsim.schema import EXAMPLE_FEATURES, MAX_PREDICT_INTERVALS

from .conftest import ServerFactory

TOKEN = "s3cret-token"
JSON = {"content-type": "application/json"}


def interval_body(n: int, value: bytes = b"800.0") -> bytes:
    """``{"rr_ms": [800.0, ...]}`` with ``n`` intervals."""
    return b'{"rr_ms": [' + b",".join([value] * n) + b"]}"


def filler(total_bytes: int, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """``total_bytes`` of ``x``, chunk by chunk (never all in memory)."""
    chunk = b"x" * chunk_bytes
    for start in range(0, total_bytes, chunk_bytes):
        yield chunk[: min(chunk_bytes, total_bytes - start)]


async def afiller(total_bytes: int) -> AsyncIterator[bytes]:
    for chunk in filler(total_bytes, 64 * 1024):
        yield chunk


class SlowModel:
    """Looks like a fitted StressClassifier; every predict_proba takes ``delay_s``."""

    feature_names_in_ = np.array(DEFAULT_FEATURES)
    classes_ = np.array([False, True])
    feature_params_ = None
    threshold = 0.5

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        time.sleep(self.delay_s)
        return np.tile([0.3, 0.7], (len(X), 1))


# ----------------------------------------------------------------------------- body size


async def test_a_body_over_the_limit_is_413_in_the_error_format(
    make_server: ServerFactory,
) -> None:
    server = await make_server()
    too_big = DEFAULT_MAX_BODY_BYTES + 1
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
        declared = await http.post("/persons", content=b"x" * too_big, headers=JSON)
        chunked = await http.post("/predict", content=afiller(2 * too_big), headers=JSON)
        chunked_control = await http.post("/persons", content=afiller(too_big), headers=JSON)
        assert (await http.get("/health")).status_code == 200  # still serving
        metrics = (await http.get("/metrics")).text
    for response in (declared, chunked, chunked_control):
        assert response.status_code == 413, response.text
        assert response.headers["connection"] == "close"
        assert response.json() == {
            "error": "Content too large",
            "message": response.json()["message"],
        }
        assert (
            f"limit of {DEFAULT_MAX_BODY_BYTES} bytes (max_body_bytes)"
            in (response.json()["message"])
        )
    assert len(server.engine.person_ids) == 1  # nothing was created
    assert 'heartsim_requests_refused_total{reason="body_too_large"} 3.0' in metrics


async def test_the_body_limit_is_configurable(make_server: ServerFactory) -> None:
    server = await make_server(max_body_bytes=100)
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        small = await http.post("/persons", json={"resting_hr_bpm": 60})
        big = await http.post("/persons", json={"person_id": "x" * 120})
    assert small.status_code == 201
    assert big.status_code == 413 and "limit of 100 bytes" in big.json()["message"]


def test_limit_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_body_bytes must be >= 0"):
        BodySizeLimit(lambda *a: None, max_body_bytes=-1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        PredictLimits(concurrency=0)
    with pytest.raises(ValueError, match="wait_s must be a finite number >= 0"):
        PredictLimits(wait_s=math.nan)


# ----------------------------------------------------------------------------- POST /predict


async def test_too_many_intervals_is_a_short_422_naming_the_limit(
    make_server: ServerFactory,
) -> None:
    server = await make_server()
    server.attach_model(SlowModel())
    precise = b"812.3456789012345"  # the largest valid request, at full float precision
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
        largest = await http.post(
            "/predict", content=interval_body(MAX_PREDICT_INTERVALS, precise), headers=JSON
        )
        one_more = await http.post(
            "/predict", content=interval_body(MAX_PREDICT_INTERVALS + 1), headers=JSON
        )
        # 600 kB: under the body limit, but 100,000 intervals are never parsed.
        many = await http.post("/predict", content=interval_body(100_000), headers=JSON)
    assert largest.status_code == 200, largest.text[:300]
    assert largest.json()["full_context"] is True
    for response, says in ((one_more, "at most 10000 items"), (many, "at most 10000 RR")):
        assert response.status_code == 422
        error = response.json()
        assert error["field"] == "rr_ms" and says in error["message"]
        # The rejected list is summarised, not echoed back.
        assert len(response.content) < 2000, response.content[:300]


async def test_predict_needs_the_token_when_the_server_has_one(
    make_server: ServerFactory,
) -> None:
    server = await make_server(token=TOKEN)  # public reads stay on
    server.attach_model(SlowModel())
    body = {"features": EXAMPLE_FEATURES}
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        missing = await http.post("/predict", json=body)
        wrong = await http.post("/predict", json=body, headers={"Authorization": "Bearer no"})
        bearer = await http.post(
            "/predict", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        query = await http.post("/predict", json=body, params={"token": TOKEN})
        assert (await http.get("/persons")).status_code == 200  # reads stay public
    assert missing.status_code == 401 and wrong.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert bearer.status_code == 200 and query.status_code == 200
    security = server.app.openapi()["paths"]["/predict"]["post"].get("security", [])
    assert {"HTTPBearer": []} in security


async def test_predict_is_rate_limited_in_its_own_bucket(make_server: ServerFactory) -> None:
    server = await make_server()  # the default limits, no model: each answer is a cheap 409
    body = {"features": EXAMPLE_FEATURES}
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        statuses = [(await http.post("/predict", json=body)).status_code for _ in range(10)]
        limited = await http.post("/predict", json=body)
        control = await http.post("/simulation/start")  # the control bucket is untouched
        metrics = (await http.get("/metrics")).text
    assert statuses == [409] * 10
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert "POST /predict" in limited.json()["message"]
    assert control.status_code == 200
    assert 'heartsim_requests_refused_total{reason="predict_rate_limited"} 1.0' in metrics


async def test_scorings_run_off_the_loop_at_most_concurrency_at_once(
    make_server: ServerFactory,
) -> None:
    server = await make_server(
        autostart=True, predict_limits=PredictLimits(concurrency=1, wait_s=0.3)
    )
    server.attach_model(SlowModel(delay_s=1.0))
    body = {"features": EXAMPLE_FEATURES}
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
        ticks = server.runner.stats().ticks
        first = asyncio.ensure_future(http.post("/predict", json=body))
        await asyncio.sleep(0.1)
        second = await http.post("/predict", json=body)  # waits 0.3 s for the slot, then 503
        ticks_meanwhile = server.runner.stats().ticks - ticks
        answered = await first
        metrics = (await http.get("/metrics")).text
    assert answered.status_code == 200 and answered.json()["stress_score"] == 0.7
    assert second.status_code == 503, second.text
    assert second.headers["retry-after"] == "1"
    assert "prediction slots stayed busy" in second.json()["message"]
    # While the first scoring held its thread, the loop kept ticking (20 Hz x 0.4 s).
    assert ticks_meanwhile >= 5
    assert 'heartsim_requests_refused_total{reason="predict_busy"} 1.0' in metrics


# ----------------------------------------------------------------------------- a live server


def _vmrss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class _StreamProbe(threading.Thread):
    """Records (arrival wall time, ts) of every heartbeat of the stream."""

    def __init__(self, ws_url: str) -> None:
        super().__init__(daemon=True)
        self.ws_url = ws_url
        self.arrivals: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        with connect(self.ws_url) as ws:
            while not self.done.is_set():
                try:
                    message = json.loads(ws.recv(timeout=0.5))
                except TimeoutError:
                    continue
                if message["type"] == "heartbeat":
                    self.arrivals.append((time.time(), message["ts"]))

    def lags_ms(self, start: float, end: float, period_s: float) -> list[float]:
        """How late each tick due between ``start`` and ``end`` arrived, ms (sorted): tick
        ``k`` after the last message before ``start`` is due ``k`` periods after it, and has
        arrived with the first message produced at least that much later."""
        arrivals = list(self.arrivals)
        before = [a for a in arrivals if a[0] < start]
        ref_arrival, ref_ts = before[-1]
        lags, k = [], 1
        while ref_arrival + k * period_s <= end:
            due_ts = ref_ts + (k - 0.5) * period_s
            arrived = next(a for a, ts in arrivals if ts >= due_ts)
            lags.append(max(0.0, arrived - ref_arrival - k * period_s) * 1e3)
            k += 1
        return sorted(lags)


def test_oversized_requests_are_refused_fast_without_stalling_or_growing_the_server() -> None:
    hz = 50.0
    five_million = interval_body(5_000_000)  # 30 MB
    huge = 500 * 1_000_000
    fits = interval_body((1 << 20) // 6 - 4)  # just under 1 MiB: 175,000 intervals
    root = Path(heartsim.__file__).resolve().parent.parent  # this checkout, not the cwd's
    proc = subprocess.Popen(
        [sys.executable, "-m", "heartsim.cli", "serve", "--port", "0", "--start",
         "--tick-hz", f"{hz:g}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    probe: _StreamProbe | None = None
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("heartsim dashboard: "), line
        url = line.split(": ", 1)[1].strip().rstrip("/")
        probe = _StreamProbe(url.replace("http://", "ws://") + "/ws/heartbeat")
        probe.start()
        deadline = time.monotonic() + 10
        while len(probe.arrivals) < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        # The same stream over 4 s without requests: how late ticks are on this machine anyway
        # (a busy CI box), so the bound below is about the requests, not the machine's load.
        quiet_start = time.time()
        time.sleep(4.0)
        quiet_end = time.time()
        answers: dict[str, tuple[int | str, float]] = {}
        with httpx.Client(base_url=url, timeout=60.0) as http:
            # FastAPI (0.16x) sets a router's routes up on its first request (~50 ms on the
            # loop here): done before the window, which is about the oversized requests.
            assert http.post("/predict", json={}).status_code == 422
            rss_before = _vmrss_mb(proc.pid)
            start = time.time()
            for name, content, length in (
                ("5M intervals", five_million, len(five_million)),
                ("500 MB, Content-Length", filler(huge), huge),
                ("500 MB, chunked", filler(huge), None),
                ("1 MiB of intervals", fits, len(fits)),
            ):
                headers = dict(JSON)
                if length is not None:
                    headers["content-length"] = str(length)
                sent = time.monotonic()
                try:
                    status: int | str = http.post(
                        "/predict", content=content, headers=headers
                    ).status_code
                except httpx.HTTPError as exc:
                    status = repr(exc)
                answers[name] = (status, time.monotonic() - sent)
        time.sleep(max(0.0, start + 4.0 - time.time()))  # >= 200 ticks due in the window
        end = time.time()
        time.sleep(1.0)
        lags = probe.lags_ms(start, end, 1.0 / hz)
        quiet = probe.lags_ms(quiet_start, quiet_end, 1.0 / hz)
        rss_growth = _vmrss_mb(proc.pid) - rss_before
    finally:
        if probe is not None:
            probe.done.set()
            probe.join(5)
        stop_process(proc)
    p99 = lags[math.ceil(0.99 * len(lags)) - 1]
    quiet_p99 = quiet[math.ceil(0.99 * len(quiet)) - 1]
    statuses = {name: status for name, (status, _) in answers.items()}
    assert statuses == {
        "5M intervals": 413,
        "500 MB, Content-Length": 413,
        "500 MB, chunked": 413,
        "1 MiB of intervals": 422,
    }, answers
    assert all(seconds < 2.0 for _, seconds in answers.values()), answers
    assert len(lags) >= 190
    # Before the bounds, these requests held the loop 1 to 11 s (p99 lag 1,000 to 11,000 ms).
    assert p99 < max(50.0, 3 * quiet_p99), (p99, quiet_p99, lags[-10:])
    assert rss_growth < 50.0, rss_growth
