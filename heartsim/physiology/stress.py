"""Autonomic stress: episodes (stressors), the stress state's kinetics and ground-truth labels.

A stressor (an *episode*) has a start, an end and an intensity in [0, 1]. The person's autonomic
stress state follows the strongest active stressor with first-order kinetics: it rises with the
person's onset time constant (tens of seconds) and decays with the recovery time constant
(minutes), as heart rate and vagal tone do in laboratory stress tests (e.g. the Trier Social
Stress Test; Kirschbaum et al. 1993).
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
    """Episodes of many persons as padded arrays of shape ``(n_persons, n_slots)``.

    Empty slots have ``level == 0`` and never count as active.
    """

    start_s: np.ndarray
    end_s: np.ndarray
    level: np.ndarray

    @classmethod
    def from_episodes(cls, episodes: list[list[Episode]]) -> Schedule:
        """Build from one list of episodes per person."""
        n = len(episodes)
        slots = max([len(e) for e in episodes] + [1])
        start = np.full((n, slots), np.inf)
        end = np.full((n, slots), -np.inf)
        level = np.zeros((n, slots), np.float32)
        for i, person_episodes in enumerate(episodes):
            for j, ep in enumerate(person_episodes):
                start[i, j], end[i, j], level[i, j] = ep.start_s, ep.end_s, ep.level
        return cls(start, end, level)

    def target(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stress target and whether any stressor is active at times ``t_s``.

        ``t_s`` has shape ``(..., n_persons)``; the results have the same shape.
        """
        target = np.zeros(t_s.shape, np.float32)
        active = np.zeros(t_s.shape, bool)
        # A Python loop over the few slots beats reducing over a short trailing axis.
        for start, end, level in zip(self.start_s.T, self.end_s.T, self.level.T, strict=True):
            if not level.any():
                continue
            on = (start <= t_s) & (t_s < end) & (level > 0.0)
            target = np.maximum(target, np.where(on, level, np.float32(0.0)))
            active |= on
        return target, active


def relax(
    stress: np.ndarray,
    target: np.ndarray,
    dt_s: np.ndarray | float,
    onset_tau_s: np.ndarray,
    recovery_tau_s: np.ndarray,
) -> np.ndarray:
    """Advance the stress state by ``dt_s`` towards ``target`` (exact first-order solution)."""
    tau = np.where(target > stress, onset_tau_s, recovery_tau_s)
    return target + (stress - target) * np.exp(-dt_s / tau)


def label_codes(stress: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Ground truth: ``stress`` while a stressor acts, ``recovery`` until the state has decayed
    below :data:`RECOVERED_LEVEL`, ``rest`` otherwise (codes index :data:`LABELS`)."""
    return np.where(active, STRESS, np.where(stress >= RECOVERED_LEVEL, RECOVERY, REST)).astype(
        np.int8
    )
