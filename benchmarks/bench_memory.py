"""Server memory under many persons at a high tick rate, and what the history budget costs.

How to run
----------
From the repository root (Linux: reads ``/proc``)::

    python benchmarks/bench_memory.py                            # 1,000 persons x 50 Hz, 60 s
    python benchmarks/bench_memory.py --baseline /path/to/old    # the same for another checkout
    python benchmarks/bench_memory.py --seconds 30 --history-mb 128

It starts ``heartsim serve --persons N --tick-hz HZ --start`` (imported from ``--source``,
by default this checkout; ``--history-mb`` is passed on when given) in its own process, and
every 5 s reads the server's resident memory (``VmRSS``) and ``GET /health``. Printed per
sample: seconds since the start, RSS (MB), messages published per second since the previous
sample, and, where the server reports them, the history's accounted bytes, the messages the
budget dropped and the simulation time the history spans. Then a summary: RSS growth over the
last 20 s of the run (MB/s: ~0 once the history budget is full, steady growth without one),
the last RSS, the messages per second achieved and the ticks the server skipped.
With ``--baseline DIR`` the same run is made first for the checkout at DIR, and both
summaries are printed together.

It also times the hub's fan-out bookkeeping (history, budget) per message in this process
(``Hub._fan_out`` of pre-encoded messages of 1,000 persons, no subscribers; best of 15): the
cost the budget adds to every publish, below and at the budget.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
_START_S = 120.0
_SAMPLE_S = 5.0
_TAIL_S = 20.0


def vmrss_mb(pid: int) -> float:
    """Resident memory of process ``pid``, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


@dataclass
class Run:
    """The samples of one server run."""

    source: Path
    rows: list[tuple[float, float, float, dict]] = field(default_factory=list)

    def summary(self) -> str:
        tail = [row for row in self.rows if row[0] >= self.rows[-1][0] - _TAIL_S]
        (t0, rss0, _, _), (t1, rss1, _, h1) = tail[0], tail[-1]
        growth = (rss1 - rss0) / (t1 - t0) if t1 > t0 else float("nan")
        published = h1["messages_published"] / max(t1, 1e-9)
        return (
            f"{self.source!s:<40} RSS growth {growth:+7.2f} MB/s over the last {_TAIL_S:g} s, "
            f"last RSS {rss1:7.0f} MB, {published:8.0f} messages/s, "
            f"{h1['ticks_skipped']} ticks skipped"
        )


def serve(source: Path, persons: int, tick_hz: float, history_mb: float | None):
    env = {**os.environ, "PYTHONPATH": str(source)}
    cmd = [sys.executable, "-m", "heartsim.cli", "serve", "--port", "0", "--start"]
    cmd += ["--persons", str(persons), "--tick-hz", f"{tick_hz:g}"]
    if history_mb is not None:
        cmd += ["--history-mb", f"{history_mb:g}"]
    # cwd too: ``python -m`` puts the working directory first on sys.path.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=source, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + _START_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("heartsim dashboard: "):
            return proc, line.split(": ", 1)[1].strip().rstrip("/")
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"the server from {source} did not start")


def measure(source: Path, args: argparse.Namespace) -> Run:
    run = Run(source)
    proc, url = serve(source, args.persons, args.tick_hz, args.history_mb)
    print(f"\n{source}: {args.persons} persons x {args.tick_hz:g} Hz, {args.seconds:g} s")
    print(
        f"{'t s':>6} {'RSS MB':>8} {'msg/s':>8} {'history MB':>11} {'evicted':>9} {'window s':>9}"
    )
    try:
        with httpx.Client(base_url=url, timeout=30.0) as http:
            start = time.monotonic()
            previous = 0
            while True:
                elapsed = time.monotonic() - start
                health = http.get("/health").json()
                rss = vmrss_mb(proc.pid)
                rate = (health["messages_published"] - previous) / _SAMPLE_S if run.rows else 0.0
                previous = health["messages_published"]
                run.rows.append((elapsed, rss, rate, health))
                history = health.get("history_bytes")
                print(
                    f"{elapsed:6.0f} {rss:8.0f} {rate:8.0f} "
                    f"{history / 2**20 if history is not None else float('nan'):11.1f} "
                    f"{health.get('history_evicted', float('nan')):9} "
                    f"{health.get('history_window_s', float('nan')):9.1f}",
                    flush=True,
                )
                if elapsed >= args.seconds:
                    break
                time.sleep(max(0.0, start + len(run.rows) * _SAMPLE_S - time.monotonic()))
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return run


def fan_out_cost(source: Path) -> None:
    """Time Hub._fan_out per message of ``source``'s heartsim, unlimited and over a budget."""
    sys.path.insert(0, str(source))
    from heartsim import Engine
    from heartsim.hub import Hub, Message

    engine = Engine(persons=1000, seed=1, tick_hz=50.0)
    engine.start()
    batches = [[Message.encode(s) for s in engine.advance(0.02)] for _ in range(50)]

    def once(**settings: object) -> float:
        hub = Hub(**settings)
        gc.collect()
        started = time.process_time()
        for batch in batches:
            hub._fan_out(batch)
        return (time.process_time() - started) / (len(batches) * 1000) * 1e6

    budgets = {"no budget": None, "over a 5 MiB budget": 5 * 2**20}
    if "history_bytes" not in inspect.signature(Hub).parameters:
        budgets = {"(no budget in this version)": None}
    print("\nhub fan-out bookkeeping, µs per message (best of 15):")
    for label, budget in budgets.items():
        settings = {} if budget is None and len(budgets) == 1 else {"history_bytes": budget}
        print(f"  {label:<28} {min(once(**settings) for _ in range(15)):.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout to import from")
    parser.add_argument("--baseline", type=Path, default=None, help="checkout to compare with")
    parser.add_argument("--persons", type=int, default=1000)
    parser.add_argument("--tick-hz", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--history-mb", type=float, default=None)
    args = parser.parse_args()
    runs = []
    if args.baseline is not None:
        runs.append(measure(args.baseline.resolve(), args))
    runs.append(measure(args.source.resolve(), args))
    print()
    for run in runs:
        print(run.summary())
    fan_out_cost(args.source.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
