"""The runner: virtual determinism, drift-free real time, skipping ahead instead of bursting."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from heartsim import Engine
from heartsim.hub import Hub
from heartsim.runner import Runner, _percentile


def make(clock: str = "virtual", tick_hz: float = 20.0, seed: int = 3) -> Runner:
    # A fixed start time: the timestamps are wall-clock time, "now" by default.
    engine = Engine(persons=2, seed=seed, tick_hz=tick_hz, start_time=0)
    engine.start()
    return Runner(engine, Hub(), clock=clock)  # type: ignore[arg-type]


async def test_virtual_clock_is_deterministic() -> None:
    payloads = []
    for _ in range(2):
        runner = make()
        subscriber = runner.hub.stream("p1", maxsize=1000)
        assert await runner.run_for(3.0) == 60
        payloads.append([bytes(subscriber.get_nowait().payload) for _ in range(60)])
    assert payloads[0] == payloads[1]
    assert runner.hub.latest("p0").seq == 60


async def test_virtual_task_runs_ahead_of_wall_time_and_idles_when_stopped() -> None:
    runner = make()
    started = time.monotonic()
    runner.start()
    await asyncio.sleep(0.2)
    runner.engine.stop()
    await asyncio.sleep(0.05)
    ticks = runner.ticks
    await asyncio.sleep(0.1)
    await runner.stop()
    assert runner.engine.t_s > 2 * (time.monotonic() - started)  # faster than real time
    assert runner.ticks == ticks and not runner.running


async def test_real_clock_is_drift_free() -> None:
    runner = make("real", tick_hz=20.0)
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    subscriber = runner.hub.stream("p0", maxsize=1000)

    async def watch() -> None:
        async for _ in subscriber:
            arrivals.append(loop.time())
            if len(arrivals) == 21:
                return

    runner.start()
    await asyncio.wait_for(watch(), 5)
    await runner.stop()
    # 20 periods of 50 ms: sleep overshoot must not accumulate.
    assert arrivals[-1] - arrivals[0] == pytest.approx(1.0, abs=0.015)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(0.03 < g < 0.07 for g in gaps), gaps
    stats = runner.stats()
    assert stats.ticks >= 21 and stats.ticks_skipped == 0 and stats.lag_ms_p99 < 20
    latest = runner.hub.latest("p0").data()
    assert abs(latest["ts"] - time.time()) < 1.0  # real time stamps production wall time


async def test_a_late_tick_skips_ahead_instead_of_bursting() -> None:
    runner = make("real", tick_hz=20.0)
    subscriber = runner.hub.stream("p0", maxsize=1000)
    runner.start()
    before = await asyncio.wait_for(subscriber.get(), 2)
    time.sleep(0.33)  # block the loop: ~6 ticks are missed
    catch_up = await asyncio.wait_for(subscriber.get(), 2)
    await asyncio.sleep(0.12)
    await runner.stop()
    later = []
    while (message := subscriber.get_nowait()) is not None:
        later.append(message)
    assert runner.ticks_skipped >= 5
    # One message covers the stall: seq stays consecutive, simulated time jumps with wall time.
    assert catch_up.seq == before.seq + 1
    assert catch_up.t - before.t == pytest.approx(0.35, abs=0.051)
    # The following ticks come at the normal pace, not as a burst.
    assert later[0].seq == catch_up.seq + 1
    assert later[0].t - catch_up.t == pytest.approx(0.05, abs=1e-6)
    assert len(later) <= 4


async def test_changing_the_rate_takes_effect_at_once() -> None:
    runner = make("real", tick_hz=1.0)
    subscriber = runner.hub.stream("p0")
    runner.start()
    await asyncio.sleep(0.05)
    runner.set_tick_hz(20.0)
    await asyncio.wait_for(subscriber.get(), 0.5)  # without the wake-up this takes ~1 s
    await runner.stop()
    assert runner.engine.tick_hz == 20.0
    with pytest.raises(ValueError, match=r"tick_hz must be between 0\.1 and 50"):
        runner.set_tick_hz(100)
    assert runner.engine.tick_hz == 20.0


async def test_a_failing_tick_is_counted_and_the_clock_keeps_going() -> None:
    runner = make("virtual")
    real_advance = runner.engine.advance
    calls = {"n": 0}

    def flaky(dt_s: float) -> list:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("boom")
        return real_advance(dt_s)

    runner.engine.advance = flaky  # type: ignore[method-assign]
    await runner.run_for(0.25)  # 5 ticks
    assert runner.tick_errors == 1 and runner.hub.latest("p0").seq == 4


def test_clock_is_validated() -> None:
    with pytest.raises(ValueError, match="clock"):
        Runner(Engine(), Hub(), clock="fast")  # type: ignore[arg-type]


def test_percentile_is_nearest_rank() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert _percentile(values, 50) == 50.0 and _percentile(values, 99) == 99.0
    assert _percentile([], 99) == 0.0


async def test_any_exception_in_a_tick_is_counted_and_the_task_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = make("real", tick_hz=50.0)
    real_advance = runner.engine.advance
    failures = {"left": 5}

    def flaky(dt_s: float) -> list:
        if failures["left"]:
            failures["left"] -= 1
            raise IndexError("a bug")  # not a ValueError: the old catch list let it kill the task
        return real_advance(dt_s)

    runner.engine.advance = flaky  # type: ignore[method-assign]
    runner.start()
    await asyncio.wait_for(runner.hub.stream("p0").get(), 5)
    assert runner.running and runner.tick_errors == 5
    health = runner.health(window_s=60)
    assert health.recent_tick_errors == 5 and health.last_tick_error == "IndexError: a bug"
    assert health.crashed is None
    # One traceback, not one per tick (at most every ERROR_LOG_INTERVAL_S).
    assert len([r for r in caplog.records if "tick failed" in r.getMessage()]) == 1
    await runner.stop()


async def test_a_crash_of_the_task_is_recorded_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = make("virtual")

    def crash(dt_s: float | None = None) -> list:
        raise SystemError("broken")

    runner.tick = crash  # type: ignore[method-assign]
    runner.start()
    await asyncio.sleep(0.05)
    assert not runner.running
    assert runner.health().crashed == "SystemError: broken"
    assert any("tick loop died" in r.getMessage() for r in caplog.records)
    del runner.tick
    runner.start()  # a restart clears it
    await asyncio.sleep(0.05)
    assert runner.running and runner.health().crashed is None
    await runner.stop()


async def test_start_makes_the_loop_thread_the_engine_owner() -> None:
    runner = make("virtual")
    runner.engine.stop()
    runner.start()

    def from_another_thread(fn, *args):  # type: ignore[no-untyped-def]
        try:
            fn(*args)
        except RuntimeError as exc:
            return str(exc)
        return None

    for fn, args, name in [
        (runner.engine.start, (), "Engine.start"),
        (runner.tick, (0.1,), "Runner.tick"),
        (runner.attach_predictor, (None,), "Runner.attach_predictor"),
        (runner.set_tick_hz, (5.0,), "Engine.configure"),
    ]:
        message = await asyncio.to_thread(from_another_thread, fn, *args)
        assert message is not None and message.startswith(f"{name} called from thread"), name
    assert runner.tick_errors == 0 and runner.engine.tick_hz == 20.0
    runner.engine.start()  # on the loop's thread: fine
    await runner.stop()
