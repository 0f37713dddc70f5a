"""The dashboard's persons overview: what its polling costs the server.

Run: ``python benchmarks/bench_dashboard_poll.py [--dashboards 1] [--persons 50] [--seconds 20]``

Starts a real server in a subprocess (``HeartsimServer`` on a free loopback port, 2 Hz as
``heartsim serve``, ``--persons`` persons, simulation running) and measures its CPU time (its
own ``time.process_time()``) twice for ``--seconds``: idle (only ticking), then while
``--dashboards`` clients poll as the dashboard's grid does (``heartsim/api/static/persons.js``):
every 2 s one ``GET /heartbeat/current`` per shown person (at most 48), at most 4 in flight.
Printed: requests per second, latency p50 / p99 (ms), and the server's CPU time per second
(ms/s, i.e. thousandths of a core) idle, polled, and the difference per request.

Shared machines are noisy: compare runs made back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

import httpx

#: As persons.js: cells shown, seconds between rounds, requests in flight.
MAX_CELLS = 48
POLL_EVERY_S = 2.0
IN_FLIGHT = 4

SERVER = """
import asyncio, sys, time
from heartsim.server import HeartsimServer

async def main():
    server = HeartsimServer(port=0, persons={persons}, seed=1, tick_hz=2.0,
                            rate_limit=None, autostart=True)
    async with server:
        print(server.port, flush=True)
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, sys.stdin.readline):
            print(time.process_time(), flush=True)  # CPU seconds of this process

asyncio.run(main())
"""


class Server:
    """The server subprocess; :meth:`cpu_s` asks it for its CPU time so far."""

    def __init__(self, persons: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER.format(persons=persons)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def cpu_s(self) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


async def poll_like_a_dashboard(
    url: str, persons: list[str], seconds: float, latencies_ms: list[float]
) -> None:
    """Rounds of one request per person, IN_FLIGHT at a time, every POLL_EVERY_S."""

    async def worker(http: httpx.AsyncClient, queue: list[str]) -> None:
        while queue:
            person = queue.pop()
            started = time.perf_counter()
            answer = await http.get("/heartbeat/current", params={"person": person})
            answer.raise_for_status()
            latencies_ms.append((time.perf_counter() - started) * 1000)

    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            queue = list(persons)
            await asyncio.gather(*(worker(http, queue) for _ in range(IN_FLIGHT)))
            await asyncio.sleep(POLL_EVERY_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboards", type=int, default=1)
    parser.add_argument("--persons", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    server = Server(args.persons)
    try:
        time.sleep(1.0)  # the first ticks
        cpu0 = server.cpu_s()
        time.sleep(args.seconds)
        idle_ms_per_s = (server.cpu_s() - cpu0) / args.seconds * 1000
        shown = [f"p{i}" for i in range(min(args.persons, MAX_CELLS))]
        latencies_ms: list[float] = []
        url = f"http://127.0.0.1:{server.port}"

        async def dashboards() -> None:
            await asyncio.gather(
                *(
                    poll_like_a_dashboard(url, shown, args.seconds, latencies_ms)
                    for _ in range(args.dashboards)
                )
            )

        cpu1, started = server.cpu_s(), time.monotonic()
        asyncio.run(dashboards())
        elapsed = time.monotonic() - started
        polled_ms_per_s = (server.cpu_s() - cpu1) / elapsed * 1000
    finally:
        server.close()
    rate = len(latencies_ms) / elapsed
    quantiles = statistics.quantiles(latencies_ms, n=100)
    print(
        f"{args.dashboards} dashboard(s), {len(shown)} cells of {args.persons} persons: "
        f"{rate:.1f} requests/s, latency p50 {quantiles[49]:.2f} ms, p99 {quantiles[98]:.2f} ms"
    )
    print(
        f"server CPU: idle {idle_ms_per_s:.1f} ms/s, polled {polled_ms_per_s:.1f} ms/s, "
        f"{(polled_ms_per_s - idle_ms_per_s) / rate:.2f} ms per request"
    )


if __name__ == "__main__":
    main()
