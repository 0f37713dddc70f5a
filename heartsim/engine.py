"""The engine: virtual persons, commands, and ``advance(dt_s)`` returning heartbeat samples.

A synchronous stepper with no I/O and no event loop: the runner (live) and
:func:`heartsim.simulate` (batch) drive it, tests call it directly. Same seed, same commands at
the same simulated times and the same ``advance`` steps give identical samples (identical
timestamps too with the same ``start_time``).
"""

from __future__ import annotations

import math
import re
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from warnings import warn

import numpy as np

from heartsim.physiology.beats import BeatBlock, BeatState, generate_beats
from heartsim.physiology.profiles import (
    PROFILE_RANGES,
    PersonProfile,
    ProfileArrays,
    sample_population,
)
from heartsim.physiology.stress import LABELS, Episode, Schedule, label_codes
from heartsim.physiology.windows import (
    KEY_STRIDE_S,
    RMSSD_WINDOW_S,
    beat_keys,
    key_person,
    key_time,
    window_stats,
)
from heartsim.times import start_time_or_now_s

#: Default length (s) of an episode started by :meth:`Engine.trigger_stress` without a duration.
DEFAULT_STRESS_DURATION_S = 60.0
MAX_STRESS_DURATION_S = 3600.0
#: Simulated history (s) before ``start``: the first sample already has a full 30 s HRV window.
WARMUP_S = RMSSD_WINDOW_S
MIN_TICK_HZ = 0.1
MAX_TICK_HZ = 50.0
MAX_SPONTANEOUS_PER_H = 60.0
#: Spontaneous episodes: intensity range like the original system's (0.65 to 0.95); longer than
#: its 5 to 8 s spikes by default, since the autonomic response needs tens of seconds to build.
SPONTANEOUS_LEVEL = (0.65, 0.95)
SPONTANEOUS_DURATION_S = (20.0, 60.0)
#: Removed persons whose last ``seq`` the engine remembers (so a re-added id never reuses one).
MAX_RETIRED_IDS = 100_000
_EPOCH_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class PersonLimitError(ValueError):
    """Adding a person would exceed the engine's ``max_persons``."""


class SimulationState(str, Enum):  # noqa: UP042 (str() and format() stay as they were)
    """Run state of an :class:`Engine`."""

    STOPPED = "stopped"
    RUNNING = "running"
    PAUSED = "paused"


@dataclass
class _Person:
    profile: PersonProfile
    episodes: list[Episode] = field(default_factory=list)
    seq: int = 0
    next_spontaneous_s: float = math.inf


def _check_range(name: str, value: float, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a number between {low:g} and {high:g}, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return value


class Engine:
    """Simulates the hearts of one or more virtual persons.

    Not thread-safe: one thread changes it. A live server's runner makes its event loop's thread
    the owner (:meth:`bind_owner`); a command or ``advance`` from any other thread then raises
    :class:`RuntimeError` instead of corrupting the arrays a tick is reading. Reads
    (``state``, ``person_ids``, ``profile``, ``latest``) are not checked.

    Parameters
    ----------
    persons
        How many persons (profiles drawn by :func:`sample_population` from ``seed``), or the
        profiles themselves. Person ids must be unique; the first person is the default one.
    seed
        Seed of all randomness; ``None`` draws a fresh one.
    tick_hz
        Samples per second the live runner asks for (0.1 to 50 Hz); informational here:
        :meth:`advance` produces one sample per person per call.
    spontaneous_stress_per_h
        Mean rate (episodes per hour and person) of spontaneous stress episodes; 0 disables.
    start_time
        Wall-clock time that simulation time 0 maps to (the ``timestamp``/``ts`` fields):
        epoch seconds, a timezone-aware :class:`~datetime.datetime` or ISO 8601 text with an
        offset; ``None`` (default): now. Kept in :attr:`start_time_s` (epoch seconds).
        :func:`heartsim.simulate` takes the same argument.
    epoch_s
        Deprecated name of ``start_time`` (epoch seconds); removed in heartsim 0.3.
    epoch
        Id of this run's ``seq`` numbering (not a time): every person's ``seq`` increases
        strictly within one epoch and is never reused, also when a removed person id is added
        again. A consumer that sees the epoch change knows that ``seq`` values of the old and
        new epoch are unrelated (the server was restarted). ``None`` draws a random one;
        1 to 64 characters from ``A-Z a-z 0-9 . _ -``.
    max_persons
        Most persons at once (``None``: no cap beyond 100,000 at creation); :meth:`add_person`
        beyond it raises :class:`PersonLimitError`. The server's default is 1,000.

    Examples
    --------
    >>> engine = Engine(persons=2, seed=7)
    >>> engine.start()
    True
    >>> samples = engine.advance(0.5)
    >>> [s["person_id"] for s in samples]
    ['p0', 'p1']
    """

    def __init__(
        self,
        persons: int | Sequence[PersonProfile] = 1,
        seed: int | None = None,
        tick_hz: float = 2.0,
        *,
        spontaneous_stress_per_h: float = 0.0,
        start_time: float | datetime | str | None = None,
        epoch: str | None = None,
        max_persons: int | None = None,
        epoch_s: float | None = None,
    ) -> None:
        if epoch_s is not None:
            warn(
                "Engine(epoch_s=...) is now Engine(start_time=...); epoch_s stops working in "
                "heartsim 0.3",
                FutureWarning,
                stacklevel=2,
            )
            start_time = epoch_s if start_time is None else start_time
        try:
            start_time_s = start_time_or_now_s(start_time)
        except ValueError as err:
            raise ValueError(f"start_time {err}, got {start_time!r}") from None
        if epoch is None:
            epoch = secrets.token_hex(8)
        if not isinstance(epoch, str) or not _EPOCH_PATTERN.fullmatch(epoch):
            raise ValueError(
                f"epoch must be 1 to 64 characters from A-Z a-z 0-9 . _ -, got {epoch!r}"
            )
        self.epoch = epoch
        if max_persons is not None and (
            isinstance(max_persons, bool) or not isinstance(max_persons, int) or max_persons < 1
        ):
            raise ValueError(f"max_persons must be an integer >= 1 or None, got {max_persons!r}")
        self.max_persons = max_persons
        self.tick_hz = _check_range("tick_hz", tick_hz, MIN_TICK_HZ, MAX_TICK_HZ)
        self.spontaneous_stress_per_h = _check_range(
            "spontaneous_stress_per_h", spontaneous_stress_per_h, 0.0, MAX_SPONTANEOUS_PER_H
        )
        if isinstance(persons, (int, np.integer)) and not isinstance(persons, bool):
            if not 1 <= persons <= 100_000:
                raise ValueError(f"persons must be between 1 and 100000, got {persons!r}")
        elif not persons or not all(isinstance(p, PersonProfile) for p in persons):
            raise ValueError("persons must be a positive count or a non-empty list of profiles")
        count = int(persons) if isinstance(persons, (int, np.integer)) else len(persons)
        if max_persons is not None and count > max_persons:
            raise ValueError(f"persons ({count}) exceeds max_persons ({max_persons})")
        population_seed, sim_seed = np.random.SeedSequence(seed).spawn(2)
        if isinstance(persons, (int, np.integer)):
            persons = sample_population(int(persons), seed=population_seed)
        ids = [p.person_id for p in persons]
        if len(set(ids)) != len(ids):
            raise ValueError(f"persons must have unique person_id values, got {ids}")
        self._rng = np.random.default_rng(sim_seed)
        self.start_time_s = start_time_s
        self.t_s = 0.0
        self.state = SimulationState.STOPPED
        #: Starts from stopped so far (each reset the physiology); the samples' ``run``.
        self.runs = 0
        self._persons: dict[str, _Person] = {p.person_id: _Person(p) for p in persons}
        self._latest: dict[str, dict[str, Any]] = {}
        self._next_id = len(ids)
        # Last seq of removed person ids; ids forgotten beyond MAX_RETIRED_IDS restart above
        # the largest forgotten seq, so no (person, seq) pair of this epoch is ever reused.
        self._retired_seq: dict[str, int] = {}
        self._forgotten_seq = 0
        self._owner_thread: int | None = None
        self._owner_alive: Callable[[], bool] | None = None
        self._reset_physiology()

    # ----- ownership ---------------------------------------------------------------------------
    def bind_owner(self, alive: Callable[[], bool] | None = None) -> None:
        """Make the calling thread the only one allowed to change the engine.

        Commands and :meth:`advance` from another thread then raise :class:`RuntimeError`.
        ``alive`` (e.g. the owning event loop's ``is_running``) returning ``False`` lifts the
        check until the next binding: once the owner's loop has ended, anyone may use the
        engine again. Calling it again moves the ownership to the calling thread.
        """
        self._owner_thread = threading.get_ident()
        self._owner_alive = alive

    def release_owner(self) -> None:
        """Any thread may change the engine again (the default)."""
        self._owner_thread = None
        self._owner_alive = None

    def check_owner(self, what: str) -> None:
        """Raise :class:`RuntimeError` (naming ``what``) unless the calling thread may change
        the engine (see :meth:`bind_owner`). Costs one thread-id comparison."""
        owner = self._owner_thread
        if owner is None or owner == threading.get_ident():
            return
        alive = self._owner_alive
        if alive is not None and not alive():
            return
        raise RuntimeError(
            f"{what} called from thread {threading.current_thread().name!r}, but the engine "
            "belongs to the event loop of another thread (a running server's): call it there, "
            "e.g. handle.call(function, *args) with a start_server() handle, "
            "loop.call_soon_threadsafe(...) with a loop of your own, or use the REST API"
        )

    # ----- persons -----------------------------------------------------------------------------
    @property
    def person_ids(self) -> list[str]:
        """Ids of the simulated persons, the default person first."""
        return list(self._persons)

    @property
    def default_person(self) -> str:
        """The person that commands and routes act on when none is named."""
        return next(iter(self._persons))

    def profile(self, person: str | None = None) -> PersonProfile:
        """The profile of ``person`` (default person if ``None``)."""
        return self._persons[self._resolve(person)].profile

    def add_person(self, profile: PersonProfile | None = None) -> str:
        """Add a person (a drawn profile if ``None``); returns its id. Takes effect immediately.

        Raises :class:`PersonLimitError` (a ``ValueError``) at ``max_persons``.
        """
        self.check_owner("Engine.add_person")
        if self.max_persons is not None and len(self._persons) >= self.max_persons:
            raise PersonLimitError(
                f"max_persons ({self.max_persons}) reached: remove a person first, or raise the "
                "limit (heartsim serve --max-persons)"
            )
        if profile is None:
            drawn = sample_population(1, seed=self._rng.integers(2**63))[0]
            profile = drawn.replace(person_id=self._fresh_id())
        elif not isinstance(profile, PersonProfile):
            raise ValueError(f"profile must be a PersonProfile, got {type(profile).__name__}")
        if profile.person_id in self._persons:
            raise ValueError(f"person_id {profile.person_id!r} already exists")
        seq = self._retired_seq.pop(profile.person_id, self._forgotten_seq)
        self._persons[profile.person_id] = _Person(profile, seq=seq)
        new_state, new_recent = self._warm_up([profile])
        self._beats = BeatState.concat([self._beats, new_state])
        self._recent = self._recent.merged(new_recent.shifted(len(self._persons) - 1))
        self._refresh()
        return profile.person_id

    def remove_person(self, person: str) -> None:
        """Remove ``person``; the last person cannot be removed."""
        self.check_owner("Engine.remove_person")
        person = self._resolve(person)
        if len(self._persons) == 1:
            raise ValueError(f"person {person!r} is the last one and cannot be removed")
        index = self.person_ids.index(person)
        keep = np.arange(len(self._persons)) != index
        self._retire(person, self._persons.pop(person).seq)
        self._latest.pop(person, None)
        self._beats = self._beats.take(keep)
        self._recent = self._recent.without(index)
        self._refresh()

    # ----- commands ----------------------------------------------------------------------------
    def start(self) -> bool:
        """Start (or restart after stop) with every person back at baseline.

        Returns ``False`` (and changes nothing) if already running; resumes if paused. A start
        from stopped counts a new run (:attr:`runs`, the samples' ``run``): simulation time
        ``t`` goes on where it stopped, so ``run`` is what tells a reset apart.
        """
        self.check_owner("Engine.start")
        if self.state is SimulationState.RUNNING:
            return False
        if self.state is SimulationState.PAUSED:
            self.state = SimulationState.RUNNING
            return True
        for person in self._persons.values():
            person.episodes.clear()
        self._reset_physiology()
        self.runs += 1
        self.state = SimulationState.RUNNING
        return True

    def stop(self) -> bool:
        """Stop; ``False`` if already stopped. Samples stop until the next :meth:`start`."""
        self.check_owner("Engine.stop")
        if self.state is SimulationState.STOPPED:
            return False
        self.state = SimulationState.STOPPED
        return True

    def pause(self) -> bool:
        """Freeze simulated time; ``False`` unless running."""
        self.check_owner("Engine.pause")
        if self.state is not SimulationState.RUNNING:
            return False
        self.state = SimulationState.PAUSED
        return True

    def resume(self) -> bool:
        """Continue after :meth:`pause`; ``False`` unless paused."""
        self.check_owner("Engine.resume")
        if self.state is not SimulationState.PAUSED:
            return False
        self.state = SimulationState.RUNNING
        return True

    def trigger_stress(
        self, level: float, duration_s: float | None = None, person: str | None = None
    ) -> Episode:
        """Start an acute stress episode of intensity ``level`` (0 to 1) now.

        It replaces the person's current and pending episodes; ``level=0`` just ends them.
        ``duration_s`` defaults to 60 s (allowed 1 to 3600 s).
        """
        self.check_owner("Engine.trigger_stress")
        level = _check_range("stress_level", level, 0.0, 1.0)
        duration = _check_range(
            "duration_s",
            DEFAULT_STRESS_DURATION_S if duration_s is None else duration_s,
            1.0,
            MAX_STRESS_DURATION_S,
        )
        target = self._persons[self._resolve(person)]
        episode = Episode(self.t_s, self.t_s + duration, level)
        target.episodes = [e for e in target.episodes if e.end_s <= self.t_s]
        if level > 0.0:
            target.episodes.append(episode)
        self._refresh_schedule()
        return episode

    def set_baseline(self, bpm: float, person: str | None = None) -> None:
        """Set ``person``'s resting heart rate (40 to 120 bpm)."""
        self.check_owner("Engine.set_baseline")
        low, high = PROFILE_RANGES["resting_hr_bpm"]
        bpm = _check_range("bpm", bpm, low, high)
        target = self._persons[self._resolve(person)]
        target.profile = target.profile.replace(resting_hr_bpm=bpm)
        self._refresh_profiles()

    def update_profile(self, person: str | None = None, **fields: float) -> PersonProfile:
        """Change profile fields of ``person`` live (validated together; nothing changes on
        error). ``person_id`` cannot change."""
        self.check_owner("Engine.update_profile")
        target = self._persons[self._resolve(person)]
        if "person_id" in fields and fields["person_id"] != target.profile.person_id:
            raise ValueError("person_id cannot be changed")
        target.profile = target.profile.replace(**fields)
        self._refresh_profiles()
        return target.profile

    def configure(
        self, *, tick_hz: float | None = None, spontaneous_stress_per_h: float | None = None
    ) -> None:
        """Change simulation parameters at run time (validated first; nothing changes on error).

        ``tick_hz`` (0.1 to 50 Hz) is the rate the runner ticks at; ``spontaneous_stress_per_h``
        (0 to 60) the mean rate of spontaneous stress episodes per person.
        """
        self.check_owner("Engine.configure")
        if tick_hz is not None:
            tick_hz = _check_range("tick_hz", tick_hz, MIN_TICK_HZ, MAX_TICK_HZ)
        if spontaneous_stress_per_h is not None:
            spontaneous_stress_per_h = _check_range(
                "spontaneous_stress_per_h", spontaneous_stress_per_h, 0.0, MAX_SPONTANEOUS_PER_H
            )
        if tick_hz is not None:
            self.tick_hz = tick_hz
        if spontaneous_stress_per_h is not None:
            self.spontaneous_stress_per_h = spontaneous_stress_per_h
            for person in self._persons.values():
                person.next_spontaneous_s = self._draw_spontaneous_time(self.t_s)

    # ----- stepping ----------------------------------------------------------------------------
    def advance(self, dt_s: float) -> list[dict[str, Any]]:
        """Simulate ``dt_s`` seconds and return one sample per person (none unless running).

        Each sample is a dict with the heartbeat message fields of the API (``rr_ms`` lists the
        intervals of the beats completed during this step).
        """
        self.check_owner("Engine.advance")
        dt_s = _check_range("dt_s", dt_s, 1e-6, 3600.0)
        if self.state is not SimulationState.RUNNING:
            return []
        t_end = self.t_s + dt_s
        self._fire_spontaneous(t_end)
        block = generate_beats(self._beats, self._arrays, self._schedule, t_end, self._rng)
        self._recent = self._recent.appended(block).trimmed(t_end - RMSSD_WINDOW_S - 1.0)
        self.t_s = t_end
        samples = self._samples(block)
        for sample in samples:
            self._latest[sample["person_id"]] = sample
        return samples

    def latest(self, person: str | None = None) -> dict[str, Any] | None:
        """The last sample of ``person``, or ``None`` before the first one."""
        return self._latest.get(self._resolve(person))

    @property
    def epoch_s(self) -> float:
        """Deprecated name of :attr:`start_time_s`; removed in heartsim 0.3."""
        warn(
            "Engine.epoch_s is now Engine.start_time_s; epoch_s stops working in heartsim 0.3",
            FutureWarning,
            stacklevel=2,
        )
        return self.start_time_s

    # ----- internals ---------------------------------------------------------------------------
    def _retire(self, person: str, seq: int) -> None:
        retired = self._retired_seq
        retired[person] = seq
        while len(retired) > MAX_RETIRED_IDS:
            oldest = next(iter(retired))
            self._forgotten_seq = max(self._forgotten_seq, retired.pop(oldest))

    def _resolve(self, person: str | None) -> str:
        if person is None:
            return self.default_person
        if person not in self._persons:
            raise ValueError(f"person {person!r} is unknown; known persons: {self.person_ids}")
        return person

    def _fresh_id(self) -> str:
        while f"p{self._next_id}" in self._persons:
            self._next_id += 1
        return f"p{self._next_id}"

    def _refresh_profiles(self) -> None:
        self._arrays = ProfileArrays.from_profiles([p.profile for p in self._persons.values()])

    def _refresh_schedule(self) -> None:
        for person in self._persons.values():
            person.episodes = [e for e in person.episodes if e.end_s > self.t_s - 1.0]
        self._schedule = Schedule.from_episodes([p.episodes for p in self._persons.values()])

    def _refresh(self) -> None:
        self._refresh_profiles()
        self._refresh_schedule()

    def _reset_physiology(self) -> None:
        self._refresh()
        profiles = [p.profile for p in self._persons.values()]
        self._beats, self._recent = self._warm_up(profiles)
        for person in self._persons.values():
            person.next_spontaneous_s = self._draw_spontaneous_time(self.t_s)

    def _warm_up(self, profiles: list[PersonProfile]) -> tuple[BeatState, _RecentBeats]:
        arrays = ProfileArrays.from_profiles(profiles)
        state = BeatState.initial(arrays, self.t_s - WARMUP_S, self._rng)
        empty = Schedule.from_episodes([[] for _ in profiles])
        block = generate_beats(state, arrays, empty, self.t_s, self._rng)
        return state, _RecentBeats.from_block(block)

    def _draw_spontaneous_time(self, after_s: float) -> float:
        if self.spontaneous_stress_per_h <= 0.0:
            return math.inf
        return after_s + self._rng.exponential(3600.0 / self.spontaneous_stress_per_h)

    def _fire_spontaneous(self, t_end: float) -> None:
        changed = False
        for person in self._persons.values():
            while person.next_spontaneous_s < t_end:
                start = person.next_spontaneous_s
                duration = self._rng.uniform(*SPONTANEOUS_DURATION_S)
                level = self._rng.uniform(*SPONTANEOUS_LEVEL)
                person.episodes.append(Episode(start, start + duration, level))
                person.next_spontaneous_s = self._draw_spontaneous_time(start + duration)
                changed = True
        if changed:
            self._refresh_schedule()

    def _samples(self, block: BeatBlock) -> list[dict[str, Any]]:
        n = len(self._persons)
        index = np.arange(n)
        t = np.full(n, self.t_s)
        recent = self._recent
        stats = window_stats(
            recent.keys, recent.rr_ms, recent.systolic, recent.diastolic, beat_keys(index, t)
        )
        stress = self._beats.stress
        _, active = self._schedule.target(t)
        labels = label_codes(stress, active)
        breathing = self._beats.breathing_rate_bpm(self._arrays)
        rr_lists = [rr.tolist() for rr in block.split(block.rr_ms.astype(np.float64).round(1))]
        stamp = self.start_time_s + self.t_s
        timestamp = datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")
        state = self.state.value
        samples = []
        for i, (pid, person) in enumerate(self._persons.items()):
            person.seq += 1
            rmssd = float(stats.rmssd_ms[i])
            samples.append(
                {
                    "type": "heartbeat",
                    "seq": person.seq,
                    "person_id": pid,
                    "t": round(self.t_s, 6),
                    "timestamp": timestamp,
                    "ts": stamp,
                    "bpm": round(float(stats.hr_bpm[i])),
                    "variability": round(rmssd, 2) if math.isfinite(rmssd) else None,
                    "stress_level": round(float(stress[i]), 4),
                    "systolic": round(float(stats.systolic_mmhg[i])),
                    "diastolic": round(float(stats.diastolic_mmhg[i])),
                    "state": state,
                    "prediction": None,
                    "confidence": None,
                    "stress_score": None,
                    "rr_ms": rr_lists[i],
                    "label": LABELS[labels[i]],
                    "respiration_rate": round(float(breathing[i]), 1),
                    "run": self.runs,
                }
            )
        return samples


@dataclass(frozen=True)
class _RecentBeats:
    """The last seconds of every person's beats, end to end on the key axis (see windows)."""

    keys: np.ndarray
    rr_ms: np.ndarray
    systolic: np.ndarray
    diastolic: np.ndarray

    @classmethod
    def from_block(cls, block: BeatBlock) -> _RecentBeats:
        """The beats of ``block`` (persons numbered in the block's order)."""
        return cls(
            beat_keys(block.person_index(), block.t_s),
            block.rr_ms,
            block.systolic_mmhg,
            block.diastolic_mmhg,
        )

    def appended(self, block: BeatBlock) -> _RecentBeats:
        return self.merged(_RecentBeats.from_block(block))

    def _select(self, keep: np.ndarray, keys: np.ndarray | None = None) -> _RecentBeats:
        keys = self.keys if keys is None else keys
        return _RecentBeats(keys[keep], self.rr_ms[keep], self.systolic[keep], self.diastolic[keep])

    def trimmed(self, before_s: float) -> _RecentBeats:
        """Drop beats older than ``before_s``."""
        return self._select(key_time(self.keys) >= before_s)

    def shifted(self, persons: int) -> _RecentBeats:
        """Renumber persons ``i`` as ``i + persons``."""
        return self._select(slice(None), self.keys + persons * KEY_STRIDE_S)

    def merged(self, other: _RecentBeats) -> _RecentBeats:
        keys = np.concatenate([self.keys, other.keys])
        order = np.argsort(keys, kind="stable")
        return _RecentBeats(
            keys[order],
            np.concatenate([self.rr_ms, other.rr_ms])[order],
            np.concatenate([self.systolic, other.systolic])[order],
            np.concatenate([self.diastolic, other.diastolic])[order],
        )

    def without(self, index: int) -> _RecentBeats:
        """Drop person ``index`` and renumber the ones after it."""
        person = key_person(self.keys)
        keys = np.where(person > index, self.keys - KEY_STRIDE_S, self.keys)
        return self._select(person != index, keys)
