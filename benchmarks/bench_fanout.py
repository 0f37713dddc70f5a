"""WebSocket fan-out: heartsim against the original design and a plain ``websockets`` server.

How to run
----------
From the repository root (Linux; loopback only)::

    python benchmarks/bench_fanout.py --quick          # smoke test, < 60 s, small N
    python benchmarks/bench_fanout.py                  # the issue's scenarios (~6 min)
    python benchmarks/bench_fanout.py --scenarios 2:5000 --servers plain,heartsim
    python benchmarks/bench_fanout.py --json out.json  # also write every figure as JSON

Scenarios are ``HZ:CLIENTS`` pairs (default ``2:100,2:500,2:2000,2:5000,20:1000``). For each
scenario the same load generator measures, one after the other, three servers sending the same
heartbeat message (~320 bytes, with ``seq`` and ``ts``):

``original``  the design heartsim replaced: FastAPI + uvicorn, a pydantic model per tick and a
              sequential ``await client.send_json(model.dict())`` per client (audit report);
``plain``     a bare ``websockets`` server: encode once, ``websockets.broadcast`` (the floor);
``heartsim``  ``heartsim serve --port 0 --tick-hz HZ --start --max-clients BIG
              --ws-connects-per-s 0`` (the CLI as shipped: uvicorn's websockets-sansio
              protocol, compression off, hub fan-out; the per-address handshake limit is off,
              since every load-generator client shares 127.0.0.1).

Each run: start the server (own process), connect all clients from separate load-generator
processes (``_fanout_load.py``: raw non-blocking sockets, hand-written handshake and frame
parser, one ``recvmsg`` per readable socket; one process per ``--clients-per-proc`` clients),
warm up ``--warmup`` s, measure ``--measure`` s, wait ``--drain`` s for late messages,
disconnect (RST, so no TIME_WAIT piles up), stop the server. Every wait is bounded. The servers
run under ``_fanout_gcwrap.py``, which only logs their full garbage collections
(``--no-gc-trace``: run them bare). ``--profile-dir DIR`` records the heartsim server with
py-spy over each window (``pip install py-spy``; ``--profile-format raw`` for text).

How to read it
--------------
The first table has one row per server and scenario, the servers of a scenario side by side:

``deliv %``     received / expected. A message belongs to the window if its ``ts`` (production
                time) is in it; expected = clients requested x the seq range produced in the
                window, so lost messages, refused and dropped clients all count against it.
``p50``/``p99``/``max``  latency in ms: receive wall time (when the load generator read the
                message) - ``ts`` (server), all clients and messages of the window pooled.
``CPU %``       user + system time of the server process over the window, % of one core
                (from ``/proc``; loopback delivery partly runs in softirq context, which the
                kernel may not charge to the process, so read it as a lower bound).
``ticks %``     messages produced in the window / nominal (``measure x Hz``), +-1 tick at the
                window's edges: well below 100 the server ticks late (the original design
                sleeps a period *after* broadcasting, so its ticks drift).
``late``        tick intervals longer than 1.5 periods, from the messages' ``ts``.
``lag p99``     how late the messages were produced against a perfect ``seq x period``
                schedule (ms): grows without bound for a drifting loop.
``÷plain``, ``÷orig``  this row's p99 / the plain, original server's p99 in the same scenario
                (the heartsim rows carry the ratios the targets use).

The second table says where the time goes and whether the measurement can be trusted:

``k p50``/``k p99``  latency to the *kernel* receive time (``SO_TIMESTAMPNS``): when the
                server's bytes reached the client socket, before any queueing in the load
                generator. ``p99 - k p99`` is what the load generator itself added.
``1st``, ``span`` per tick (median): from ``ts`` to the first client's bytes, and from the
                first to the last client's: the server's fan-out time for one message.
``srv lag``     p99 tick lag the server reports at ``/health`` over its *recent* ticks
                (heartsim: last 1,024, so at 2 Hz it includes startup and the connect phase).
``GC ms``       longest full garbage collection of the server overlapping the window or the
                drain (the loop, ticks and fan-out stall for that long); ``conn GC``:
                count/longest (ms) of those before the window (startup and connecting).
``conn s``      time to connect all clients (handshake throughput of the server).
``lg CPU``, ``lg lag``  the busiest load-generator process's CPU % over the window, and the
                p99 lateness (ms) of a 10 ms timer on its loop. ``! load generator saturated``
                (CPU > 85 % or lag > 50 ms) means its figures include client-side queueing.

Targets (checked when the scenario is in the run): at 2 Hz with 2,000 clients heartsim delivers
>= 99.9 % with p99 <= 100 ms; with 5,000 clients >= 99.9 % and p99 <= 1.5 x the plain server's
p99; at 20 Hz with 1,000 clients p99 <= 100 ms. The exit code is 1 if one fails or a run
errs. On a 2-core machine the server and the load generators share the cores, so absolute
figures are pessimistic and noisy: compare servers within a run, and take final figures on a
quiet machine (several runs; the spread between runs is often larger than the differences).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from _fanout_load import raise_nofile

HERE = Path(__file__).resolve().parent
LOAD_SCRIPT = HERE / "_fanout_load.py"
SERVER_SCRIPT = HERE / "_fanout_servers.py"
GC_WRAP = HERE / "_fanout_gcwrap.py"
SERVERS = ("original", "plain", "heartsim")
DEFAULT_SCENARIOS = "2:100,2:500,2:2000,2:5000,20:1000"
QUICK_SCENARIOS = "2:50,20:50"
_SERVER_START_S = 30.0
_STOP_S = 15.0
_LG_CPU_SATURATED = 85.0  # % of one core
_LG_LAG_SATURATED_MS = 50.0


@dataclass(frozen=True)
class Scenario:
    """One load point: ``clients`` WebSocket clients of a server ticking at ``hz``."""

    hz: float
    clients: int

    @property
    def label(self) -> str:
        """``2 Hz x 5000``."""
        return f"{self.hz:g} Hz x {self.clients}"


@dataclass
class RunResult:
    """The figures of one server under one scenario."""

    server: str
    hz: float
    clients: int
    connected: int = 0
    delivery_pct: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    kernel_p50_ms: float = math.nan
    kernel_p99_ms: float = math.nan
    first_ms: float = math.nan
    span_ms: float = math.nan
    tick_lag_p99_ms: float = math.nan
    gc_window_max_ms: float = math.nan
    gc_window_n: int = 0
    gc_connect_n: int = 0
    gc_connect_max_ms: float = math.nan
    #: wall-clock start of the window and end of the drain after it (epoch seconds)
    window: tuple[float, float] = (math.nan, math.nan)
    cpu_pct: float = math.nan
    ticks_pct: float = math.nan
    late_ticks: int = 0
    server_lag_p99_ms: float = math.nan
    ticks_skipped: int = 0
    gaps: int = 0
    clients_lost: int = 0
    lg_cpu_pct: float = math.nan
    lg_lag_p99_ms: float = math.nan
    connect_s: float = math.nan
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def lg_saturated(self) -> bool:
        """Whether a load generator looked saturated (its figures include client queueing)."""
        return self.lg_cpu_pct > _LG_CPU_SATURATED or self.lg_lag_p99_ms > _LG_LAG_SATURATED_MS


# ----- processes -------------------------------------------------------------------------------
class LineReader:
    """Reads lines from a child's stdout pipe with a deadline (no thread, no blocking read)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(stream, selectors.EVENT_READ)

    def readline(self, timeout_s: float) -> str | None:
        """The next line, or ``None`` on timeout or end of stream."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                return None
            chunk = os.read(self.stream.fileno(), 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", "replace")

    def close(self) -> None:
        """Release the selector."""
        self._selector.close()


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), from ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_json(url: str, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """GET ``url`` and decode JSON; ``None`` on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            data = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    """Signal ``proc``, wait up to ``_STOP_S``, then kill it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(_STOP_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class ServerProcess:
    """One server under test, in its own process, on a free loopback port."""

    def __init__(
        self, kind: str, scenario: Scenario, log_path: Path, gc_log: Path | None = None
    ) -> None:
        self.kind = kind
        self.scenario = scenario
        self.log_path = log_path
        self.gc_log = gc_log
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        """The command line that starts this server."""
        hz = f"{self.scenario.hz:g}"
        cap = ["--max-clients", str(self.scenario.clients * 2 + 100)]
        if self.kind == "heartsim":
            args = ["serve", "--port", "0", "--tick-hz", hz, "--start", "--seed", "1", *cap]
            args += ["--ws-connects-per-s", "0"]  # all clients share one address
            if self.gc_log is None:
                return [sys.executable, "-m", "heartsim.cli", *args]
        else:
            args = ["--port", "0", "--tick-hz", hz, *cap]
            if self.gc_log is None:
                return [sys.executable, str(SERVER_SCRIPT), self.kind, *args]
        return [sys.executable, str(GC_WRAP), str(self.gc_log), self.kind, *args]

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process, read its port and wait until ``/health`` answers."""
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL
        )
        assert self.proc.stdout is not None
        reader = LineReader(self.proc.stdout)
        deadline = time.monotonic() + _SERVER_START_S
        try:
            while not self.port:
                line = reader.readline(max(0.0, deadline - time.monotonic()))
                if line is None:
                    raise RuntimeError(f"{self.kind} did not report its port (see {self.log_path})")
                match = re.search(r"PORT (\d+)|127\.0\.0\.1:(\d+)", line)
                if match:
                    self.port = int(match.group(1) or match.group(2))
        finally:
            reader.close()
        while time.monotonic() < deadline:
            health = get_json(self.base_url + "/health", 2.0)
            if health is not None and health.get("simulation_state", "running") == "running":
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not become healthy (see {self.log_path})")

    def health(self) -> dict[str, Any] | None:
        """The server's ``/health``."""
        return get_json(self.base_url + "/health", 5.0)

    def stop(self) -> None:
        """SIGINT (graceful), then kill after a bound."""
        if self.proc is not None:
            stop_process(self.proc)
        if self._log is not None:
            self._log.close()


class LoadProcess:
    """One load-generator process with ``clients`` connections."""

    def __init__(
        self, port: int, clients: int, result: Path, log_path: Path, args: argparse.Namespace
    ) -> None:
        self.result = result
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                *[sys.executable, str(LOAD_SCRIPT), "--port", str(port)],
                *["--clients", str(clients), "--result", str(result)],
                *["--concurrency", str(args.concurrency)],
                *["--connect-timeout", str(args.connect_timeout)],
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.proc.stdout is not None
        self.reader = LineReader(self.proc.stdout)

    def event(self, timeout_s: float) -> dict[str, Any]:
        """The next JSON event it prints (``{"event": "timeout"}`` if none in time)."""
        line = self.reader.readline(timeout_s)
        if line is None:
            return {"event": "timeout"}
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        return event if isinstance(event, dict) else {"event": "garbage", "line": line[:200]}

    def send_window(self, t0: float, t1: float, drain: float) -> None:
        """Tell it the measurement window (wall-clock epoch seconds)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"t0": t0, "t1": t1, "drain": drain}).encode() + b"\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """Close its stdin (it then exits), wait a bound, kill."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(10.0)
        except subprocess.TimeoutExpired:
            stop_process(self.proc, signal.SIGTERM)
        self.reader.close()
        self._log.close()


# ----- one run ---------------------------------------------------------------------------------
def _split(clients: int, per_proc: int) -> list[int]:
    procs = max(1, math.ceil(clients / per_proc))
    base, extra = divmod(clients, procs)
    return [base + (1 if i < extra else 0) for i in range(procs)]


def _quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile (``q`` in 0..1) of sorted values."""
    if not len(sorted_values):
        return math.nan
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def _nanmax(a: float, b: float) -> float:
    return b if math.isnan(a) else max(a, b)


def _sleep_until(wall: float) -> None:
    time.sleep(max(0.0, wall - time.time()))


def run_one(kind: str, scenario: Scenario, args: argparse.Namespace, workdir: Path) -> RunResult:
    """Measure server ``kind`` under ``scenario`` (see the module docstring)."""
    result = RunResult(kind, scenario.hz, scenario.clients)
    tag = f"{kind}-{scenario.hz:g}hz-{scenario.clients}"
    gc_log = None if args.no_gc_trace else workdir / f"{tag}-gc.log"
    server = ServerProcess(kind, scenario, workdir / f"{tag}-server.log", gc_log)
    loads: list[LoadProcess] = []
    profiler: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        for i, n in enumerate(_split(scenario.clients, args.clients_per_proc)):
            loads.append(
                LoadProcess(
                    server.port,
                    n,
                    workdir / f"{tag}-load{i}.json",
                    workdir / f"{tag}-load{i}.log",
                    args,
                )
            )
        started = time.monotonic()
        for load in loads:
            event = load.event(args.connect_timeout + 15.0)
            if event.get("event") != "connected":
                raise RuntimeError(f"load generator failed to connect: {event}")
            result.connected += int(event["ok"])
            if event.get("errors"):
                result.notes.append(f"connect errors {event['errors']}")
        result.connect_s = time.monotonic() - started

        t0 = time.time() + args.warmup
        t1 = t0 + args.measure
        result.window = (t0, t1 + args.drain)  # in-window messages may arrive in the drain
        for load in loads:
            load.send_window(t0, t1, args.drain)
        _sleep_until(t0)
        cpu0, wall0 = proc_cpu_s(server.pid), time.monotonic()
        health0 = server.health()
        if args.profile_dir is not None and kind == "heartsim":
            suffix = {"flamegraph": ".svg", "speedscope": ".json"}.get(args.profile_format, ".txt")
            output = Path(args.profile_dir) / f"{tag}{suffix}"
            profiler = _start_profiler(server.pid, args, output)
        _sleep_until(t1)
        cpu1, wall1 = proc_cpu_s(server.pid), time.monotonic()
        health1 = server.health()
        if cpu0 is not None and cpu1 is not None:
            result.cpu_pct = 100.0 * (cpu1 - cpu0) / (wall1 - wall0)
        _read_health(result, health0, health1)

        for load in loads:
            event = load.event(args.drain + 30.0)
            if event.get("event") != "done":
                raise RuntimeError(f"load generator did not finish: {event}")
        _aggregate(result, scenario, [load.result for load in loads], args.measure)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(args.measure + 30.0)
            stop_process(profiler)
        for load in loads:
            load.stop()
        server.stop()
    if gc_log is not None:
        _read_gc_log(result, gc_log)
    return result


def _read_gc_log(result: RunResult, path: Path) -> None:
    """Full collections: the longest pause inside the window, and those while connecting."""
    try:
        text = path.read_text()
    except OSError:
        return
    pauses = []
    for line in text.splitlines():
        end, _, pause = line.partition(" ")
        with contextlib.suppress(ValueError):
            pauses.append((float(end), float(pause)))
    start, end_of_drain = result.window
    inside = [pause for end, pause in pauses if end - pause < end_of_drain and end > start]
    before = [pause for end, pause in pauses if end <= start]
    result.gc_window_max_ms = max(inside, default=0.0) * 1e3
    result.gc_window_n = len(inside)
    result.gc_connect_n = len(before)
    result.gc_connect_max_ms = max(before, default=0.0) * 1e3


def _read_health(
    result: RunResult, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> None:
    if after is None:
        result.notes.append("no /health at the end of the window")
        return
    lag = after.get("tick_lag_ms") or {}
    result.server_lag_p99_ms = float(lag.get("p99", math.nan))
    if before is not None:
        result.ticks_skipped = int(after.get("ticks_skipped", 0)) - int(
            before.get("ticks_skipped", 0)
        )
        dropped = int(after.get("clients_dropped", 0)) - int(before.get("clients_dropped", 0))
        if dropped:
            result.notes.append(f"server dropped {dropped} slow clients")


def _aggregate(result: RunResult, scenario: Scenario, files: list[Path], measure_s: float) -> None:
    latencies, kernel = array("d"), array("d")
    seqs: dict[int, float] = {}
    spans: dict[int, list[float]] = {}
    received = 0
    for path in files:
        data = json.loads(path.read_text())
        received += int(data["received"])
        result.gaps += int(data["gaps"])
        result.clients_lost += int(data["closed_in_window"])
        seqs.update((int(seq), ts) for seq, ts in data["seqs"].items())
        for seq, (first, last) in data["spans"].items():
            span = spans.setdefault(int(seq), [first, last])
            span[0], span[1] = min(span[0], first), max(span[1], last)
        cpu = 100.0 * float(data["cpu_s"]) / float(data["window_s"])
        lag = float(data["loop_lag_p99_ms"])
        result.lg_cpu_pct = _nanmax(result.lg_cpu_pct, cpu)
        result.lg_lag_p99_ms = _nanmax(result.lg_lag_p99_ms, lag)
        latencies.frombytes(Path(str(path) + ".lat").read_bytes())
        kernel.frombytes(Path(str(path) + ".klat").read_bytes())
    if not seqs:
        result.delivery_pct = 0.0
        result.notes.append("no message produced or received in the window")
        return
    produced = max(seqs) - min(seqs) + 1
    result.delivery_pct = 100.0 * received / (scenario.clients * produced)
    ordered = sorted(latencies)
    result.p50_ms = _quantile(ordered, 0.50) * 1e3
    result.p99_ms = _quantile(ordered, 0.99) * 1e3
    result.max_ms = ordered[-1] * 1e3 if ordered else math.nan
    kernel_ordered = sorted(x for x in kernel if not math.isnan(x))
    result.kernel_p50_ms = _quantile(kernel_ordered, 0.50) * 1e3
    result.kernel_p99_ms = _quantile(kernel_ordered, 0.99) * 1e3
    # Kernel arrival of each tick's message on its first and last client: the server's own
    # fan-out time (first - ts: until the first write; last - first: writing to everyone).
    firsts = sorted(v[0] - seqs[s] for s, v in spans.items() if not math.isnan(v[0]))
    widths = sorted(v[1] - v[0] for v in spans.values() if not math.isnan(v[0]))
    result.first_ms = _quantile(firsts, 0.50) * 1e3
    result.span_ms = _quantile(widths, 0.50) * 1e3
    result.ticks_pct = 100.0 * produced / (measure_s * scenario.hz)
    ordered_seqs = sorted(seqs)
    stamps = [seqs[s] for s in ordered_seqs]
    period = 1.0 / scenario.hz
    # Lateness of each message against a perfect schedule (seq x period), anchored at the
    # earliest one: a drifting loop shows a growing lag, a skipped tick a lag of one period.
    offsets = [seqs[s] - (s - ordered_seqs[0]) * period for s in ordered_seqs]
    lags = sorted(offset - min(offsets) for offset in offsets)
    result.tick_lag_p99_ms = _quantile(lags, 0.99) * 1e3
    result.late_ticks = sum(1 for a, b in itertools.pairwise(stamps) if b - a > 1.5 * period)


def _start_profiler(
    pid: int, args: argparse.Namespace, output: Path
) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy")
    if exe is None:
        print("  (--profile-dir: py-spy not found; pip install py-spy)", file=sys.stderr)
        return None
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"  (--profile-dir: {exc})", file=sys.stderr)
        return None
    return subprocess.Popen(
        [
            *[exe, "record", "-p", str(pid), "-d", str(math.ceil(args.measure))],
            *["-r", "200", "-o", str(output), "--nonblocking", "-f", args.profile_format],
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# ----- report ----------------------------------------------------------------------------------
def _fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _ratio(a: float, b: float) -> str:
    return "-" if math.isnan(a) or math.isnan(b) or b <= 0 else f"{a / b:.2f}"


MAIN_COLUMNS = (
    ("server", 9),
    ("clients", 11),
    ("Hz", 4),
    ("deliv %", 8),
    ("p50 ms", 8),
    ("p99 ms", 8),
    ("max ms", 8),
    ("CPU %", 6),
    ("ticks %", 7),
    ("late", 5),
    ("lag p99", 8),
    ("÷plain", 7),
    ("÷orig", 7),
)
DIAG_COLUMNS = (
    ("server", 9),
    ("clients", 7),
    ("Hz", 4),
    ("k p50", 7),
    ("k p99", 7),
    ("1st", 6),
    ("span", 7),
    ("srv lag", 8),
    ("GC ms", 7),
    ("conn s", 7),
    ("conn GC", 8),
    ("lg CPU", 7),
    ("lg lag", 7),
)


def _row(cells: tuple[str, ...], columns: tuple[tuple[str, int], ...]) -> str:
    return " ".join(f"{c:>{w}}" for c, (_, w) in zip(cells, columns, strict=True))


def _by_scenario(results: list[RunResult]) -> list[list[RunResult]]:
    groups: dict[tuple[float, int], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.hz, result.clients), []).append(result)
    return list(groups.values())


def format_table(results: list[RunResult]) -> str:
    """The main results, one block per scenario (servers side by side)."""
    head = _row(tuple(name for name, _ in MAIN_COLUMNS), MAIN_COLUMNS)
    lines = [head, "-" * len(head)]
    for group in _by_scenario(results):
        by_server = {r.server: r for r in group}
        plain_p99 = by_server["plain"].p99_ms if "plain" in by_server else math.nan
        orig_p99 = by_server["original"].p99_ms if "original" in by_server else math.nan
        for r in group:
            clients = f"{r.connected}/{r.clients}" if r.connected != r.clients else str(r.clients)
            cells = (
                r.server,
                clients,
                f"{r.hz:g}",
                _fmt(r.delivery_pct, 2),
                _fmt(r.p50_ms),
                _fmt(r.p99_ms),
                _fmt(r.max_ms),
                _fmt(r.cpu_pct, 0),
                _fmt(r.ticks_pct, 0),
                str(r.late_ticks),
                _fmt(r.tick_lag_p99_ms),
                _ratio(r.p99_ms, plain_p99),
                _ratio(r.p99_ms, orig_p99),
            )
            lines.append(_row(cells, MAIN_COLUMNS))
        lines.append("")
    return "\n".join(lines)


def format_diagnostics(results: list[RunResult]) -> str:
    """Where the latency comes from, server and load-generator health, and notes."""
    head = _row(tuple(name for name, _ in DIAG_COLUMNS), DIAG_COLUMNS) + "  notes"
    lines = [head, "-" * len(head)]
    for group in _by_scenario(results):
        for r in group:
            connect_gc = (
                f"{r.gc_connect_n}/{r.gc_connect_max_ms:.0f}"
                if not math.isnan(r.gc_connect_max_ms)
                else "-"
            )
            cells = (
                r.server,
                str(r.clients),
                f"{r.hz:g}",
                _fmt(r.kernel_p50_ms),
                _fmt(r.kernel_p99_ms),
                _fmt(r.first_ms),
                _fmt(r.span_ms),
                _fmt(r.server_lag_p99_ms),
                _fmt(r.gc_window_max_ms, 0),
                _fmt(r.connect_s),
                connect_gc,
                _fmt(r.lg_cpu_pct, 0),
                _fmt(r.lg_lag_p99_ms),
            )
            notes = list(r.notes)
            if r.error:
                notes.insert(0, f"ERROR: {r.error}")
            if r.lg_saturated:
                notes.insert(0, "! load generator saturated")
            if r.gc_window_n:
                notes.append(f"{r.gc_window_n} full GC in window")
            if r.gaps:
                notes.append(f"{r.gaps} seq gaps")
            if r.clients_lost:
                notes.append(f"{r.clients_lost} clients lost in window")
            if r.ticks_skipped:
                notes.append(f"{r.ticks_skipped} ticks skipped (server)")
            lines.append(_row(cells, DIAG_COLUMNS) + ("  " + "; ".join(notes) if notes else ""))
        lines.append("")
    return "\n".join(lines)


def check_targets(results: list[RunResult]) -> list[tuple[str, bool, str]]:
    """``(target, passed, measured)`` for every target whose scenario was run."""
    by_key = {(r.server, r.hz, r.clients): r for r in results}
    checks: list[tuple[str, bool, str]] = []
    hs = by_key.get(("heartsim", 2.0, 2000))
    if hs is not None:
        ok = hs.delivery_pct >= 99.9 and hs.p99_ms <= 100.0
        checks.append(
            (
                "2 Hz x 2000: delivery >= 99.9 %, p99 <= 100 ms",
                ok,
                f"{_fmt(hs.delivery_pct, 2)} %, p99 {_fmt(hs.p99_ms)} ms",
            )
        )
    hs, plain = by_key.get(("heartsim", 2.0, 5000)), by_key.get(("plain", 2.0, 5000))
    if hs is not None:
        plain_p99 = plain.p99_ms if plain is not None else math.nan
        limit = 1.5 * plain_p99
        ok = hs.delivery_pct >= 99.9 and hs.p99_ms <= limit
        checks.append(
            (
                "2 Hz x 5000: delivery >= 99.9 %, p99 <= 1.5 x plain p99",
                ok,
                f"{_fmt(hs.delivery_pct, 2)} %, p99 {_fmt(hs.p99_ms)} ms vs limit "
                f"{_fmt(limit)} ms (heartsim/plain {_ratio(hs.p99_ms, plain_p99)})",
            )
        )
    hs = by_key.get(("heartsim", 20.0, 1000))
    if hs is not None:
        checks.append(
            (
                "20 Hz x 1000: p99 <= 100 ms",
                hs.p99_ms <= 100.0,
                f"p99 {_fmt(hs.p99_ms)} ms (delivery {_fmt(hs.delivery_pct, 2)} %)",
            )
        )
    return checks


def _json_safe(value: Any) -> Any:
    """``value`` with NaN replaced by ``None`` (strict JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


# ----- main ------------------------------------------------------------------------------------
def parse_scenarios(text: str) -> list[Scenario]:
    """``"2:100,20:1000"`` -> scenarios."""
    scenarios = []
    for item in text.split(","):
        hz, _, clients = item.strip().partition(":")
        try:
            scenario = Scenario(float(hz), int(clients))
        except ValueError:
            raise ValueError(f"expected HZ:CLIENTS, got {item.strip()!r}") from None
        if scenario.hz <= 0 or scenario.clients < 1:
            raise ValueError(f"HZ must be > 0 and CLIENTS >= 1, got {item.strip()!r}")
        scenarios.append(scenario)
    return scenarios


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description="WebSocket fan-out: heartsim vs the original design vs plain websockets "
        "(see the module docstring for how to read the tables).",
    )
    parser.add_argument("--quick", action="store_true", help="small N, short windows (< 60 s)")
    parser.add_argument("--scenarios", default=None, help=f"HZ:CLIENTS,... [{DEFAULT_SCENARIOS}]")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="which servers, in order [original,plain,heartsim]",
    )
    parser.add_argument("--warmup", type=float, default=None, help="seconds [2; quick 0.5]")
    parser.add_argument("--measure", type=float, default=None, help="seconds [10; quick 2]")
    parser.add_argument("--drain", type=float, default=None, help="seconds [3; quick 1]")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=None,
        help="seconds to connect every client [120; quick 20]",
    )
    parser.add_argument(
        "--clients-per-proc", type=int, default=2500, help="clients per load process [2500]"
    )
    parser.add_argument(
        "--concurrency", type=int, default=100, help="handshakes in flight per load process [100]"
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--log-dir", default=None, help="keep server/load logs here")
    parser.add_argument(
        "--profile-dir", default=None, help="py-spy the heartsim server over each window into DIR"
    )
    parser.add_argument(
        "--profile-format",
        choices=("flamegraph", "raw", "speedscope"),
        default="flamegraph",
        help="py-spy output format [flamegraph]; raw: collapsed stacks, one per line",
    )
    parser.add_argument(
        "--no-gc-trace",
        action="store_true",
        help="run the servers directly, without _fanout_gcwrap.py (no GC columns)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run every scenario against every server; print the table and the targets."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quick = args.quick
    try:
        scenarios = parse_scenarios(
            args.scenarios or (QUICK_SCENARIOS if quick else DEFAULT_SCENARIOS)
        )
    except ValueError as exc:
        parser.error(f"--scenarios: {exc}")
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 2.0)
    args.measure = args.measure if args.measure is not None else (2.0 if quick else 10.0)
    args.drain = args.drain if args.drain is not None else (1.0 if quick else 3.0)
    if args.connect_timeout is None:
        args.connect_timeout = 20.0 if quick else 120.0
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        print(f"unknown servers {sorted(unknown)}; choose from {SERVERS}", file=sys.stderr)
        return 2
    most = max(s.clients for s in scenarios)
    soft, hard = raise_nofile(2 * most + 1024)  # children (servers, load processes) inherit it
    if soft != -1 and soft < most + 256:
        print(f"RLIMIT_NOFILE {soft}/{hard} is too low for {most} clients", file=sys.stderr)
        return 2
    workdir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="fanout-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"fan-out benchmark: {len(scenarios)} scenarios x {servers}; warmup {args.warmup:g} s, "
        f"measure {args.measure:g} s, drain {args.drain:g} s; {os.cpu_count()} CPUs; "
        f"RLIMIT_NOFILE {soft}; logs in {workdir}",
        flush=True,
    )
    results: list[RunResult] = []
    started = time.monotonic()
    for scenario in scenarios:
        for kind in servers:
            result = run_one(kind, scenario, args, workdir)
            results.append(result)
            status = f"ERROR {result.error}" if result.error else "ok"
            print(
                f"  {scenario.label:>14} {kind:>9}: deliv {_fmt(result.delivery_pct, 2)} %, "
                f"p99 {_fmt(result.p99_ms)} ms, CPU {_fmt(result.cpu_pct, 0)} %, "
                f"connect {_fmt(result.connect_s)} s ({status})",
                flush=True,
            )
    print()
    print(format_table(results))
    print(format_diagnostics(results))
    checks = check_targets(results)
    if checks:
        print("targets (heartsim):")
        for name, ok, measured in checks:
            print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {measured}")
    else:
        print("targets: none of the target scenarios (2:2000, 2:5000, 20:1000) was run")
    if any(r.lg_saturated for r in results):
        print("note: a load generator was saturated in some run (see notes); its latencies are")
        print("      pessimistic. Try --clients-per-proc smaller, or a machine with more cores.")
    print(f"total {time.monotonic() - started:.0f} s")
    if args.json:
        payload = {
            "args": {k: v for k, v in vars(args).items()},
            "results": [asdict(r) for r in results],
            "targets": [{"target": n, "passed": ok, "measured": m} for n, ok, m in checks],
        }
        Path(args.json).write_text(json.dumps(_json_safe(payload), indent=2, default=str))
    if not args.log_dir and not any(r.error for r in results):
        shutil.rmtree(workdir, ignore_errors=True)
    failed = any(r.error for r in results) or any(not ok for _, ok, _ in checks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
