"""The runner: drives an :class:`~heartsim.engine.Engine` from a clock on an asyncio loop.

``clock="real"`` ticks at ``engine.tick_hz`` on the loop's monotonic clock without drift: tick
``k`` is due at ``t0 + k / tick_hz``, computed from the anchor rather than by adding sleeps, so
sleep overshoot never accumulates. A tick that fires more than a period late does not cause a
burst of catch-up ticks: the schedule skips ahead, the skipped ticks are counted, and the engine
advances by the whole elapsed time in one step (so no beat is lost: ``rr_ms`` of that message
holds every beat since the previous one). ``clock="virtual"`` runs ticks back to back, as fast as
the loop allows, each exactly one period of simulation time: deterministic, for tests.

The runner task runs for the server's lifetime; starting and stopping the *simulation* goes
through the engine (a stopped engine produces no samples, the runner just keeps time).

The engine has one owner: :meth:`Runner.start` binds it to the loop's thread
(:meth:`heartsim.engine.Engine.bind_owner`), so every command runs on that loop between two
ticks (a tick is synchronous), and a command from another thread raises instead of corrupting
a tick in progress. A tick that raises is counted, logged and skipped; the clock goes on. If
the task dies anyway, the exception is kept (:meth:`Runner.health`) and logged.

With a predictor attached (:meth:`Runner.attach_predictor`, usually through
:meth:`heartsim.server.HeartsimServer.attach_model`), each tick's samples get their
``prediction``, ``confidence`` and ``stress_score`` filled in *before* the hub encodes them, so
every message is still encoded once. A failing predictor never stops the stream: its messages
keep nulls and the failure is counted (:meth:`Runner.model_stats`).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from heartsim.engine import Engine, SimulationState
from heartsim.hub import Hub

if TYPE_CHECKING:  # heartsim.ml pulls in scikit-learn: imported only when a model is attached
    from heartsim.ml import LivePredictor

logger = logging.getLogger(__name__)

Clock = Literal["real", "virtual"]
#: Longest stretch (s) one late tick catches up; after a longer stall (a suspended laptop) the
#: schedule restarts from now instead of simulating the whole gap in one step.
MAX_CATCH_UP_S = 5.0
#: A failing tick's traceback is logged at most once per this many seconds (the rest counted).
ERROR_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True)
class TickStats:
    """Timing of the runner's recent ticks.

    Lag is how late a tick fired after its scheduled time, in ms, over the last
    ``window`` ticks; ``jitter_ms`` is its standard deviation.
    """

    ticks: int
    ticks_skipped: int
    tick_errors: int
    lag_ms_p50: float
    lag_ms_p99: float
    lag_ms_max: float
    jitter_ms: float
    window: int


@dataclass(frozen=True)
class RunnerHealth:
    """The runner's recent behaviour, for ``GET /health`` (times in s, lags in ms).

    ``running``: the task is alive. ``crashed``: what ended it, if an exception did.
    ``since_beat_s``: since the tick loop last woke, ``since_tick_s``: since the last tick
    (``None``: never). The ``recent_*`` fields cover the last ``window_s`` seconds:
    ``recent_late_ticks`` counts the real-time ticks later than ``late_ms`` among
    ``recent_ticks``.
    """

    running: bool
    crashed: str | None
    since_beat_s: float | None
    since_tick_s: float | None
    window_s: float
    recent_tick_errors: int
    last_tick_error: str | None
    recent_ticks: int
    recent_late_ticks: int
    recent_lag_ms_p99: float


@dataclass(frozen=True)
class ModelStats:
    """The attached model and its failures (counters cover the runner's whole lifetime).

    ``errors`` counts predictor failures (a failing model call, a message it rejected); the
    messages concerned carried nulls. ``inference_s`` is the wall time spent predicting, s.
    """

    attached: bool
    name: str | None
    features: tuple[str, ...]
    errors: int
    last_error: str | None
    inference_s: float


#: Windows a predictor scores per tick at least (see LivePredictor.max_windows_per_call).
MIN_WINDOWS_PER_TICK = 32
#: The message fields a predictor fills.
PREDICTION_FIELDS = ("prediction", "confidence", "stress_score")

NativeLimit = Callable[[], contextlib.AbstractContextManager[Any]]


def openmp_limit(threads: int | None) -> NativeLimit:
    """A context-manager factory capping the calling thread's OpenMP threads (``None``: no cap).

    scikit-learn's tree models predict with OpenMP threads. A tick scores a few rows, where
    threads only add overhead, and on a busy machine an OpenMP barrier waiting for a
    descheduled thread stalls the whole tick: measured on 2 busy cores, a 10-row gradient
    boosting call took 1.8 ms median but 660 ms at p99 with 2 threads, 0.9 ms and 10 ms with
    one. OpenMP's thread count is per calling thread, so the cap leaves other threads (a
    notebook training a model) alone. Entering it costs ~7 µs.
    """
    if threads is None:
        return contextlib.nullcontext
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # no scikit-learn either: nothing to cap
        return contextlib.nullcontext
    pools = ThreadpoolController().select(user_api="openmp")
    return lambda: pools.limit(limits=threads)


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def iso_utc(epoch_s: float) -> str:
    """``2026-01-09T12:00:00.500000Z`` for epoch seconds (the engine's ``timestamp`` format)."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


class Runner:
    """Drives ``engine.advance`` from a clock and publishes every tick's samples to ``hub``.

    Parameters
    ----------
    engine
        The simulation; its ``tick_hz`` sets the rate.
    hub
        Where samples go.
    clock
        ``"real"`` (wall time, drift-free) or ``"virtual"`` (as fast as possible, deterministic).
    lag_window
        How many recent ticks the lag statistics cover.

    Examples
    --------
    >>> import asyncio
    >>> from heartsim import Engine
    >>> from heartsim.hub import Hub
    >>> async def demo():
    ...     engine, hub = Engine(seed=1), Hub()
    ...     engine.start()
    ...     await Runner(engine, hub, clock="virtual").run_for(2.0)
    ...     return hub.latest("p0").seq
    >>> asyncio.run(demo())
    4
    """

    def __init__(
        self, engine: Engine, hub: Hub, clock: Clock = "real", *, lag_window: int = 1024
    ) -> None:
        if clock not in ("real", "virtual"):
            raise ValueError(f"clock must be 'real' or 'virtual', got {clock!r}")
        self.engine = engine
        self.hub = hub
        self.clock: Clock = clock
        self.ticks = 0
        self.ticks_skipped = 0
        self.tick_errors = 0
        self.last_tick_error: str | None = None
        self._error_at: collections.deque[float] = collections.deque(maxlen=1024)
        self._error_logged_at = -math.inf
        self._errors_unlogged = 0
        # (monotonic s when the tick fired, its lag s) of the recent ticks
        self._lags: collections.deque[tuple[float, float]] = collections.deque(maxlen=lag_window)
        self._beat_at: float | None = None  # monotonic s: the tick loop last woke
        self._tick_at: float | None = None  # monotonic s: the last tick
        self._crash: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._reschedule = False
        self._predictor: LivePredictor | None = None
        self._native_limit: NativeLimit = contextlib.nullcontext
        self._model_name: str | None = None
        self._predictor_errors_seen = 0
        self.model_errors = 0
        self.model_last_error: str | None = None
        self.model_inference_s = 0.0

    # ----- lifecycle ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the runner task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def tick_hz(self) -> float:
        """Ticks per second (the engine's)."""
        return self.engine.tick_hz

    def start(self) -> None:
        """Start the runner task on the running loop (no-op if already running).

        The engine's owner becomes this loop's thread: commands from other threads raise.
        """
        if self.running:
            return
        loop = asyncio.get_running_loop()
        self.engine.bind_owner(loop.is_running)
        run = self._run_real if self.clock == "real" else self._run_virtual
        self._crash = None
        self._task = loop.create_task(run(), name="heartsim-runner")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._crash = exc
            logger.critical("the tick loop died; no more messages: %r", exc, exc_info=exc)

    async def stop(self) -> None:
        """Stop the runner task and wait for it."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    def set_tick_hz(self, tick_hz: float) -> None:
        """Change the rate (0.1 to 50 Hz); the real-time schedule restarts from now."""
        self.engine.configure(tick_hz=tick_hz)
        self._reschedule = True
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    # ----- model -------------------------------------------------------------------------------
    @property
    def predictor(self) -> LivePredictor | None:
        """The attached predictor (``None``: messages carry null predictions)."""
        return self._predictor

    def attach_predictor(
        self,
        predictor: LivePredictor | None,
        name: str | None = None,
        *,
        native_threads: int | None = 1,
    ) -> None:
        """Fill every message's predictions from ``predictor`` from the next tick on.

        ``predictor`` needs ``update_many(samples) -> list[dict | None]`` and the counters
        ``errors`` / ``last_error`` of :class:`heartsim.ml.LivePredictor`; ``None`` detaches
        (messages carry nulls again). It replaces any attached predictor. ``name`` labels it
        in :meth:`model_stats`. ``native_threads`` caps the OpenMP threads of its calls
        (see :func:`openmp_limit`; ``None``: no cap). A predictor with ``step_s`` and
        ``max_windows_per_call`` (as LivePredictor has) gets the latter set every tick, so
        that the windows due at one grid point are scored over the ticks of one step (at
        least :data:`MIN_WINDOWS_PER_TICK` per tick) instead of stalling one tick.

        Call it on the engine's owner thread (see :meth:`start`); elsewhere it raises.
        """
        self.engine.check_owner("Runner.attach_predictor")
        self._native_limit = (
            contextlib.nullcontext if predictor is None else openmp_limit(native_threads)
        )
        self._predictor = predictor
        self._model_name = None if predictor is None else name
        self._predictor_errors_seen = 0 if predictor is None else int(predictor.errors)

    def native_limit(self) -> contextlib.AbstractContextManager[Any]:
        """The thread cap of the attached predictor's calls, for other callers of its model."""
        return self._native_limit()

    def forget_person(self, person_id: str) -> None:
        """Drop the attached predictor's state of a removed person (no-op without one)."""
        predictor = self._predictor
        if predictor is not None:
            predictor.forget(person_id)

    def model_stats(self) -> ModelStats:
        """The attached model and the failure counters."""
        predictor = self._predictor
        features = tuple(getattr(predictor, "feature_names", ())) if predictor else ()
        return ModelStats(
            attached=predictor is not None,
            name=self._model_name,
            features=features,
            errors=self.model_errors,
            last_error=self.model_last_error,
            inference_s=self.model_inference_s,
        )

    def _predict(self, predictor: LivePredictor, samples: list[dict[str, Any]]) -> None:
        """Fill ``samples``' prediction fields in place; never raises."""
        started = time.perf_counter()
        if hasattr(predictor, "max_windows_per_call"):
            # Persons reach the feature grid together: spread that work over one step's ticks.
            ticks_per_step = max(1, math.floor(predictor.step_s * self.engine.tick_hz))
            predictor.max_windows_per_call = max(
                MIN_WINDOWS_PER_TICK, math.ceil(1.2 * len(samples) / ticks_per_step)
            )
        try:
            with self._native_limit():
                results = predictor.update_many(samples)
            if len(results) != len(samples):
                raise ValueError(f"{len(results)} predictions for {len(samples)} messages")
            for sample, result in zip(samples, results, strict=True):
                if result is not None:
                    for field in PREDICTION_FIELDS:
                        sample[field] = result[field]
        # The predictor runs user code (the model): whatever it raises, the stream goes on.
        except Exception as exc:
            for sample in samples:
                for field in PREDICTION_FIELDS:
                    sample[field] = None
            self.model_errors += 1
            self.model_last_error = f"predictor failed: {exc!r}"
            logger.warning("predictor failed; this tick's messages carry nulls: %r", exc)
        else:
            seen = int(predictor.errors)
            if seen > self._predictor_errors_seen:  # failures it counted and survived
                self.model_errors += seen - self._predictor_errors_seen
                self.model_last_error = predictor.last_error
            self._predictor_errors_seen = seen
        self.model_inference_s += time.perf_counter() - started

    # ----- ticking -----------------------------------------------------------------------------
    def tick(self, dt_s: float | None = None) -> list[dict[str, Any]]:
        """Advance the engine by ``dt_s`` (one period if ``None``), add the attached
        predictor's predictions and publish the samples."""
        self.engine.check_owner("Runner.tick")  # raised to the caller, not counted as a failure
        dt_s = 1.0 / self.engine.tick_hz if dt_s is None else dt_s
        self.ticks += 1
        self._tick_at = time.monotonic()
        try:
            samples = self.engine.advance(dt_s)
            if samples and self.clock == "real":
                # ts is when the message was produced (consumers measure latency with it), not
                # the engine's simulated epoch, which drifts from wall time across stop/start.
                now = time.time()
                stamp = iso_utc(now)
                for sample in samples:
                    sample["ts"] = now
                    sample["timestamp"] = stamp
            if samples:
                predictor = self._predictor
                if predictor is not None:
                    self._predict(predictor, samples)
                self.hub.publish(samples)
        # Whatever one tick raises (a bug, a subscriber's error), the clock goes on: count it,
        # log it, and let /health report it.
        except Exception as exc:
            self._tick_failed(exc)
            return []
        return samples

    def _tick_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self.tick_errors += 1
        self.last_tick_error = f"{type(exc).__name__}: {exc}"
        self._error_at.append(now)
        if now - self._error_logged_at < ERROR_LOG_INTERVAL_S:
            self._errors_unlogged += 1
            return
        more = (
            f" ({self._errors_unlogged} more since the last report)"
            if self._errors_unlogged
            else ""
        )
        logger.error("tick failed%s: %s", more, self.last_tick_error, exc_info=exc)
        self._error_logged_at = now
        self._errors_unlogged = 0

    async def run_for(self, duration_s: float) -> int:
        """Virtual time: run ``round(duration_s * tick_hz)`` ticks back to back; returns that."""
        n = round(duration_s * self.engine.tick_hz)
        for _ in range(n):
            self.tick()
            await asyncio.sleep(0)
        return n

    async def _run_virtual(self) -> None:
        while True:
            self._beat_at = time.monotonic()
            if self.engine.state is SimulationState.RUNNING:
                self.tick()
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.01)

    async def _run_real(self) -> None:
        loop = asyncio.get_running_loop()
        tick_hz = self.engine.tick_hz
        period = 1.0 / tick_hz
        anchor = loop.time()
        k = 0
        while True:
            k += 1
            due = anchor + k * period
            await self._sleep_until(loop, due)
            now = loop.time()
            self._beat_at = time.monotonic()
            if self._reschedule or self.engine.tick_hz != tick_hz:  # set here or on the engine
                self._reschedule = False
                tick_hz = self.engine.tick_hz
                period = 1.0 / tick_hz
                anchor, k = now, 0
                continue
            lag = max(0.0, now - due)
            self._lags.append((self._beat_at, lag))
            steps = 1
            if lag >= period:
                late = int(lag // period)
                self.ticks_skipped += late
                if (late + 1) * period > MAX_CATCH_UP_S:
                    anchor, k = now, 0
                else:
                    k += late
                    steps += late
            self.tick(steps * period)

    async def _sleep_until(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        # A future resolved by call_at rather than asyncio.sleep, so set_tick_hz can wake us early.
        wake = self._wake = loop.create_future()
        handle = loop.call_at(when, _resolve, wake)
        try:
            await wake
        finally:
            handle.cancel()
            self._wake = None

    # ----- statistics --------------------------------------------------------------------------
    def stats(self) -> TickStats:
        """Tick counts and lag statistics of the recent ticks."""
        lags = sorted(lag for _, lag in self._lags)
        jitter = statistics.pstdev(lags) if len(lags) > 1 else 0.0
        return TickStats(
            ticks=self.ticks,
            ticks_skipped=self.ticks_skipped,
            tick_errors=self.tick_errors,
            lag_ms_p50=_percentile(lags, 50) * 1e3,
            lag_ms_p99=_percentile(lags, 99) * 1e3,
            lag_ms_max=(lags[-1] if lags else 0.0) * 1e3,
            jitter_ms=jitter * 1e3,
            window=len(lags),
        )

    def health(self, window_s: float = 10.0, late_ms: float = 500.0) -> RunnerHealth:
        """Whether the tick loop lives, and its errors and lag over the last ``window_s`` s
        (ticks later than ``late_ms`` count as late)."""
        now = time.monotonic()
        since = now - window_s
        lags = sorted(lag for at, lag in self._lags if at >= since)
        late = len(lags) - bisect.bisect_right(lags, late_ms / 1e3)
        crash = self._crash
        return RunnerHealth(
            running=self.running,
            crashed=None if crash is None else f"{type(crash).__name__}: {crash}",
            since_beat_s=None if self._beat_at is None else now - self._beat_at,
            since_tick_s=None if self._tick_at is None else now - self._tick_at,
            window_s=window_s,
            recent_tick_errors=sum(1 for at in self._error_at if at >= since),
            last_tick_error=self.last_tick_error,
            recent_ticks=len(lags),
            recent_late_ticks=late,
            recent_lag_ms_p99=_percentile(lags, 99) * 1e3,
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
