"""``GET /health`` tells the truth: 503 with reasons while ticks fail or lag, when the tick loop
has stopped or died, when a registered check fails, and 200 again after recovery."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from heartsim import Client
from heartsim.api.health import HealthSettings, assess
from heartsim.runner import RunnerHealth
from heartsim.schema import Health
from heartsim.server import HeartsimServer

from .conftest import ServerFactory

#: Short windows so that recovery takes about a second.
QUICK = HealthSettings(window_s=1.0, max_tick_lag_ms=200.0, stall_s=1.0)


async def get_health(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await http.get("/health")
    Health.model_validate(response.json())  # the same report for 200 and 503
    return response.status_code, response.json()


async def until_status(
    http: httpx.AsyncClient, code: int, timeout_s: float = 5.0
) -> dict[str, Any]:
    """Poll /health every 50 ms until it answers ``code``; its body (fails after the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = await get_health(http)
        if status == code:
            return body
        assert time.monotonic() < deadline, f"/health still {status}: {body['reasons']}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def quick(make_server: ServerFactory) -> HeartsimServer:
    server = await make_server(autostart=True)
    server.app.state.heartsim.health = QUICK
    return server


async def test_healthy_server_answers_200_with_no_reasons(quick: HeartsimServer) -> None:
    async with httpx.AsyncClient(base_url=quick.url, timeout=5) as http:
        body = await until_status(http, 200)  # once the first ticks have run
    assert body["status"] == "healthy" and body["reasons"] == [] and body["tick_errors"] == 0


async def test_failing_ticks_degrade_health_until_they_stop(
    quick: HeartsimServer, caplog: pytest.LogCaptureFixture
) -> None:
    engine, runner = quick.engine, quick.runner
    real_advance = engine.advance

    def broken(dt_s: float) -> list[dict[str, Any]]:
        raise RuntimeError("boom")  # not a ValueError: any exception counts

    async with httpx.AsyncClient(base_url=quick.url, timeout=5) as http:
        await until_status(http, 200)
        engine.advance = broken  # type: ignore[method-assign]
        body = await until_status(http, 503)
        assert body["status"] == "degraded"
        assert any("tick(s) failed" in r and "RuntimeError: boom" in r for r in body["reasons"])
        assert 1 <= body["tick_errors"] <= runner.tick_errors  # more may have failed since
        assert runner.running  # the clock goes on
        engine.advance = real_advance  # type: ignore[method-assign]
        body = await until_status(http, 200)
    assert body["tick_errors"] >= 1  # still counted, no longer recent
    # Logged with its traceback, but at most once per 10 s, not once per tick.
    logged = [r for r in caplog.records if "tick failed" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


async def test_a_dead_tick_loop_is_unhealthy_and_logged(
    quick: HeartsimServer, caplog: pytest.LogCaptureFixture
) -> None:
    runner = quick.runner

    def crash(dt_s: float | None = None) -> list[dict[str, Any]]:
        raise SystemError("the tick loop itself broke")

    async with httpx.AsyncClient(base_url=quick.url, timeout=5) as http:
        await until_status(http, 200)
        runner.tick = crash  # type: ignore[method-assign]  # fails outside tick()'s guard
        body = await until_status(http, 503)
        assert not runner.running
        assert body["status"] == "unhealthy"
        assert body["reasons"] == [
            "the tick loop crashed (SystemError: the tick loop itself broke); no messages are "
            "produced"
        ]
        assert any(
            r.levelno == logging.CRITICAL and "tick loop died" in r.getMessage()
            for r in caplog.records
        )
        del runner.tick  # the class's again
        runner.start()
        await until_status(http, 200)


async def test_a_stopped_tick_loop_is_unhealthy_until_restarted(quick: HeartsimServer) -> None:
    runner = quick.runner
    async with httpx.AsyncClient(base_url=quick.url, timeout=5) as http:
        await until_status(http, 200)
        await runner.stop()
        body = await until_status(http, 503)
        assert body["status"] == "unhealthy"
        assert body["reasons"] == ["the tick loop is not running; no messages are produced"]
        # Stepped from outside (as heartsim.ml.fast_forward does) it is not stopped.
        ticking = asyncio.ensure_future(_tick_every(runner, 0.05))
        try:
            await asyncio.sleep(0.1)
            assert (await get_health(http))[0] == 200
        finally:
            ticking.cancel()
        runner.start()
        await until_status(http, 200)


async def _tick_every(runner: Any, period_s: float) -> None:
    while True:
        runner.tick(period_s)
        await asyncio.sleep(period_s)


async def test_ticks_late_again_and_again_degrade_health_then_it_recovers(
    quick: HeartsimServer,
) -> None:
    async with httpx.AsyncClient(base_url=quick.url, timeout=5) as http:
        await until_status(http, 200)
        for _ in range(5):  # an overloaded loop: blocked 0.35 s at a time (a tick: 50 ms)
            time.sleep(0.35)
            await asyncio.sleep(0.06)
        status, body = await get_health(http)
        assert status == 503, body
        assert body["status"] == "degraded"
        assert [r for r in body["reasons"] if "ticks are late" in r and "over 200 ms late" in r]
        assert body["ticks_skipped"] >= 5
        await until_status(http, 200)  # the late ticks leave the 1 s window


def test_one_pause_is_not_a_trend_but_repeated_lateness_or_a_stuck_loop_is() -> None:
    settings = HealthSettings()

    def verdict(ticks: int, late: int, since_beat_s: float = 0.1) -> tuple[str, list[str]]:
        runner = RunnerHealth(
            running=True, crashed=None, since_beat_s=since_beat_s, since_tick_s=0.1,
            window_s=10.0,
            recent_tick_errors=0, last_tick_error=None, recent_ticks=ticks,
            recent_late_ticks=late, recent_lag_ms_p99=900.0,
        )  # fmt: skip
        ctx = SimpleNamespace(
            health=settings,
            runner=SimpleNamespace(health=lambda window_s, late_ms: runner),
            engine=SimpleNamespace(tick_hz=2.0),
            health_checks=[],
        )
        return assess(ctx)  # type: ignore[arg-type]

    assert verdict(ticks=20, late=1) == ("healthy", [])  # one pause at 2 Hz
    assert verdict(ticks=3, late=1) == ("healthy", [])  # one pause right after the start
    assert verdict(ticks=200, late=20) == ("healthy", [])  # 10 %: the limit itself
    status, reasons = verdict(ticks=200, late=21)
    assert status == "degraded"
    assert reasons == [
        "ticks are late: 21 of 200 in the last 10 s fired over 500 ms late (lag p99 900 ms)"
    ]
    assert verdict(ticks=20, late=3)[0] == "degraded"
    # A runner task alive but no longer waking (stuck): no messages, whatever came before.
    assert verdict(ticks=20, late=0, since_beat_s=3.0) == (
        "unhealthy",
        ["the tick loop has not run for 3.0 s (the event loop is blocked)"],
    )
    assert verdict(ticks=20, late=0, since_beat_s=1.9)[0] == "healthy"  # 2 s at 2 Hz


async def test_registered_checks_degrade_health(quick: HeartsimServer) -> None:
    ctx = quick.app.state.heartsim
    store = {"reason": "the store is unreachable"}

    def broken_check() -> str | None:
        raise ConnectionError("refused")

    async with httpx.AsyncClient(base_url=quick.url, timeout=5) as http:
        await until_status(http, 200)
        ctx.health_checks.append(lambda: store["reason"])
        body = await until_status(http, 503)
        assert body["status"] == "degraded" and body["reasons"] == ["the store is unreachable"]
        store["reason"] = None
        await until_status(http, 200)
        ctx.health_checks.append(broken_check)
        body = await until_status(http, 503)
    assert body["reasons"] == ["health check 'broken_check' failed: ConnectionError('refused')"]


async def test_the_client_returns_the_report_of_a_503(quick: HeartsimServer) -> None:
    quick.app.state.heartsim.health_checks.append(lambda: "redis is down")
    async with Client(quick.url) as client:
        health = await client.health()
    assert health["status"] == "degraded" and health["reasons"] == ["redis is down"]


async def test_openapi_documents_200_and_503_with_the_same_model(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    responses = (await client.get("/openapi.json")).json()["paths"]["/health"]["get"]["responses"]
    for code in ("200", "503"):
        schema = responses[code]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Health"}, code


def test_health_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_tick_lag_ms must be a positive number"):
        HealthSettings(max_tick_lag_ms=0)
    with pytest.raises(ValueError, match="max_late_share must be from 0 to below 1"):
        HealthSettings(max_late_share=1.0)
