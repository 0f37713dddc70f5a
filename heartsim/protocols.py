"""Stress protocols: when each simulated person meets which stressor.

:class:`LabProtocol` follows the laboratory stress studies (e.g. the Trier Social Stress Test,
Kirschbaum et al. 1993; the stress-detection datasets WESAD, Schmidt et al. 2018): a rest
baseline, a stress task, a recovery period, with durations and intensities drawn per person and
repeated until the run ends. :class:`RestProtocol` has no stressor; :class:`CustomProtocol` takes
explicit episodes.

Every protocol here has a JSON form (:meth:`Protocol.to_dict`, read back by :func:`as_protocol`),
which ``meta.json`` records so that a saved dataset can be simulated again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, cast

import numpy as np

from heartsim.physiology.stress import Episode


class Protocol:
    """Base class: draws every person's stress episodes for a run."""

    def episodes(
        self, person_ids: Sequence[str], duration_s: float, rng: np.random.Generator
    ) -> list[list[Episode]]:
        """One list of episodes per person, within ``[0, duration_s)``."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any] | None:
        """The JSON form ``{"type": ..., parameters}`` that :func:`as_protocol` reads back, or
        ``None`` for a protocol defined outside heartsim (which has none)."""
        return None


@dataclass(frozen=True)
class RestProtocol(Protocol):
    """No stressor: everybody rests."""

    def episodes(
        self, person_ids: Sequence[str], duration_s: float, rng: np.random.Generator
    ) -> list[list[Episode]]:
        return [[] for _ in person_ids]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "rest"}


def _check_span(name: str, span: tuple[float, float], low: float, high: float) -> None:
    try:
        a, b = (float(x) for x in span)
        ok = low <= a <= b <= high
    except (TypeError, ValueError):  # not a pair of numbers
        ok = False
    if not ok:
        raise ValueError(
            f"{name} must be a (min, max) pair within [{low:g}, {high:g}], got {span!r}"
        )


@dataclass(frozen=True)
class LabProtocol(Protocol):
    """Baseline, stress task, recovery; repeated until the run ends.

    Parameters
    ----------
    baseline_s, stress_s, recovery_s
        (min, max) of each phase's duration (s), drawn uniformly per person and cycle.
    intensity
        (min, max) of the stress level (0 to 1) of each task.
    """

    baseline_s: tuple[float, float] = (240.0, 360.0)
    stress_s: tuple[float, float] = (180.0, 420.0)
    recovery_s: tuple[float, float] = (300.0, 480.0)
    intensity: tuple[float, float] = (0.3, 1.0)

    def __post_init__(self) -> None:
        for name in ("baseline_s", "stress_s", "recovery_s"):
            _check_span(name, getattr(self, name), 1.0, 86400.0)
        _check_span("intensity", self.intensity, 0.0, 1.0)

    def episodes(
        self, person_ids: Sequence[str], duration_s: float, rng: np.random.Generator
    ) -> list[list[Episode]]:
        out = []
        for _ in person_ids:
            person, t = [], rng.uniform(*self.baseline_s)
            while t < duration_s:
                length = rng.uniform(*self.stress_s)
                person.append(Episode(t, t + length, float(rng.uniform(*self.intensity))))
                t += length + rng.uniform(*self.recovery_s) + rng.uniform(*self.baseline_s)
            out.append(person)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"type": "lab", **{f.name: list(getattr(self, f.name)) for f in fields(self)}}


@dataclass(frozen=True)
class CustomProtocol(Protocol):
    """Explicit episodes: the same list for everybody, or a mapping person id -> list."""

    schedule: Sequence[Episode] | Mapping[str, Sequence[Episode]]

    def episodes(
        self, person_ids: Sequence[str], duration_s: float, rng: np.random.Generator
    ) -> list[list[Episode]]:
        if isinstance(self.schedule, Mapping):
            unknown = set(self.schedule) - set(person_ids)
            if unknown:
                raise ValueError(f"protocol names unknown persons: {sorted(unknown)}")
            return [list(self.schedule.get(pid, ())) for pid in person_ids]
        return [list(self.schedule) for _ in person_ids]

    def to_dict(self) -> dict[str, Any]:
        if isinstance(self.schedule, Mapping):
            schedule: Any = {pid: _episode_lists(eps) for pid, eps in self.schedule.items()}
        else:
            schedule = _episode_lists(self.schedule)
        return {"type": "custom", "schedule": schedule}


def _episode_lists(episodes: Sequence[Episode]) -> list[list[float]]:
    return [[e.start_s, e.end_s, e.level] for e in episodes]


def _episodes(items: Any) -> list[Episode]:
    """Episodes from ``Episode`` objects, ``[start_s, end_s, level]`` lists or dicts."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ValueError(f"episodes must be a list, got {items!r}")
    out = []
    for item in items:
        try:
            if isinstance(item, Episode):
                out.append(item)
            elif isinstance(item, Mapping):
                out.append(Episode(**item))
            elif isinstance(item, Sequence) and not isinstance(item, (str, bytes)):
                out.append(Episode(*item))
            else:
                raise TypeError
        except TypeError:
            raise ValueError(
                "an episode is an Episode, [start_s, end_s, level] or a dict with those keys, "
                f"got {item!r}"
            ) from None
    return out


def _from_dict(spec: Mapping[str, Any]) -> Protocol:
    """A protocol from its JSON form (see :meth:`Protocol.to_dict`)."""
    params = {k: v for k, v in spec.items() if k != "type"}
    kind = spec["type"]
    if kind == "lab":
        unknown = set(params) - {f.name for f in fields(LabProtocol)}
        if unknown:
            raise ValueError(f"protocol 'lab' has no parameter(s) {sorted(unknown)}")
        try:
            return LabProtocol(**{k: tuple(v) for k, v in params.items()})
        except TypeError:
            raise ValueError(
                f"protocol 'lab' takes (min, max) pairs of numbers, got {dict(spec)!r}"
            ) from None
    if kind == "rest" and not params:
        return RestProtocol()
    if kind == "custom" and set(params) == {"schedule"}:
        schedule = params["schedule"]
        if isinstance(schedule, Mapping):
            return CustomProtocol({str(pid): _episodes(e) for pid, e in schedule.items()})
        return CustomProtocol(_episodes(schedule))
    raise ValueError(
        "a protocol dict is {'type': 'lab', ...LabProtocol parameters}, {'type': 'rest'} or "
        f"{{'type': 'custom', 'schedule': ...}}, got {dict(spec)!r}"
    )


PROTOCOLS = {"lab": LabProtocol, "rest": RestProtocol}


def as_protocol(
    protocol: str | Protocol | Sequence[Episode] | Mapping[str, Sequence[Episode]],
) -> Protocol:
    """Accept a protocol name (``"lab"``, ``"rest"``), a :class:`Protocol`, its JSON form
    (:meth:`Protocol.to_dict`) or explicit episodes (for everybody, or per person id)."""
    if isinstance(protocol, Protocol):
        return protocol
    if isinstance(protocol, str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
        return PROTOCOLS[protocol]()
    if isinstance(protocol, Mapping) and isinstance(protocol.get("type"), str):
        return _from_dict(protocol)
    if isinstance(protocol, Mapping) or (
        isinstance(protocol, Sequence) and all(isinstance(e, Episode) for e in protocol)
    ):
        # (mypy keeps str in the union here although the branch above returned for it)
        return CustomProtocol(cast("Sequence[Episode] | Mapping[str, Sequence[Episode]]", protocol))
    raise ValueError(
        "protocol must be 'lab', 'rest', a Protocol, a protocol dict, a list of Episode or a "
        f"mapping of person id to episodes, got {protocol!r}"
    )
