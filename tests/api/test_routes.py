"""Every HTTP route of API.md against a real server: bodies, idempotence, errors, OpenAPI."""

from __future__ import annotations

import re

import httpx

from heartsim.physiology.profiles import PROFILE_RANGES
from heartsim.schema import Health, HeartbeatMessage, HistoryPage, validate_message
from heartsim.server import HeartsimServer

from .conftest import ServerFactory, wait_until

JSON = {"Content-Type": "application/json"}
NO_DATA = {
    "error": "No data available",
    "message": "Start simulation first using POST /simulation/start",
}


async def test_dashboard_and_its_assets_are_served_without_cdn(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<html" in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing external
    assets = re.findall(r"""(?:src|href)\s*=\s*["']/?(static/[^"']+)""", page)
    for asset in assets:
        assert (await client.get("/" + asset)).status_code == 200, asset


async def test_health_reports_state_clients_and_counters(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    body = (await client.get("/health")).json()
    health = Health.model_validate(body)
    assert health.status == "healthy"
    assert health.simulation_state == "stopped"
    assert health.base_bpm == server.engine.profile().resting_hr_bpm
    assert health.websocket_clients == 0
    assert health.persons == 1 and health.default_person == "p0"
    assert health.version and health.uptime_s >= 0
    assert {"p50", "p99", "max", "jitter"} <= set(body["tick_lag_ms"])
    assert health.messages_dropped == 0 and health.clients_dropped == 0


async def test_start_and_stop_are_idempotent_with_the_documented_messages(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post("/simulation/start")
    assert first.status_code == 200
    assert first.json() == {"message": "Simulation started", "state": "running"}
    again = await client.post("/simulation/start")
    assert again.status_code == 200
    assert again.json() == {"message": "Simulation already running", "state": "running"}
    assert (await client.get("/health")).json()["simulation_state"] == "running"

    stop = await client.post("/simulation/stop")
    assert stop.json() == {"message": "Simulation stopped", "state": "stopped"}
    stop_again = await client.post("/simulation/stop")
    assert stop_again.status_code == 200
    assert stop_again.json()["message"] == "Simulation already stopped"
    assert stop_again.json()["state"] == "stopped"


async def test_pause_and_resume(client: httpx.AsyncClient) -> None:
    await client.post("/simulation/start")
    assert (await client.post("/simulation/pause")).json() == {
        "message": "Simulation paused",
        "state": "paused",
    }
    assert (await client.post("/simulation/pause")).json()["state"] == "paused"
    stress = await client.post("/simulation/trigger-stress", params={"stress_level": 0.5})
    assert stress.status_code == 400
    assert (await client.post("/simulation/resume")).json()["state"] == "running"


async def test_current_is_404_before_data_then_the_latest_message(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    before = await client.get("/heartbeat/current")
    assert before.status_code == 404
    assert before.json() == NO_DATA
    await client.post("/simulation/start")
    await wait_until(lambda: server.hub.latest("p0") is not None)
    response = await client.get("/heartbeat/current")
    assert response.status_code == 200
    message = HeartbeatMessage.model_validate(response.json())
    assert message.person_id == "p0" and message.state == "running"
    assert 30 < message.bpm < 200


async def test_trigger_stress_needs_a_running_simulation(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    response = await client.post("/simulation/trigger-stress", params={"stress_level": 0.8})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "Simulation not running"
    assert "POST /simulation/start" in body["message"]

    await client.post("/simulation/start")
    ok = await client.post(
        "/simulation/trigger-stress", params={"stress_level": 0.8, "duration_s": 30}
    )
    assert ok.status_code == 200
    body = ok.json()
    assert body["stress_level"] == 0.8 and body["duration_s"] == 30.0
    assert body["person_id"] == "p0" and body["end_t"] - body["start_t"] == 30.0
    # The original dashboard's button sends only stress_level; that still works.
    assert (await client.post("/simulation/trigger-stress?stress_level=0.9")).status_code == 200

    async def label() -> str:
        await wait_until(lambda: server.hub.latest("p0") is not None)
        seq = server.hub.latest("p0").seq
        await wait_until(lambda: server.hub.latest("p0").seq > seq)
        return (await client.get("/heartbeat/current")).json()["label"]

    assert await label() == "stress"


async def test_set_baseline_changes_the_resting_rate(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    response = await client.post("/simulation/set-baseline", params={"bpm": 58})
    assert response.status_code == 200
    assert response.json()["base_bpm"] == 58.0
    assert (await client.get("/health")).json()["base_bpm"] == 58.0
    assert server.engine.profile().resting_hr_bpm == 58.0


SPONTANEOUS = "spontaneous_stress_per_h"
INVALID = [
    ("/simulation/trigger-stress", {"stress_level": "1.5"}, "stress_level", "between 0 and 1"),
    ("/simulation/trigger-stress", {"stress_level": "-0.1"}, "stress_level", "between 0 and 1"),
    ("/simulation/trigger-stress", {"stress_level": "high"}, "stress_level", "between 0 and 1"),
    ("/simulation/trigger-stress", {"stress_level": "nan"}, "stress_level", "between 0 and 1"),
    ("/simulation/trigger-stress", {"duration_s": "0.5"}, "duration_s", "between 1 and 3600"),
    ("/simulation/trigger-stress", {"duration_s": "4000"}, "duration_s", "between 1 and 3600"),
    ("/simulation/set-baseline", {"bpm": "39"}, "bpm", "between 40 and 120"),
    ("/simulation/set-baseline", {"bpm": "121"}, "bpm", "between 40 and 120"),
    ("/simulation/set-baseline", {"bpm": "fast"}, "bpm", "between 40 and 120"),
    ("/simulation/set-baseline", {}, "bpm", "between 40 and 120"),
    ("/simulation/config", {"tick_hz": "0"}, "tick_hz", "between 0.1 and 50"),
    ("/simulation/config", {"tick_hz": "51"}, "tick_hz", "between 0.1 and 50"),
    ("/simulation/config", {SPONTANEOUS: "-1"}, SPONTANEOUS, "between 0 and 60"),
    ("/simulation/config", {SPONTANEOUS: "61"}, SPONTANEOUS, "between 0 and 60"),
]  # fmt: skip


async def test_invalid_control_parameters_are_422_naming_the_field_and_change_nothing(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    await client.post("/simulation/start")
    await wait_until(lambda: server.hub.latest("p0") is not None)
    config_before = (await client.get("/simulation/config")).json()
    persons_before = (await client.get("/persons")).json()
    for path, params, field, rule in INVALID:
        response = await client.post(path, params=params)
        assert response.status_code == 422, (path, params, response.text)
        body = response.json()
        assert body["field"] == field, body
        assert field in body["message"] and rule in body["message"], body
        assert body["detail"][0]["loc"][-1] == field

        assert (await client.get("/simulation/config")).json() == config_before
        assert (await client.get("/persons")).json() == persons_before
        seq = server.hub.latest("p0").seq
        await wait_until(lambda seq=seq: server.hub.latest("p0").seq > seq)
        assert (await client.get("/heartbeat/current")).json()["label"] == "rest", params


async def test_invalid_history_parameters_are_422(client: httpx.AsyncClient) -> None:
    cases = [({"since": "-1"}, "since"), ({"since": "x"}, "since"), ({"limit": "0"}, "limit"),
             ({"limit": "10001"}, "limit")]  # fmt: skip
    for params, field in cases:
        response = await client.get("/heartbeat/history", params=params)
        assert response.status_code == 422, params
        assert response.json()["field"] == field and field in response.json()["message"]


async def test_config_changes_tick_rate_and_spontaneous_rate(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    config = (await client.get("/simulation/config")).json()
    assert config["tick_hz"] == 20.0 and config["spontaneous_stress_per_h"] == 0.0
    changed = await client.post(
        "/simulation/config", params={"tick_hz": 10, "spontaneous_stress_per_h": 3}
    )
    assert changed.status_code == 200
    assert changed.json()["tick_hz"] == 10.0 and changed.json()["spontaneous_stress_per_h"] == 3.0
    assert server.engine.tick_hz == 10.0 and server.runner.tick_hz == 10.0


async def test_post_persons_validates_every_profile_field(client: httpx.AsyncClient) -> None:
    for field, (low, high) in PROFILE_RANGES.items():
        for value in (low - 1, high + 1, "abc"):
            response = await client.post("/persons", json={field: value})
            assert response.status_code == 422, (field, value)
            body = response.json()
            assert body["field"] == field
            assert f"between {low:g} and {high:g}" in body["message"], body
    assert len((await client.get("/persons")).json()["persons"]) == 1


async def test_persons_can_be_listed_added_inspected_changed_and_removed(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    listing = (await client.get("/persons")).json()
    assert listing["default_person"] == "p0"
    assert [p["person_id"] for p in listing["persons"]] == ["p0"]

    drawn = await client.post("/persons")
    assert drawn.status_code == 201 and drawn.json()["person_id"] == "p1"
    custom = await client.post(
        "/persons", json={"person_id": "alice", "resting_hr_bpm": 61, "hr_reactivity_bpm": 30}
    )
    assert custom.status_code == 201
    alice = custom.json()["person"]
    assert alice["resting_hr_bpm"] == 61 and alice["hr_reactivity_bpm"] == 30
    assert alice["is_default"] is False
    assert (await client.post("/persons", json={"person_id": "alice"})).status_code == 409
    bad_pair = await client.post("/persons", json={"systolic_mmhg": 100, "diastolic_mmhg": 95})
    assert bad_pair.status_code == 422 and "diastolic_mmhg" in bad_pair.json()["message"]
    bad_id = await client.post("/persons", json={"person_id": "no spaces"})
    assert bad_id.status_code == 422 and bad_id.json()["field"] == "person_id"

    assert (await client.get("/persons/alice")).json()["resting_hr_bpm"] == 61
    patched = await client.patch("/persons/alice", json={"resting_hr_bpm": 66})
    assert patched.status_code == 200 and patched.json()["resting_hr_bpm"] == 66
    other = await client.patch("/persons/alice", json={"rsa_amplitude_ms": 20})
    assert other.status_code == 200 and server.engine.profile("alice").rsa_amplitude_ms == 20
    assert (await client.patch("/persons/alice", json={"resting_hr_bpm": 300})).status_code == 422

    removed = await client.delete("/persons/alice")
    assert removed.json() == {"message": "Person alice removed", "person_id": "alice"}
    assert (await client.delete("/persons/alice")).status_code == 404
    await client.delete("/persons/p1")
    last = await client.delete("/persons/p0")
    assert last.status_code == 409 and "last" in last.json()["message"]


PERSON_ROUTES = [
    ("GET", "/health"),
    ("GET", "/heartbeat/current"),
    ("GET", "/heartbeat/history"),
    ("GET", "/simulation/config"),
    ("POST", "/simulation/start"),
    ("POST", "/simulation/stop"),
    ("POST", "/simulation/pause"),
    ("POST", "/simulation/resume"),
    ("POST", "/simulation/trigger-stress?stress_level=0.5"),
    ("POST", "/simulation/set-baseline?bpm=70"),
    ("POST", "/simulation/config"),
    ("GET", "/persons/nobody"),
    ("PATCH", "/persons/nobody"),
    ("DELETE", "/persons/nobody"),
]


async def test_unknown_person_is_404_naming_it_on_every_route(client: httpx.AsyncClient) -> None:
    for method, path in PERSON_ROUTES:
        params = {} if "/persons/" in path else {"person": "nobody"}
        response = await client.request(method, path, params=params)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"] == "Unknown person"
        assert "'nobody'" in response.json()["message"]


async def test_every_route_takes_person(server: HeartsimServer, client: httpx.AsyncClient) -> None:
    await client.post("/persons", json={"person_id": "bob", "resting_hr_bpm": 50})
    await client.post("/simulation/start")
    await wait_until(lambda: server.hub.latest("bob") is not None)
    assert (await client.get("/health", params={"person": "bob"})).json()["base_bpm"] == 50
    current = (await client.get("/heartbeat/current", params={"person": "bob"})).json()
    assert current["person_id"] == "bob"
    stress = await client.post(
        "/simulation/trigger-stress", params={"stress_level": 0.7, "person": "bob"}
    )
    assert stress.json()["person_id"] == "bob"
    await client.post("/simulation/set-baseline", params={"bpm": 55, "person": "bob"})
    assert server.engine.profile("bob").resting_hr_bpm == 55
    assert server.engine.profile("p0").resting_hr_bpm != 55


async def test_history_pages_by_seq(server: HeartsimServer, client: httpx.AsyncClient) -> None:
    assert (await client.get("/heartbeat/history")).json()["messages"] == []
    await client.post("/simulation/start")
    await wait_until(
        lambda: server.hub.latest("p0") is not None and server.hub.latest("p0").seq >= 12
    )
    await client.post("/simulation/stop")
    latest = server.hub.latest("p0").seq

    newest = HistoryPage.model_validate((await client.get("/heartbeat/history?limit=5")).json())
    assert [m.seq for m in newest.messages] == list(range(latest - 4, latest + 1))

    page = (await client.get("/heartbeat/history", params={"since": 3, "limit": 4})).json()
    assert [m["seq"] for m in page["messages"]] == [4, 5, 6, 7]
    assert page["more"] is True and page["oldest_seq"] == 1 and page["latest_seq"] == latest
    rest = (await client.get("/heartbeat/history", params={"since": 7, "limit": 1000})).json()
    assert [m["seq"] for m in rest["messages"]] == list(range(8, latest + 1))
    assert rest["more"] is False and rest["missed"] == 0
    for message in rest["messages"]:
        validate_message(message)


async def test_openapi_documents_every_route_parameter_and_error(
    server: HeartsimServer, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    expected = {
        ("get", "/"), ("get", "/health"), ("get", "/metrics"), ("get", "/schema/messages"),
        ("post", "/simulation/start"), ("post", "/simulation/stop"),
        ("post", "/simulation/pause"), ("post", "/simulation/resume"),
        ("post", "/simulation/trigger-stress"), ("post", "/simulation/set-baseline"),
        ("get", "/simulation/config"), ("post", "/simulation/config"),
        ("get", "/heartbeat/current"), ("get", "/heartbeat/history"), ("get", "/ws/heartbeat"),
        ("get", "/persons"), ("post", "/persons"), ("get", "/persons/{person_id}"),
        ("patch", "/persons/{person_id}"), ("delete", "/persons/{person_id}"),
        ("post", "/predict"),
    }  # fmt: skip
    documented = {(method, path) for path, ops in paths.items() for method in ops}
    assert documented == expected
    app_paths = {route.path for route in server.app.routes if hasattr(route, "methods")}
    assert app_paths <= {path for _, path in expected} | {
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
    }
    for path, ops in paths.items():
        for method, op in ops.items():
            assert op.get("summary"), (method, path)
            assert op.get("description"), (method, path)
            assert "200" in op["responses"] or "201" in op["responses"] or "426" in op["responses"]
    trigger = paths["/simulation/trigger-stress"]["post"]
    names = {p["name"] for p in trigger["parameters"]}
    assert {"stress_level", "duration_s", "person"} <= names
    level = next(p for p in trigger["parameters"] if p["name"] == "stress_level")
    assert level["schema"]["minimum"] == 0 and level["schema"]["maximum"] == 1
    assert {"400", "404", "422", "429"} <= set(trigger["responses"])
    assert "401" not in trigger["responses"]  # this server has no token (see test_openapi_*)
    assert "ValidationErrorBody" in str(trigger["responses"]["422"])
    assert "HeartbeatMessage" in str(paths["/heartbeat/current"]["get"]["responses"]["200"])
    assert "since" in paths["/ws/heartbeat"]["get"]["description"]


async def test_every_422_is_documented_with_our_body_never_fastapis_default(
    client: httpx.AsyncClient,
) -> None:
    # Every operation with a parameter or a body can answer 422 (e.g. a person id over 64
    # characters), always with ValidationErrorBody; FastAPI documents its own
    # HTTPValidationError for a route that does not declare its 422.
    spec = (await client.get("/openapi.json")).json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            assert "HTTPValidationError" not in str(responses), (method, path)
            if op.get("parameters") or op.get("requestBody"):
                assert "ValidationErrorBody" in str(responses.get("422")), (method, path)
    too_long = "x" * 65
    for method, path, params in [
        ("GET", "/health", {"person": too_long}),
        ("GET", "/simulation/config", {"person": too_long}),
        ("GET", f"/persons/{too_long}", {}),
        ("DELETE", f"/persons/{too_long}", {}),
    ]:
        response = await client.request(method, path, params=params)
        assert response.status_code == 422, (method, path, response.text)
        assert "64" in response.json()["message"], response.json()


async def test_a_body_that_is_not_json_is_a_clear_error_never_a_500(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/persons", "/predict"):
        broken = await client.post(path, content=b'{"rr_ms": [800,', headers=JSON)
        assert broken.status_code == 422, broken.text
        assert broken.json()["field"] is None
        assert "not valid JSON" in broken.json()["message"], broken.json()
        # Not UTF-8: as JSON, FastAPI cannot decode it (400); as text, it is no JSON object.
        for content_type, status in (("application/json", 400), ("text/plain", 422)):
            response = await client.post(
                path, content=b"\x80\xff", headers={"Content-Type": content_type}
            )
            assert response.status_code == status, (path, content_type, response.text)
            assert response.json()["error"] in ("Bad request", "Invalid parameter")
    assert len((await client.get("/persons")).json()["persons"]) == 1


async def test_plain_get_on_the_websocket_url_explains_how_to_connect(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/ws/heartbeat")
    assert response.status_code == 426
    assert "WebSocket" in response.json()["message"]


async def test_metrics_are_prometheus_text_from_a_private_registry(
    make_server: ServerFactory,
) -> None:
    one = await make_server()
    two = await make_server()
    async with httpx.AsyncClient(base_url=one.url) as http:
        await http.post("/simulation/start")
        await wait_until(lambda: one.hub.messages_published >= 3)
        text = (await http.get("/metrics")).text
    assert "# TYPE heartsim_messages_published_total counter" in text
    for name in ("messages_sent_total", "messages_dropped_total", "clients_dropped_total",
                 "websocket_clients", "tick_lag_seconds{quantile=\"0.99\"}"):  # fmt: skip
        assert f"heartsim_{name}" in text
    async with httpx.AsyncClient(base_url=two.url) as http:
        other = (await http.get("/metrics")).text
    assert "heartsim_messages_published_total 0.0" in other


async def test_schema_route_serves_the_versioned_message_schema(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/messages")).json()
    assert schema["version"] == "1.1"
    assert {"HeartbeatMessage", "ConnectedMessage", "PongMessage"} <= set(schema["$defs"])
    beat = schema["$defs"]["HeartbeatMessage"]["properties"]
    assert "ms" in beat["variability"]["description"]


async def test_unknown_route_answers_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert set(response.json()) == {"error", "message"}
