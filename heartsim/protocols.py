"""Stress protocols: when each simulated person meets which stressor.

:class:`LabProtocol` follows the laboratory stress studies (e.g. the Trier Social Stress Test,
Kirschbaum et al. 1993; the stress-detection datasets WESAD, Schmidt et al. 2018): a rest
baseline, a stress task, a recovery period, with durations and intensities drawn per person and
repeated until the run ends. :class:`RestProtocol` has no stressor; :class:`CustomProtocol` takes
explicit episodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from heartsim.physiology.stress import Episode


class Protocol:
    """Base class: draws every person's stress episodes for a run."""

    def episodes(
        self, person_ids: Sequence[str], duration_s: float, rng: np.random.Generator
    ) -> list[list[Episode]]:
        """One list of episodes per person, within ``[0, duration_s)``."""
        raise NotImplementedError


@dataclass(frozen=True)
class RestProtocol(Protocol):
    """No stressor: everybody rests."""

    def episodes(
        self, person_ids: Sequence[str], duration_s: float, rng: np.random.Generator
    ) -> list[list[Episode]]:
        return [[] for _ in person_ids]


def _check_span(name: str, span: tuple[float, float], low: float, high: float) -> None:
    a, b = span
    if not (low <= a <= b <= high):
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


PROTOCOLS = {"lab": LabProtocol, "rest": RestProtocol}


def as_protocol(
    protocol: str | Protocol | Sequence[Episode] | Mapping[str, Sequence[Episode]],
) -> Protocol:
    """Accept a protocol name (``"lab"``, ``"rest"``), a :class:`Protocol` or explicit episodes."""
    if isinstance(protocol, Protocol):
        return protocol
    if isinstance(protocol, str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
        return PROTOCOLS[protocol]()
    if isinstance(protocol, Mapping) or (
        isinstance(protocol, Sequence) and all(isinstance(e, Episode) for e in protocol)
    ):
        # (mypy keeps str in the union here although the branch above returned for it)
        return CustomProtocol(cast("Sequence[Episode] | Mapping[str, Sequence[Episode]]", protocol))
    raise ValueError(
        "protocol must be 'lab', 'rest', a Protocol, a list of Episode or a mapping of person id "
        f"to episodes, got {protocol!r}"
    )
