"""LivePredictor: same numbers as batch, warm-up, resilience, cost per person per tick."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from heartsim import Engine, Episode, SimulationResult, simulate
from heartsim.ml import HRVFeatures, LivePredictor, StressClassifier, make_dataset, predict_rr
from heartsim.ml.evaluation import hold_stress


def _ticks(samples: pd.DataFrame) -> list[list[dict[str, Any]]]:
    """The stream as it arrives: one list of samples rows (all persons) per tick."""
    records = samples.sort_values(["t_s", "person_id"], kind="stable").to_dict("records")
    ticks: dict[float, list[dict[str, Any]]] = {}
    for message in records:
        ticks.setdefault(message["t_s"], []).append(message)
    return list(ticks.values())


def _stream(live: LivePredictor, samples: pd.DataFrame) -> dict[tuple[str, float], Any]:
    out = {}
    for tick in _ticks(samples):
        for message, result in zip(tick, live.update_many(tick), strict=True):
            out[(str(message["person_id"]), float(message["t_s"]))] = result
    return out


@pytest.mark.parametrize("features", [None, "all"], ids=["default", "all-features"])
def test_live_scores_equal_batch_scores_on_the_same_messages(
    small_run: SimulationResult, train_data: pd.DataFrame, features: str | None
) -> None:
    model = StressClassifier(features=features).fit(train_data, train_data["stressed"])
    batch = HRVFeatures().fit_transform(small_run.samples)
    expected = model.predict_proba(batch)[:, 1]
    live = LivePredictor(model)
    results = _stream(live, small_run.samples)
    assert live.errors == 0
    got = np.array(
        [
            results[(str(p), t)]["stress_score"]
            for p, t in zip(batch["person_id"], batch["t_end_s"], strict=True)
        ]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    # The reported calls are the model's calls streamed through the same release hold.
    calls = np.array(
        [
            results[(str(p), t)]["prediction"] == "stress"
            for p, t in zip(batch["person_id"], batch["t_end_s"], strict=True)
        ]
    )
    raw = model.predict(batch)
    for person in batch["person_id"].unique():
        mine = (batch["person_id"] == person).to_numpy()
        held = hold_stress(raw[mine], round(live.hold_s / live.step_s))
        assert (calls[mine] == held).all()
    for result in results.values():
        if result is not None:
            p = result["stress_score"]
            want = p if result["prediction"] == "stress" else 1.0 - p
            assert result["confidence"] == pytest.approx(want)


def test_a_window_limit_spreads_scoring_over_calls_without_changing_scores(
    small_run: SimulationResult, fitted_model: StressClassifier
) -> None:
    unlimited = LivePredictor(fitted_model)
    limited = LivePredictor(fitted_model, max_windows_per_call=1)
    scores: dict[str, dict[str, list[float]]] = {"unlimited": {}, "limited": {}}
    most_pending = 0
    for tick in _ticks(small_run.samples):
        for name, live in (("unlimited", unlimited), ("limited", limited)):
            for message, result in zip(tick, live.update_many(tick), strict=True):
                mine = scores[name].setdefault(str(message["person_id"]), [])
                if result is not None and (not mine or mine[-1] != result["stress_score"]):
                    mine.append(result["stress_score"])
        most_pending = max(most_pending, limited.pending)
        assert unlimited.pending == 0
    while limited.pending:  # the last grid point's waiting persons: calls without messages
        limited.update_many([])
        for person, mine in scores["limited"].items():
            latest = limited.latest(person)
            if latest is not None and mine[-1] != latest["stress_score"]:
                mine.append(latest["stress_score"])
    # Three persons reach each grid point together: one is scored per call, two wait.
    assert most_pending == 2
    assert limited.errors == unlimited.errors == 0
    # The waiting persons get the same windows scored, one or two ticks later.
    assert scores["limited"] == scores["unlimited"]
    assert all(len(s) > 100 for s in scores["limited"].values())


@pytest.mark.parametrize("limit", [0, -1, 2.5, True, "10"])
def test_window_limit_must_be_a_positive_integer(
    fitted_model: StressClassifier, limit: Any
) -> None:
    with pytest.raises(ValueError, match="max_windows_per_call"):
        LivePredictor(fitted_model, max_windows_per_call=limit)


def test_live_with_blood_pressure_and_breathing_features(small_run: SimulationResult) -> None:
    data = make_dataset(
        n_persons=4, seed=8, duration_s=900, include_bp=True, include_breathing=True
    )
    model = StressClassifier(features="all").fit(data, data["stressed"])
    assert "systolic_mmhg" in model.feature_names
    featuriser = HRVFeatures(include_bp=True, include_breathing=True)
    batch = featuriser.fit_transform(small_run.samples)
    results = _stream(LivePredictor(model), small_run.samples)
    keys = zip(batch["person_id"].astype(str), batch["t_end_s"], strict=True)
    got = [results[key]["stress_score"] for key in keys]
    np.testing.assert_allclose(got, model.predict_proba(batch)[:, 1], rtol=1e-9)


def test_none_until_the_first_window_is_full(
    small_run: SimulationResult, fitted_model: StressClassifier
) -> None:
    results = _stream(LivePredictor(fitted_model), small_run.samples)
    p0 = sorted((t, r) for (p, t), r in results.items() if p == "p0")
    first = next(t for t, r in p0 if r is not None)
    assert 60.0 <= first <= 65.0
    assert all(r is None for t, r in p0 if t < first)
    assert all(r is not None for t, r in p0 if t >= first)


def test_model_parameters_follow_the_training_table(
    train_data: pd.DataFrame, fitted_model: StressClassifier
) -> None:
    live = LivePredictor(fitted_model)
    assert (live.window_s, live.step_s, live.baseline_s) == (60.0, 5.0, 600.0)
    with pytest.raises(ValueError, match="trained with window_s=60"):
        LivePredictor(fitted_model, window_s=90)
    table = train_data[list(fitted_model.feature_names)].copy()
    table.attrs = {}
    plain = StressClassifier().fit(table, train_data["stressed"])
    assert plain.feature_params_ is None
    assert LivePredictor(plain, window_s=90).window_s == 90.0  # nothing recorded: trusted
    bare = StressClassifier().fit(table.to_numpy(), train_data["stressed"])
    with pytest.raises(ValueError, match="feature_names_in_"):
        LivePredictor(bare)


# ------------------------------------------------------------------------- resilience


def _warm(live: LivePredictor, seconds: float = 70.0, seq0: int = 1, t0: float = 0.0) -> int:
    """Feed person p0 a steady, slightly variable rhythm at 2 Hz ticks; returns the next seq."""
    rng = np.random.default_rng(seq0)
    rr = 800.0 + rng.normal(0.0, 25.0, int(seconds * 2))
    beat_t = t0 + np.cumsum(rr) / 1000.0
    seq = seq0
    for k in range(1, int(seconds * 2) + 1):
        t = t0 + k / 2.0
        mine = (beat_t > t - 0.5) & (beat_t <= t)
        live.update({"person_id": "p0", "t": t, "seq": seq, "rr_ms": rr[mine].round(1).tolist()})
        seq += 1
    return seq


def test_model_errors_give_none_and_are_counted(fitted_model: StressClassifier) -> None:
    live = LivePredictor(fitted_model)

    def broken(X: np.ndarray) -> np.ndarray:  # noqa: N803
        raise RuntimeError("model exploded")

    live._predict_proba = broken
    seq = _warm(live)
    assert live.errors > 0 and "model exploded" in (live.last_error or "")
    assert live.latest("p0") is None
    # Once the model works again, predictions resume without a restart.
    live._predict_proba = fitted_model.pipeline_.predict_proba
    errors = live.errors
    _warm(live, seconds=10.0, seq0=seq, t0=70.0)
    assert live.errors == errors
    assert live.latest("p0") is not None


@pytest.mark.parametrize(
    "message",
    [
        {"person_id": "p0", "rr_ms": [800.0]},  # no t
        {"person_id": "p0", "t": "soon", "rr_ms": [800.0]},
        {"person_id": "p0", "t": float("nan"), "rr_ms": [800.0]},
        {"person_id": "p0", "t": 71.0, "rr_ms": ["x"]},
        {"person_id": "p0", "t": 71.0, "rr_ms": [[800.0, 1.0]]},
        None,
    ],
)
def test_malformed_messages_never_raise(fitted_model: StressClassifier, message: Any) -> None:
    live = LivePredictor(fitted_model)
    assert live.update_many([message]) == [None]
    assert live.errors == 1 and live.last_error


def test_absurd_intervals_are_counted_not_raised(fitted_model: StressClassifier) -> None:
    live = LivePredictor(fitted_model)
    seq = _warm(live)
    assert live.latest("p0") is not None
    result = live.update({"person_id": "p0", "t": 70.5, "seq": seq, "rr_ms": [-5.0, 800.0]})
    assert result is None
    assert live.errors == 1 and "rr_ms" in (live.last_error or "")
    assert live.latest("p0") is None  # the person restarts its warm-up


def test_a_gap_in_seq_restarts_the_person(fitted_model: StressClassifier) -> None:
    live = LivePredictor(fitted_model)
    seq = _warm(live)
    assert live.latest("p0") is not None
    after_gap = live.update({"person_id": "p0", "t": 73.0, "seq": seq + 5, "rr_ms": [800.0]})
    assert after_gap is None  # warming up again: the window is not full
    assert live.person_ids == ["p0"]
    live.forget("p0")
    assert live.person_ids == [] and live.latest("p0") is None


def test_lost_messages_restart_the_person(fitted_model: StressClassifier) -> None:
    live = LivePredictor(fitted_model)
    rng = np.random.default_rng(4)
    rr = 800.0 + rng.normal(0.0, 25.0, 200)
    beat_t = np.cumsum(rr) / 1000.0
    results = {}
    for k in range(1, 241):
        t = k / 2.0
        if 80.0 < t <= 90.0:
            continue  # ten seconds of messages (and their beats) never arrive; no seq either
        mine = (beat_t > t - 0.5) & (beat_t <= t)
        results[t] = live.update({"person_id": "p0", "t": t, "rr_ms": rr[mine].tolist()})
    assert results[80.0] is not None
    assert results[90.5] is None  # the rebuilt beat clock lagged 10 s: warm-up again
    assert results[120.0] is None and live.errors == 0


# ----------------------------------------------------------------------- end to end


def test_engine_stream_detects_a_triggered_stressor(fitted_model: StressClassifier) -> None:
    engine = Engine(persons=1, seed=3, tick_hz=2.0)
    engine.start()
    live = LivePredictor(fitted_model)
    history: list[tuple[float, Any]] = []

    def run(seconds: float) -> None:
        for _ in range(int(seconds * 2)):
            for message in engine.advance(0.5):
                history.append((message["t"], live.update(message)))

    run(420.0)
    onset = engine.t_s
    engine.trigger_stress(0.8, duration_s=240.0)
    run(240.0)
    assert live.errors == 0
    rest = [r for t, r in history if 120.0 <= t < onset]
    assert all(r["prediction"] == "calm" for r in rest)
    detected = next(t for t, r in history if t >= onset and r["prediction"] == "stress")
    assert detected - onset <= 45.0
    late = [r for t, r in history if onset + 90.0 <= t < onset + 240.0]
    assert np.mean([r["prediction"] == "stress" for r in late]) > 0.9


# ------------------------------------------------------------------------ cost


@pytest.mark.parametrize("n_persons", [1, 20])
def test_one_update_per_tick_over_a_whole_stream_scores_everyone(
    fitted_model: StressClassifier, n_persons: int
) -> None:
    """The whole stream (warm-up included), one update_many call per tick. Its cost is measured
    in benchmarks/bench_inference.py, not here: timed assertions flake on shared machines."""
    samples = simulate(n_persons=n_persons, duration_s=180, seed=12).samples
    live = LivePredictor(fitted_model)
    for tick in _ticks(samples):
        live.update_many(tick)
    assert live.errors == 0
    assert all(live.latest(f"p{i}") is not None for i in range(n_persons))


# ------------------------------------------------------------------------ predict_rr


def test_predict_rr_scores_the_last_window_like_batch(fitted_model: StressClassifier) -> None:
    run = simulate(n_persons=1, duration_s=900, seed=31, protocol=[Episode(700.0, 900.0, 0.9)])
    rr = run.beats["rr_ms"].to_numpy(np.float64)
    result = predict_rr(fitted_model, rr.tolist())
    assert result["prediction"] == "stress"
    # The same beats as a table whose last beat ends on a grid point, featurised in batch.
    span_s = rr.sum() / 1000.0
    t_now = np.ceil(span_s / 5.0) * 5.0
    beats = pd.DataFrame({"t_s": t_now - (rr.sum() - np.cumsum(rr)) / 1000.0, "rr_ms": rr})
    table = HRVFeatures().fit_transform(beats)
    assert table["t_end_s"].iloc[-1] == pytest.approx(t_now)
    expected = fitted_model.predict_proba(table.iloc[[-1]])[0, 1]
    assert result["stress_score"] == pytest.approx(expected, rel=1e-9)

    calm = predict_rr(fitted_model, rr[rr.cumsum() < 650_000.0])
    assert calm["prediction"] == "calm" and calm["confidence"] > 0.5


@pytest.mark.parametrize(
    ("rr", "match"),
    [
        ([800.0] * 50, "span at least 65 s"),
        ([800.0] * 99 + [-1.0], r"\(0, 3000\] ms"),
        ([800.0] * 99 + [float("nan")], r"\(0, 3000\] ms"),
        ([[800.0, 810.0]] * 60, "flat list"),
        (["a"] * 100, "list of RR intervals"),
    ],
)
def test_predict_rr_rejects_bad_input_clearly(
    fitted_model: StressClassifier, rr: Any, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        predict_rr(fitted_model, rr)


def test_predict_rr_reports_a_failing_model(fitted_model: StressClassifier) -> None:
    class Broken:
        def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
            raise RuntimeError("weights corrupted")

    broken = clone(fitted_model)
    broken.__dict__.update({k: v for k, v in fitted_model.__dict__.items() if k.endswith("_")})
    broken.pipeline_ = Broken()
    with pytest.raises(RuntimeError, match="weights corrupted"):
        predict_rr(broken, [800.0] * 100)
