"""Oversized requests against a live server: loop stall, tick lag and memory they cost.

How to run
----------
From the repository root (Linux: reads ``/proc``; loopback only)::

    python benchmarks/bench_limits.py                       # this checkout's heartsim
    python benchmarks/bench_limits.py --source /path/to/old  # another checkout (baseline)
    python benchmarks/bench_limits.py --intervals 1000000 --body-mb 100   # lighter

It starts ``heartsim serve --port 0 --start --tick-hz HZ`` (imported from ``--source``) in its own
process, reads the stream with one WebSocket client on a thread of this process, and sends, one
after the other, with a pause between them:

``predict-N``          ``POST /predict`` with ``--intervals`` RR intervals (``{"rr_ms": [...]}``,
                       about 6 bytes per interval, sent with its Content-Length);
``predict-1MiB``       as many intervals as 1 MiB holds (175,000: just under the default
                       body limit, far over the interval limit);
``body-length``        ``POST /predict`` with a ``--body-mb`` MB body announced by Content-Length
                       (streamed by the client, never held in memory);
``body-chunked``       the same body without Content-Length (chunked transfer encoding).

Printed per request: HTTP status and response time; the stream's lag at each tick due from the
request's start to 1 s after its end (how much later than due the stream delivered it, see
:meth:`StreamProbe.lags_ms`): p99 and max in ms; ticks the server skipped meanwhile
(``/health``); the server's resident memory (``VmRSS``) before the request, 2 s after it, and
the growth; and its peak (``VmHWM``). Bounded: every request has a ``--timeout``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
_START_S = 60.0


def proc_status_kb(pid: int, field: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of ``/proc/PID/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class StreamProbe(threading.Thread):
    """Reads every heartbeat of the stream; remembers (arrival wall time, ts) per message."""

    def __init__(self, ws_url: str) -> None:
        super().__init__(daemon=True)
        self.ws_url = ws_url
        self.arrivals: list[tuple[float, float]] = []
        self._done = threading.Event()

    def run(self) -> None:
        with connect(self.ws_url, max_size=None) as ws:
            while not self._done.is_set():
                try:
                    raw = ws.recv(timeout=0.5)
                except TimeoutError:
                    continue
                now = time.time()
                message = json.loads(raw)
                if message.get("type") == "heartbeat":
                    self.arrivals.append((now, message["ts"]))

    def stop(self) -> None:
        self._done.set()
        self.join(5)

    def lags_ms(self, start: float, end: float, period_s: float) -> list[float]:
        """How late the stream was at each tick due from ``start`` to ``end`` (wall time), ms.

        The reference is the last message that arrived before ``start``: tick ``k`` after it is
        due to arrive ``k`` periods later, and counts as arrived when the first message produced
        at least that much later (``ts``, half a period of tolerance) does. A stalled loop makes
        every tick due during the stall late, by up to the stall's length.
        """
        arrivals = list(self.arrivals)
        before = [a for a in arrivals if a[0] < start]
        if not before:
            return []
        ref_arrival, ref_ts = before[-1]
        later = arrivals[len(before) - 1 :]
        lags = []
        k = 1
        while ref_arrival + k * period_s <= end:
            due_ts = ref_ts + (k - 0.5) * period_s
            arrived = next((a for a, ts in later if ts >= due_ts), None)
            if arrived is None:
                break
            lags.append(max(0.0, arrived - (ref_arrival + k * period_s)) * 1e3)
            k += 1
        return sorted(lags)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (nan if empty)."""
    if not values:
        return math.nan
    return values[max(1, math.ceil(q / 100 * len(values))) - 1]


@dataclass
class Outcome:
    """What one request cost."""

    name: str
    status: str
    seconds: float
    lag_p99_ms: float
    lag_max_ms: float
    ticks_skipped: int
    rss_before_mb: float
    rss_after_mb: float
    hwm_mb: float

    def row(self) -> str:
        grown = self.rss_after_mb - self.rss_before_mb
        return (
            f"{self.name:<18} {self.status:>7} {self.seconds:>8.2f} {self.lag_p99_ms:>9.1f} "
            f"{self.lag_max_ms:>9.1f} {self.ticks_skipped:>8} {self.rss_before_mb:>8.0f} "
            f"{self.rss_after_mb:>8.0f} {grown:>+8.0f} {self.hwm_mb:>8.0f}"
        )


HEADER = (
    f"{'request':<18} {'status':>7} {'time s':>8} {'lag p99':>9} {'lag max':>9} "
    f"{'skipped':>8} {'RSS MB':>8} {'after':>8} {'growth':>8} {'peak':>8}"
)


def interval_body(n: int) -> bytes:
    """``{"rr_ms": [800.0, 801.5, ...]}`` with ``n`` plausible intervals."""
    return b'{"rr_ms": [' + b",".join([b"800.0", b"801.5"] * (n // 2) + [b"799"] * (n % 2)) + b"]}"


def filler(total_bytes: int, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """``total_bytes`` of ``x`` in chunks (never all in memory)."""
    chunk = b"x" * chunk_bytes
    left = total_bytes
    while left > 0:
        yield chunk[: min(left, chunk_bytes)]
        left -= chunk_bytes


def start_server(source: Path, tick_hz: float) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "PYTHONPATH": str(source)}
    cmd = [sys.executable, "-m", "heartsim.cli", "serve", "--port", "0", "--start"]
    cmd += ["--tick-hz", f"{tick_hz:g}"]
    # cwd too: ``python -m`` puts the working directory first on sys.path.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=source
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + _START_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if line.startswith("heartsim dashboard: "):
            return proc, line.split(": ", 1)[1].strip().rstrip("/")
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("the server did not start")


def send(http: httpx.Client, name: str, body: bytes | Iterator[bytes], length: int | None) -> str:
    headers = {"content-type": "application/json"}
    if length is not None:
        headers["content-length"] = str(length)
    try:
        response = http.post("/predict", content=body, headers=headers)
    except httpx.HTTPError as exc:
        return type(exc).__name__[:7]
    return str(response.status_code)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout to import from")
    parser.add_argument("--intervals", type=int, default=5_000_000)
    parser.add_argument("--body-mb", type=int, default=500)
    parser.add_argument("--tick-hz", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="per request, s")
    args = parser.parse_args()

    body = interval_body(args.intervals)
    fits = interval_body((1 << 20) // 6 - 4)  # as many intervals as 1 MiB holds
    size = args.body_mb * 1_000_000
    requests = [
        (f"predict-{args.intervals:.0e}", lambda: body, len(body)),
        ("predict-1MiB", lambda: fits, len(fits)),
        (f"body-length-{args.body_mb}MB", lambda: filler(size), size),
        (f"body-chunked-{args.body_mb}MB", lambda: filler(size), None),
    ]
    proc, url = start_server(args.source.resolve(), args.tick_hz)
    probe = StreamProbe(url.replace("http://", "ws://") + "/ws/heartbeat")
    outcomes: list[Outcome] = []
    try:
        probe.start()
        time.sleep(3.0)
        with httpx.Client(base_url=url, timeout=args.timeout) as http:
            # FastAPI 0.16x sets a router's routes up on its first request (~50 ms): not
            # what is measured here.
            http.post("/predict", json={})
            for name, make_body, length in requests:
                health = http.get("/health").json()
                rss_before = proc_status_kb(proc.pid, "VmRSS") / 1024
                start = time.time()
                status = send(http, name, make_body(), length)
                end = time.time()
                time.sleep(2.0)
                lags = probe.lags_ms(start, end + 1.0, 1.0 / args.tick_hz)
                after = http.get("/health").json()
                outcomes.append(
                    Outcome(
                        name,
                        status,
                        end - start,
                        percentile(lags, 99),
                        lags[-1] if lags else math.nan,
                        after["ticks_skipped"] - health["ticks_skipped"],
                        rss_before,
                        proc_status_kb(proc.pid, "VmRSS") / 1024,
                        proc_status_kb(proc.pid, "VmHWM") / 1024,
                    )
                )
    finally:
        probe.stop()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
    print(f"heartsim from {args.source.resolve()}, {args.tick_hz:g} Hz")
    print(HEADER)
    for outcome in outcomes:
        print(outcome.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
