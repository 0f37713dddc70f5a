"""Live stress predictions from heartbeat messages, person by person.

:class:`LivePredictor` is pure (no I/O, no asyncio): the server or a notebook feeds it each
tick's messages and copies its output into the messages' ``prediction``, ``confidence`` and
``stress_score`` fields.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from heartsim.datasets import WIRE_FIELDS
from heartsim.hrv import MAX_RR_MS, MIN_FREQ_DURATION_S, MIN_INTERVALS
from heartsim.ml.evaluation import DEFAULT_HOLD_S
from heartsim.ml.features import (
    _BEAT_COLUMN_OF_FEATURE,
    BP_FEATURES,
    BREATHING_FEATURES,
    CONTEXT_FEATURES,
    FEATURE_COLUMNS,
    FREQUENCY_FEATURES,
    HRVFeatures,
    context_row,
    window_features,
)

__all__ = ["LivePredictor", "Prediction", "predict_rr"]

#: What :meth:`LivePredictor.update` returns per person: ``prediction`` (``"stress"`` or
#: ``"calm"``), ``confidence`` (probability of the predicted class, 0.5 to 1) and
#: ``stress_score`` (probability of stress, 0 to 1).
Prediction = dict[str, Any]

# Per-tick feature column -> the message field it is the window mean of.
_FIELD_OF_COLUMN: Final[dict[str, str]] = {
    feature: WIRE_FIELDS[column] for feature, column in _BEAT_COLUMN_OF_FEATURE.items()
}


class _Columns:
    """Append-only float64 columns with cheap trimming of the oldest rows."""

    def __init__(self, names: Sequence[str], capacity: int = 512) -> None:
        self.names = tuple(names)
        self.data = np.empty((len(self.names), capacity))
        self.n = 0

    def append(self, rows: np.ndarray) -> None:
        """Append ``rows`` of shape ``(len(names), k)``."""
        k = rows.shape[1]
        if self.n + k > self.data.shape[1]:
            grown = np.empty((self.data.shape[0], max(2 * self.data.shape[1], self.n + k)))
            grown[:, : self.n] = self.data[:, : self.n]
            self.data = grown
        self.data[:, self.n : self.n + k] = rows
        self.n += k

    def drop_before(self, index: int) -> None:
        """Forget rows ``[0, index)``."""
        if index <= 0:
            return
        keep = self.n - index
        self.data[:, :keep] = self.data[:, index : self.n]
        self.n = keep

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[self.names.index(name), : self.n]


@dataclass
class _Person:
    person_id: str
    beats: _Columns
    history: _Columns
    first_beat_s: float | None = None
    last_beat_s: float = math.nan
    last_t: float = -math.inf
    last_seq: int | None = None
    next_k: int | None = None
    calm_run: int = 1 << 30
    result: Prediction | None = None
    queued: bool = False  # a grid point is due and waits in LivePredictor._queue


class LivePredictor:
    """Per-person stress predictions from heartbeat messages (``rr_ms`` lists).

    Each person's beats are rebuilt from the messages exactly as
    :func:`heartsim.ml.features.beats_from_messages` does, and every ``step_s`` of stream time
    (on the grid ``k * step_s``, like the training windows) the person's last ``window_s`` of
    beats is featurised with the same code as :class:`heartsim.ml.HRVFeatures` and scored by
    the model. Between grid points the last prediction is repeated. Until the first window is
    full (``window_s`` seconds of beats) the result is ``None``.

    ``prediction`` goes to ``"stress"`` as soon as ``stress_score`` exceeds the model's
    threshold and back to ``"calm"`` only after it has stayed below for more than ``hold_s``
    (:func:`heartsim.ml.evaluation.hold_stress`, the rule :func:`heartsim.ml.evaluate`
    scores): brief dips inside a stress episode do not flip the stream. ``confidence`` is the
    model's probability of the reported prediction, so during such a hold it is below 0.5.

    Cost (measured by ``tests/ml/test_live.py`` on the whole stream, warm-up included, at
    2 Hz ticks): about 40 µs per person per tick with 20 persons and 160 µs with one. A
    message costs a few microseconds; a grid point adds ~0.1 ms of features per person (plus
    ~0.7 ms with frequency features) and one model call (~1 ms for the default gradient
    boosting, whatever the batch) shared by all persons due in the same
    :meth:`update_many` call, so feed a tick's messages together.

    Errors never propagate: a malformed message, intervals :mod:`heartsim.hrv` rejects (the
    person then restarts its warm-up) or a failing model give ``None`` for that person,
    increment :attr:`errors` and keep a description in :attr:`last_error`.

    Parameters
    ----------
    model : StressClassifier
        A fitted model whose features are all in :data:`heartsim.ml.FEATURE_COLUMNS`
        (fitted on a feature table).
    window_s : float or None, default None
        Window length (s). ``None`` takes the model's training value
        (``model.feature_params_``, recorded from :func:`heartsim.ml.make_dataset` tables),
        else 60 s. A value different from the recorded one raises.
    step_s, baseline_s, trend_s : float or None, default None
        As :class:`heartsim.ml.HRVFeatures` (default: the model's, else 5, 600 and 30 s).
    hold_s : float, default 10
        Release hold (s); 0 reports the model's raw call at every grid point.
    max_gap_s : float, default 5
        A person whose rebuilt beat clock drifts this far from the message time ``t`` (lost
        messages), whose ``seq`` skips, or whose ``t`` goes back is reset (warm-up again).
    max_windows_per_call : int or None, default None
        At most this many persons' due windows are featurised and scored per
        :meth:`update_many` call; the others wait, in arrival order, for the next calls (their
        previous prediction is repeated meanwhile). Bounds the cost of one call when many
        persons reach a grid point together; the server's runner sets it from the tick rate so
        that a grid point's work spreads over the ticks of one step. ``None``: no limit.
        ``update_many([])`` scores waiting persons without new messages (see :attr:`pending`
        and :meth:`latest`).

    Attributes
    ----------
    errors : int
        Messages or predictions that failed (their results were ``None``).
    last_error : str or None
        Description of the last failure.

    Examples
    --------
    >>> from heartsim import simulate
    >>> from heartsim.ml import StressClassifier, make_dataset
    >>> data = make_dataset(n_persons=4, seed=3, duration_s=1200)
    >>> live = LivePredictor(StressClassifier().fit(data, data["stressed"]))
    >>> messages = simulate(n_persons=1, duration_s=90, seed=5).samples.to_dict("records")
    >>> results = [live.update(m) for m in messages]
    >>> results[0] is None, sorted(results[-1])
    (True, ['confidence', 'prediction', 'stress_score'])
    """

    def __init__(
        self,
        model: Any,
        window_s: float | None = None,
        *,
        step_s: float | None = None,
        baseline_s: float | None = None,
        trend_s: float | None = None,
        hold_s: float = DEFAULT_HOLD_S,
        max_gap_s: float = 5.0,
        max_windows_per_call: int | None = None,
    ) -> None:
        names = getattr(model, "feature_names_in_", None)
        if names is None:
            raise ValueError(
                "model must be fitted on a feature table (it has no feature_names_in_); fit it "
                "on make_dataset(...) or HRVFeatures output"
            )
        self.feature_names = [str(n) for n in names]
        unknown = [n for n in self.feature_names if n not in FEATURE_COLUMNS]
        if unknown:
            raise ValueError(f"LivePredictor cannot compute the model's features {unknown}")
        recorded = getattr(model, "feature_params_", None) or {}
        defaults = HRVFeatures().get_params()
        params = {}
        for name, given in (
            ("window_s", window_s),
            ("step_s", step_s),
            ("baseline_s", baseline_s),
            ("trend_s", trend_s),
        ):
            trained = recorded.get(name, defaults[name])
            if given is not None and name in recorded and given != trained:
                raise ValueError(
                    f"the model was trained with {name}={trained!r}; LivePredictor got "
                    f"{name}={given!r} (leave it unset to use the model's)"
                )
            params[name] = given if given is not None else trained
        uses_context = any(n in CONTEXT_FEATURES for n in self.feature_names)
        self._features = HRVFeatures(
            window_s=params["window_s"],
            step_s=params["step_s"],
            include_bp=any(n in BP_FEATURES for n in self.feature_names),
            include_breathing=any(n in BREATHING_FEATURES for n in self.feature_names),
            frequency=any(n in FREQUENCY_FEATURES for n in self.feature_names),
            baseline_s=params["baseline_s"] if uses_context else None,
            trend_s=params["trend_s"],
        ).fit()
        self.model = model
        self.window_s = float(params["window_s"])
        self.step_s = float(params["step_s"])
        self.baseline_s = None if params["baseline_s"] is None else float(params["baseline_s"])
        self.trend_s = float(params["trend_s"])
        if not isinstance(hold_s, (int, float)) or not 0.0 <= hold_s <= 3600.0:
            raise ValueError(f"hold_s must be a number of seconds from 0 to 3600, got {hold_s!r}")
        self.hold_s = float(hold_s)
        self._hold_windows = round(self.hold_s / self.step_s)
        self.max_gap_s = float(max_gap_s)
        self.max_windows_per_call = max_windows_per_call
        self._queue: deque[_Person] = deque()
        self.errors = 0
        self.last_error: str | None = None
        self._uses_frequency = self._features.uses_frequency
        self._uses_context = uses_context
        self._tick_columns = [
            c for c in (*BP_FEATURES, *BREATHING_FEATURES) if c in self.feature_names
        ]
        self._beat_columns = ["t_s", "rr_ms", *self._tick_columns]
        # Beats kept: the window, plus the 60 s of intervals the spectrum may reach back to.
        self._keep_beats_s = max(self.window_s, MIN_FREQ_DURATION_S) + 10.0
        self._keep_history_s = (self.baseline_s or 0.0) + self.step_s
        self._persons: dict[str, _Person] = {}
        classes = list(getattr(model, "classes_", [False, True]))
        self._stress_column = classes.index(True) if True in classes else 1
        self._threshold = float(getattr(model, "threshold", 0.5))
        pipeline = getattr(model, "pipeline_", None)
        # The fitted pipeline takes the feature matrix in feature_names order directly,
        # skipping per-call DataFrame validation (about 0.2 ms) on the hot path.
        self._predict_proba = pipeline.predict_proba if pipeline is not None else None

    # ----- public API --------------------------------------------------------------------------
    @property
    def max_windows_per_call(self) -> int | None:
        """Limit of windows scored per :meth:`update_many` call (``None``: no limit)."""
        return self._max_windows_per_call

    @max_windows_per_call.setter
    def max_windows_per_call(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            raise ValueError(
                f"max_windows_per_call must be a positive integer or None, got {value!r}"
            )
        self._max_windows_per_call = None if value is None else int(value)

    @property
    def pending(self) -> int:
        """Persons whose due window waits for a later call (see ``max_windows_per_call``)."""
        return len(self._queue)

    @property
    def person_ids(self) -> list[str]:
        """Persons seen so far."""
        return list(self._persons)

    def update(self, message: Mapping[str, Any]) -> Prediction | None:
        """Take one heartbeat message; return its person's current prediction.

        Parameters
        ----------
        message : mapping
            A heartbeat message: ``person_id`` (optional with one person), ``t`` (s),
            ``rr_ms`` (list of ms), optionally ``seq`` and, if the model uses them,
            ``systolic``, ``diastolic``, ``respiration_rate``; or a row of
            :attr:`heartsim.SimulationResult.samples` (``t_s``, ``systolic_mmhg``, ...).

        Returns
        -------
        dict or None
            ``{"prediction": "stress" | "calm", "confidence": float, "stress_score": float}``,
            or ``None`` while the person's first window is not full or after an error.
        """
        return self.update_many([message])[0]

    def update_many(self, messages: Iterable[Mapping[str, Any]]) -> list[Prediction | None]:
        """Take one tick's messages (any persons); return one prediction per message.

        Persons reaching a grid point in this call are scored together in one model call.

        Returns
        -------
        list of (dict or None)
            As :meth:`update`, aligned with ``messages``.
        """
        persons: list[_Person | None] = []
        for message in messages:
            person = None
            try:
                person = self._ingest(message)
                if not person.queued and self._is_due(person):
                    person.queued = True
                    self._queue.append(person)
            except (KeyError, TypeError, ValueError, IndexError) as err:
                self._fail(f"message {_short(message)} rejected: {err!r}")
                persons.append(None)
                continue
            finally:
                if person is not None and not person.queued:
                    self._trim(person)
            persons.append(person)
        self._score_queued()
        return [None if p is None else p.result for p in persons]

    def latest(self, person_id: str) -> Prediction | None:
        """The last prediction of ``person_id`` (``None`` if unknown or not ready)."""
        person = self._persons.get(person_id)
        return None if person is None else person.result

    def forget(self, person_id: str | None = None) -> None:
        """Drop one person's state (or everybody's with ``None``)."""
        if person_id is None:
            self._persons.clear()
            self._queue.clear()
        else:
            self._persons.pop(person_id, None)  # a queued entry is skipped when reached

    # ----- internals ---------------------------------------------------------------------------
    def _fail(self, description: str) -> None:
        self.errors += 1
        self.last_error = description

    def _new_person(self, person_id: str) -> _Person:
        return _Person(
            person_id=person_id,
            beats=_Columns(self._beat_columns),
            history=_Columns(("t_end_s", "mean_hr_bpm", "rmssd_ms", "sdnn_ms"), capacity=256),
        )

    def _ingest(self, message: Mapping[str, Any]) -> _Person:
        if not isinstance(message, Mapping):
            raise TypeError(f"a message must be a mapping, got {type(message).__name__}")
        person_id = str(message.get("person_id", "p0"))
        t = float(message["t"] if "t" in message or "t_s" not in message else message["t_s"])
        if not math.isfinite(t):
            raise ValueError(f"t must be finite, got {t!r}")
        rr_raw = message.get("rr_ms")
        rr = np.asarray([] if rr_raw is None else rr_raw, dtype=np.float64)
        if rr.ndim != 1:
            raise ValueError(f"rr_ms must be a flat list of intervals, got shape {rr.shape}")
        if rr.size and not (np.all(rr > 0.0) and np.all(rr <= MAX_RR_MS)):
            # The beat clock cannot be trusted past a corrupt interval: restart the person.
            self._persons.pop(person_id, None)
            raise ValueError(
                f"rr_ms values must lie in (0, {MAX_RR_MS:g}] ms, got {rr.tolist()!r}; "
                f"person {person_id!r} restarts"
            )
        person = self._persons.get(person_id)
        seq = message.get("seq")
        if person is not None and (
            t < person.last_t
            or (seq is not None and person.last_seq is not None and seq != person.last_seq + 1)
        ):
            person = None  # lost or reordered messages: start this person afresh
        if person is None:
            person = self._persons[person_id] = self._new_person(person_id)
        person.last_t = t
        person.last_seq = None if seq is None else int(seq)
        if rr.size:
            if person.first_beat_s is None:
                # Anchor: the last beat of the first non-empty message falls on its t.
                times = t - (np.sum(rr) - np.cumsum(rr)) / 1000.0
                person.first_beat_s = float(times[0])
            else:
                times = person.last_beat_s + np.cumsum(rr) / 1000.0
                if abs(times[-1] - t) > self.max_gap_s:
                    # The beat clock has drifted from the stream's (lost beats): restart.
                    fresh = self._persons[person_id] = self._new_person(person_id)
                    fresh.last_t, fresh.last_seq = person.last_t, person.last_seq
                    person = fresh
                    times = t - (np.sum(rr) - np.cumsum(rr)) / 1000.0
                    person.first_beat_s = float(times[0])
            person.last_beat_s = float(times[-1])
            rows = [times, rr]
            for column in self._tick_columns:
                field = _FIELD_OF_COLUMN[column]
                if field not in message and _BEAT_COLUMN_OF_FEATURE[column] in message:
                    field = _BEAT_COLUMN_OF_FEATURE[column]  # a row of a samples table
                rows.append(np.full(rr.size, float(message[field])))
            person.beats.append(np.vstack(rows))
        return person

    def _trim(self, person: _Person) -> None:
        """Forget beats no window can reach any more (after the due grid points are done, so
        a message carrying minutes of beats still fills the whole context history)."""
        beats_t = person.beats["t_s"]
        old = np.searchsorted(beats_t, person.last_t - self._keep_beats_s, side="right")
        person.beats.drop_before(int(old))

    def _is_due(self, person: _Person) -> bool:
        """Whether the person's messages have completed a grid point not yet scored."""
        if person.first_beat_s is None:
            return False
        if person.next_k is None:
            person.next_k = math.ceil((person.first_beat_s + self.window_s) / self.step_s - 1e-9)
        return math.floor(person.last_t / self.step_s + 1e-9) >= person.next_k

    def _score_queued(self) -> None:
        """Featurise and score the queued persons (up to the limit) in one model call."""
        budget = self._max_windows_per_call or len(self._queue)
        due: list[tuple[_Person, dict[str, float]]] = []
        while self._queue and budget > 0:
            person = self._queue.popleft()
            person.queued = False
            if self._persons.get(person.person_id) is not person:
                continue  # forgotten or restarted while it waited
            budget -= 1
            try:
                rows = self._due_rows(person)
            except (KeyError, TypeError, ValueError, IndexError) as err:
                self._fail(f"features of person {person.person_id!r} failed: {err!r}")
                person.result = None
                continue
            finally:
                self._trim(person)
            if rows is not None:
                due.append((person, rows))
        if due:
            self._score(due)

    def _due_rows(self, person: _Person) -> dict[str, float] | None:
        """Features of the latest grid point the person's messages completed (None if the
        window holds too few beats)."""
        step = self.step_s
        k_now = math.floor(person.last_t / step + 1e-9)
        assert person.next_k is not None  # set by _is_due, which runs first
        # Every grid point passed since the last call feeds the context history, as in batch.
        first_k = max(person.next_k, k_now - math.ceil(self._keep_history_s / step))
        row = None
        for k in range(first_k, k_now + 1):
            row = self._window_row(person, k * step)
            if row is not None and self._uses_context:
                entry = [k * step, row["mean_hr_bpm"], row["rmssd_ms"], row["sdnn_ms"]]
                person.history.append(np.array(entry)[:, None])
        person.next_k = k_now + 1
        if row is None:
            return None
        if self._uses_context:
            hist = person.history
            t_hist = hist["t_end_s"]
            old = np.searchsorted(t_hist, t_hist[-1] - self._keep_history_s, side="right")
            hist.drop_before(int(old))
            row.update(
                context_row(
                    hist["t_end_s"],
                    hist["mean_hr_bpm"],
                    hist["rmssd_ms"],
                    hist["sdnn_ms"],
                    float(self.baseline_s),  # type: ignore[arg-type]
                    self.trend_s,
                )
            )
        return row

    def _window_row(self, person: _Person, t_end: float) -> dict[str, float] | None:
        t = person.beats["t_s"]
        rr = person.beats["rr_ms"]
        hi = int(np.searchsorted(t, t_end, side="right"))
        lo = int(np.searchsorted(t, t_end - self.window_s, side="right"))
        if hi - lo < MIN_INTERVALS:
            return None
        rr_freq = None
        if self._uses_frequency:
            cum = np.cumsum(rr[:hi][::-1])
            need = int(np.searchsorted(cum, MIN_FREQ_DURATION_S * 1000.0, side="left"))
            if need >= hi:
                return None
            rr_freq = rr[min(hi - need - 1, lo) : hi]
        row = window_features(rr[lo:hi], rr_freq)
        for column in self._tick_columns:
            row[column] = float(np.mean(person.beats[column][lo:hi]))
        return row

    def _score(self, due: list[tuple[_Person, dict[str, float]]]) -> None:
        try:
            X = np.array([[row[name] for name in self.feature_names] for _, row in due])  # noqa: N806
            if self._predict_proba is not None:
                proba = self._predict_proba(X)
            else:
                import pandas as pd

                proba = self.model.predict_proba(pd.DataFrame(X, columns=self.feature_names))
            scores = np.asarray(proba, dtype=np.float64)[:, self._stress_column]
            if scores.shape != (len(due),) or not np.all(np.isfinite(scores)):
                raise ValueError(f"model returned unusable probabilities {scores!r}")
        # A model is user code: whatever it raises, the stream must go on (counted, None).
        except Exception as err:
            self._fail(f"model failed on {len(due)} window(s): {err!r}")
            for person, _ in due:
                person.result = None
            return
        for (person, _), score in zip(due, scores, strict=True):
            person.calm_run = 0 if score > self._threshold else person.calm_run + 1
            stressed = person.calm_run <= self._hold_windows
            person.result = {
                "prediction": "stress" if stressed else "calm",
                "confidence": float(score if stressed else 1.0 - score),
                "stress_score": float(score),
            }


def predict_rr(model: Any, rr_ms: Sequence[float] | np.ndarray) -> Prediction:
    """One prediction from a person's recent RR intervals (what ``POST /predict`` needs).

    The intervals are taken as consecutive beats ending now and streamed through a fresh
    :class:`LivePredictor`, so the answer is the one the live stream would give at the last
    beat (without a release hold: one call has no past).

    The default model compares the last window with the person's own past (heart rate above
    baseline, RMSSD against baseline, heart-rate trend: see
    :func:`heartsim.ml.features.context_features`). Send the last 10 min of intervals
    (``baseline_s``) for a meaningful answer; with only one window, the person has no
    history, the context features are 0 and the answer leans to ``"calm"``.

    Parameters
    ----------
    model : StressClassifier
        A fitted model (see :class:`LivePredictor`).
    rr_ms : sequence of float
        Consecutive RR intervals in ms, oldest first, each in (0, 3000] ms, spanning at
        least the model's ``window_s`` plus one step (65 s by default).

    Returns
    -------
    dict
        ``{"prediction": "stress" | "calm", "confidence": float, "stress_score": float}``.

    Raises
    ------
    ValueError
        If ``rr_ms`` is not a flat list of numbers in (0, 3000] ms, or spans too little time
        (the message says how much is needed).
    RuntimeError
        If the model fails on the features.

    Examples
    --------
    >>> from heartsim import simulate
    >>> from heartsim.ml import StressClassifier, make_dataset
    >>> data = make_dataset(n_persons=4, seed=3, duration_s=1200)
    >>> model = StressClassifier().fit(data, data["stressed"])
    >>> rr = simulate(n_persons=1, duration_s=600, seed=5, protocol="rest").beats["rr_ms"]
    >>> predict_rr(model, rr.tolist())["prediction"]
    'calm'
    """
    live = LivePredictor(model, hold_s=0.0)
    try:
        rr = np.asarray(rr_ms, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"rr_ms must be a list of RR intervals in ms: {err}") from err
    if rr.ndim != 1:
        raise ValueError(f"rr_ms must be a flat list of RR intervals, got shape {rr.shape}")
    if not (np.all(np.isfinite(rr)) and np.all(rr > 0.0) and np.all(rr <= MAX_RR_MS)):
        bad = rr[~(np.isfinite(rr) & (rr > 0.0) & (rr <= MAX_RR_MS))]
        raise ValueError(
            f"rr_ms values must lie in (0, {MAX_RR_MS:g}] ms; got {bad.size} outside it "
            f"(e.g. {bad[0]:g})"
        )
    span_s = float(rr.sum()) / 1000.0
    need_s = live.window_s + live.step_s
    if span_s < need_s:
        raise ValueError(
            f"rr_ms must span at least {need_s:g} s ({live.window_s:g} s window plus one "
            f"{live.step_s:g} s step) of beats, got {rr.size} intervals spanning {span_s:.1f} s"
        )
    # Times are relative: put the last beat on a grid point, so the last window ends there.
    t_now = math.ceil(span_s / live.step_s) * live.step_s
    result = live.update({"person_id": "p0", "t": t_now, "rr_ms": rr})
    if result is None:
        raise RuntimeError(f"no prediction: {live.last_error or 'window not full'}")
    return result


def _short(message: Any) -> str:
    text = repr(message)
    return text if len(text) <= 120 else text[:117] + "..."
