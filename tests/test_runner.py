"""The runner: virtual determinism, drift-free real time, skipping ahead instead of bursting."""

from __future__ import annotations

import asyncio
import itertools
import selectors
import time
from collections.abc import Coroutine
from typing import Any

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


class SteppedLoop(asyncio.SelectorEventLoop):
    """An event loop on a clock that moves only when the loop would wait: it then jumps to the
    next timer, plus ``overshoot_s`` (every wake-up that late, as an OS sleep overshoots).

    The real-clock runner's timing is then exact whatever the machine's load, so the tests can
    assert it exactly; real jitter on real clocks is a figure (benchmarks/bench_runner_clock.py).
    """

    def __init__(self, overshoot_s: float = 0.0) -> None:
        self.now = 0.0
        super().__init__(_SteppedSelector(self, overshoot_s))

    def time(self) -> float:
        return self.now

    def stall(self, seconds: float) -> None:
        """The loop is blocked for ``seconds`` (a slow tick, a garbage collection)."""
        self.now += seconds

    def run(self, main: Coroutine[Any, Any, None]) -> None:
        try:
            self.run_until_complete(main)
        finally:
            self.close()


class _SteppedSelector(selectors.DefaultSelector):
    def __init__(self, loop: SteppedLoop, overshoot_s: float) -> None:
        super().__init__()
        self._loop, self._overshoot_s = loop, overshoot_s

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:  # nothing scheduled: wait for I/O (another thread) for real
            return super().select(None)
        events = super().select(0)
        if not events and timeout > 0:
            self._loop.now += timeout + self._overshoot_s
        return events


def test_real_clock_is_drift_free() -> None:
    # Every wake-up comes 4 ms late; ticks are due from the anchor, so lateness never adds up.
    loop = SteppedLoop(overshoot_s=0.004)
    arrivals: list[float] = []

    async def main() -> None:
        runner = make("real", tick_hz=20.0)
        subscriber = runner.hub.stream("p0", maxsize=1000)

        async def watch() -> None:
            async for _ in subscriber:
                arrivals.append(loop.time())
                if len(arrivals) == 21:
                    return

        runner.start()
        await asyncio.wait_for(watch(), 5)
        await runner.stop()
        stats = runner.stats()
        assert stats.ticks >= 21 and stats.ticks_skipped == 0
        assert stats.lag_ms_p50 == pytest.approx(4.0) and stats.lag_ms_max == pytest.approx(4.0)
        latest = runner.hub.latest("p0").data()
        assert abs(latest["ts"] - time.time()) < 1.0  # real time stamps production wall time

    loop.run(main())
    # 20 periods of 50 ms: a loop that slept one period after each tick would take 1.08 s.
    assert arrivals[-1] - arrivals[0] == pytest.approx(1.0)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert gaps == pytest.approx([0.05] * 20)


def test_a_late_tick_skips_ahead_instead_of_bursting() -> None:
    loop = SteppedLoop()

    async def main() -> None:
        runner = make("real", tick_hz=20.0)
        subscriber = runner.hub.stream("p0", maxsize=1000)
        runner.start()
        before = await asyncio.wait_for(subscriber.get(), 2)
        before_at = loop.time()
        loop.stall(0.33)  # block the loop: the next 6 ticks are due during the stall
        catch_up = await asyncio.wait_for(subscriber.get(), 2)
        assert loop.time() - before_at == pytest.approx(0.33)  # at once when the stall ends
        await asyncio.sleep(0.12)
        await runner.stop()
        later = []
        while (message := subscriber.get_nowait()) is not None:
            later.append(message)
        assert runner.ticks_skipped == 5
        # One message covers the stall: seq stays consecutive, simulated time jumps by the 6
        # periods due, and the next tick is back on the schedule (0.35 s after `before`).
        assert catch_up.seq == before.seq + 1
        assert catch_up.t - before.t == pytest.approx(0.30)
        assert [m.seq for m in later] == list(range(catch_up.seq + 1, later[-1].seq + 1))
        assert later[0].t - catch_up.t == pytest.approx(0.05)
        # The following ticks come at the normal pace (0.35 s and 0.40 s), not as a burst.
        assert 2 <= len(later) <= 3

    loop.run(main())


def test_changing_the_rate_takes_effect_at_once() -> None:
    loop = SteppedLoop()

    async def main() -> None:
        runner = make("real", tick_hz=1.0)
        subscriber = runner.hub.stream("p0")
        runner.start()
        await asyncio.sleep(0.05)
        runner.set_tick_hz(20.0)
        changed_at = loop.time()
        await asyncio.wait_for(subscriber.get(), 2)
        # One new period after the change; without the wake-up it would be the old tick at 1 s.
        assert loop.time() - changed_at == pytest.approx(0.05)
        await runner.stop()
        assert runner.engine.tick_hz == 20.0
        with pytest.raises(ValueError, match=r"tick_hz must be between 0\.1 and 50"):
            runner.set_tick_hz(100)
        assert runner.engine.tick_hz == 20.0

    loop.run(main())


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
