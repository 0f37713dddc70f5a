"""A model attached to the runner: predictions in the messages, one encode per tick, failures
counted and never fatal, detach restores nulls (no server here; see tests/api/test_predict.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from heartsim import Engine
from heartsim.hub import Hub, Message
from heartsim.ml import LivePredictor, StressClassifier, make_dataset
from heartsim.ml.classifier import DEFAULT_FEATURES
from heartsim.runner import MIN_WINDOWS_PER_TICK, PREDICTION_FIELDS, Runner
from heartsim.schema import validate_message

TICK_HZ = 2.0


@pytest.fixture(scope="module")
def model() -> StressClassifier:
    """A small default-feature model (a few seconds to train)."""
    data = make_dataset(n_persons=4, seed=3, duration_s=1200)
    return StressClassifier().fit(data, data["stressed"])


class ExplodingModel:
    """Looks like a fitted StressClassifier to LivePredictor; every predict_proba raises."""

    feature_names_in_ = np.array(DEFAULT_FEATURES)
    classes_ = np.array([False, True])
    feature_params_ = None

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        raise RuntimeError("model exploded")


def make_runner(persons: int = 2) -> Runner:
    engine = Engine(persons=persons, seed=11, tick_hz=TICK_HZ)
    engine.start()
    return Runner(engine, Hub(), clock="virtual")


def messages(runner: Runner, person: str = "p0") -> list[dict[str, Any]]:
    history = runner.hub.history(person)
    assert history is not None
    return [m.data() for m in history.after(None)]


async def test_messages_carry_predictions_once_the_window_is_full(
    model: StressClassifier,
) -> None:
    runner = make_runner()
    predictor = LivePredictor(model)
    runner.attach_predictor(predictor, name="small")
    await runner.run_for(90.0)
    for person in ("p0", "p1"):
        stream = messages(runner, person)
        assert len(stream) == 180
        for message in stream:
            validate_message(message)
            if message["t"] < 60.0:  # the first 60 s window is not full yet
                assert all(message[f] is None for f in PREDICTION_FIELDS)
            elif message["t"] >= 65.0:
                assert message["prediction"] in ("stress", "calm")
                score = message["stress_score"]
                assert 0.0 <= score <= 1.0
                calm = message["prediction"] == "calm"
                assert message["confidence"] == pytest.approx(1.0 - score if calm else score)
        assert {k: stream[-1][k] for k in PREDICTION_FIELDS} == predictor.latest(person)
    stats = runner.model_stats()
    assert stats.attached and stats.name == "small" and stats.errors == 0
    assert stats.features == tuple(DEFAULT_FEATURES) and stats.inference_s > 0.0


async def test_one_encode_per_message_with_a_model(
    model: StressClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = make_runner(persons=3)
    runner.attach_predictor(LivePredictor(model))
    encoded: list[dict[str, Any]] = []
    original = Message.encode.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Message], sample: dict[str, Any]) -> Message:
        encoded.append(dict(sample))  # a copy: what was encoded, at encode time
        return original(cls, sample)

    monkeypatch.setattr(Message, "encode", classmethod(counting))
    ticks = await runner.run_for(70.0)
    assert len(encoded) == 3 * ticks
    # The predictions were in the samples when the hub encoded them (not patched in later).
    assert encoded[-1]["prediction"] in ("stress", "calm")


async def test_detach_restores_nulls(model: StressClassifier) -> None:
    runner = make_runner()
    runner.attach_predictor(LivePredictor(model))
    await runner.run_for(70.0)
    assert runner.hub.latest("p0").data()["prediction"] is not None
    runner.attach_predictor(None)
    await runner.run_for(5.0)
    after = [m for m in messages(runner) if m["t"] > 70.0]
    assert len(after) == 10
    assert all(m[f] is None for m in after for f in PREDICTION_FIELDS)
    assert not runner.model_stats().attached and runner.model_stats().name is None


async def test_a_failing_model_leaves_nulls_and_is_counted(model: StressClassifier) -> None:
    runner = make_runner()
    runner.attach_predictor(LivePredictor(ExplodingModel()), name="exploding")
    await runner.run_for(90.0)
    stream = messages(runner)
    assert len(stream) == 180 and runner.tick_errors == 0  # every tick published
    assert all(m[f] is None for m in stream for f in PREDICTION_FIELDS)
    stats = runner.model_stats()
    # One failing model call (shared by both persons) per 5 s grid point once the first
    # 60 s window is full: t = 65, 70, ..., 90 s.
    assert stats.errors == 6
    assert "model exploded" in (stats.last_error or "")
    # A working model afterwards: predictions come back; the counter never goes down.
    runner.attach_predictor(LivePredictor(model))
    await runner.run_for(70.0)
    assert runner.hub.latest("p1").data()["prediction"] in ("stress", "calm")
    assert runner.model_stats().errors == 6


class RaisingPredictor:
    """A predictor broken beyond LivePredictor's own guards."""

    errors = 0
    last_error = None
    feature_names = ("x",)

    def __init__(self, result: Any = None) -> None:
        self.result = result

    def update_many(self, samples: list[dict[str, Any]]) -> list[Any]:
        if self.result is None:
            raise KeyError("predictor bug")
        return self.result

    def forget(self, person_id: str | None = None) -> None:
        pass


@pytest.mark.parametrize(
    "predictor",
    [
        RaisingPredictor(),
        RaisingPredictor(result=[{"prediction": "stress", "confidence": 1.0, "stress_score": 1.0}]),
        RaisingPredictor(result=[{"prediction": "stress"}, {"prediction": "calm"}]),
    ],
    ids=["raises", "too-few-results", "malformed-results"],
)
async def test_a_broken_predictor_never_stops_the_stream(predictor: RaisingPredictor) -> None:
    runner = make_runner()
    runner.attach_predictor(predictor)  # type: ignore[arg-type]
    assert await runner.run_for(3.0) == 6
    stream = messages(runner)
    assert [m["seq"] for m in stream] == [1, 2, 3, 4, 5, 6] and runner.tick_errors == 0
    assert all(m[f] is None for m in stream for f in PREDICTION_FIELDS)
    assert runner.model_stats().errors == 6
    assert runner.model_stats().last_error.startswith("predictor failed")


async def test_removed_persons_are_forgotten(model: StressClassifier) -> None:
    runner = make_runner(persons=3)
    predictor = LivePredictor(model)
    runner.attach_predictor(predictor)
    await runner.run_for(2.0)
    assert sorted(predictor.person_ids) == ["p0", "p1", "p2"]
    runner.engine.remove_person("p2")
    runner.forget_person("p2")
    assert sorted(predictor.person_ids) == ["p0", "p1"]
    runner.attach_predictor(None)
    runner.forget_person("p1")  # no-op without a model


async def test_predictions_run_with_one_openmp_thread(model: StressClassifier) -> None:
    """A tick scores a few rows: OpenMP threads only add overhead, and stall on a busy host."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen: list[int] = []

    class Recording(LivePredictor):
        def update_many(self, messages: Any) -> list[Any]:
            openmp = threadpoolctl.threadpool_info()
            seen.extend(p["num_threads"] for p in openmp if p["user_api"] == "openmp")
            return super().update_many(messages)

    runner = make_runner()
    runner.attach_predictor(Recording(model))
    await runner.run_for(1.0)
    assert seen and set(seen) == {1}


def test_a_crowd_reaching_the_grid_together_is_scored_over_the_following_ticks(
    model: StressClassifier,
) -> None:
    # 80 persons at 2 Hz with 5 s steps: 10 ticks per step, so at most
    # max(MIN_WINDOWS_PER_TICK, ceil(1.2 * 80 / 10)) = 32 windows are scored per tick.
    runner = make_runner(persons=80)
    predictor = LivePredictor(model)
    runner.attach_predictor(predictor, name="small")
    pending = []
    for _ in range(round(75 * TICK_HZ)):
        runner.tick()
        pending.append(predictor.pending)
    assert predictor.max_windows_per_call == MIN_WINDOWS_PER_TICK == 32
    # The first full windows (t = 65 s) fall due for everybody on one tick: 32 scored there,
    # 32 on the next, the last 16 on the third; then the queue is empty until the next step.
    first = next(i for i, n in enumerate(pending) if n)
    assert pending[first : first + 4] == [48, 16, 0, 0]
    latest = [m.data() for m in (runner.hub.latest(f"p{i}") for i in range(80)) if m]
    assert len(latest) == 80 and all(m["prediction"] is not None for m in latest)
    assert runner.model_errors == 0
