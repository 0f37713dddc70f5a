"""Person profiles: the physiological constants of one virtual person.

A profile holds what differs between people and stays fixed during a session: resting heart rate,
vagal (respiratory sinus arrhythmia) and Mayer-wave HRV amplitudes, breathing rate, resting blood
pressure and how strongly the person reacts to stress. :func:`sample_population` draws realistic
inter-individual variety; :class:`ProfileArrays` is the same data as columns, for vectorised code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Allowed range (low, high), inclusive, of every profile field; also the API's validation bounds.
PROFILE_RANGES: dict[str, tuple[float, float]] = {
    "resting_hr_bpm": (40.0, 120.0),
    "rsa_amplitude_ms": (0.0, 150.0),
    "mayer_amplitude_ms": (0.0, 120.0),
    "drift_sd_ms": (0.0, 80.0),
    "beat_noise_sd_ms": (0.0, 40.0),
    "breathing_rate_bpm": (6.0, 30.0),
    "systolic_mmhg": (80.0, 180.0),
    "diastolic_mmhg": (45.0, 110.0),
    "hr_reactivity_bpm": (0.0, 60.0),
    "sbp_reactivity_mmhg": (0.0, 40.0),
    "breathing_reactivity_bpm": (0.0, 12.0),
    "onset_tau_s": (2.0, 120.0),
    "recovery_tau_s": (10.0, 600.0),
}


@dataclass(frozen=True)
class PersonProfile:
    """Physiological constants of one virtual person.

    Parameters
    ----------
    person_id
        Stable identifier, e.g. ``"p0"``.
    resting_hr_bpm
        Resting heart rate (beats per minute) at zero stress.
    rsa_amplitude_ms
        Standard deviation (ms) of respiratory sinus arrhythmia at rest: the vagal, HF component.
    mayer_amplitude_ms
        Standard deviation (ms) of the ~0.1 Hz Mayer-wave (baroreflex) oscillation: the LF part.
    drift_sd_ms
        Standard deviation (ms) of the slow (~1 min) drift of the heart period (VLF).
    beat_noise_sd_ms
        Standard deviation (ms) of independent beat-to-beat noise at rest.
    breathing_rate_bpm
        Resting breathing rate (breaths per minute); sets the HF peak (rate / 60 Hz).
    systolic_mmhg, diastolic_mmhg
        Resting blood pressure (mmHg).
    hr_reactivity_bpm
        Heart-rate rise (bpm) at full stress (level 1); scales linearly with the level.
    sbp_reactivity_mmhg
        Systolic rise (mmHg) at full stress; diastolic rises by 60 % of it.
    breathing_reactivity_bpm
        Breathing-rate rise (breaths per minute) at full stress.
    onset_tau_s, recovery_tau_s
        Time constants (s) of the autonomic stress state rising towards a stressor and
        decaying after it.
    """

    person_id: str = "p0"
    resting_hr_bpm: float = 72.0
    rsa_amplitude_ms: float = 30.0
    mayer_amplitude_ms: float = 34.0
    drift_sd_ms: float = 14.0
    beat_noise_sd_ms: float = 7.0
    breathing_rate_bpm: float = 14.0
    systolic_mmhg: float = 118.0
    diastolic_mmhg: float = 76.0
    hr_reactivity_bpm: float = 38.0
    sbp_reactivity_mmhg: float = 26.0
    breathing_reactivity_bpm: float = 5.0
    onset_tau_s: float = 15.0
    recovery_tau_s: float = 70.0

    def __post_init__(self) -> None:
        if not isinstance(self.person_id, str) or not self.person_id:
            raise ValueError(f"person_id must be a non-empty string, got {self.person_id!r}")
        for name, (low, high) in PROFILE_RANGES.items():
            value = getattr(self, name)
            if not np.isfinite(value) or not low <= value <= high:
                raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
        if self.diastolic_mmhg >= self.systolic_mmhg - 10:
            raise ValueError(
                "diastolic_mmhg must be at least 10 mmHg below systolic_mmhg, got "
                f"{self.diastolic_mmhg!r} / {self.systolic_mmhg!r}"
            )

    def replace(self, **changes: Any) -> PersonProfile:
        """Return a copy with ``changes`` applied (validated like a new profile)."""
        return dataclasses.replace(self, **changes)


def sample_population(
    n: int, seed: int | np.integer | np.random.SeedSequence | None = None, *, id_prefix: str = "p"
) -> list[PersonProfile]:
    """Draw ``n`` realistic, different person profiles.

    Distributions follow short-term HRV norms in healthy adults (Nunan et al. 2010: RMSSD
    42 ± 15 ms, SDNN 50 ± 16 ms) and laboratory stress reactivity (heart rate +20 to +50 bpm,
    systolic +15 to +35 mmHg). Lower resting heart rate goes with larger vagal HRV, as observed.

    Parameters
    ----------
    n
        Number of persons (>= 1).
    seed
        Seed of the random generator (an int or a :class:`numpy.random.SeedSequence`); the
        same seed gives the same population.
    id_prefix
        Person ids are ``f"{id_prefix}{i}"``.

    Examples
    --------
    >>> people = sample_population(3, seed=1)
    >>> [p.person_id for p in people]
    ['p0', 'p1', 'p2']
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    hr = np.clip(rng.normal(70.0, 7.5, n), 57.0, 83.0)
    # Vagal amplitude: log-normal spread, larger at lower heart rate.
    vagal = np.exp(rng.normal(0.0, 0.33, n)) * (70.0 / hr) ** 1.5
    rsa = np.clip(30.0 * vagal, 15.0, 90.0)
    # Mayer waves share part of the vagal tone (baroreflex): keeps LF/HF within human range.
    mayer = np.clip(34.0 * vagal**0.6 * np.exp(rng.normal(0.0, 0.22, n)), 8.0, 70.0)
    drift = np.clip(rng.normal(14.0, 3.0, n), 6.0, 28.0)
    noise = np.clip(7.0 * vagal, 3.0, 16.0)
    # From 11 /min: slower breathing moves RSA to the LF band edge (0.15 Hz) and blurs LF.
    breathing = np.clip(rng.normal(14.5, 2.3, n), 11.0, 20.0)
    sbp = np.clip(rng.normal(117.0, 8.0, n), 98.0, 138.0)
    dbp = np.clip(sbp * 0.64 + rng.normal(0.0, 4.0, n), 60.0, 88.0)
    hr_gain = np.clip(rng.normal(37.0, 5.0, n), 28.0, 48.0)
    sbp_gain = np.clip(rng.normal(26.0, 3.5, n), 20.0, 33.0)
    br_gain = np.clip(rng.normal(5.0, 1.2, n), 2.5, 8.0)
    onset = rng.uniform(10.0, 25.0, n)
    recovery = rng.uniform(40.0, 80.0, n)
    return [
        PersonProfile(
            person_id=f"{id_prefix}{i}",
            resting_hr_bpm=round(float(hr[i]), 1),
            rsa_amplitude_ms=round(float(rsa[i]), 1),
            mayer_amplitude_ms=round(float(mayer[i]), 1),
            drift_sd_ms=round(float(drift[i]), 1),
            beat_noise_sd_ms=round(float(noise[i]), 1),
            breathing_rate_bpm=round(float(breathing[i]), 1),
            systolic_mmhg=round(float(sbp[i]), 1),
            diastolic_mmhg=round(float(dbp[i]), 1),
            hr_reactivity_bpm=round(float(hr_gain[i]), 1),
            sbp_reactivity_mmhg=round(float(sbp_gain[i]), 1),
            breathing_reactivity_bpm=round(float(br_gain[i]), 1),
            onset_tau_s=round(float(onset[i]), 1),
            recovery_tau_s=round(float(recovery[i]), 1),
        )
        for i in range(n)
    ]


@dataclass(frozen=True)
class ProfileArrays:
    """Profiles as columns, one float32 array per field of shape ``(n_persons,)``."""

    resting_hr_bpm: np.ndarray
    rsa_amplitude_ms: np.ndarray
    mayer_amplitude_ms: np.ndarray
    drift_sd_ms: np.ndarray
    beat_noise_sd_ms: np.ndarray
    breathing_rate_bpm: np.ndarray
    systolic_mmhg: np.ndarray
    diastolic_mmhg: np.ndarray
    hr_reactivity_bpm: np.ndarray
    sbp_reactivity_mmhg: np.ndarray
    breathing_reactivity_bpm: np.ndarray
    onset_tau_s: np.ndarray
    recovery_tau_s: np.ndarray

    @classmethod
    def from_profiles(cls, profiles: Sequence[PersonProfile]) -> ProfileArrays:
        """Stack ``profiles`` into columns."""
        return cls(
            **{
                f.name: np.array([getattr(p, f.name) for p in profiles], dtype=np.float32)
                for f in dataclasses.fields(cls)
            }
        )
