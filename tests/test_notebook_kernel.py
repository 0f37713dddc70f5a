"""``heartsim.notebook.start_server`` in a real Jupyter kernel, driven cell by cell by nbclient.

What a notebook user relies on, each checked where it happens (in the kernel, or from this
process as an outside client): the start cell returns at once with the server already
listening; ``await`` reaches it; interrupting the kernel interrupts the cell, not the server; a
busy port is an ``OSError`` in the cell and the kernel lives on; re-running the start cell
returns the same handle; a thread-mode server keeps streaming while a cell blocks (a loop-mode
one cannot, the control); ``stop()`` frees the port; and after the kernel shuts down nothing
listens on any port it served, even with a child process left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode
from support import bindable, free_port, listening, stdout_of
from websockets.asyncio.client import connect

pytestmark = pytest.mark.timeout(90)

CELL_TIMEOUT_S = 20
START_CELL = "h = heartsim.notebook.start_server(port=None, tick_hz=10, seed=1)"


class Kernel:
    """A kernel executing cells appended one at a time to an in-memory notebook."""

    def __init__(self, client: NotebookClient) -> None:
        self.client = client
        self.notebook = client.nb

    def add(self, code: str, *, raises: bool = False) -> NotebookNode:
        tags = ["raises-exception"] if raises else []
        cell = nbformat.v4.new_code_cell(textwrap.dedent(code).strip(), metadata={"tags": tags})
        self.notebook.cells.append(cell)
        return cell

    async def execute(self, cell: NotebookNode) -> NotebookNode:
        index = self.notebook.cells.index(cell)
        return await self.client.async_execute_cell(cell, index)

    async def run(self, code: str, *, raises: bool = False) -> NotebookNode:
        return await self.execute(self.add(code, raises=raises))

    async def json(self, code: str) -> dict:
        """Run ``code``, whose last printed line is JSON, and decode that line."""
        return json.loads(stdout_of(await self.run(code)).strip().splitlines()[-1])


def error_of(cell: NotebookNode) -> NotebookNode | None:
    return next((o for o in cell.outputs if o.output_type == "error"), None)


def run_time_s(cell: NotebookNode) -> float:
    """How long the kernel spent executing ``cell`` (from nbclient's timing records)."""
    timing = cell.metadata["execution"]
    start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


@contextlib.asynccontextmanager
async def kernel() -> AsyncIterator[Kernel]:
    client = NotebookClient(
        nbformat.v4.new_notebook(),
        timeout=CELL_TIMEOUT_S,
        startup_timeout=60,
        kernel_name="python3",
        record_timing=True,
        shutdown_kernel="graceful",
    )
    async with client.async_setup_kernel():
        yield Kernel(client)


async def beats(ws_url: str, arrivals: list[float]) -> None:
    """Record the arrival time of every heartbeat on ``ws_url`` until cancelled."""
    async with connect(ws_url) as ws:
        async for raw in ws:
            if json.loads(raw)["type"] == "heartbeat":
                arrivals.append(time.monotonic())


async def first(arrivals: list[float], timeout_s: float = 5) -> None:
    async def wait() -> None:
        while not arrivals:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout_s)


async def test_loop_mode_server_lives_through_cells_interrupts_and_busy_ports() -> None:
    started = time.monotonic()
    busy = socket.socket()  # a port held by someone else
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    busy_port = busy.getsockname()[1]
    try:
        async with kernel() as k:
            await k.run(
                """
                import asyncio, json, signal, socket, time
                import httpx
                from websockets.asyncio.client import connect
                import heartsim.notebook

                # The SIGINT handler while the kernel is idle (ipykernel ignores SIGINT then),
                # recorded after this cell returns.
                idle_sigint = []
                def record_idle_sigint():
                    handler = signal.getsignal(signal.SIGINT)
                    idle_sigint.append(getattr(handler, "__qualname__", str(handler)))
                asyncio.get_running_loop().call_later(0.2, record_idle_sigint)
                """
            )
            await asyncio.sleep(0.5)
            start_cell = k.add(START_CELL)
            await k.execute(start_cell)
            assert not start_cell.outputs
            assert run_time_s(start_cell) < 0.5  # the cell returns at once
            # A user's pause: the idle kernel's loop starts the server meanwhile (a uvicorn
            # server starting now would replace the kernel's SIGINT handler for good; one
            # starting during an async cell would have it restored when the cell ends).
            await asyncio.sleep(0.5)

            # The next cell: a blocking connect before any await shows the socket listening
            # (the cell that started it has returned); then an ordinary awaited request.
            first_health = await k.json(
                """
                h_first = h
                socket.create_connection(("127.0.0.1", h.port), timeout=2).close()
                async with httpx.AsyncClient(timeout=5) as http:
                    health = (await http.get(h.url + "/health")).json()
                print(json.dumps({"port": h.port, "status": health["status"],
                                  "simulation": health["simulation_state"]}))
                """
            )
            port = first_health["port"]
            async with httpx.AsyncClient(timeout=5) as http:  # and from outside the kernel
                assert (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
            assert first_health["status"] == "healthy"
            assert first_health["simulation"] == "running"  # autostart: one call, running
            assert listening(port)

            # Messages over the WebSocket, awaited in a cell.
            ws = await k.json(
                """
                async with connect(h.ws_url) as ws:
                    hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    seqs = [json.loads(await asyncio.wait_for(ws.recv(), 5))["seq"]
                            for _ in range(5)]
                print(json.dumps({"hello": hello["type"], "seqs": seqs}))
                """
            )
            assert ws["hello"] == "connected"
            assert ws["seqs"] == list(range(ws["seqs"][0], ws["seqs"][0] + 5))

            # The handle's display, in the notebook's own output.
            shown = await k.run("h")
            html = next(o for o in shown.outputs if o.output_type == "execute_result")
            assert "heartsim server" in html.data["text/html"]
            assert f'href="http://127.0.0.1:{port}/"' in html.data["text/html"]

            # Re-running the start cell returns the very same handle (and server).
            await k.execute(start_cell)
            same = await k.json(
                """
                asyncio.get_running_loop().call_later(0.2, record_idle_sigint)
                print(json.dumps({"same": h is h_first, "port": h.port}))
                """
            )
            assert same == {"same": True, "port": port}
            await asyncio.sleep(0.5)

            # "Interrupt kernel" while it is idle: uvicorn's own signal handler, installed while
            # serving, would take it and shut the server down; ours installs none.
            await k.client.km.interrupt_kernel()
            await asyncio.sleep(0.5)
            idle = await k.json(
                """
                async with connect(h.ws_url) as ws:
                    await asyncio.wait_for(ws.recv(), 5)
                    seq = json.loads(await asyncio.wait_for(ws.recv(), 5))["seq"]
                print(json.dumps({"sigint": idle_sigint, "state": h.state, "seq": seq}))
                """
            )
            assert idle["sigint"][0] == idle["sigint"][1], idle  # unchanged by the server
            assert idle["state"] == "running" and idle["seq"] > ws["seqs"][-1]

            # Interrupt a cell awaiting for 30 s: the cell stops, the server does not.
            sleeper = k.add("await asyncio.sleep(30)", raises=True)
            t0 = time.monotonic()
            execution = asyncio.ensure_future(k.execute(sleeper))
            await asyncio.sleep(1.0)
            await k.client.km.interrupt_kernel()
            await asyncio.wait_for(execution, 10)
            assert time.monotonic() - t0 < 5
            assert error_of(sleeper) is not None  # KeyboardInterrupt / CancelledError
            after = await k.json(
                """
                async with connect(h.ws_url) as ws:
                    await asyncio.wait_for(ws.recv(), 5)
                    seq = json.loads(await asyncio.wait_for(ws.recv(), 5))["seq"]
                print(json.dumps({"seq": seq, "state": h.status()["state"]}))
                """
            )
            assert after["state"] == "running"
            assert after["seq"] >= ws["seqs"][-1] + 10  # it kept ticking at 10 Hz meanwhile
            assert listening(port)

            # The same for a cell blocked in plain Python code (uvicorn's handler would swallow
            # the interrupt, leaving the cell running, and shut the server down instead).
            blocked = k.add("time.sleep(15)", raises=True)
            t0 = time.monotonic()
            execution = asyncio.ensure_future(k.execute(blocked))
            await asyncio.sleep(1.0)
            await k.client.km.interrupt_kernel()
            await asyncio.wait_for(execution, 20)
            assert time.monotonic() - t0 < 5
            error = error_of(blocked)
            assert error is not None and error.ename == "KeyboardInterrupt"
            assert (await k.json('print(json.dumps({"state": h.state}))'))["state"] == "running"
            assert listening(port)

            # A busy port: an OSError in the cell, and the kernel carries on.
            refused = await k.run(
                f"heartsim.notebook.start_server(port={busy_port}, tick_hz=5)", raises=True
            )
            error = error_of(refused)
            assert error is not None and error.ename == "OSError", refused.outputs
            assert "port=None" in error.evalue
            alive = await k.json('print(json.dumps({"state": h.status()["state"]}))')
            assert alive == {"state": "running"}

            # Listening within the very cell that starts it, before the loop ran any task.
            same_cell = await k.json(
                """
                h2 = heartsim.notebook.start_server(port=0, tick_hz=5, seed=3, autostart=False)
                state_then = h2.state
                socket.create_connection(("127.0.0.1", h2.port), timeout=2).close()
                ready = await h2.wait_ready()
                stopping = h2.stop()
                freed_at_once = h2.port
                await stopping
                print(json.dumps({"state_then": state_then, "ready": ready is h2,
                                  "simulation": h2.engine.state.value, "after": h2.state,
                                  "port": h2.port}))
                """
            )
            assert same_cell["state_then"] == "starting" and same_cell["ready"] is True
            assert same_cell["simulation"] == "stopped" and same_cell["after"] == "stopped"
            assert bindable(same_cell["port"])

            # The final cell: await h.stop() frees the port.
            final = await k.json(
                """
                await h.stop()
                probe = socket.socket()
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(("127.0.0.1", h.port))
                probe.close()
                print(json.dumps({"state": h.state, "port_free": True}))
                """
            )
            assert final == {"state": "stopped", "port_free": True}
            assert not listening(port)
    finally:
        busy.close()
    assert time.monotonic() - started < 40


async def test_thread_mode_streams_through_blocking_cells_and_shutdown_frees_every_port() -> None:
    started = time.monotonic()
    explicit_port = free_port()
    child_pid: int | None = None
    try:
        async with kernel() as k:
            ports = await k.json(
                f"""
                import json, socket, subprocess, time
                import heartsim.notebook
                h = heartsim.notebook.start_server(port=None, tick_hz=10, seed=1)
                t = heartsim.notebook.start_server(port={explicit_port}, tick_hz=10, seed=2,
                                                   mode="thread")
                await h.wait_ready()
                print(json.dumps({{"loop": h.port, "thread": t.port, "mode": t.mode,
                                  "state": t.state}}))
                """
            )
            assert ports["thread"] == explicit_port
            assert ports["mode"] == "thread" and ports["state"] == "running"

            # Outside clients of both servers, while a cell blocks the kernel for 1.5 s.
            loop_arrivals: list[float] = []
            thread_arrivals: list[float] = []
            readers = [
                asyncio.ensure_future(
                    beats(f"ws://127.0.0.1:{ports['loop']}/ws/heartbeat", loop_arrivals)
                ),
                asyncio.ensure_future(
                    beats(f"ws://127.0.0.1:{ports['thread']}/ws/heartbeat", thread_arrivals)
                ),
            ]
            try:
                await first(loop_arrivals)
                await first(thread_arrivals)
                blocking = k.add("time.sleep(1.5)")
                t0 = time.monotonic()
                await k.execute(blocking)
                t1 = time.monotonic()
                assert run_time_s(blocking) >= 1.5
                window = (t0 + 0.1, t1 - 0.1)  # inside the blocking sleep
                during_thread = [t for t in thread_arrivals if window[0] <= t <= window[1]]
                during_loop = [t for t in loop_arrivals if window[0] <= t <= window[1]]
            finally:
                for reader in readers:
                    reader.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
            expected = (window[1] - window[0]) * 10
            assert len(during_thread) >= expected - 3, (len(during_thread), expected)
            gaps = [b - a for a, b in itertools.pairwise(during_thread)]
            assert max(gaps) < 0.4, gaps
            # The control: the loop-mode server shares the blocked loop, so it stalled.
            assert len(during_loop) <= 2, len(during_loop)

            # Servers (and a child process holding inherited descriptors) left running.
            left = await k.json(
                """
                child = subprocess.Popen(["sleep", "60"], close_fds=False,
                                         start_new_session=True)
                print(json.dumps({"child": child.pid, "state": [h.state, t.state]}))
                """
            )
            child_pid = left["child"]
            assert left["state"] == ["running", "running"]
            assert listening(ports["loop"]) and listening(ports["thread"])
        # The kernel has shut down (gracefully: its atexit hook stopped the thread server).
        deadline = time.monotonic() + 5
        while (listening(ports["loop"]) or listening(ports["thread"])) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        assert not listening(ports["loop"]) and not listening(ports["thread"])
        assert bindable(ports["loop"]) and bindable(ports["thread"])
    finally:
        if child_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, signal.SIGTERM)
    assert time.monotonic() - started < 40
