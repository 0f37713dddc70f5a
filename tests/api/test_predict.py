"""A stress model on a real server: predictions in the stream, detach, failures counted in
/health and /metrics, POST /predict (happy paths, every 422, no model) and ``serve --model``."""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
import websockets

from heartsim import Episode, simulate
from heartsim.ml import StressClassifier, make_dataset, predict_rr
from heartsim.ml.classifier import DEFAULT_FEATURES
from heartsim.options import add_serve_arguments
from heartsim.runner import PREDICTION_FIELDS
from heartsim.schema import (
    EXAMPLE_FEATURES,
    MAX_PREDICT_INTERVALS,
    Health,
    PredictResponse,
    validate_message,
)
from heartsim.server import HeartsimServer

from .conftest import ServerFactory, heartbeats, recv_json, wait_until


@pytest.fixture(scope="module")
def model() -> StressClassifier:
    """A small default-feature model (a few seconds to train)."""
    data = make_dataset(n_persons=4, seed=3, duration_s=1200)
    return StressClassifier().fit(data, data["stressed"])


@pytest.fixture(scope="module")
def stress_rr() -> list[float]:
    """15 min of one person's beats, the last 200 s under a strong stressor."""
    run = simulate(n_persons=1, duration_s=900, seed=31, protocol=[Episode(700.0, 900.0, 0.9)])
    return run.beats["rr_ms"].round(1).tolist()


class ExplodingModel:
    """Looks like a fitted StressClassifier; every predict_proba raises."""

    feature_names_in_ = np.array(DEFAULT_FEATURES)
    classes_ = np.array([False, True])
    feature_params_ = None
    threshold = 0.5

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        raise RuntimeError("model exploded")


async def virtual_server(make_server: ServerFactory, **settings: Any) -> HeartsimServer:
    """A server whose simulation runs as fast as the loop allows (minutes of stream per second)
    at 2 Hz ticks; not started."""
    return await make_server(clock="virtual", tick_hz=2.0, **settings)


async def run_until(server: HeartsimServer, t_s: float) -> None:
    """Resume the simulation until it has passed ``t_s`` seconds, then pause it (so the
    virtual clock does not run on while the test reads)."""
    engine = server.engine
    engine.resume()

    def passed() -> bool:
        if engine.t_s >= t_s:
            engine.pause()
            return True
        return False

    await wait_until(passed, timeout=20.0)


async def history(http: httpx.AsyncClient, person: str = "p0") -> list[dict[str, Any]]:
    response = await http.get("/heartbeat/history", params={"person": person, "limit": 10_000})
    assert response.status_code == 200
    return response.json()["messages"]


def nulls(message: dict[str, Any]) -> bool:
    return all(message[field] is None for field in PREDICTION_FIELDS)


# ----------------------------------------------------------------------------- the stream


async def test_messages_carry_predictions_once_the_window_fills(
    make_server: ServerFactory, model: StressClassifier
) -> None:
    server = await virtual_server(make_server, persons=2)
    predictor = server.attach_model(model, name="small")
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        assert (await http.post("/simulation/start")).status_code == 200
        await run_until(server, 120.0)
        health = Health.model_validate((await http.get("/health")).json())
        assert health.model.attached and health.model.name == "small"
        assert health.model.features == list(DEFAULT_FEATURES) and health.model.errors == 0
        for person in ("p0", "p1"):
            stream = await history(http, person)
            assert len(stream) >= 240
            for message in stream:
                validate_message(message)
                if message["t"] < 60.0:  # the person's first 60 s window is not full
                    assert nulls(message), message
                elif message["t"] >= 65.0:
                    assert message["prediction"] in ("stress", "calm"), message
                    assert 0.0 <= message["stress_score"] <= 1.0
                    assert 0.0 <= message["confidence"] <= 1.0
            current = (await http.get("/heartbeat/current", params={"person": person})).json()
            assert current["prediction"] in ("stress", "calm")
        metrics = (await http.get("/metrics")).text
    assert "heartsim_model_attached 1.0" in metrics
    assert "heartsim_model_errors_total 0.0" in metrics
    assert predictor is server.runner.predictor


async def test_websocket_stream_carries_predictions_and_detach_restores_nulls(
    make_server: ServerFactory, model: StressClassifier
) -> None:
    server = await make_server(autostart=True)  # real clock, 20 Hz
    server.attach_model(model)
    for _ in range(140):  # 70 s of stream at once, so the first window is already full
        server.runner.tick(0.5)
    async with websockets.connect(server.ws_url) as ws:
        assert (await recv_json(ws))["type"] == "connected"
        live = await heartbeats(ws, 5)
        assert all(m["prediction"] in ("stress", "calm") for m in live)
        assert all(isinstance(m["stress_score"], float) for m in live)
        server.detach_model()
        detached_after = server.hub.latest("p0").seq
        later = await heartbeats(ws, 30)
    after = [m for m in later if m["seq"] > detached_after]
    assert len(after) >= 20 and all(nulls(m) for m in after)
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        health = (await http.get("/health")).json()
    assert health["model"] == {
        "attached": False,
        "name": None,
        "features": [],
        "errors": 0,
        "last_error": None,
    }


async def test_a_failing_model_never_stops_the_stream_and_is_counted(
    make_server: ServerFactory,
) -> None:
    server = await virtual_server(make_server, persons=2, autostart=True)
    server.attach_model(ExplodingModel(), name="exploding")
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        await run_until(server, 100.0)
        first = Health.model_validate((await http.get("/health")).json())
        await run_until(server, 130.0)
        second = Health.model_validate((await http.get("/health")).json())
        stream = await history(http)
        metrics = (await http.get("/metrics")).text
    assert first.model.attached and first.model.name == "exploding"
    assert first.model.errors >= 1 and "model exploded" in (first.model.last_error or "")
    assert second.model.errors > first.model.errors  # one per 5 s grid point, still counting
    assert second.messages_published > first.messages_published  # the stream went on
    assert all(nulls(m) for m in stream)
    assert [m["seq"] for m in stream] == list(range(1, len(stream) + 1))  # no tick lost
    assert stream[-1]["t"] >= 130.0
    errors = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("heartsim_model_errors_total ")
    )
    assert errors >= second.model.errors
    assert "heartsim_tick_errors_total 0.0" in metrics


# ----------------------------------------------------------------------------- POST /predict


async def test_predict_from_rr_intervals(
    make_server: ServerFactory, model: StressClassifier, stress_rr: list[float]
) -> None:
    server = await make_server()
    server.attach_model(model, name="small")
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
        stressed = await http.post("/predict", json={"rr_ms": stress_rr})
        rest = [rr for rr, end in zip(stress_rr, np.cumsum(stress_rr), strict=True) if end < 65e4]
        calm = await http.post("/predict", json={"rr_ms": rest})
        short = await http.post("/predict", json={"rr_ms": rest[-90:]})
    assert stressed.status_code == 200, stressed.text
    body = PredictResponse.model_validate(stressed.json())
    assert body.prediction == "stress" and body.model == "small"
    assert body.full_context is True and body.span_s == pytest.approx(sum(stress_rr) / 1e3)
    # Exactly the library's answer (heartsim.ml.predict_rr) for the same beats.
    expected = predict_rr(model, stress_rr)
    assert body.stress_score == expected["stress_score"]
    assert body.confidence == expected["confidence"]

    assert calm.status_code == 200 and calm.json()["prediction"] == "calm"
    assert calm.json()["confidence"] > 0.5
    # ~75 s of beats: valid, but without the person's baseline (full_context false).
    assert short.status_code == 200 and short.json()["full_context"] is False


async def test_predict_from_a_feature_row(
    make_server: ServerFactory, model: StressClassifier
) -> None:
    server = await make_server()
    server.attach_model(model)
    row = {**EXAMPLE_FEATURES, "mean_hr_bpm": 80.0}  # extra known features are ignored
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        response = await http.post("/predict", json={"features": row})
    assert response.status_code == 200, response.text
    body = response.json()
    table = {name: [EXAMPLE_FEATURES[name]] for name in DEFAULT_FEATURES}
    score = float(model.predict_proba(pd.DataFrame(table))[0, 1])
    assert body["stress_score"] == pytest.approx(score, rel=1e-12)
    assert body["prediction"] == ("stress" if score > 0.5 else "calm")
    assert body["span_s"] is None and body["full_context"] is None


_CALM_RR = [800.0 + 20.0 * math.sin(k) for k in range(100)]  # 80 s of beats


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"rr_ms": _CALM_RR[:50]}, "rr_ms", "span at least 65 s"),  # too few beats
        ({"rr_ms": []}, "rr_ms", "span at least 65 s"),
        ({"rr_ms": [*_CALM_RR, -800.0]}, "rr_ms[100]", "between 200 and 3000, got -800"),
        ({"rr_ms": [*_CALM_RR, 0.0]}, "rr_ms[100]", "between 200 and 3000, got 0"),
        ({"rr_ms": [40.0, *_CALM_RR]}, "rr_ms[0]", "between 200 and 3000, got 40"),
        ({"rr_ms": [*_CALM_RR, 8000.0]}, "rr_ms[100]", "between 200 and 3000, got 8000"),
        ({"rr_ms": [800.0] * (MAX_PREDICT_INTERVALS + 1)}, "rr_ms", "at most 10000 items"),
        ({"rr_ms": "800, 810"}, "rr_ms", "valid list"),
        ({"rr_ms": [800.0, "fast"]}, "rr_ms[1]", "between 200 and 3000, got 'fast'"),
        ({}, None, "exactly one of rr_ms"),
        ({"rr_ms": _CALM_RR, "features": EXAMPLE_FEATURES}, None, "exactly one of rr_ms"),
        ({"rr": _CALM_RR}, "rr", "Extra inputs are not permitted"),
        ({"features": {**EXAMPLE_FEATURES, "bogus": 1.0}}, "features", "unknown name(s) ['bogus"),
        ({"features": {"hr_delta_bpm": 3.0}}, "features", "lacks ['rmssd_log_ratio'"),
        ({"features": {**EXAMPLE_FEATURES, "hr_trend_bpm": "x"}}, "features.hr_trend_bpm",
         "valid number"),
    ],
    ids=[
        "too-few-beats", "no-beats", "negative", "zero", "absurdly-short", "absurdly-long",
        "too-many", "not-a-list", "not-a-number", "neither", "both", "unknown-field",
        "unknown-feature", "missing-feature", "feature-not-a-number",
    ],
)  # fmt: skip
async def test_predict_rejects_bad_input_with_422_naming_the_field(
    make_server: ServerFactory,
    model: StressClassifier,
    body: dict[str, Any],
    field: str | None,
    says: str,
) -> None:
    server = await make_server()
    server.attach_model(model)
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        response = await http.post("/predict", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["error"] == "Invalid parameter"
    assert error["field"] == field
    assert says in error["message"]
    if field is not None:
        assert error["message"].startswith(field)


@pytest.mark.parametrize("raw", [b'{"rr_ms": [NaN]}', b'{"rr_ms": [800, Infinity]}'])
async def test_predict_rejects_non_finite_intervals(
    make_server: ServerFactory, model: StressClassifier, raw: bytes
) -> None:
    server = await make_server()
    server.attach_model(model)
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        response = await http.post(
            "/predict", content=raw, headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert "must be a number between 200 and 3000" in response.json()["message"]


async def test_predict_without_a_model_is_409_saying_how_to_attach_one(
    make_server: ServerFactory, model: StressClassifier
) -> None:
    server = await make_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        response = await http.post("/predict", json={"rr_ms": _CALM_RR})
        server.attach_model(model)
        assert (await http.post("/predict", json={"rr_ms": _CALM_RR})).status_code == 200
        server.detach_model()
        detached = await http.post("/predict", json={"rr_ms": _CALM_RR})
    assert response.status_code == 409 and detached.status_code == 409
    error = response.json()
    assert error["error"] == "No model attached"
    assert "heartsim serve --model FILE" in error["message"]
    assert "attach_model(model)" in error["message"]


async def test_predict_reports_a_failing_model_as_500(make_server: ServerFactory) -> None:
    server = await make_server()
    server.attach_model(ExplodingModel())
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        from_rr = await http.post("/predict", json={"rr_ms": _CALM_RR})
        from_row = await http.post("/predict", json={"features": EXAMPLE_FEATURES})
    for response in (from_rr, from_row):
        assert response.status_code == 500
        assert response.json()["error"] == "Model failed"
        assert "model exploded" in response.json()["message"]


async def test_predict_is_documented_in_openapi(server: HeartsimServer) -> None:
    spec = server.app.openapi()
    operation = spec["paths"]["/predict"]["post"]
    assert set(operation["responses"]) >= {"200", "409", "422", "500"}
    description = operation["description"]
    assert "10 minutes" in description and '"calm"' in description
    schemas = spec["components"]["schemas"]
    request = schemas["PredictRequest"]["properties"]
    items = request["rr_ms"]["anyOf"][0]
    assert items["maxItems"] == MAX_PREDICT_INTERVALS
    assert (items["items"]["minimum"], items["items"]["maximum"]) == (200.0, 3000.0)
    assert set(schemas["PredictResponse"]["required"]) >= {
        "prediction",
        "confidence",
        "stress_score",
    }
    assert set(schemas["ModelStatus"]["properties"]) == {
        "attached",
        "name",
        "features",
        "errors",
        "last_error",
    }
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert sum(examples["rr_ms"]["value"]["rr_ms"]) / 1000.0 >= 65.0  # a valid example


async def test_predict_conforms_to_its_openapi_document(
    make_server: ServerFactory, model: StressClassifier
) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from .test_openapi_conformance import fuzz

    server = await make_server(rate_limit=None)
    server.attach_model(model)
    spec = server.app.openapi()
    spec["paths"] = {"/predict": spec["paths"]["/predict"]}
    for mode in ("positive", "negative"):
        failures = await asyncio.wait_for(
            asyncio.to_thread(fuzz, server.url, spec, schemathesis.GenerationMode(mode), 25), 60
        )
        assert not failures, failures


# ----------------------------------------------------------------------------- serve --model


def _serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "heartsim.cli", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _bad_files(tmp_path: Path, model: StressClassifier) -> dict[str, tuple[Path, str]]:
    garbage = tmp_path / "garbage.joblib"
    garbage.write_bytes(b"not a pickle at all")
    foreign = tmp_path / "foreign.joblib"
    joblib.dump({"weights": [1, 2, 3]}, foreign)
    old = tmp_path / "old.joblib"
    model.save(old)
    payload = joblib.load(old)
    payload["sklearn_version"] = "0.24.2"
    joblib.dump(payload, old)
    return {
        "missing": (tmp_path / "nope.joblib", "does not exist"),
        "garbage": (garbage, "not a readable StressClassifier file"),
        "foreign": (foreign, "not a heartsim StressClassifier file"),
        "other-versions": (old, "scikit-learn 0.24.2"),
    }


def test_serve_with_a_bad_model_file_exits_2_with_a_message(
    tmp_path: Path, model: StressClassifier
) -> None:
    for name, (path, says) in _bad_files(tmp_path, model).items():
        proc = _serve("--model", str(path))
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 2, (name, out, err)
        assert "--model" in err and says in err, (name, err)
        assert "heartsim dashboard" not in out  # it never started serving


def test_serve_with_a_model_file_fills_the_stream(tmp_path: Path, model: StressClassifier) -> None:
    path = model.save(tmp_path / "stress.joblib")
    proc = _serve("--model", str(path), "--start", "--tick-hz", "20")
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("heartsim dashboard: http://127.0.0.1:"), (line, proc.stderr)
        url = line.split(": ", 1)[1].strip()
        health = httpx.get(url + "health", timeout=5).json()
        assert health["model"]["attached"] and health["model"]["name"] == "stress.joblib"
        rr = [800.0 + 20.0 * math.sin(k) for k in range(100)]
        answer = httpx.post(url + "predict", json={"rr_ms": rr}, timeout=5)
        assert answer.status_code == 200 and answer.json()["model"] == "stress.joblib"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_serve_model_option_is_documented() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert "--model FILE" in parser.format_help()
    assert parser.parse_args(["--model", "m.joblib"]).model == "m.joblib"
    assert parser.parse_args([]).model is None
