"""Load generator of ``bench_fanout.py``: many light WebSocket clients in one process.

Run by ``bench_fanout.py``, one or more processes per measurement; not meant to be run by hand.
Each process:

1. opens ``--clients`` WebSocket connections to ``ws://127.0.0.1:PORT/PATH`` (at most
   ``--concurrency`` opening handshakes in flight, everything within ``--connect-timeout``);
2. prints one JSON line ``{"event": "connected", ...}`` on stdout;
3. reads one JSON line ``{"t0": ..., "t1": ..., "drain": ...}`` (wall-clock epoch seconds) on
   stdin: the measurement window;
4. for every heartbeat message whose ``ts`` (production time) lies in ``[t0, t1)``, counts it
   for its client and records its latency ``receive wall time - ts``; waits ``drain`` seconds
   after ``t1`` for late messages;
5. writes its results (``--result`` JSON; latencies as float64 arrays in ``--result`` +
   ``.lat`` (application receive time) and ``.klat`` (kernel receive time)), prints
   ``{"event": "done"}``, resets its connections and exits.

The client is deliberately minimal so one process keeps up with thousands of sockets: a raw
non-blocking socket per connection, a hand-written opening handshake, then a reader callback on
the loop that does one ``recvmsg`` and parses frames (server frames are never masked), plus
pongs for the server's pings; nothing else. Each message gets two latencies: the application
receive time (when this process read it) and the kernel receive time of its bytes
(``SO_TIMESTAMPNS``, Linux), which excludes any queueing in this process: the difference is what
the load generator itself adds. Its own cost is measured too (CPU of this process over the
window, lateness of a 10 ms timer on its loop).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import resource
import socket
import struct
import sys
import time
from array import array
from typing import Any

import orjson

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_LOOP_PROBE_S = 0.010
_MAX_CONNECT_ATTEMPTS = 4
#: Linux ``SO_TIMESTAMPNS`` (also the cmsg type): kernel receive time as a ``struct timespec``.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


def raise_nofile(needed: int) -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to at least ``needed`` (up to the hard limit).

    Returns the ``(soft, hard)`` limits now in force; children inherit them.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Stats:
    """What every client of this process records (shared, so the hot path stays small)."""

    def __init__(self, clients: int) -> None:
        self.t0 = float("inf")
        self.t1 = float("inf")
        self.counts = array("l", [0]) * clients  # in-window messages per client
        self.last_seq = array("l", [-1]) * clients
        self.latencies = array("d")  # application receive time - ts
        self.kernel_latencies = array("d")  # kernel receive time - ts
        self.seqs: dict[int, float] = {}  # in-window seq -> ts (the produced ticks)
        #: in-window seq -> [first, last] kernel arrival of it on any client of this process
        self.spans: dict[int, list[float]] = {}
        self.gaps = 0  # seqs skipped within the window, summed over clients
        self.out_of_order = 0
        self.closed_in_window = 0
        self.handshake_failures = 0

    def on_message(self, index: int, payload: bytes, now: float, kernel: float) -> None:
        """Account one text message of client ``index``, read at ``now``, arrived at ``kernel``."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict) or data.get("type") != "heartbeat":
            return
        seq = data["seq"]
        ts = data["ts"]
        last = self.last_seq[index]
        self.last_seq[index] = seq
        if not self.t0 <= ts < self.t1:
            return
        if last >= 0:
            if seq <= last:
                self.out_of_order += 1
                return
            if seq > last + 1:
                self.gaps += seq - last - 1
        self.counts[index] += 1
        self.latencies.append(now - ts)
        self.kernel_latencies.append(kernel - ts)
        span = self.spans.get(seq)
        if span is None:
            self.seqs[seq] = ts
            self.spans[seq] = [kernel, kernel]
        elif kernel < span[0]:
            span[0] = kernel
        elif kernel > span[1]:
            span[1] = kernel


class LightClient:
    """One WebSocket client on a raw non-blocking socket: handshake, frames, pong; nothing else.

    After the opening handshake the socket is read by a reader callback on the loop with
    ``recvmsg``, which also returns the kernel's receive timestamp of the data (``SO_TIMESTAMPNS``):
    when the server's bytes reached this socket, before any queueing in this process.
    """

    def __init__(self, stats: Stats, index: int, sock: socket.socket) -> None:
        self.stats = stats
        self.index = index
        self.sock = sock
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0

    async def open(self, host: str, port: int, path: str) -> None:
        """Connect and complete the opening handshake (raises ``OSError`` if refused)."""
        loop, sock = self._loop, self.sock
        await loop.sock_connect(sock, (host, port))
        request, accept = _handshake(host, port, path)
        await loop.sock_sendall(sock, request)
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            buffer += chunk
            if len(buffer) > 16384:
                raise ConnectionError("handshake response too long")
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if not lines[0].startswith(b"HTTP/1.1 101") or headers.get(b"sec-websocket-accept") != (
            accept
        ):
            raise ConnectionError(f"handshake refused: {lines[0].decode('latin-1')[:80]}")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if rest:
            now = time.time()
            self._buffer = self._parse(rest, now, math.nan)
        loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            data, ancdata, _, _ = self.sock.recvmsg(65536, _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancdata = b"", []
        now = time.time()
        if not data:
            self._lost()
            return
        kernel = math.nan  # no timestamp (not Linux, or not enabled)
        for level, kind, value in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                sec, nsec = _TIMESPEC.unpack_from(value)
                kernel = sec + nsec * 1e-9
        buffer = self._buffer + data if self._buffer else data
        self._buffer = self._parse(buffer, now, kernel)

    def _lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if self.stats.t0 <= time.time() < self.stats.t1:
            self.stats.closed_in_window += 1

    def _parse(self, buffer: bytes, now: float, kernel: float) -> bytes:
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = struct.unpack_from("!H", buffer, pos + 2)[0]
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = struct.unpack_from("!Q", buffer, pos + 2)[0]
                head = 10
            if b1 & 0x80:  # a masked server frame is a protocol error
                self.reset()
                return b""
            end = pos + head + length
            if end > size:
                break
            self._frame(b0, buffer[pos + head : end], now, kernel)
            pos = end
        return buffer[pos:] if pos < size else b""

    def _frame(self, b0: int, payload: bytes, now: float, kernel: float) -> None:
        opcode, fin = b0 & 0x0F, b0 & 0x80
        if opcode == _OP_TEXT and fin:
            self.stats.on_message(self.index, payload, now, kernel)
        elif opcode in (_OP_TEXT, _OP_BINARY, _OP_CONT):
            if opcode != _OP_CONT:
                self._fragment_opcode, self._fragments = opcode, []
            self._fragments.append(payload)
            if fin:
                message, self._fragments = b"".join(self._fragments), []
                if self._fragment_opcode == _OP_TEXT:
                    self.stats.on_message(self.index, message, now, kernel)
        elif opcode == _OP_PING:
            self._send(_OP_PONG, payload)
        elif opcode == _OP_CLOSE:
            self._send(_OP_CLOSE, payload[:2])
            self._lost()

    def _send(self, opcode: int, payload: bytes) -> None:
        # Client frames must be masked; an all-zero key leaves the payload as it is. Control
        # frames are tiny: a non-blocking send of a few bytes goes out whole or not at all.
        if self.closed or len(payload) > 125:
            return
        frame = bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload
        with contextlib.suppress(OSError):
            self.sock.send(frame)

    def reset(self) -> None:
        """Drop the connection at once (RST: no TIME_WAIT left behind for later runs)."""
        if self.closed:
            return
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.closed = True
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


def _handshake(host: str, port: int, path: str) -> tuple[bytes, bytes]:
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    request = (
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        ).encode()
        + b"Sec-WebSocket-Key: "
        + key
        + b"\r\n\r\n"
    )
    return request, accept


async def _connect_one(
    stats: Stats,
    index: int,
    args: argparse.Namespace,
    deadline: float,
    errors: dict[str, int],
) -> LightClient | None:
    for attempt in range(_MAX_CONNECT_ATTEMPTS):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            errors["deadline"] = errors.get("deadline", 0) + 1
            return None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = LightClient(stats, index, sock)
        try:
            async with asyncio.timeout(min(remaining, 15.0)):
                await client.open(args.host, args.port, args.path)
            return client
        except (OSError, TimeoutError) as exc:
            key = type(exc).__name__ if not str(exc) else str(exc)[:60]
            errors[key] = errors.get(key, 0) + 1
            client.reset()
            await asyncio.sleep(0.05 * (attempt + 1))
    stats.handshake_failures += 1
    return None


async def _connect_all(
    stats: Stats, args: argparse.Namespace, errors: dict[str, int]
) -> list[LightClient]:
    deadline = time.monotonic() + args.connect_timeout
    gate = asyncio.Semaphore(args.concurrency)

    async def bounded(index: int) -> LightClient | None:
        async with gate:
            return await _connect_one(stats, index, args, deadline, errors)

    results = await asyncio.gather(*(bounded(i) for i in range(args.clients)))
    return [client for client in results if client is not None]


async def _probe_loop(lags: array[float], stop: asyncio.Event, window: tuple[float, float]) -> None:
    """Record how late a 10 ms timer fires on this loop during the window (load-gen health)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + _LOOP_PROBE_S
        await asyncio.sleep(_LOOP_PROBE_S)
        if window[0] <= time.time() < window[1]:
            lags.append(max(0.0, loop.time() - due))


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> None:
    """Connect, wait for the window, measure, report, disconnect (see the module docstring)."""
    stats = Stats(args.clients)
    errors: dict[str, int] = {}
    started = time.monotonic()
    clients = await _connect_all(stats, args, errors)
    _emit(
        {
            "event": "connected",
            "ok": len(clients),
            "failed": args.clients - len(clients),
            "seconds": round(time.monotonic() - started, 3),
            "errors": errors,
        }
    )
    loop = asyncio.get_running_loop()
    line = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), 600)
    if not line.strip():
        for client in clients:
            client.reset()
        return
    window = json.loads(line)
    t0, t1, drain = float(window["t0"]), float(window["t1"]), float(window["drain"])
    stats.t0, stats.t1 = t0, t1
    lags = array("d")
    stop = asyncio.Event()
    probe = asyncio.ensure_future(_probe_loop(lags, stop, (t0, t1)))
    await asyncio.sleep(max(0.0, t0 - time.time()))
    cpu0 = cpu_seconds()
    open_at_t0 = sum(1 for client in clients if not client.closed)
    await asyncio.sleep(max(0.0, t1 - time.time()))
    cpu1 = cpu_seconds()
    await asyncio.sleep(max(0.0, t1 + drain - time.time()))
    stop.set()
    await probe
    with open(args.result + ".lat", "wb") as handle:
        stats.latencies.tofile(handle)
    with open(args.result + ".klat", "wb") as handle:
        stats.kernel_latencies.tofile(handle)
    lags_sorted = sorted(lags)
    result = {
        "clients": args.clients,
        "connected": len(clients),
        "open_at_t0": open_at_t0,
        "open_at_end": sum(1 for client in clients if not client.closed),
        "closed_in_window": stats.closed_in_window,
        "received": int(sum(stats.counts)),
        "received_min": min(stats.counts) if len(stats.counts) else 0,
        "messages": len(stats.latencies),
        "seqs": {str(seq): ts for seq, ts in stats.seqs.items()},
        "spans": {str(seq): span for seq, span in stats.spans.items()},
        "gaps": stats.gaps,
        "out_of_order": stats.out_of_order,
        "cpu_s": cpu1 - cpu0,
        "window_s": t1 - t0,
        "loop_lag_p99_ms": _quantile(lags_sorted, 0.99) * 1e3,
        "loop_lag_max_ms": (lags_sorted[-1] if lags_sorted else 0.0) * 1e3,
        "connect_errors": errors,
    }
    with open(args.result, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    for client in clients:
        client.reset()
    _emit({"event": "done"})
    await asyncio.sleep(0.1)  # let the resets go out before the loop closes


def _quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile (``q`` in 0..1) of sorted values; 0 if there are none."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run one load-generator process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws/heartbeat")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--result", required=True, help="result file (JSON; latencies in .lat)")
    args = parser.parse_args(argv)
    raise_nofile(args.clients + 256)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
