"""The blocking client inside a real Jupyter kernel whose own loop also runs the heartsim server.

A plain blocking HTTP call there deadlocks (the loop that must answer is the one blocked);
``Client.sync`` must instead return, while the server keeps broadcasting to an in-kernel
subscriber at its full rate throughout the call.
"""

from __future__ import annotations

import json
import time

from support import run_notebook, stdout_of

TICK_HZ = 10
COLLECT_S = 2.0

CELLS = [
    # 1: a server on the kernel's loop (top-level await), simulation started by the async client.
    f"""
    import asyncio, json, sys, time
    from heartsim.client import Client
    from heartsim.server import HeartsimServer

    imported = {{"patched": hasattr(asyncio, "_nest_patched"),
                 "nest": "nest_asyncio2" in sys.modules}}
    server = HeartsimServer(port=0, tick_hz={TICK_HZ})
    await server.start()
    await Client(server.url).start()
    """,
    # 2: an in-kernel async subscriber counting messages with their arrival times.
    """
    received = []

    async def subscribe():
        async for message in Client(server.url).stream():
            received.append((time.monotonic(), message["seq"]))

    subscriber = asyncio.ensure_future(subscribe())

    async def first_message():
        while not received:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(first_message(), 5)
    """,
    # control: a plain blocking HTTP call to the server on this loop deadlocks (until its
    # timeout) and stalls the subscriber, which is what the client must avoid.
    """
    import httpx

    n0 = len(received)
    try:
        httpx.get(server.url + "/health", timeout=1)
        control = "answered"
    except httpx.TimeoutException:
        control = "timed out"
    control_received = len(received) - n0
    """,
    # 3: blocking calls to the server on this very loop; the timeout turns a deadlock into an
    # error rather than a hang.
    f"""
    patched_before = hasattr(asyncio, "_nest_patched")
    client = Client(server.url, timeout_s=5)
    t0 = time.monotonic()
    health = client.sync.health()
    frame = client.sync.collect(duration_s={COLLECT_S})
    t1 = time.monotonic()
    seqs = [m["seq"] for m in client.sync.stream(limit=3)]
    client.sync.close()
    """,
    # 4: what the subscriber received during the blocking calls.
    """
    during = [seq for (t, seq) in received if t0 <= t <= t1]
    all_seqs = [seq for (_, seq) in received]
    print(json.dumps({
        "imported": imported,
        "control": [control, control_received],
        "patched_before": patched_before,
        "patched_after": hasattr(asyncio, "_nest_patched"),
        "status": health["status"],
        "rows": len(frame),
        "columns": list(frame.columns),
        "sync_seqs": seqs,
        "elapsed_s": t1 - t0,
        "during": len(during),
        "subscriber_gapless": all_seqs == list(range(all_seqs[0], all_seqs[0] + len(all_seqs))),
        "subscriber_alive": not subscriber.done(),
    }))
    """,
    # 5: stop everything.
    """
    subscriber.cancel()
    await asyncio.gather(subscriber, return_exceptions=True)
    await server.stop()
    print("stopped", server.started)
    """,
]


def test_sync_calls_in_a_kernel_running_the_server_neither_deadlock_nor_stall_it() -> None:
    started = time.monotonic()
    notebook = run_notebook(CELLS, timeout_s=30)
    result = json.loads(stdout_of(notebook.cells[4]).strip().splitlines()[-1])

    assert result["control"] == ["timed out", 0]  # the set-up does show the deadlock
    assert result["status"] == "healthy"
    # Importing the client patches nothing; the first blocking call inside the loop does.
    assert result["imported"] == {"patched": False, "nest": False}
    assert result["patched_before"] is False and result["patched_after"] is True

    expected = COLLECT_S * TICK_HZ
    assert expected - 4 <= result["rows"] <= expected + 2, result
    assert result["columns"][:3] == ["seq", "person_id", "t"]
    sync_seqs = result["sync_seqs"]
    assert sync_seqs == list(range(sync_seqs[0], sync_seqs[0] + 3))

    # The subscriber on the same loop kept receiving at ~10 Hz *during* the blocking calls.
    assert COLLECT_S <= result["elapsed_s"] < COLLECT_S + 2, result
    during_expected = result["elapsed_s"] * TICK_HZ
    assert abs(result["during"] - during_expected) <= 3, result
    assert result["subscriber_gapless"] and result["subscriber_alive"]

    assert stdout_of(notebook.cells[5]).strip() == "stopped False"
    assert time.monotonic() - started < 30
