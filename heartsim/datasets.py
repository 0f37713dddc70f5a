"""Batch datasets: many persons, hours of beats, as tidy pandas tables.

:func:`simulate` runs the same beat model and the same tick summaries as the live
:class:`heartsim.Engine`, groups of persons on all cores, and returns a
:class:`SimulationResult` with ``beats`` (one row per beat) and ``samples`` (one row per tick
and person: the stream's messages).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from heartsim.engine import WARMUP_S
from heartsim.physiology.beats import BeatBlock, BeatState, generate_beats
from heartsim.physiology.profiles import PersonProfile, ProfileArrays, sample_population
from heartsim.physiology.stress import LABELS, Episode, Schedule, label_codes
from heartsim.physiology.windows import beat_keys, window_stats
from heartsim.protocols import Protocol, as_protocol

#: Persons per group of the batch simulation (a unit of work and of progress).
GROUP_SIZE = 128
MAX_DURATION_S = 30 * 86400.0
FORMATS = ("parquet", "csv")
_TABLES = ("beats", "samples", "persons", "episodes")


def simulate(
    n_persons: int | None = 10,
    duration_s: float = 1800.0,
    seed: int | None = None,
    protocol: str | Protocol | Sequence[Episode] | Mapping[str, Sequence[Episode]] = "lab",
    *,
    persons: Sequence[PersonProfile] | None = None,
    tick_hz: float = 2.0,
    progress: bool | Callable[[float], None] = False,
    workers: int | None = None,
) -> SimulationResult:
    """Simulate ``n_persons`` for ``duration_s`` seconds under a stress ``protocol``.

    Parameters
    ----------
    n_persons
        Number of persons drawn with :func:`sample_population` (ignored if ``persons`` given).
    duration_s
        Simulated duration (s), > 0 and at most 30 days.
    seed
        Seed of all randomness: the same seed gives the same tables.
    protocol
        ``"lab"`` (baseline, stress, recovery cycles with random intensities and durations),
        ``"rest"``, a :class:`heartsim.protocols.Protocol`, a list of
        :class:`heartsim.physiology.Episode` for everybody, or a mapping person id -> episodes.
    persons
        Explicit profiles instead of drawn ones.
    tick_hz
        Rate (Hz) of the ``samples`` table's ticks, like the live stream's (0.1 to 50).
    progress
        ``True`` shows a tqdm progress bar; a callable receives the completed fraction.
    workers
        Threads simulating groups of persons at once (default: the available cores). The
        result is the same for any number.

    Examples
    --------
    >>> result = simulate(n_persons=2, duration_s=60, seed=1, protocol="rest")
    >>> sorted(result.beats["person_id"].unique())
    ['p0', 'p1']
    """
    if not isinstance(duration_s, (int, float)) or not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(
            f"duration_s must be > 0 and at most {MAX_DURATION_S:g} s, got {duration_s!r}"
        )
    if not isinstance(tick_hz, (int, float)) or not 0.1 <= tick_hz <= 50.0:
        raise ValueError(f"tick_hz must be between 0.1 and 50, got {tick_hz!r}")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    population_seed, protocol_seed, sim_seed = np.random.SeedSequence(seed).spawn(3)
    if persons is None:
        if not isinstance(n_persons, (int, np.integer)) or not 1 <= n_persons <= 1_000_000:
            raise ValueError(f"n_persons must be between 1 and 1000000, got {n_persons!r}")
        persons = sample_population(int(n_persons), seed=population_seed)
    persons = list(persons)
    ids = [p.person_id for p in persons]
    if len(set(ids)) != len(ids):
        raise ValueError("persons must have unique person_id values")
    episodes = as_protocol(protocol).episodes(
        ids, float(duration_s), np.random.default_rng(protocol_seed)
    )

    arrays = ProfileArrays.from_profiles(persons)
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
        return warmup, generate_beats(state, arrays, schedule, duration_s, rng, persons=group)

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
        persons=_persons_table(persons),
        episodes=_episodes_table(ids, episodes),
        duration_s=float(duration_s),
        tick_hz=float(tick_hz),
        seed=seed,
        _schedule=schedule,
        _warmup=_beats_table(BeatBlock.concat(warmups), ids),
    )


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


def _beats_table(block: BeatBlock, ids: list[str]) -> pd.DataFrame:
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
        "respiration_rate": block.breathing_rate_bpm,
    }
    return pd.DataFrame(table, copy=False)


def _persons_table(persons: list[PersonProfile]) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(p) for p in persons])


def _episodes_table(ids: list[str], episodes: list[list[Episode]]) -> pd.DataFrame:
    rows = [
        {"person_id": pid, "start_s": e.start_s, "end_s": e.end_s, "level": e.level}
        for pid, person in zip(ids, episodes, strict=True)
        for e in person
    ]
    return pd.DataFrame(rows, columns=["person_id", "start_s", "end_s", "level"])


@dataclasses.dataclass
class SimulationResult:
    """Tables of a batch run. ``samples`` is computed on first access (it can be large).

    Attributes
    ----------
    beats
        One row per beat: person_id, t_s (s), rr_ms, hr_bpm, stress_level, label,
        systolic_mmhg, diastolic_mmhg, respiration_rate (breaths/min).
    persons
        One row per person: the profile fields.
    episodes
        One row per stress episode: person_id, start_s, end_s, level.
    """

    beats: pd.DataFrame
    persons: pd.DataFrame
    episodes: pd.DataFrame
    duration_s: float
    tick_hz: float
    seed: int | None = None
    _schedule: Schedule | None = dataclasses.field(default=None, repr=False)
    _warmup: pd.DataFrame | None = dataclasses.field(default=None, repr=False)
    _samples: pd.DataFrame | None = dataclasses.field(default=None, repr=False)

    @cached_property
    def samples(self) -> pd.DataFrame:
        """One row per tick and person, with the heartbeat message's fields."""
        if self._samples is not None:  # loaded from disk
            return self._samples
        if self._schedule is None or self._warmup is None:
            raise ValueError("samples need the run's schedule and warm-up beats")
        return _samples_table(self)

    def save(self, directory: str | Path, format: str = "parquet") -> list[Path]:
        """Write every table to ``directory`` as Parquet or CSV; returns the files written."""
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
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
        meta = {"duration_s": self.duration_s, "tick_hz": self.tick_hz, "seed": self.seed}
        (directory / "meta.json").write_text(json.dumps(meta))
        return [*written, directory / "meta.json"]


def load(directory: str | Path) -> SimulationResult:
    """Read a :class:`SimulationResult` written by :meth:`SimulationResult.save`."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise ValueError(f"directory {str(directory)!r} holds no heartsim dataset (no meta.json)")
    meta = json.loads(meta_path.read_text())
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
    for name in ("beats", "samples"):
        table = tables[name]
        table["person_id"] = pd.Categorical(
            table["person_id"], categories=list(tables["persons"]["person_id"])
        )
        table["label"] = pd.Categorical(table["label"], categories=list(LABELS))
    return SimulationResult(
        beats=tables["beats"],
        persons=tables["persons"],
        episodes=tables["episodes"],
        duration_s=meta["duration_s"],
        tick_hz=meta["tick_hz"],
        seed=meta["seed"],
        _samples=tables["samples"],
    )


def _samples_table(result: SimulationResult) -> pd.DataFrame:
    schedule = result._schedule
    assert schedule is not None  # SimulationResult.samples checked it
    beats = result.beats
    if result._warmup is not None:
        beats_all = pd.concat([result._warmup, beats]).sort_values(
            ["person_id", "t_s"], kind="stable"
        )
    else:
        beats_all = beats
    ids = list(beats["person_id"].cat.categories)
    n_persons = len(ids)
    n_ticks = math.floor(result.duration_s * result.tick_hz + 1e-9)
    ticks = np.arange(1, n_ticks + 1) / result.tick_hz
    person = np.repeat(np.arange(n_persons), n_ticks)
    tick_t = np.tile(ticks, n_persons)
    keys = beat_keys(beats_all["person_id"].cat.codes.to_numpy(), beats_all["t_s"].to_numpy())
    stats = window_stats(
        keys,
        beats_all["rr_ms"].to_numpy(),
        beats_all["systolic_mmhg"].to_numpy(),
        beats_all["diastolic_mmhg"].to_numpy(),
        beat_keys(person, tick_t),
    )
    # Stress and breathing at a tick are the state at the person's last beat, as live.
    last = np.searchsorted(keys, beat_keys(person, tick_t), side="right") - 1
    stress = beats_all["stress_level"].to_numpy()[last]
    breathing = beats_all["respiration_rate"].to_numpy()[last]
    stress_grid = stress.reshape(n_persons, n_ticks).T
    _, active = schedule.target(np.broadcast_to(ticks[:, None], stress_grid.shape).copy())
    labels = label_codes(stress_grid, active).T.ravel()
    # rr_ms: the beats after the previous tick, up to this one.
    beat_keys_out = beat_keys(beats["person_id"].cat.codes.to_numpy(), beats["t_s"].to_numpy())
    bounds = np.searchsorted(beat_keys_out, beat_keys(person, tick_t), side="right")
    starts = np.searchsorted(
        beat_keys_out, beat_keys(person, tick_t - 1.0 / result.tick_hz), side="right"
    )
    rr_values = np.round(beats["rr_ms"].to_numpy().astype(np.float64), 1)
    rr_lists = [rr_values[a:b].tolist() for a, b in zip(starts, bounds, strict=True)]
    return pd.DataFrame(
        {
            "person_id": pd.Categorical.from_codes(person, categories=ids),
            "seq": np.tile(np.arange(1, n_ticks + 1), n_persons),
            "t": tick_t,
            "bpm": np.round(stats.hr_bpm).astype(np.int16),
            "variability": np.round(stats.rmssd_ms, 2),
            "stress_level": np.round(stress, 4),
            "systolic": np.round(stats.systolic_mmhg).astype(np.int16),
            "diastolic": np.round(stats.diastolic_mmhg).astype(np.int16),
            "label": pd.Categorical.from_codes(labels, categories=list(LABELS)),
            "respiration_rate": np.round(breathing, 1),
            "rr_ms": rr_lists,
        }
    )
