"""evaluate(): leave-persons-out metrics, latency and false-alarm bookkeeping, the targets."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from heartsim.ml import EvaluationReport, StressClassifier, evaluate, make_dataset
from heartsim.ml.dataset import EPISODE_COLUMNS
from heartsim.ml.evaluation import TARGETS, _quantile_with_misses, hold_stress


class _TruthPeeker(ClassifierMixin, BaseEstimator):
    """Test double: 'predicts' from the truth column ``stress_share`` (never do this)."""

    def __init__(self, always: bool | None = None) -> None:
        self.always = always

    def fit(self, X: pd.DataFrame, y: Any) -> _TruthPeeker:  # noqa: N803
        self.classes_ = np.array([False, True])
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        if self.always is None:
            p = (X["stress_share"].to_numpy() > 0.5).astype(float)
        else:
            p = np.full(len(X), float(self.always))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        return self.predict_proba(X)[:, 1] >= 0.5


@pytest.fixture(scope="module")
def held_out_population() -> pd.DataFrame:
    """20 persons, 1 h each, intensities drawn from 0.3 to 1.0 (the lab protocol)."""
    return make_dataset(n_persons=20, seed=2024, duration_s=3600)


def test_targets_are_met_on_held_out_persons(held_out_population: pd.DataFrame) -> None:
    report = evaluate(StressClassifier(), held_out_population, n_splits=5)
    print(report)  # shown with pytest -s: the figures, including the mild case
    assert report.balanced_accuracy >= 0.90
    assert report.roc_auc >= 0.95
    strong = report.latency_summary.loc["strong"]
    assert strong["episodes"] >= 20
    assert strong["median_s"] <= 30.0
    assert report.false_alarms_per_hour <= 1.0
    assert report.rest_hours > 5.0
    assert report.targets_met
    # The mild case (intensity < 0.45), whatever it is, is reported and mostly detected.
    mild = report.latency_summary.loc["mild"]
    assert mild["episodes"] >= 5
    assert mild["detected_pct"] >= 80.0
    assert math.isfinite(mild["median_s"])


def test_persons_never_straddle_train_and_test(held_out_population: pd.DataFrame) -> None:
    report = evaluate(StressClassifier(), held_out_population, n_splits=4)
    folds_per_person = report.predictions.groupby("person_id", observed=True)["fold"].nunique()
    assert (folds_per_person == 1).all()
    assert report.predictions["fold"].nunique() == 4
    assert len(report.fold_balanced_accuracy) == 4
    assert report.n_persons == 20 and report.n_windows == len(held_out_population)
    assert report.confusion.sum() == len(held_out_population)


def test_a_model_that_mirrors_the_truth_has_the_label_latency_and_no_false_alarm(
    held_out_population: pd.DataFrame,
) -> None:
    report = evaluate(_TruthPeeker(), held_out_population, n_splits=2, hold_s=0)
    assert report.balanced_accuracy == 1.0
    assert report.false_alarms == 0 and report.dropouts == 0
    latency = report.latency["latency_s"]
    # A window is 'stressed' once more than half of its beats fall in the episode: about
    # 30-35 s on the 5 s grid, a little sooner since the stressed half beats faster.
    assert latency.between(25.0, 36.0).all()
    assert latency.median() == pytest.approx(31.0, abs=2.5)
    assert report.latency["detected"].all()


def test_an_always_stressed_model_raises_one_false_alarm_per_person(
    held_out_population: pd.DataFrame,
) -> None:
    report = evaluate(_TruthPeeker(always=True), held_out_population, n_splits=2)
    # The first window of each person is at rest (lab baselines last >= 240 s): one rising
    # edge each; the prediction never falls again, so no further edge.
    assert report.false_alarms == 20
    assert report.latency["latency_s"].between(0.0, 5.0).all()  # the next grid point
    never = evaluate(_TruthPeeker(always=False), held_out_population, n_splits=2)
    assert never.false_alarms == 0
    assert not never.latency["detected"].any()
    assert math.isinf(never.latency_summary.loc["all", "median_s"])


def test_report_is_readable_and_tabular(held_out_population: pd.DataFrame) -> None:
    report = evaluate(StressClassifier(), held_out_population.iloc[::2], n_splits=3)
    assert isinstance(report, EvaluationReport)
    text = str(report)
    for fragment in ("balanced accuracy", "ROC AUC", "strong", "mild", "false alarms"):
        assert fragment in text
    frame = report.to_frame()
    assert set(TARGETS) <= set(frame.index)
    assert frame.loc["balanced_accuracy", "target"] == ">= 0.9"
    assert "<pre>" in report._repr_html_()


def test_latency_needs_episode_columns(held_out_population: pd.DataFrame) -> None:
    data = held_out_population.drop(columns=list(EPISODE_COLUMNS))
    report = evaluate(StressClassifier(), data, n_splits=3)
    assert report.latency.empty
    assert math.isnan(report.to_frame().loc["median_latency_strong_s", "value"])
    assert not report.targets_met


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n_splits": 1}, "n_splits"), ({"n_splits": 50}, "n_splits")],
)
def test_bad_arguments(held_out_population: pd.DataFrame, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate(StressClassifier(), held_out_population, **kwargs)


def test_bad_data() -> None:
    with pytest.raises(ValueError, match="person_id"):
        evaluate(StressClassifier(), pd.DataFrame({"stressed": [True, False]}))


def test_quantiles_count_misses_as_infinitely_late() -> None:
    assert _quantile_with_misses(np.array([10.0, 20.0, math.inf]), 0.5) == 20.0
    assert math.isinf(_quantile_with_misses(np.array([10.0, 20.0, math.inf]), 0.9))
    values = np.array([3.0, 1.0, 7.0, 5.0])
    assert _quantile_with_misses(values, 0.9) == pytest.approx(np.quantile(values, 0.9))
    assert math.isnan(_quantile_with_misses(np.array([]), 0.5))


def test_the_release_hold_only_lengthens_stress_calls(held_out_population: pd.DataFrame) -> None:
    held = evaluate(_TruthPeeker(), held_out_population, n_splits=2, hold_s=10.0)
    predictions = held.predictions
    assert (predictions["predicted"] >= predictions["predicted_raw"]).all()
    # Each stress call lasts at most two windows (10 s) longer.
    extra = int((predictions["predicted"] & ~predictions["predicted_raw"]).sum())
    ordered = predictions.sort_values(["person_id", "t_end_s"])
    calls = 0
    for _, one in ordered.groupby("person_id", observed=True):
        raw = one["predicted_raw"].to_numpy()
        calls += int(raw[0]) + int(np.count_nonzero(raw[1:] & ~raw[:-1]))
    assert 0 < extra <= 2 * calls
    assert held.confusion[1, 0] == 0  # no stressed window missed
    assert held.latency["latency_s"].equals(
        evaluate(_TruthPeeker(), held_out_population, n_splits=2, hold_s=0).latency["latency_s"]
    )
    with pytest.raises(ValueError, match="hold_s"):
        evaluate(_TruthPeeker(), held_out_population, n_splits=2, hold_s=-1)


def test_hold_stress_bridges_short_calm_runs() -> None:
    raw = np.array([0, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0], dtype=bool)
    assert hold_stress(raw, 0).tolist() == raw.tolist()
    assert hold_stress(raw, 2).astype(int).tolist() == [0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1]
    assert not hold_stress(np.zeros(5, dtype=bool), 3).any()
