"""The Python consumers of the audit report's "Integration Guide" run unchanged against heartsim.

The snippets below are copied verbatim from ``system-audit-report.md`` (minus the indentation
of blank lines); only the address is
pointed at the test server and ``your_model`` is a stub. Both loop forever by design: the stub
stops them by raising after a few predictions, and each runs in its own thread (Option 1 calls
``asyncio.run``; Option 2 blocks), bounded by a timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import ServerFactory, wait_until

OPTION_1_WEBSOCKET = """
import asyncio
import websockets
import json

async def consume_heartbeat():
    uri = "ws://localhost:8001/ws/heartbeat"
    async with websockets.connect(uri) as ws:
        # Skip connection message
        first_msg = json.loads(await ws.recv())

        # Stream data to model
        while True:
            data = json.loads(await ws.recv())

            # Feed to ML model
            prediction = your_model.predict([
                data['bpm'],
                data['variability'],
                data['stress_level']
            ])

            print(f"BPM: {data['bpm']} → Prediction: {prediction}")

asyncio.run(consume_heartbeat())
"""

OPTION_2_REST = """
import requests
import time

def poll_heartbeat():
    while True:
        response = requests.get('http://localhost:8001/heartbeat/current')
        data = response.json()

        # Feed to ML model
        prediction = your_model.predict([data['bpm']])

        time.sleep(0.5)  # Poll every 500ms
"""


class EnoughError(Exception):
    """Raised by the stub model to end the consumer's endless loop."""


class StubModel:
    """Records its inputs; stops the consumer after ``n`` predictions."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.inputs: list[list[Any]] = []

    def predict(self, features: list[Any]) -> float:
        self.inputs.append(features)
        if len(self.inputs) >= self.n:
            raise EnoughError
        return 0.5


def run_snippet(source: str, port: int, model: StubModel, call: str | None = None) -> None:
    """Execute ``source`` with the server's port and the stub model; ``call`` it afterwards."""
    namespace: dict[str, Any] = {"your_model": model}
    code = source.replace("localhost:8001", f"localhost:{port}")
    with pytest.raises(EnoughError):
        exec(compile(code, "<integration guide>", "exec"), namespace)
        if call is not None:
            namespace[call]()


async def test_option_1_websocket_consumer(make_server: ServerFactory) -> None:
    server = await make_server(tick_hz=10.0, autostart=True)
    model = StubModel(n=5)
    await asyncio.wait_for(
        asyncio.to_thread(run_snippet, OPTION_1_WEBSOCKET, server.port, model), 15
    )
    assert len(model.inputs) == 5
    for bpm, variability, stress_level in model.inputs:
        assert isinstance(bpm, int) and 30 < bpm < 200
        assert variability is None or variability >= 0
        assert 0.0 <= stress_level <= 1.0


async def test_option_2_rest_polling_consumer(make_server: ServerFactory) -> None:
    pytest.importorskip("requests")
    server = await make_server(tick_hz=10.0, autostart=True)
    await wait_until(lambda: server.hub.latest("p0") is not None)
    model = StubModel(n=3)
    await asyncio.wait_for(
        asyncio.to_thread(run_snippet, OPTION_2_REST, server.port, model, "poll_heartbeat"), 15
    )
    assert len(model.inputs) == 3
    assert all(isinstance(bpm, int) for (bpm,) in model.inputs)
