"""Token auth, public reads, rate limits, Host and origin checks, CORS and the connection cap."""

from __future__ import annotations

import argparse
import json
import socket
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from heartsim.api import DEFAULT_WS_CONNECT_LIMIT, RateLimit
from heartsim.api.security import (
    AllowedHosts,
    RateLimiter,
    TokenAuth,
    origin_allowed,
    presented_token,
    subprotocol_token,
    token_subprotocol,
)
from heartsim.api.ws import FrameSink
from heartsim.options import add_serve_arguments
from heartsim.server import HeartsimServer, served_hosts

from .conftest import ServerFactory, recv_json

TOKEN = "s3cret-token"


async def refusal(url: str, host: str | None = None, **connect: Any) -> tuple[int, dict, Any]:
    """Open a handshake the server must refuse: its HTTP status, JSON body and headers.

    ``host``: the name to put in the URL (and so in ``Host``) while connecting to the loopback
    port anyway, as a DNS-rebinding page would.
    """
    if host is not None:
        port = int(url.split(":")[2].split("/")[0])
        connect["sock"] = socket.create_connection(("127.0.0.1", port))
        url = url.replace("127.0.0.1", host)
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(url, **connect):
            pass
    response = refused.value.response
    return response.status_code, json.loads(response.body), response.headers


async def metric(http: httpx.AsyncClient, line_start: str) -> float:
    """The value of the /metrics sample whose line starts with ``line_start``."""
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {line_start}")


async def test_control_routes_need_the_token(make_server: ServerFactory) -> None:
    server = await make_server(token=TOKEN)
    async with httpx.AsyncClient(base_url=server.url) as http:
        missing = await http.post("/simulation/start")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert set(missing.json()) == {"error", "message"}
        wrong = await http.post("/simulation/start", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await http.post("/persons", json={})).status_code == 401
        assert (await http.delete("/persons/p0")).status_code == 401
        assert server.engine.state.value == "stopped"

        bearer = await http.post("/simulation/start", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        query = await http.post("/simulation/stop", params={"token": TOKEN})
        assert query.status_code == 200 and query.json()["state"] == "stopped"
        # Read routes stay public by default.
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/persons")).status_code == 200
        assert (await http.get("/heartbeat/history")).status_code == 200


async def test_websocket_needs_the_token_and_is_refused_before_accepting(
    make_server: ServerFactory,
) -> None:
    server = await make_server(token=TOKEN)
    status, body, headers = await refusal(server.ws_url)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert body["error"] == "Unauthorized" and "token" in body["message"]
    assert (await refusal(f"{server.ws_url}?token=wrong"))[0] == 401
    wrong = token_subprotocol("wrong")
    assert (await refusal(server.ws_url, subprotocols=["heartsim", wrong]))[0] == 401
    async with websockets.connect(f"{server.ws_url}?token={TOKEN}") as ws:
        assert (await recv_json(ws))["type"] == "connected"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
        assert (await recv_json(ws))["type"] == "connected"
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert await metric(http, 'heartsim_websocket_refused_total{cause="unauthorized"}') == 3
        # A plain GET on the stream's URL runs the same checks (browsers learn the reason).
        assert (await http.get("/ws/heartbeat")).status_code == 401
        assert (await http.get("/ws/heartbeat", headers=headers)).status_code == 426


async def test_browsers_send_the_token_as_a_subprotocol_not_in_the_url(
    make_server: ServerFactory,
) -> None:
    server = await make_server(token=TOKEN)
    offered = ["heartsim", token_subprotocol(TOKEN)]
    async with websockets.connect(server.ws_url, subprotocols=offered) as ws:
        assert ws.subprotocol == "heartsim"  # selected; the token's is never echoed
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "heartsim"
        assert (await recv_json(ws))["type"] == "connected"
    unicode = "jeton-\u00e9t\u00e9 with spaces"
    assert subprotocol_token([token_subprotocol(unicode)]) == unicode
    assert subprotocol_token(["heartsim.token.%%%"]) == ""  # malformed: never matches
    assert subprotocol_token(["heartsim"]) is None


async def test_refused_handshakes_answer_http_errors_by_cause(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_clients=1)
    status, body, _ = await refusal(f"{server.ws_url}?person=nobody")
    assert status == 404 and "nobody" in body["message"]
    for since in ("abc", "-3"):
        status, body, _ = await refusal(f"{server.ws_url}?since={since}")
        assert status == 422 and body["field"] == "since" and since in body["message"]
    async with websockets.connect(server.ws_url) as first:
        await recv_json(first)
        status, body, headers = await refusal(server.ws_url)
        assert status == 503 and "at most 1" in body["message"]
        assert int(headers["Retry-After"]) >= 1
    # Capacity frees up when clients leave.
    async with websockets.connect(server.ws_url) as again:
        assert (await recv_json(again))["type"] == "connected"
    async with httpx.AsyncClient(base_url=server.url) as http:
        for cause, count in (("unknown_person", 1), ("bad_since", 2), ("capacity", 1)):
            sample = f'heartsim_websocket_refused_total{{cause="{cause}"}}'
            assert await metric(http, sample) == count, cause


async def test_private_reads_need_the_token_too(make_server: ServerFactory) -> None:
    server = await make_server(token=TOKEN, public_read=False)
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path in ("/heartbeat/current", "/heartbeat/history", "/persons", "/metrics",
                     "/simulation/config"):  # fmt: skip
            assert (await http.get(path)).status_code == 401, path
            assert (await http.get(path, params={"token": TOKEN})).status_code in (200, 404)
        assert (await http.get("/health")).status_code == 200  # liveness probes need no token
        assert (await http.get("/")).status_code == 200


async def test_control_routes_are_rate_limited_with_retry_after(make_server: ServerFactory) -> None:
    server = await make_server(rate_limit=RateLimit(per_s=1.0, burst=3))
    async with httpx.AsyncClient(base_url=server.url) as http:
        statuses = [(await http.post("/simulation/stop")).status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200]
        assert statuses[3:] == [429, 429]
        limited = await http.post("/simulation/start")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "retry after" in limited.json()["message"]
        assert server.engine.state.value == "stopped"  # the limited start did nothing
        assert (await http.get("/health")).status_code == 200  # reads are not limited
        assert "heartsim_rate_limited_total 3.0" in (await http.get("/metrics")).text


async def test_cross_origin_control_needs_an_allowed_origin(make_server: ServerFactory) -> None:
    plain = await make_server()
    async with httpx.AsyncClient(base_url=plain.url) as http:
        evil = await http.post("/simulation/start", headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403
        same = await http.post("/simulation/start", headers={"Origin": plain.url})
        assert same.status_code == 200
        assert "access-control-allow-origin" not in same.headers  # CORS off by default

    allowed = "http://localhost:3000"
    server = await make_server(cors_origins=[allowed])
    async with httpx.AsyncClient(base_url=server.url) as http:
        ok = await http.post("/simulation/start", headers={"Origin": allowed})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == allowed
        preflight = await http.options(
            "/simulation/stop",
            headers={"Origin": allowed, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200


def test_token_comparison_and_extraction() -> None:
    auth = TokenAuth("abc")
    assert auth.accepts("abc") and not auth.accepts("abd") and not auth.accepts(None)
    assert TokenAuth(None).accepts(None)
    assert presented_token("Bearer abc", None) == "abc"
    assert presented_token("bearer  abc ", "zzz") == "abc"
    assert presented_token("Basic abc", "q") == "q"
    assert presented_token(None, "q", "from-subprotocol") == "from-subprotocol"
    with pytest.raises(ValueError):
        TokenAuth("")


def parse_serve(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="heartsim serve")
    add_serve_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("blank", [" ", "   ", "\t\n"])
def test_a_blank_token_is_refused_like_an_empty_one(
    blank: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in ("", blank, f" {TOKEN}"):
        with pytest.raises(ValueError, match="--token"):
            TokenAuth(bad)
        with pytest.raises(ValueError, match="--token"):
            HeartsimServer(port=0, token=bad)
    with pytest.raises(SystemExit) as exited:
        parse_serve("--token", blank)
    assert exited.value.code == 2 and "--token" in capsys.readouterr().err
    monkeypatch.setenv("HEARTSIM_TOKEN", blank)  # the default comes from the environment
    with pytest.raises(SystemExit):
        parse_serve()
    assert "HEARTSIM_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("HEARTSIM_TOKEN", "")  # an empty variable means no token
    assert parse_serve().token is None
    assert parse_serve("--token", TOKEN).token == TOKEN


def test_cli_defaults_match_the_library_defaults() -> None:
    args = parse_serve()
    assert (args.ws_connects_per_s, args.ws_connect_burst) == (
        DEFAULT_WS_CONNECT_LIMIT.per_s,
        DEFAULT_WS_CONNECT_LIMIT.burst,
    )
    assert args.forwarded_allow_ips is None and args.allowed_hosts == []
    assert parse_serve("--ws-connects-per-s", "0").ws_connects_per_s == 0.0  # unlimited


@pytest.mark.parametrize(
    "argv",
    [("--ws-connects-per-s", "-1"), ("--ws-connects-per-s", "nan"), ("--ws-connect-burst", "0")],
)
def test_bad_handshake_limits_exit_2_naming_the_option(
    argv: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_serve(*argv)
    assert exited.value.code == 2 and f"argument {argv[0]}: must be" in capsys.readouterr().err


# ----- forwarded headers, Host, Origin, handshake rate -------------------------------------------
async def test_x_forwarded_for_cannot_dodge_the_rate_limit(make_server: ServerFactory) -> None:
    server = await make_server(rate_limit=RateLimit(per_s=0.5, burst=3))
    async with httpx.AsyncClient(base_url=server.url) as http:
        statuses = [
            (await http.post("/simulation/stop", headers={"X-Forwarded-For": f"10.0.0.{i}"}))
            .status_code
            for i in range(6)
        ]  # fmt: skip
    assert statuses == [200, 200, 200, 429, 429, 429]


async def test_forwarded_headers_count_when_the_proxy_is_trusted(
    make_server: ServerFactory,
) -> None:
    server = await make_server(
        rate_limit=RateLimit(per_s=0.5, burst=3),
        ws_connect_limit=RateLimit(per_s=0.5, burst=1),
        forwarded_allow_ips="127.0.0.1",
    )
    async with httpx.AsyncClient(base_url=server.url) as http:
        for i in range(6):  # six clients behind the proxy, each within its own limit
            headers = {"X-Forwarded-For": f"10.0.0.{i}"}
            assert (await http.post("/simulation/stop", headers=headers)).status_code == 200
        same = [
            (await http.post("/simulation/stop", headers={"X-Forwarded-For": "10.9.9.9"}))
            .status_code
            for _ in range(4)
        ]  # fmt: skip
        assert same == [200, 200, 200, 429]
    for i in range(3):  # the handshake limit is per forwarded client too
        headers = {"X-Forwarded-For": f"10.1.0.{i}"}
        async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
            await recv_json(ws)
            # uvicorn's proxy-headers layer keeps the server's send: the fast path still works.
            (sink,) = server.hub._subscribers["p0"].values()
            assert isinstance(sink, FrameSink)


async def test_dns_rebinding_hosts_are_refused(make_server: ServerFactory) -> None:
    server = await make_server()  # no token: a rebinding page could otherwise control it
    evil = {"Host": f"evil.example:{server.port}", "Origin": f"http://evil.example:{server.port}"}
    async with httpx.AsyncClient(base_url=server.url) as http:
        stopped = await http.post("/simulation/start", headers=evil)
        assert stopped.status_code == 400 and stopped.json()["error"] == "Invalid host"
        assert "--allowed-host evil.example" in stopped.json()["message"]
        assert server.engine.state.value == "stopped"
        assert (await http.get("/health", headers={"Host": "evil.example"})).status_code == 400
        for host in ("localhost:1", "127.0.0.1", "[::1]:8001", "192.168.1.7:8001", "LOCALHOST",
                     "rebind.localhost."):  # fmt: skip
            assert (await http.get("/health", headers={"Host": host})).status_code == 200, host
        assert await metric(http, "heartsim_hosts_refused_total") == 2
    status, body, _ = await refusal(server.ws_url, host="evil.example")
    assert status == 400 and body["error"] == "Invalid host"

    named = await make_server(allowed_hosts=["heartsim.lan", "*.class.example"])
    async with httpx.AsyncClient(base_url=named.url) as http:
        for host in ("heartsim.lan:8001", "a.class.example", "localhost"):
            assert (await http.get("/health", headers={"Host": host})).status_code == 200, host
        for host in ("class.example", "evil.example"):
            assert (await http.get("/health", headers={"Host": host})).status_code == 400, host
    async with websockets.connect(
        named.ws_url.replace("127.0.0.1", "heartsim.lan"),
        sock=socket.create_connection(("127.0.0.1", named.port)),
    ) as ws:
        assert (await recv_json(ws))["type"] == "connected"


async def test_websocket_origin_must_be_this_server_or_allowed(
    make_server: ServerFactory,
) -> None:
    allowed = "http://localhost:3000"
    server = await make_server(cors_origins=[allowed])
    status, body, _ = await refusal(server.ws_url, origin="https://evil.example")
    assert status == 403 and "evil.example" in body["message"]
    for origin in (server.url, allowed, None):  # same origin, --cors-origin, no browser
        async with websockets.connect(server.ws_url, origin=origin) as ws:
            assert (await recv_json(ws))["type"] == "connected"
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert await metric(http, 'heartsim_websocket_refused_total{cause="origin"}') == 1


async def test_websocket_handshakes_are_rate_limited_per_client(
    make_server: ServerFactory,
) -> None:
    server = await make_server(ws_connect_limit=RateLimit(per_s=0.5, burst=3))
    for _ in range(3):
        async with websockets.connect(server.ws_url) as ws:
            await recv_json(ws)
    status, body, headers = await refusal(server.ws_url)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert "WebSocket connections" in body["message"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert await metric(http, 'heartsim_websocket_refused_total{cause="rate_limited"}') == 1
        assert (await http.get("/health")).status_code == 200  # HTTP is not held back


async def test_under_jupyterhub_the_hubs_host_name_is_served(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # jupyter-server-proxy forwards the hub's public name as Host; the port is not reachable
    # from browsers otherwise.
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    hub = {"Host": "hub.example.org"}
    server = await make_server()
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/health", headers=hub)).status_code == 200
    explicit = await make_server(allowed_hosts=["heartsim.lan"])  # the user's list rules
    async with httpx.AsyncClient(base_url=explicit.url) as http:
        assert (await http.get("/health", headers=hub)).status_code == 400


def test_served_host_names_follow_the_bound_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    assert served_hosts("127.0.0.1", None) == []
    assert served_hosts("0.0.0.0", ["a.lan"]) == ["a.lan"]
    assert served_hosts("::", None) == []
    assert served_hosts("myhost.lan", ["a.lan"]) == ["a.lan", "myhost.lan"]


def test_allowed_host_rules() -> None:
    hosts = AllowedHosts(["Heartsim.LAN.", "*.example.org"])
    for ok in (None, "heartsim.lan", "heartsim.lan:8001", "a.example.org", "x.y.example.org:1",
               "localhost", "a.localhost:3", "10.0.0.1:80", "[fe80::1]:8001", "[::1]"):  # fmt: skip
        assert hosts.allows(ok), ok
    for bad in ("example.org", "evil.example", "heartsim.lan.evil", "[::1", "", "a b"):
        assert not hosts.allows(bad), bad
    assert AllowedHosts(["*"]).allows("anything.example")
    for wrong in ("ex*.org", "*example.org", "a.*.org"):
        with pytest.raises(ValueError, match="allowed host"):
            AllowedHosts([wrong])


def test_rate_limiter_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimit(per_s=2.0, burst=2), max_keys=2, clock=lambda: now[0])
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == pytest.approx(0.5)
    now[0] = 0.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("b") == 0.0 and limiter.acquire("c") == 0.0
    assert len(limiter._buckets) == 2  # least recently seen client forgotten


def test_origin_rules() -> None:
    assert origin_allowed(None, "h:1", ())
    assert origin_allowed("http://h:1", "h:1", ())
    assert not origin_allowed("http://x:1", "h:1", ())
    assert origin_allowed("http://x:1", "h:1", ("http://x:1",))
