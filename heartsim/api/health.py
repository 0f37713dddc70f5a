"""The verdict of ``GET /health``: healthy (200), or degraded / unhealthy (503) and why.

- **unhealthy**: no messages are being produced: the tick loop crashed, is not running, or has
  not woken for longer than :attr:`HealthSettings.stall_s` (the event loop is blocked).
- **degraded**: messages flow but something is wrong: a tick failed, or ticks keep firing late
  (more than :attr:`HealthSettings.max_late_share` of them, and at least two, over
  :attr:`HealthSettings.max_tick_lag_ms`) within the last :attr:`HealthSettings.window_s`
  seconds, or a registered check reports a problem (a store or Redis connection, later).

Lateness counts only when it repeats: one pause of the loop (a garbage collection, a blocking
call) delays one tick (the runner skips ahead rather than bursting), is counted in
``ticks_skipped`` and shows in the lag statistics, but does not make the server unhealthy for
the next ten seconds; an overloaded server, whose ticks are late one after another, does.

Registered checks are plain callables on ``AppContext.health_checks`` returning ``None`` (fine)
or a reason; they run on the event loop for every request, so they must answer from state they
already hold (never wait on I/O).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from heartsim.api.context import AppContext

logger = logging.getLogger(__name__)

Status = Literal["healthy", "degraded", "unhealthy"]
#: Fewest late ticks that make a server degraded (one is a pause, not a trend).
MIN_LATE_TICKS = 2
#: A health check: ``None`` when fine, else the reason (one short sentence).
HealthCheck = Callable[[], str | None]


@dataclass(frozen=True)
class HealthSettings:
    """When ``GET /health`` stops answering 200.

    Parameters
    ----------
    window_s
        How far back (s) tick failures and tick lag count.
    max_tick_lag_ms
        A tick firing later than this after its scheduled time is late, ms.
    max_late_share
        Largest acceptable share (0 to 1) of late ticks over ``window_s``; at least two late
        ticks are needed either way.
    stall_s
        The tick loop counts as stalled when it has not woken for this long, s (at least 2.5
        tick periods, so slow tick rates are not mistaken for a stall).
    """

    window_s: float = 10.0
    max_tick_lag_ms: float = 500.0
    max_late_share: float = 0.1
    stall_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("window_s", "max_tick_lag_ms", "stall_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        share = self.max_late_share
        if not (isinstance(share, (int, float)) and 0.0 <= share < 1.0):
            raise ValueError(f"max_late_share must be from 0 to below 1, got {share!r}")


def assess(ctx: AppContext) -> tuple[Status, list[str]]:
    """The status and the reasons for it (empty when healthy). Call it on the event loop."""
    settings = ctx.health
    runner = ctx.runner.health(settings.window_s, settings.max_tick_lag_ms)
    stall_s = max(settings.stall_s, 2.5 / ctx.engine.tick_hz)
    down: list[str] = []
    if runner.crashed is not None:
        down.append(f"the tick loop crashed ({runner.crashed}); no messages are produced")
    elif not runner.running:
        # Stepped from outside meanwhile (heartsim.ml.fast_forward) is not stopped.
        if runner.since_tick_s is None or runner.since_tick_s > stall_s:
            down.append("the tick loop is not running; no messages are produced")
    elif runner.since_beat_s is not None and runner.since_beat_s > stall_s:
        down.append(
            f"the tick loop has not run for {runner.since_beat_s:.1f} s (the event loop is blocked)"
        )
    if down:
        return "unhealthy", down
    reasons: list[str] = []
    window = f"{settings.window_s:g} s"
    if runner.recent_tick_errors:
        reasons.append(
            f"{runner.recent_tick_errors} tick(s) failed in the last {window} (last: "
            f"{runner.last_tick_error}); their messages were not produced"
        )
    late = runner.recent_late_ticks
    if late >= MIN_LATE_TICKS and late > settings.max_late_share * runner.recent_ticks:
        reasons.append(
            f"ticks are late: {late} of {runner.recent_ticks} in the last {window} fired over "
            f"{settings.max_tick_lag_ms:g} ms late (lag p99 {runner.recent_lag_ms_p99:.0f} ms)"
        )
    for check in ctx.health_checks:
        try:
            reason = check()
        # A check is someone else's code: its failure is a finding, not a crash of /health.
        except Exception as exc:
            reason = f"health check {getattr(check, '__name__', check)!r} failed: {exc!r}"
            logger.warning("%s", reason)
        if reason:
            reasons.append(reason)
    return ("degraded" if reasons else "healthy"), reasons
