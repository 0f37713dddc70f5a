"""Tokens never reach the logs: uvicorn's handshake and access lines, websockets' debug headers,
and everything ``heartsim serve`` prints."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys

import httpx
import pytest
import uvicorn
import websockets
from support import free_port
from websockets.exceptions import InvalidStatus

from heartsim.api import create_app
from heartsim.api.logs import RedactSecrets, redact
from heartsim.api.security import token_subprotocol

from .conftest import ServerFactory, recv_json

SECRET = "hunter2-s3cret"
#: Loggers of the server side (this process's clients, httpx and websockets.client, log the
#: URLs they were given: not the server's business).
SERVER_LOGGERS = ("uvicorn", "heartsim", "websockets.server", "asyncio")


def server_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the server side logged, one formatted message a line."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(SERVER_LOGGERS))


async def use_the_token_every_way(http_url: str, ws_url: str) -> None:
    """Stream and call the API with ``SECRET`` in the query, the header and the subprotocol."""
    bearer = {"Authorization": f"Bearer {SECRET}"}
    async with websockets.connect(f"{ws_url}?token={SECRET}") as ws:
        await recv_json(ws)
    async with websockets.connect(ws_url, additional_headers=bearer) as ws:
        await recv_json(ws)
    async with websockets.connect(ws_url, subprotocols=["heartsim", token_subprotocol(SECRET)]):
        pass
    with pytest.raises(InvalidStatus):  # a refused one is logged too
        async with websockets.connect(f"{ws_url}?token={SECRET}x"):
            pass
    async with httpx.AsyncClient(base_url=http_url) as http:
        assert (await http.post("/simulation/stop", params={"token": SECRET})).status_code == 200
        assert (await http.post("/simulation/stop", headers=bearer)).status_code == 200
        assert (await http.get("/persons", params={"token": SECRET})).status_code == 200


async def test_handshake_lines_and_debug_headers_are_redacted(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await make_server(token=SECRET, log_level="debug")  # websockets logs headers
    await use_the_token_every_way(server.url, server.ws_url)
    await asyncio.sleep(0.1)
    text = server_log(caplog)
    assert SECRET not in text
    assert '"WebSocket /ws/heartbeat?token=***" [accepted]' in text  # logged, redacted
    assert "Bearer ***" in text and "heartsim.token.***" in text  # the debug header lines
    assert token_subprotocol(SECRET).split(".")[-1] not in text
    # A refused handshake is an INFO line, not uvicorn's spurious ERROR (Kludex/uvicorn#3138).
    assert '"WebSocket /ws/heartbeat?token=***" 401' in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_uvicorns_access_log_is_redacted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app served by plain uvicorn, access log on (uvicorn's default), as a user may run it.
    # An earlier uvicorn.Config with uvicorn's own logging config leaves the access logger not
    # propagating to the root (where caplog listens) in some versions: undo that here.
    access_logger = logging.getLogger("uvicorn.access")
    monkeypatch.setattr(access_logger, "propagate", True)
    monkeypatch.setattr(access_logger, "disabled", False)
    caplog.set_level(logging.INFO)
    port = free_port()
    config = uvicorn.Config(
        create_app(token=SECRET), port=port, log_config=None, access_log=True, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        await use_the_token_every_way(url, f"ws://127.0.0.1:{port}/ws/heartbeat")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
    access = [r for r in caplog.records if r.name == "uvicorn.access"]
    assert len(access) >= 3 and SECRET not in server_log(caplog)
    assert any("/persons?token=***" in r.getMessage() for r in access)


def test_heartsim_serve_prints_no_token() -> None:
    port = free_port()
    command = ["-m", "heartsim.cli", "-v", "serve", "--port", str(port), "--token", SECRET]
    proc = subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(50):  # debug lines first, then the one line for humans
            if proc.stdout.readline().startswith("heartsim dashboard:"):
                break
        else:
            raise AssertionError("heartsim serve printed no dashboard line")
        ws_url = f"ws://127.0.0.1:{port}/ws/heartbeat"
        asyncio.run(use_the_token_every_way(f"http://127.0.0.1:{port}", ws_url))
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert SECRET not in output
    assert "WebSocket /ws/heartbeat?token=***" in output


def test_the_filter_keeps_argument_shapes_and_redacts_every_form() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/persons?person=p0&token={SECRET}&x=1", "1.1", 200), None,
    )  # fmt: skip
    assert RedactSecrets().filter(record)
    assert record.args[2] == "/persons?person=p0&token=***&x=1" and record.args[4] == 200
    assert SECRET not in record.getMessage()
    for text in (f"access_token={SECRET}", f"Bearer {SECRET}", f"basic {SECRET}",
                 f"Sec-WebSocket-Protocol: heartsim, {token_subprotocol(SECRET)}"):  # fmt: skip
        assert SECRET not in redact(text) and token_subprotocol(SECRET) not in redact(text)
    assert redact("GET /health HTTP/1.1") == "GET /health HTTP/1.1"


async def test_servers_install_the_filter(make_server: ServerFactory) -> None:
    await make_server()
    for name in ("uvicorn.access", "uvicorn.error"):
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, RedactSecrets) for f in filters) == 1  # once, however many apps
