"""Batch datasets: many persons, hours of beats, as tidy pandas tables.

:func:`simulate` runs the same beat model and the same tick summaries as the live
:class:`heartsim.Engine`, groups of persons on all cores, and returns a
:class:`SimulationResult` with ``beats`` (one row per beat), ``samples`` (one row per tick and
person: the stream's messages), ``persons`` (the profiles) and ``episodes`` (the stressors).

Column names carry their units (``_s``, ``_ms``, ``_bpm``, ``_mmhg``). The live stream's JSON
messages keep their original field names; a ``samples`` row is a message under these names:

======================== ========================= =========================================
samples column           message field             meaning
======================== ========================= =========================================
``person_id``            ``person_id``             person
``seq``                  ``seq``                   message number of the person, from 1
``t_s``                  ``t``                     simulation time, s
``timestamp``            ``timestamp``, ``ts``     ``start_time + t_s``, UTC (on the wire:
                                                   ISO text and epoch seconds)
``hr_bpm``               ``bpm``                   heart rate over the last 5 s, beats/min
``rmssd_ms``             ``variability``           RMSSD over the last 30 s, ms
``stress_level``         ``stress_level``          true stress state, 0 to 1
``systolic_mmhg``        ``systolic``              systolic pressure, last 5 s, mmHg
``diastolic_mmhg``       ``diastolic``             diastolic pressure, last 5 s, mmHg
``label``                ``label``                 ground truth: rest, stress or recovery
``breathing_rate_bpm``   ``respiration_rate``      breathing rate, breaths/min
``rr_ms``                ``rr_ms``                 RR intervals (ms) of the beats since the
                                                   previous tick, a list
======================== ========================= =========================================

``beats`` has ``person_id``, ``t_s`` (time of the beat), ``rr_ms`` (the interval it ends, ms),
``hr_bpm`` (``60000 / rr_ms``), ``stress_level``, ``label``, ``systolic_mmhg``,
``diastolic_mmhg`` and ``breathing_rate_bpm`` (breaths/min, the persons table's name for the
resting rate). The names before heartsim 0.2 (``samples``: ``t``, ``bpm``, ``variability``,
``systolic``, ``diastolic``, ``respiration_rate``; ``beats``: ``respiration_rate``) still read,
as ``table["bpm"]``, ``table[["t", "bpm"]]`` or ``table.bpm``, with a :class:`FutureWarning`,
until heartsim 0.3; other pandas calls (``query``, ``loc``, ``set_index``, ``groupby`` and
the columns of a groupby) need the new names.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
import pandas as pd

from heartsim._renamed_columns import (
    OLD_BEAT_COLUMNS,
    OLD_SAMPLE_COLUMNS,
    BeatsTable,
    SamplesTable,
)
from heartsim._version import __version__
from heartsim.engine import WARMUP_S
from heartsim.physiology.beats import BeatBlock, BeatState, generate_beats
from heartsim.physiology.profiles import PersonProfile, ProfileArrays, sample_population
from heartsim.physiology.stress import LABELS, Episode, Schedule, label_codes
from heartsim.physiology.windows import beat_keys, window_stats
from heartsim.protocols import Protocol, as_protocol
from heartsim.times import format_duration, iso_utc, parse_duration_s, parse_start_time_s

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Persons per group of the batch simulation (a unit of work and of progress).
GROUP_SIZE = 128
MAX_PERSONS = 1_000_000
MAX_DURATION_S = 30 * 86400.0
MIN_TICK_HZ, MAX_TICK_HZ = 0.1, 50.0
#: Wall-clock time of simulation time 0 when ``start_time`` is not given: fixed, so that the
#: same arguments give the same tables (the live :class:`heartsim.Engine` starts at "now").
DEFAULT_START_TIME = "2000-01-01T00:00:00Z"
FORMATS = ("parquet", "csv")
_TABLES = ("beats", "samples", "persons", "episodes")
_DURATION_RANGE = (
    f"more than 0 and at most {format_duration(MAX_DURATION_S)} ({MAX_DURATION_S:g} s)"
)

#: ``samples`` column -> heartbeat message field (the wire keeps the original names).
WIRE_FIELDS: Final[dict[str, str]] = {
    "person_id": "person_id",
    "seq": "seq",
    "t_s": "t",
    "timestamp": "timestamp",
    "hr_bpm": "bpm",
    "rmssd_ms": "variability",
    "stress_level": "stress_level",
    "systolic_mmhg": "systolic",
    "diastolic_mmhg": "diastolic",
    "label": "label",
    "breathing_rate_bpm": "respiration_rate",
    "rr_ms": "rr_ms",
}


def simulate(
    n_persons: int | None = 10,
    duration_s: float | str = 1800.0,
    seed: int | None = None,
    protocol: str | Protocol | Sequence[Episode] | Mapping[str, Any] = "lab",
    *,
    persons: Sequence[PersonProfile | Mapping[str, Any]] | None = None,
    tick_hz: float = 2.0,
    start_time: float | datetime | str = DEFAULT_START_TIME,
    progress: bool | Callable[[float], None] = False,
    workers: int | None = None,
) -> SimulationResult:
    """Simulate ``n_persons`` for ``duration_s`` seconds under a stress ``protocol``.

    Parameters
    ----------
    n_persons
        Number of persons drawn with :func:`sample_population`, 1 to 1 000 000 (ignored if
        ``persons`` is given).
    duration_s
        Simulated duration, more than 0 and at most 30 days: seconds, or text like ``"90s"``,
        ``"30m"``, ``"1.5h"``, ``"1h30m"``, ``"2d12h"`` (:func:`heartsim.times.parse_duration_s`,
        as ``heartsim simulate --duration``).
    seed
        Seed of all randomness, a non-negative integer: the same seed gives the same tables.
        ``None`` draws one; :attr:`SimulationResult.seed` tells which.
    protocol
        ``"lab"`` (baseline, stress, recovery cycles with random intensities and durations),
        ``"rest"``, a :class:`heartsim.protocols.Protocol` or its dict form
        (:meth:`~heartsim.protocols.Protocol.to_dict`), a list of
        :class:`heartsim.physiology.Episode` for everybody, or a mapping person id -> episodes.
    persons
        Explicit profiles (:class:`PersonProfile` or dicts of its fields) instead of drawn ones.
    tick_hz
        Rate (Hz) of the ``samples`` table's ticks, like the live stream's (0.1 to 50).
    start_time
        Wall-clock time of simulation time 0 (the ``samples`` table's ``timestamp``): epoch
        seconds, a timezone-aware :class:`~datetime.datetime` or ISO 8601 text with an offset.
        Default 2000-01-01T00:00:00Z, fixed so that the same arguments give the same tables.
    progress
        ``True`` shows a tqdm progress bar; a callable receives the completed fraction.
    workers
        Threads simulating groups of persons at once (default: the available cores). The
        result is the same for any number.

    Raises
    ------
    ValueError
        For a bad argument; the message names the parameter, the allowed values and the value.

    Examples
    --------
    >>> result = simulate(n_persons=2, duration_s="1m", seed=1, protocol="rest")
    >>> sorted(result.beats["person_id"].unique())
    ['p0', 'p1']
    """
    duration = _duration_s(duration_s)
    if isinstance(tick_hz, bool) or not isinstance(tick_hz, (int, float, np.number)):
        tick_ok = False
    else:
        tick_ok = MIN_TICK_HZ <= tick_hz <= MAX_TICK_HZ
    if not tick_ok:
        raise ValueError(
            f"tick_hz must be a number of Hz between {MIN_TICK_HZ:g} and {MAX_TICK_HZ:g}, "
            f"got {tick_hz!r}"
        )
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
    ):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    try:
        start_time_s = parse_start_time_s(start_time)
    except ValueError as err:
        raise ValueError(f"start_time {err}, got {start_time!r}") from None
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1
    ):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    seeds = np.random.SeedSequence(None if seed is None else int(seed))
    population_seed, protocol_seed, sim_seed = seeds.spawn(3)
    drawn = persons is None
    if persons is None:
        if (
            isinstance(n_persons, bool)
            or not isinstance(n_persons, (int, np.integer))
            or not 1 <= n_persons <= MAX_PERSONS
        ):
            raise ValueError(
                f"n_persons must be an integer between 1 and {MAX_PERSONS}, got {n_persons!r}"
            )
        persons = sample_population(int(n_persons), seed=population_seed)
    profiles: list[PersonProfile] = [
        p if isinstance(p, PersonProfile) else _profile(p) for p in persons
    ]
    persons = profiles
    if not profiles:
        raise ValueError("persons must not be empty")
    ids = [p.person_id for p in profiles]
    if len(set(ids)) != len(ids):
        raise ValueError("persons must have unique person_id values")
    chosen = as_protocol(protocol)
    episodes = chosen.episodes(ids, duration, np.random.default_rng(protocol_seed))

    arrays = ProfileArrays.from_profiles(profiles)
    schedule = Schedule.from_episodes(episodes)
    # Persons are simulated in fixed groups, each from its own random stream: groups run on
    # several cores at once (the compiled beat loop releases the GIL) and the tables do not
    # depend on how many workers there are.
    n = len(persons)
    groups = [slice(first, min(first + GROUP_SIZE, n)) for first in range(0, n, GROUP_SIZE)]
    start_stream, *group_streams = sim_seed.spawn(1 + len(groups))
    state = BeatState.initial(arrays, -WARMUP_S, np.random.default_rng(start_stream))

    def run(group: slice, stream: np.random.SeedSequence) -> tuple[BeatBlock, BeatBlock]:
        rng = np.random.default_rng(stream)
        # The warm-up (before t = 0) only feeds the first ticks' windows: it is kept apart.
        warmup = generate_beats(state, arrays, schedule, 0.0, rng, persons=group)
        return warmup, generate_beats(state, arrays, schedule, duration, rng, persons=group)

    report = _progress_reporter(progress, n)
    warmups, blocks = [], []
    pool = ThreadPoolExecutor(min(workers or _available_cores(), len(groups)))
    try:
        results = pool.map(run, groups, group_streams)
        for group, (warmup, block) in zip(groups, results, strict=True):
            warmups.append(warmup)
            blocks.append(block)
            report(group.stop)
    finally:
        # On Ctrl-C or an error, groups not started yet are dropped, not run to the end.
        pool.shutdown(cancel_futures=True)
    report(None)
    return SimulationResult(
        beats=_beats_table(BeatBlock.concat(blocks), ids),
        persons=_persons_table(profiles),
        episodes=_episodes_table(ids, episodes),
        duration_s=duration,
        tick_hz=float(tick_hz),
        seed=int(cast(int, seeds.entropy)),
        start_time_s=start_time_s,
        protocol=chosen,
        persons_drawn=drawn,
        _warmup=_beats_table(BeatBlock.concat(warmups), ids),
    )


def _duration_s(value: float | str) -> float:
    """``duration_s`` checked and in seconds (a ValueError names it, its range and the value)."""
    try:
        seconds = parse_duration_s(value)
    except ValueError as err:
        raise ValueError(f"duration_s {err} and be {_DURATION_RANGE}, got {value!r}") from None
    if not 0.0 < seconds <= MAX_DURATION_S:  # NaN fails too
        raise ValueError(f"duration_s must be {_DURATION_RANGE}, got {value!r}")
    return seconds


def _profile(fields: Mapping[str, Any]) -> PersonProfile:
    if not isinstance(fields, Mapping):
        raise ValueError(f"persons must hold PersonProfile objects or dicts, got {fields!r}")
    try:
        return PersonProfile(**fields)
    except TypeError as err:  # unknown field names
        raise ValueError(f"persons: {err}") from None


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _progress_reporter(
    progress: bool | Callable[[float], None], n_persons: int
) -> Callable[[int | None], None]:
    """Reports persons done (``None`` at the end) to a callable (as a fraction) or a tqdm bar."""
    if callable(progress):
        return lambda done: None if done is None else progress(done / n_persons)
    if not progress:
        return lambda done: None
    from tqdm.auto import tqdm

    bar = tqdm(total=n_persons, unit="person", desc="simulating")

    def report(done: int | None) -> None:
        if done is None:
            bar.close()
        else:
            bar.update(done - bar.n)

    return report


def _beats_table(block: BeatBlock, ids: list[str]) -> BeatsTable:
    """The block's beats as a person-major, time-ordered table."""
    table = {
        "person_id": pd.Categorical.from_codes(block.person_index(), categories=ids),
        "t_s": block.t_s,
        "rr_ms": block.rr_ms,
        "hr_bpm": np.float32(60000.0) / block.rr_ms,
        "stress_level": block.stress_level,
        "label": pd.Categorical.from_codes(block.label, categories=list(LABELS)),
        "systolic_mmhg": block.systolic_mmhg,
        "diastolic_mmhg": block.diastolic_mmhg,
        "breathing_rate_bpm": block.breathing_rate_bpm,
    }
    return BeatsTable(table, copy=False)


def _persons_table(persons: list[PersonProfile]) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(p) for p in persons])


def _episodes_table(ids: list[str], episodes: list[list[Episode]]) -> pd.DataFrame:
    rows = [
        {
            "person_id": pid,
            "start_s": float(e.start_s),
            "end_s": float(e.end_s),
            "level": float(e.level),
        }
        for pid, person in zip(ids, episodes, strict=True)
        for e in person
    ]
    columns = ["person_id", "start_s", "end_s", "level"]
    return pd.DataFrame(rows, columns=columns).astype(dict.fromkeys(columns[1:], "float64"))


@dataclasses.dataclass(repr=False)
class SimulationResult:
    """Tables of a batch run. ``samples`` is computed on first access (it can be large).

    Attributes
    ----------
    beats
        One row per beat: ``person_id``, ``t_s`` (s), ``rr_ms``, ``hr_bpm``, ``stress_level``,
        ``label``, ``systolic_mmhg``, ``diastolic_mmhg``, ``breathing_rate_bpm``
        (breaths/min); see :mod:`heartsim.datasets` for all columns and the message fields.
    persons
        One row per person: the profile fields.
    episodes
        One row per stress episode: ``person_id``, ``start_s``, ``end_s``, ``level``.
    duration_s, tick_hz
        Simulated duration (s) and rate of the ``samples`` ticks (Hz).
    seed
        The seed of the run (drawn if ``None`` was passed): with :attr:`parameters` it
        reproduces the tables.
    start_time_s
        Wall-clock time of simulation time 0, epoch seconds.
    protocol
        The stress protocol (``None`` when loaded from a dataset saved before heartsim 0.2).
    persons_drawn
        Whether the persons were drawn from the seed (else they were given).
    """

    beats: pd.DataFrame
    persons: pd.DataFrame
    episodes: pd.DataFrame
    duration_s: float
    tick_hz: float
    seed: int | None = None
    start_time_s: float = dataclasses.field(
        default_factory=lambda: parse_start_time_s(DEFAULT_START_TIME)
    )
    protocol: Protocol | None = None
    persons_drawn: bool = True
    _warmup: pd.DataFrame | None = None
    _samples: pd.DataFrame | None = None

    @cached_property
    def samples(self) -> pd.DataFrame:
        """One row per tick and person, with the heartbeat message's fields (under the names
        listed in :mod:`heartsim.datasets`)."""
        if self._samples is not None:  # loaded from disk
            return self._samples
        if self._warmup is None:
            raise ValueError("samples need the run's warm-up beats")
        return _samples_table(self)

    @property
    def n_ticks(self) -> int:
        """Ticks per person in ``samples``."""
        return math.floor(self.duration_s * self.tick_hz + 1e-9)

    @property
    def parameters(self) -> dict[str, Any]:
        """The arguments of :func:`simulate` that reproduce these tables, JSON-ready
        (``heartsim.simulate(**result.parameters)``; ``meta.json`` records them)."""
        params: dict[str, Any] = {}
        if self.persons_drawn:
            params["n_persons"] = len(self.persons)
        else:
            params["persons"] = self.persons.to_dict("records")
        spec = None if self.protocol is None else self.protocol.to_dict()
        if spec is None:
            # A protocol defined outside heartsim (or not recorded before 0.2): its drawn
            # episodes reproduce the run, since protocol draws have their own random stream.
            spec = {"type": "custom", "schedule": _episodes_by_person(self.episodes)}
        params.update(
            duration_s=self.duration_s,
            seed=self.seed,
            protocol=spec,
            tick_hz=self.tick_hz,
            start_time=iso_utc(self.start_time_s),
        )
        return params

    def __repr__(self) -> str:
        protocol = self.protocol
        if protocol is None:
            name = "unknown"
        elif protocol in (as_protocol("lab"), as_protocol("rest")):
            name = repr(cast(dict[str, Any], protocol.to_dict())["type"])
        else:
            name = type(protocol).__name__
        return (
            f"SimulationResult(persons={len(self.persons):,}, "
            f"duration={format_duration(self.duration_s)} ({self.duration_s:g} s), "
            f"protocol={name}, seed={self.seed}, tick_hz={self.tick_hz:g}, "
            f"start_time={iso_utc(self.start_time_s)!r}, beats={len(self.beats):,} rows, "
            f"samples={len(self.persons) * self.n_ticks:,} rows)"
        )

    def summary(self, *, frequency: bool = True) -> pd.DataFrame:
        """Heart rate, HRV and blood pressure of every person in every phase.

        A phase is the beats of one ``label`` (rest, stress, recovery), which usually come in
        several stretches; measures use :mod:`heartsim.hrv`'s definitions on them:

        - ``beats``, ``duration_s`` (sum of the intervals, s);
        - ``mean_hr_bpm`` (``60000 / mean RR``), ``sdnn_ms`` (of all the phase's intervals),
          ``rmssd_ms`` (successive differences within stretches, none across their joins);
        - with ``frequency``: ``lf_ms2``, ``hf_ms2`` (:func:`heartsim.hrv.hrv_frequency` on each
          stretch of at least 60 s, averaged weighted by length; NaN without such a stretch)
          and ``lf_hf`` (their ratio). 1 to 2 ms per stretch: 200 person-hours of the lab
          protocol have about 2,200 stretches (2.5 to 5 s); ``frequency=False`` skips them;
        - ``systolic_mmhg``, ``diastolic_mmhg``, ``breathing_rate_bpm``, ``stress_level``:
          means over the phase's beats.

        Returns
        -------
        pandas.DataFrame
            Indexed by ``person_id`` and ``phase``; phases a person never was in are absent.
        """
        from heartsim.reports import phase_summary

        return phase_summary(self, frequency=frequency)

    def plot(self, person: str | None = None, *, axes: Sequence[Axes] | None = None) -> Figure:
        """One person's heart rate, RMSSD, blood pressure and breathing, phases shaded.

        The look of :func:`heartsim.live_plot` (stress red, recovery orange), over the whole
        run, from the ``samples`` ticks (5 s heart rate and pressure, 30 s RMSSD).

        Parameters
        ----------
        person
            Person id (default: the first person).
        axes
            Four matplotlib axes to draw on, e.g. ``plt.subplots(4, 1, sharex=True)[1]`` to
            show them with ``plt.show()`` from a script. Default: a new figure, which a notebook
            displays (once) as the cell's value and a script saves with
            ``result.plot().savefig("p0.png")``; pyplot does not keep it open.

        Returns
        -------
        matplotlib.figure.Figure
            The figure of the axes.
        """
        from heartsim.reports import plot_result  # matplotlib: imported on use

        return plot_result(self, person, axes)

    def save(self, directory: str | Path, format: str = "parquet") -> list[Path]:
        """Write every table and ``meta.json`` to ``directory``; returns the files written.

        ``meta.json`` holds ``heartsim_version``, ``parameters`` (:attr:`parameters`: the
        :func:`simulate` arguments that reproduce the tables) and the ``rows`` of each table.
        """
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        meta = {
            "heartsim_version": __version__,
            "parameters": self.parameters,
            "rows": {name: len(getattr(self, name)) for name in _TABLES},
        }
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name in _TABLES:
            table = getattr(self, name)
            path = directory / f"{name}.{format}"
            if format == "parquet":
                table.to_parquet(path, index=False)
            else:
                if "rr_ms" in table and table["rr_ms"].dtype == object:
                    table = table.assign(rr_ms=table["rr_ms"].map(json.dumps))
                table.to_csv(path, index=False)
            written.append(path)
        (directory / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        return [*written, directory / "meta.json"]


def load(directory: str | Path) -> SimulationResult:
    """Read a :class:`SimulationResult` written by :meth:`SimulationResult.save`.

    Datasets saved before heartsim 0.2 load with today's column names.
    """
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise ValueError(f"directory {str(directory)!r} holds no heartsim dataset (no meta.json)")
    meta = json.loads(meta_path.read_text())
    # Before heartsim 0.2, meta.json held duration_s, tick_hz and seed only.
    params = meta.get("parameters") or meta
    format_ = "parquet" if (directory / "beats.parquet").exists() else "csv"
    tables = {}
    for name in _TABLES:
        path = directory / f"{name}.{format_}"
        if format_ == "parquet":
            tables[name] = pd.read_parquet(path)
        else:
            table = pd.read_csv(path)
            if name == "samples":
                table["rr_ms"] = table["rr_ms"].map(json.loads)
            tables[name] = table
    start_time_s = parse_start_time_s(params.get("start_time", DEFAULT_START_TIME))
    beats = BeatsTable(tables["beats"].rename(columns=OLD_BEAT_COLUMNS))
    samples = SamplesTable(tables["samples"].rename(columns=OLD_SAMPLE_COLUMNS))
    if "timestamp" in samples:
        samples["timestamp"] = pd.to_datetime(samples["timestamp"], utc=True).astype(
            "datetime64[ns, UTC]"
        )
    else:  # saved before heartsim 0.2
        samples.insert(3, "timestamp", _timestamps(start_time_s, samples["t_s"].to_numpy()))
    for table in (beats, samples):
        table["person_id"] = pd.Categorical(
            table["person_id"], categories=list(tables["persons"]["person_id"])
        )
        table["label"] = pd.Categorical(table["label"], categories=list(LABELS))
    return SimulationResult(
        beats=beats,
        persons=tables["persons"],
        episodes=tables["episodes"],
        duration_s=params["duration_s"],
        tick_hz=params["tick_hz"],
        seed=params["seed"],
        start_time_s=start_time_s,
        protocol=as_protocol(params["protocol"]) if "protocol" in params else None,
        persons_drawn="persons" not in params,
        _samples=samples,
    )


def _episodes_by_person(episodes: pd.DataFrame) -> dict[str, list[list[float]]]:
    out: dict[str, list[list[float]]] = {}
    for row in episodes.itertuples(index=False):
        out.setdefault(str(row.person_id), []).append(
            [float(row.start_s), float(row.end_s), float(row.level)]
        )
    return out


def _timestamps(start_time_s: float, t_s: np.ndarray) -> pd.Series:
    """``start_time_s + t_s`` as UTC datetimes (to the nanosecond)."""
    whole = math.floor(start_time_s)
    start_ns = whole * 1_000_000_000 + round((start_time_s - whole) * 1e9)
    ns = start_ns + np.round(np.asarray(t_s, np.float64) * 1e9).astype(np.int64)
    return pd.Series(pd.to_datetime(ns, unit="ns", utc=True)).astype("datetime64[ns, UTC]")


def _samples_table(
    result: SimulationResult, person_ids: Sequence[str] | None = None, *, rr_lists: bool = True
) -> SamplesTable:
    """The tick table of ``person_ids`` (default: everybody), as the live engine's messages."""
    all_ids = list(result.beats["person_id"].cat.categories)
    ids = all_ids if person_ids is None else list(person_ids)
    beats, warmup = result.beats, result._warmup
    assert warmup is not None  # SimulationResult.samples checked it
    if person_ids is not None:
        beats = beats[beats["person_id"].isin(ids)]
        warmup = warmup[warmup["person_id"].isin(ids)]
    n_persons, n_ticks = len(ids), result.n_ticks
    ticks = np.arange(1, n_ticks + 1) / result.tick_hz
    person = np.repeat(np.arange(n_persons), n_ticks)
    tick_t = np.tile(ticks, n_persons)
    tick_keys = beat_keys(person, tick_t)
    # Warm-up and run beats of every person, in key (person, time) order.
    codes = [t["person_id"].cat.set_categories(ids).cat.codes.to_numpy() for t in (warmup, beats)]
    keys = np.concatenate(
        [beat_keys(c, t["t_s"].to_numpy()) for c, t in zip(codes, (warmup, beats), strict=True)]
    )
    order = np.argsort(keys, kind="stable")
    keys = keys[order]

    def column(name: str) -> np.ndarray:
        return np.concatenate([warmup[name].to_numpy(), beats[name].to_numpy()])[order]

    stats = window_stats(
        keys,
        column("rr_ms"),
        column("systolic_mmhg"),
        column("diastolic_mmhg"),
        tick_keys,
    )
    # Stress and breathing at a tick are the state at the person's last beat, as live.
    last = np.searchsorted(keys, tick_keys, side="right") - 1
    stress = column("stress_level")[last]
    breathing = column("breathing_rate_bpm")[last]
    stress_grid = stress.reshape(n_persons, n_ticks).T
    by_person = _episodes_by_person(result.episodes)
    schedule = Schedule.from_episodes(
        [[Episode(*e) for e in by_person.get(pid, [])] for pid in ids]
    )
    _, active = schedule.target(np.broadcast_to(ticks[:, None], stress_grid.shape).copy())
    labels = label_codes(stress_grid, active).T.ravel()
    table = {
        "person_id": pd.Categorical.from_codes(person, categories=ids),
        "seq": np.tile(np.arange(1, n_ticks + 1), n_persons),
        "t_s": tick_t,
        "timestamp": _timestamps(result.start_time_s, tick_t),
        "hr_bpm": np.round(stats.hr_bpm).astype(np.int16),
        "rmssd_ms": np.round(stats.rmssd_ms, 2),
        "stress_level": np.round(stress.astype(np.float64), 4),
        "systolic_mmhg": np.round(stats.systolic_mmhg).astype(np.int16),
        "diastolic_mmhg": np.round(stats.diastolic_mmhg).astype(np.int16),
        "label": pd.Categorical.from_codes(labels, categories=list(LABELS)),
        "breathing_rate_bpm": np.round(breathing.astype(np.float64), 1),
    }
    if rr_lists:
        # rr_ms: the beats after the previous tick, up to this one.
        run_keys = beat_keys(codes[1], beats["t_s"].to_numpy())
        bounds = np.searchsorted(run_keys, tick_keys, side="right")
        starts = np.searchsorted(
            run_keys, beat_keys(person, tick_t - 1.0 / result.tick_hz), side="right"
        )
        rr_values = np.round(beats["rr_ms"].to_numpy().astype(np.float64), 1)
        table["rr_ms"] = [rr_values[a:b].tolist() for a, b in zip(starts, bounds, strict=True)]
    return SamplesTable(table)
