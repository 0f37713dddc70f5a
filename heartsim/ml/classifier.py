"""StressClassifier: a scikit-learn estimator over the windowed feature table.

The estimator picks its feature columns by name from the tidy table of
:func:`heartsim.ml.make_dataset` / :class:`heartsim.ml.HRVFeatures` (ignoring ``person_id``,
the truth columns and anything else), and wraps a :class:`sklearn.pipeline.Pipeline`:
logarithm of the skewed variability features, standardisation, classifier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from heartsim.ml.features import FEATURE_COLUMNS

__all__ = ["DEFAULT_FEATURES", "ESTIMATORS", "LOG_FEATURES", "ModelFileError", "StressClassifier"]

#: Features used by default (chosen by evaluation, see :class:`StressClassifier`).
DEFAULT_FEATURES: Final[tuple[str, ...]] = ("hr_delta_bpm", "rmssd_log_ratio", "hr_trend_bpm")
#: Names accepted by ``StressClassifier(estimator=...)``.
ESTIMATORS: Final[tuple[str, ...]] = ("logistic", "hist_gradient_boosting", "random_forest")
#: Features whose logarithm is used (positive, right-skewed: variability and spectral power).
LOG_FEATURES: Final[frozenset[str]] = frozenset(
    {"sdnn_ms", "rmssd_ms", "sd1_ms", "sd2_ms", "lf_ms2", "hf_ms2", "lf_hf"}
)
_FILE_FORMAT: Final[str] = "heartsim.ml.StressClassifier"
_FILE_FORMAT_VERSION: Final[int] = 1
#: Floor before the logarithm, so zero variability (a flat series) stays finite.
_LOG_FLOOR: Final[float] = 1e-3


class ModelFileError(ValueError):
    """A saved model cannot be used: not a heartsim model, other versions, other features."""


def _log_columns(X: np.ndarray, columns: Sequence[int] = ()) -> np.ndarray:  # noqa: N803
    """Natural log of the given columns (floored at 1e-3); a module-level function so pickles
    of fitted pipelines load without this closure's source."""
    if not len(columns):
        return X
    out = np.array(X, dtype=np.float64, copy=True)
    idx = list(columns)
    out[:, idx] = np.log(np.maximum(out[:, idx], _LOG_FLOOR))
    return out


def _heartsim_version() -> str:
    from heartsim._version import __version__

    return __version__


class StressClassifier(ClassifierMixin, BaseEstimator):
    """Binary stress classifier over windowed HRV features (a scikit-learn estimator).

    ``fit(X, y)`` takes the tidy feature table as ``X`` and its ``stressed`` column as ``y``.
    With a :class:`pandas.DataFrame`, the feature columns are picked by name (see
    ``features``), so ``person_id``, ``t_end_s``, the truth columns and anything else are
    ignored; a plain array is used as is. The fitted :class:`~sklearn.pipeline.Pipeline`
    (``pipeline_``) takes the logarithm of the skewed variability and power features
    (:data:`LOG_FEATURES`), standardises and classifies.

    Defaults, chosen by :func:`heartsim.ml.evaluate` (leave-persons-out, 5 folds, streamed
    with the 10 s release hold; means over four populations of 20 simulated persons × 1 h,
    stress intensities 0.3 to 1.0):

    ==========================  =======  =====  ========  ========  =========  ========
    estimator, features         bal.acc  AUC    latency   latency   false      dropouts
                                                ≥ 0.6     < 0.45    alarms/h   /h
    ==========================  =======  =====  ========  ========  =========  ========
    gradient boosting, default  0.980    0.998  24 s      35 s      0.00       0.85
    random forest, default      0.978    0.998  25 s      38 s      0.00       0.76
    logistic, default           0.966    0.995  22 s      33 s      0.03       3.2
    gradient boosting, "all"    0.980    0.999  27 s      36 s      0.03       0.75
    logistic, "all"             0.973    0.997  28 s      36 s      0.56       2.1
    ==========================  =======  =====  ========  ========  =========  ========

    (latencies are medians after the onset; every episode was detected.)

    * Features: :data:`DEFAULT_FEATURES`: heart rate above the person's own baseline, RMSSD
      against the person's baseline, heart-rate trend (:func:`heartsim.ml.features.
      context_features`). Adding the absolute measures (mean HR, SDNN, RMSSD, pNN50, SD1,
      SD2) and ``sdnn_log_ratio`` does not raise accuracy and delays detection; with logistic
      regression it makes predictions flicker at rest (up to 1.24 false alarms per hour in
      one population), because absolute HRV differs more between persons than stress
      changes it.
    * Estimator: histogram gradient boosting (``"hist_gradient_boosting"``). It ties the
      random forest for the best accuracy, has no false alarm at rest and a quarter of the
      logistic model's dropouts, because it learns the interaction a linear model cannot
      (heart rate still raised but falling, in recovery, is not stress). Logistic regression
      detects onsets 2 s sooner but loses 1.4 points of balanced accuracy; the forest
      trains and predicts several times slower and writes a much larger file. Early
      stopping holds out 10 % of the training windows at random, hence ``random_state``
      (fixed by default, so fits are reproducible).

    Parameters
    ----------
    estimator : {"hist_gradient_boosting", "logistic", "random_forest"} or estimator
        The final classifier: a name, or any scikit-learn classifier with ``predict_proba``
        (cloned at fit).
    features : sequence of str, "all" or None, default None
        Feature columns to use. ``None``: :data:`DEFAULT_FEATURES` if the table has them all,
        else every known feature column present; ``"all"``: every column of
        :data:`heartsim.ml.FEATURE_COLUMNS` present.
    threshold : float, default 0.5
        :meth:`predict` says stress when the probability of stress exceeds it (binary).
    random_state : int or None, default 0
        Seed of the tree estimators (logistic regression is deterministic).

    Attributes
    ----------
    pipeline_ : sklearn.pipeline.Pipeline
        The fitted pipeline.
    classes_ : numpy.ndarray
        Class labels; for ``stressed`` booleans ``[False, True]`` (column 1 of
        :meth:`predict_proba` is the probability of stress).
    n_features_in_ : int
        Number of features used.
    feature_names_in_ : numpy.ndarray of str
        Their names, when fitted on a DataFrame.
    feature_params_ : dict or None
        The :class:`heartsim.ml.HRVFeatures` parameters that made the table, when it records
        them (``X.attrs["hrv_features"]``, set by :func:`heartsim.ml.make_dataset`).

    Examples
    --------
    >>> from heartsim.ml import make_dataset
    >>> data = make_dataset(n_persons=4, seed=3, duration_s=1200)
    >>> model = StressClassifier().fit(data, data["stressed"])
    >>> model.feature_names
    ['hr_delta_bpm', 'rmssd_log_ratio', 'hr_trend_bpm']
    >>> proba = model.predict_proba(data)[:, 1]  # probability of stress per window
    >>> bool(((proba > 0.5) == model.predict(data)).all())
    True
    """

    def __init__(
        self,
        estimator: str | BaseEstimator = "hist_gradient_boosting",
        features: Sequence[str] | str | None = None,
        threshold: float = 0.5,
        random_state: int | None = 0,
    ) -> None:
        self.estimator = estimator
        self.features = features
        self.threshold = threshold
        self.random_state = random_state

    # ----- fitting -----------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> StressClassifier:  # noqa: N803 (sklearn naming)
        """Fit on the feature table.

        Parameters
        ----------
        X : pandas.DataFrame or array_like, shape (n_windows, n_columns)
            The feature table (extra columns ignored) or a numeric matrix.
        y : array_like, shape (n_windows,)
            Targets, usually ``X["stressed"]``. If omitted and ``X`` has a ``stressed``
            column, that column is used.

        Returns
        -------
        StressClassifier
            ``self``.
        """
        if not isinstance(self.threshold, (int, float)) or not 0.0 < self.threshold < 1.0:
            raise ValueError(
                f"threshold must be between 0 and 1 (exclusive), got {self.threshold!r}"
            )
        if y is None and isinstance(X, pd.DataFrame) and "stressed" in X:
            y = X["stressed"].to_numpy()
        attrs = getattr(X, "attrs", None) or {}
        X_sel = self._select_for_fit(X)  # noqa: N806
        X_arr, y_arr = validate_data(self, X_sel, y, dtype=np.float64)  # noqa: N806
        check_classification_targets(y_arr)
        names = list(getattr(self, "feature_names_in_", []))
        log_idx = [i for i, name in enumerate(names) if name in LOG_FEATURES]
        self.pipeline_ = Pipeline(
            [
                ("log", FunctionTransformer(_log_columns, kw_args={"columns": log_idx})),
                ("scale", StandardScaler()),
                ("classifier", self._make_estimator()),
            ]
        )
        self.pipeline_.fit(X_arr, y_arr)
        self.classes_ = self.pipeline_.classes_
        params = attrs.get("hrv_features")
        self.feature_params_ = dict(params) if isinstance(params, dict) else None
        return self

    def _make_estimator(self) -> BaseEstimator:
        if isinstance(self.estimator, str):
            if self.estimator == "logistic":
                return LogisticRegression(C=1.0, max_iter=1000)
            if self.estimator == "hist_gradient_boosting":
                return HistGradientBoostingClassifier(random_state=self.random_state)
            if self.estimator == "random_forest":
                return RandomForestClassifier(
                    n_estimators=100, min_samples_leaf=5, random_state=self.random_state
                )
            raise ValueError(
                f"estimator must be one of {ESTIMATORS} or an estimator, got {self.estimator!r}"
            )
        if not hasattr(self.estimator, "fit") or not hasattr(self.estimator, "predict_proba"):
            raise ValueError(
                "estimator must be a scikit-learn classifier with predict_proba, got "
                f"{self.estimator!r}"
            )
        return clone(self.estimator)

    def _select_for_fit(self, X: Any) -> Any:  # noqa: N803
        if not isinstance(X, pd.DataFrame):
            if self.features is not None and not (
                isinstance(self.features, str) and self.features == "all"
            ):
                raise ValueError("features= selects columns by name: X must be a DataFrame")
            return X
        known = [c for c in FEATURE_COLUMNS if c in X.columns]
        if isinstance(self.features, str):
            if self.features != "all":
                raise ValueError(
                    f"features must be None, 'all' or a list of column names, got {self.features!r}"
                )
        elif self.features is not None:
            wanted = list(self.features)
            missing = [c for c in wanted if c not in X.columns]
            if missing:
                raise ValueError(f"X lacks the feature column(s) {missing}")
            return X[wanted]
        elif all(c in X.columns for c in DEFAULT_FEATURES):
            return X[list(DEFAULT_FEATURES)]
        # A table without any heartsim feature is taken as a plain numeric matrix.
        return X[known] if known else X

    # ----- prediction --------------------------------------------------------------------------
    def _prepare(self, X: Any) -> np.ndarray:  # noqa: N803
        check_is_fitted(self, "pipeline_")
        names = getattr(self, "feature_names_in_", None)
        if (
            isinstance(X, pd.DataFrame)
            and names is not None
            and all(name in X.columns for name in names)
        ):
            X = X[list(names)]  # noqa: N806
        return validate_data(self, X, reset=False, dtype=np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        """Class probabilities per window.

        Parameters
        ----------
        X : pandas.DataFrame or array_like
            Same columns (by name) as at fit; extra columns are ignored.

        Returns
        -------
        numpy.ndarray, shape (n_windows, n_classes)
            Probabilities; for ``stressed`` targets column 1 is the probability of stress.
        """
        X_arr = self._prepare(X)  # noqa: N806 (checks fitted first)
        return self.pipeline_.predict_proba(X_arr)

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """Predicted class per window (binary: stress when its probability exceeds
        ``threshold``).

        Returns
        -------
        numpy.ndarray, shape (n_windows,)
            Labels from ``classes_`` (``True`` = stressed for ``stressed`` targets).
        """
        decision = self.decision_function(X)
        if decision.ndim == 1:
            return self.classes_[(decision > 0).astype(int)]
        return self.classes_[np.argmax(decision, axis=1)]

    def decision_function(self, X: Any) -> np.ndarray:  # noqa: N803
        """Log-odds of stress minus those of ``threshold`` (binary: > 0 means stress), or
        per-class log-probabilities (multiclass).

        Returns
        -------
        numpy.ndarray, shape (n_windows,) or (n_windows, n_classes)
        """
        proba = np.clip(self.predict_proba(X), 1e-15, 1.0 - 1e-15)
        if len(self.classes_) == 2:
            p = proba[:, 1]
            t = float(self.threshold)
            return (np.log(p) - np.log1p(-p)) - (math.log(t) - math.log1p(-t))
        return np.log(proba)

    @property
    def feature_names(self) -> list[str]:
        """The feature columns the fitted model reads, in order."""
        check_is_fitted(self, "pipeline_")
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            return [f"x{i}" for i in range(self.n_features_in_)]
        return [str(n) for n in names]

    # ----- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model with joblib, recording versions and feature names.

        Parameters
        ----------
        path : str or pathlib.Path
            File to write (conventionally ``*.joblib``).

        Returns
        -------
        pathlib.Path
            The file written.
        """
        check_is_fitted(self, "pipeline_")
        path = Path(path)
        payload = {
            "format": _FILE_FORMAT,
            "format_version": _FILE_FORMAT_VERSION,
            "heartsim_version": _heartsim_version(),
            "sklearn_version": sklearn.__version__,
            "feature_names": self.feature_names,
            "feature_params": self.feature_params_,
            "model": self,
        }
        joblib.dump(payload, path)
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        feature_names: Sequence[str] | None = None,
        check_versions: bool = True,
    ) -> StressClassifier:
        """Read a model written by :meth:`save`.

        Only load files you trust: joblib files are pickles and can run code.

        Parameters
        ----------
        path : str or pathlib.Path
            The file.
        feature_names : sequence of str, optional
            The features the caller will provide; a different list raises.
        check_versions : bool, default True
            Refuse files written by another heartsim or scikit-learn version (pickled
            scikit-learn models are only guaranteed to work with the version that wrote them).

        Returns
        -------
        StressClassifier
            The fitted model.

        Raises
        ------
        ModelFileError
            If the file is not a heartsim model, was written by other versions, or its
            features differ from ``feature_names``.
        FileNotFoundError
            If the file does not exist.
        """
        path = Path(path)
        payload = joblib.load(path)
        if not isinstance(payload, dict) or payload.get("format") != _FILE_FORMAT:
            raise ModelFileError(
                f"{str(path)!r} is not a heartsim StressClassifier file (save one with "
                "StressClassifier.save)"
            )
        if payload.get("format_version") != _FILE_FORMAT_VERSION:
            raise ModelFileError(
                f"{str(path)!r} has file format version {payload.get('format_version')!r}; "
                f"this heartsim reads version {_FILE_FORMAT_VERSION}"
            )
        if check_versions:
            found = {
                "heartsim": (payload.get("heartsim_version"), _heartsim_version()),
                "scikit-learn": (payload.get("sklearn_version"), sklearn.__version__),
            }
            bad = [
                f"{name} {saved} (installed: {now})"
                for name, (saved, now) in found.items()
                if saved != now
            ]
            if bad:
                raise ModelFileError(
                    f"{str(path)!r} was saved with {', '.join(bad)}: retrain and save the model "
                    "with the installed versions, or pass check_versions=False at your own risk"
                )
        model = payload.get("model")
        if not isinstance(model, cls):
            raise ModelFileError(
                f"{str(path)!r} holds a {type(model).__name__}, not a {cls.__name__}"
            )
        saved_names = list(payload.get("feature_names") or [])
        if saved_names != model.feature_names:
            raise ModelFileError(
                f"{str(path)!r} is inconsistent: recorded feature names differ from the model's"
            )
        if feature_names is not None and list(feature_names) != saved_names:
            missing = [n for n in saved_names if n not in feature_names]
            extra = [n for n in feature_names if n not in saved_names]
            raise ModelFileError(
                f"{str(path)!r} expects the features {saved_names}; the caller provides "
                f"{list(feature_names)} (missing: {missing}, unexpected: {extra})"
            )
        return model

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
