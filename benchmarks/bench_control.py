"""Control traffic against a live server: throughput, latency, failed ticks and tick lag.

Run: ``python benchmarks/bench_control.py [--clients 8] [--seconds 20] [--max-own 40] [--grow]``

Starts a real server in a subprocess (``HeartsimServer`` on a free loopback port, 2 Hz as
``heartsim serve``, rate limit off, simulation running) and has ``--clients`` threads send
control requests back to back for ``--seconds``: each adds (drawn profiles, up to
``--max-own``), patches and removes its own persons, triggers stress, sets baselines and the
spontaneous stress rate, and starts / stops / pauses / resumes the simulation (kept mostly
running); with ``--grow`` they only add persons (the reproduction of issue 9: ``POST /persons``
in a loop). Printed: requests per second, control latency p50 / p99 (ms), 5xx answers, reset
connections, failed ticks (``heartsim_tick_errors`` of /metrics), the tick lag p99 of the last
1024 ticks (ms, from /health) and whether the tick loop still ticks afterwards.

Before the engine had one owner (handlers on the thread pool), failed ticks here depended on
the machine's load: 0 to 18 in 10 s of ``--grow --clients 2`` on the same 2-core machine.
``tests/api/test_concurrency.py`` reproduces the race reliably (its clients share the server's
process, so the GIL changes hands far more often).

To compare with another checkout, run it with that checkout first on ``PYTHONPATH`` (the
server subprocess imports heartsim from there). Shared machines are noisy: compare runs made
back to back.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx

SERVER = """
import asyncio, sys
from heartsim.server import HeartsimServer

async def main():
    server = HeartsimServer(port=0, persons={persons}, seed=1, tick_hz={tick_hz},
                            rate_limit=None, autostart=True)
    async with server:
        print(server.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


@dataclass
class Tally:
    """One client's requests."""

    latencies_ms: list[float] = field(default_factory=list)
    server_errors: int = 0
    resets: int = 0


def hammer(index: int, url: str, deadline: float, max_own: int, grow: bool, tally: Tally) -> None:
    """Send control requests until ``deadline``; each client keeps up to ``max_own`` persons
    (``grow``: only adds persons, without a cap)."""
    rng = random.Random(index)
    own: list[str] = []
    with httpx.Client(base_url=url, timeout=30.0) as http:
        while time.monotonic() < deadline:
            roll = 0.0 if grow else rng.random()
            if roll < 0.3 and (grow or len(own) < max_own):
                request = ("POST", "/persons", {})  # a drawn profile (the costliest command)
            elif roll < 0.4 and own:
                request = ("DELETE", f"/persons/{own.pop(0)}", {})
            elif roll < 0.55 and own:
                body = {"resting_hr_bpm": round(rng.uniform(50, 100), 1)}
                request = ("PATCH", f"/persons/{own[-1]}", {"json": body})
            elif roll < 0.7:
                params = {"stress_level": 0.7, "duration_s": 30}
                request = ("POST", "/simulation/trigger-stress", {"params": params})
            elif roll < 0.85:
                params = {"person": "p0", "bpm": round(rng.uniform(50, 100), 1)}
                request = ("POST", "/simulation/set-baseline", {"params": params})
            elif roll < 0.9:
                params = {"spontaneous_stress_per_h": rng.choice([0, 5])}
                request = ("POST", "/simulation/config", {"params": params})
            else:  # mostly running: a stopped or paused engine has nothing to race with
                route = rng.choice(["start", "start", "start", "stop", "pause", "resume"])
                request = ("POST", f"/simulation/{route}", {})
            method, path, options = request
            started = time.perf_counter()
            try:
                response = http.request(method, path, **options)
            except httpx.TransportError:
                tally.resets += 1
                continue
            tally.latencies_ms.append((time.perf_counter() - started) * 1e3)
            tally.server_errors += response.status_code >= 500
            if method == "POST" and path == "/persons" and response.status_code == 201:
                own.append(response.json()["person_id"])


def tick_errors(http: httpx.Client) -> int:
    metrics = http.get("/metrics").text
    match = re.search(r"^heartsim_tick_errors_total ([0-9.e+]+)$", metrics, re.MULTILINE)
    return int(float(match.group(1))) if match else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--persons", type=int, default=3, help="persons at the start")
    parser.add_argument("--tick-hz", type=float, default=2.0, help="default 2 (the server's)")
    parser.add_argument("--max-own", type=int, default=40, help="persons each client keeps")
    parser.add_argument(
        "--grow", action="store_true", help="only POST /persons, uncapped (the issue's repro)"
    )
    args = parser.parse_args()

    code = SERVER.format(persons=args.persons, tick_hz=args.tick_hz)
    server = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        tallies = [Tally() for _ in range(args.clients)]
        deadline = time.monotonic() + args.seconds
        threads = [
            threading.Thread(target=hammer, args=(i, url, deadline, args.max_own, args.grow, t))
            for i, t in enumerate(tallies)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        with httpx.Client(base_url=url, timeout=10.0) as http:
            http.post("/simulation/start")
            health = http.get("/health").json()
            ticks_before = health["ticks"]
            time.sleep(0.5)
            still_ticking = http.get("/health").json()["ticks"] > ticks_before
            errors = tick_errors(http)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(15)
    latencies = sorted(ms for t in tallies for ms in t.latencies_ms)
    p99 = latencies[max(0, round(0.99 * len(latencies)) - 1)] if latencies else float("nan")
    workload = "POST /persons only" if args.grow else f"mixed, up to {args.max_own} persons each"
    print(
        f"{args.clients} clients, {args.seconds:g} s, {args.tick_hz:g} Hz, "
        f"{args.persons} persons at start, {workload}"
    )
    print(f"  requests/s          {len(latencies) / elapsed:8.0f}")
    print(f"  latency p50 / p99   {statistics.median(latencies):8.1f} / {p99:.1f} ms")
    print(f"  5xx, resets         {sum(t.server_errors for t in tallies):8d}, "
          f"{sum(t.resets for t in tallies)}")  # fmt: skip
    print(f"  failed ticks        {errors:8d}")
    print(f"  tick lag p99        {health['tick_lag_ms']['p99']:8.1f} ms (last 1024 ticks)")
    print(f"  still ticking       {still_ticking!s:>8}")


if __name__ == "__main__":
    main()
