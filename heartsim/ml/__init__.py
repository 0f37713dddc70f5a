"""Stress detection on heartsim data: features, datasets, a classifier, evaluation, live use.

The pieces follow scikit-learn's conventions::

    from heartsim.ml import StressClassifier, evaluate, make_dataset

    data = make_dataset(n_persons=30, seed=1)           # one row per 60 s window, every 5 s
    report = evaluate(StressClassifier(), data)         # leave-persons-out cross-validation
    model = StressClassifier().fit(data, data["stressed"])
    model.save("stress.joblib")

- :class:`HRVFeatures`: beats (or stream messages) -> windowed HRV features with ground truth;
- :func:`make_dataset`: simulate a population and featurise it;
- :func:`collect` / :func:`collect_async`: the same table from a running server (virtual time
  in process), :func:`fast_forward` to step an in-process server ahead;
- :class:`StressClassifier`: the estimator (a Pipeline inside), with ``save`` / ``load``;
- :func:`evaluate`: leave-persons-out metrics, detection latency and false alarms;
- :class:`LivePredictor`: per-person predictions from heartbeat messages;
- :func:`predict_rr`: one prediction from a list of recent RR intervals.
"""

from heartsim.ml.classifier import ModelFileError, StressClassifier
from heartsim.ml.collect import collect, collect_async, fast_forward
from heartsim.ml.dataset import make_dataset
from heartsim.ml.evaluation import EvaluationReport, evaluate
from heartsim.ml.features import FEATURE_COLUMNS, HRVFeatures
from heartsim.ml.live import LivePredictor, predict_rr

__all__ = [
    "FEATURE_COLUMNS",
    "EvaluationReport",
    "HRVFeatures",
    "LivePredictor",
    "ModelFileError",
    "StressClassifier",
    "collect",
    "collect_async",
    "evaluate",
    "fast_forward",
    "make_dataset",
    "predict_rr",
]
