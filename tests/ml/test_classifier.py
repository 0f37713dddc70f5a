"""StressClassifier: estimator contract, column picking, persistence."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from heartsim.ml import FEATURE_COLUMNS, ModelFileError, StressClassifier
from heartsim.ml.classifier import DEFAULT_FEATURES
from heartsim.ml.features import CONTEXT_FEATURES


# Every applicable scikit-learn check passes; none is expected to fail.
@parametrize_with_checks([StressClassifier()])
def test_scikit_learn_estimator_checks(estimator, check) -> None:
    check(estimator)


def test_fit_picks_feature_columns_by_name(
    train_data: pd.DataFrame, fitted_model: StressClassifier
) -> None:
    assert fitted_model.feature_names == list(DEFAULT_FEATURES)
    assert list(fitted_model.feature_names_in_) == list(DEFAULT_FEATURES)
    y = train_data["stressed"]
    every = StressClassifier(features="all").fit(train_data, y)
    assert every.feature_names == [c for c in FEATURE_COLUMNS if c in train_data.columns]
    assert "person_id" not in every.feature_names and "stress_level" not in every.feature_names
    # Without the context features, every known feature present is used.
    plain = train_data.drop(columns=list(CONTEXT_FEATURES))
    fallback = StressClassifier().fit(plain, y)
    assert fallback.feature_names == [c for c in FEATURE_COLUMNS if c in plain.columns]
    with pytest.raises(ValueError, match="features must be None, 'all'"):
        StressClassifier(features="some").fit(train_data, y)
    assert isinstance(fitted_model.pipeline_, Pipeline)
    assert fitted_model.classes_.tolist() == [False, True]
    assert fitted_model.feature_params_ == train_data.attrs["hrv_features"]


def test_predictions_ignore_extra_columns_and_column_order(
    train_data: pd.DataFrame, fitted_model: StressClassifier
) -> None:
    expected = fitted_model.predict_proba(train_data)
    reordered = train_data[list(reversed(train_data.columns))].assign(junk="x", other=1.0)
    np.testing.assert_allclose(fitted_model.predict_proba(reordered), expected)
    only_features = train_data[fitted_model.feature_names].to_numpy()
    with pytest.warns(UserWarning, match="feature names"):
        np.testing.assert_allclose(fitted_model.predict_proba(only_features), expected)


def test_column_one_of_predict_proba_is_stress(
    train_data: pd.DataFrame, fitted_model: StressClassifier
) -> None:
    proba = fitted_model.predict_proba(train_data)
    assert proba.shape == (len(train_data), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    stressed = train_data["stressed"].to_numpy()
    assert proba[stressed, 1].mean() > 0.8 > 0.2 > proba[~stressed, 1].mean()
    predicted = fitted_model.predict(train_data)
    assert predicted.dtype == bool
    assert (predicted == (proba[:, 1] > 0.5)).all()
    assert (predicted == stressed).mean() > 0.9


def test_y_defaults_to_the_stressed_column(
    train_data: pd.DataFrame, fitted_model: StressClassifier
) -> None:
    model = StressClassifier().fit(train_data)
    np.testing.assert_allclose(
        model.predict_proba(train_data), fitted_model.predict_proba(train_data)
    )


def test_threshold_and_explicit_features(train_data: pd.DataFrame) -> None:
    y = train_data["stressed"]
    cautious = StressClassifier(threshold=0.9).fit(train_data, y)
    eager = StressClassifier(threshold=0.1).fit(train_data, y)
    stress_proba = cautious.predict_proba(train_data)[:, 1]
    assert (cautious.predict(train_data) == (stress_proba > 0.9)).all()
    assert (eager.predict(train_data) == (stress_proba > 0.1)).all()
    subset = StressClassifier(features=["hr_delta_bpm", "rmssd_log_ratio"]).fit(train_data, y)
    assert subset.feature_names == ["hr_delta_bpm", "rmssd_log_ratio"]
    with pytest.raises(ValueError, match="lacks the feature column"):
        StressClassifier(features=["no_such_feature"]).fit(train_data, y)
    with pytest.raises(ValueError, match="threshold"):
        StressClassifier(threshold=1.5).fit(train_data, y)


def test_missing_feature_at_predict_names_it(
    train_data: pd.DataFrame, fitted_model: StressClassifier
) -> None:
    with pytest.raises(ValueError, match="hr_trend_bpm"):
        fitted_model.predict(train_data.drop(columns="hr_trend_bpm"))


@pytest.mark.parametrize(
    "estimator",
    ["logistic", "random_forest", LogisticRegression(C=0.1, max_iter=500)],
    ids=["logistic", "forest", "custom"],
)
def test_other_estimators_learn_too(train_data: pd.DataFrame, estimator) -> None:
    small = train_data.iloc[::3]
    model = StressClassifier(estimator=estimator, random_state=0).fit(small, small["stressed"])
    accuracy = (model.predict(train_data) == train_data["stressed"].to_numpy()).mean()
    assert accuracy > 0.9


def test_unknown_estimator_is_rejected(train_data: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="estimator must be one of"):
        StressClassifier(estimator="svm").fit(train_data, train_data["stressed"])


# ---------------------------------------------------------------------------- persistence


def test_save_and_load_round_trip(
    tmp_path: Path, train_data: pd.DataFrame, fitted_model: StressClassifier
) -> None:
    path = fitted_model.save(tmp_path / "stress.joblib")
    payload = joblib.load(path)
    assert payload["sklearn_version"] == sklearn.__version__
    assert payload["heartsim_version"]
    assert payload["feature_names"] == fitted_model.feature_names
    loaded = StressClassifier.load(path, feature_names=fitted_model.feature_names)
    np.testing.assert_array_equal(
        loaded.predict_proba(train_data), fitted_model.predict_proba(train_data)
    )
    assert loaded.feature_params_ == fitted_model.feature_params_


@pytest.mark.parametrize("field", ["sklearn_version", "heartsim_version"])
def test_loading_a_file_from_other_versions_fails_clearly(
    tmp_path: Path, fitted_model: StressClassifier, field: str
) -> None:
    path = fitted_model.save(tmp_path / "stress.joblib")
    payload = joblib.load(path)
    payload[field] = "0.0.1"
    joblib.dump(payload, path)
    with pytest.raises(ModelFileError, match=r"0\.0\.1 \(installed: .*retrain"):
        StressClassifier.load(path)
    assert StressClassifier.load(path, check_versions=False).feature_names


def test_loading_with_other_features_fails_clearly(
    tmp_path: Path, fitted_model: StressClassifier
) -> None:
    path = fitted_model.save(tmp_path / "stress.joblib")
    with pytest.raises(ModelFileError, match=r"missing: \['hr_trend_bpm'\]"):
        StressClassifier.load(path, feature_names=fitted_model.feature_names[:-1])


def test_loading_something_else_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "other.joblib"
    joblib.dump({"weights": [1, 2, 3]}, path)
    with pytest.raises(ModelFileError, match="not a heartsim StressClassifier file"):
        StressClassifier.load(path)
    with pytest.raises(FileNotFoundError):
        StressClassifier.load(tmp_path / "absent.joblib")


def test_saving_an_unfitted_model_fails(tmp_path: Path) -> None:
    with pytest.raises(sklearn.exceptions.NotFittedError):
        StressClassifier().save(tmp_path / "x.joblib")
