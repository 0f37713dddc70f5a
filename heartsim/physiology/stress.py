"""Autonomic stress: episodes (stressors), the stress state's kinetics and ground-truth labels.

A stressor (an *episode*) has a start, an end and an intensity in [0, 1]. The person's autonomic
stress state follows the strongest active stressor with first-order kinetics: it rises with the
person's onset time constant (tens of seconds) and decays with the recovery time constant
(minutes), as heart rate and vagal tone do in laboratory stress tests (e.g. the Trier Social
Stress Test; Kirschbaum et al. 1993). The beat loop (:mod:`heartsim.physiology.beats`) advances
the state beat by beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Ground-truth labels, indexed by the integer codes used in arrays.
LABELS: tuple[str, str, str] = ("rest", "stress", "recovery")
REST, STRESS, RECOVERY = 0, 1, 2
#: Below this stress level, a person with no active stressor is labelled ``rest`` again.
RECOVERED_LEVEL = 0.05


@dataclass(frozen=True)
class Episode:
    """One stressor: intensity ``level`` (0 to 1) from ``start_s`` to ``end_s`` (simulation s)."""

    start_s: float
    end_s: float
    level: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.level <= 1.0:
            raise ValueError(f"level must be between 0 and 1, got {self.level!r}")
        if not self.end_s > self.start_s:
            raise ValueError(
                f"end_s must be after start_s, got start_s={self.start_s!r} end_s={self.end_s!r}"
            )


@dataclass(frozen=True)
class Schedule:
    """Every person's stress target as a step function of time.

    Row ``p`` of the flat arrays (stride ``width``) lists the times where person ``p``'s target
    changes, the target from then on and whether a stressor is active; the first change time is
    ``-inf`` and unused cells are ``+inf``. Overlapping episodes combine by their maximum.
    """

    change_s: np.ndarray
    target_level: np.ndarray
    active: np.ndarray
    width: int

    @classmethod
    def from_episodes(cls, episodes: list[list[Episode]]) -> Schedule:
        """Build from one list of episodes per person."""
        rows = []
        for person in episodes:
            edges = sorted({e.start_s for e in person} | {e.end_s for e in person})
            row = [(-np.inf, 0.0, False)]
            for t in edges:
                levels = [e.level for e in person if e.start_s <= t < e.end_s and e.level > 0]
                row.append((t, max(levels, default=0.0), bool(levels)))
            rows.append(row)
        width = max(len(r) for r in rows) + 1  # at least one +inf sentinel per row
        change = np.full((len(rows), width), np.inf)
        level = np.zeros((len(rows), width), np.float32)
        active = np.zeros((len(rows), width), bool)
        for i, row in enumerate(rows):
            for j, (t, lvl, on) in enumerate(row):
                change[i, j], level[i, j], active[i, j] = t, lvl, on
        return cls(change.ravel(), level.ravel(), active.ravel(), width)

    def cursor(self, t_s: np.ndarray) -> np.ndarray:
        """Flat index of the step in force at times ``t_s`` (shape ``(..., n_persons)``)."""
        n = self.change_s.shape[0] // self.width
        row = np.arange(n) * self.width
        offsets = np.broadcast_to(row, t_s.shape)
        # Search each person's row: rows are sorted, so search on (row, time) pairs.
        step = np.zeros(t_s.shape, np.intp)
        for j in range(1, self.width):
            step += t_s >= self.change_s[offsets + j]
        return offsets + step

    def target(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stress target and whether any stressor is active at times ``t_s``.

        ``t_s`` has shape ``(..., n_persons)``; the results have the same shape.
        """
        at = self.cursor(t_s)
        return self.target_level[at], self.active[at]


def label_codes(stress: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Ground truth: ``stress`` while a stressor acts, ``recovery`` until the state has decayed
    below :data:`RECOVERED_LEVEL`, ``rest`` otherwise (codes index :data:`LABELS`)."""
    return np.where(active, STRESS, np.where(stress >= RECOVERED_LEVEL, RECOVERY, REST)).astype(
        np.int8
    )
