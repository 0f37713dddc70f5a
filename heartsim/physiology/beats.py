"""Beat-by-beat RR intervals, blood pressure and breathing: the heart model.

The model is a time-domain realisation of the bimodal RR-interval spectrum of McSharry et al.
(2003, "A dynamical model for generating synthetic electrocardiogram signals", IEEE TBME 50:289):
power around the Mayer-wave frequency (~0.1 Hz, LF, baroreflex) and around the breathing
frequency (HF, respiratory sinus arrhythmia). Instead of shaping a spectrum offline (which cannot
stream or follow a changing heart rate), each component is a narrow-band stochastic oscillator
(a complex Ornstein-Uhlenbeck process, Lorentzian spectrum) advanced exactly over each beat's
interval, so beats can be produced one at a time, live or in batch, with the same result:

    RR_k+1 = 60000 / HR(s) + a_HF v(s) Re z_HF + a_LF m(s) Re z_LF + a_VLF d + a_n v(s) e

where ``s`` is the autonomic stress state, ``HR(s)`` rises linearly with ``s`` (sympathetic
drive), ``v(s) = 1 - 0.8 s`` is vagal withdrawal (RMSSD and HF power fall under acute mental
stress: Castaldo et al. 2015; Kim et al. 2018), ``m(s) = 1 - 0.45 s`` (LF falls less, so LF/HF
rises), ``z_HF`` rotates at the current breathing frequency, ``z_LF`` at 0.1 Hz, ``d`` is a slow
drift (time constant 60 s) and ``e`` white beat-to-beat noise. Systolic and diastolic pressure
follow the same state: a stress rise plus Mayer waves (Traube-Hering-Mayer) and breathing
modulation.

Everything is vectorised over persons: one loop iteration produces the next beat of every person
whose next beat falls before the requested time.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from heartsim.physiology.profiles import ProfileArrays
from heartsim.physiology.stress import Schedule, label_codes, relax

MAYER_HZ = 0.1
#: Bandwidths (Hz, half width at half maximum of the spectral peak) of the HF (RSA) and LF
#: (Mayer) oscillators; the drift is the same process at zero frequency.
HF_BANDWIDTH_HZ = 0.006
LF_BANDWIDTH_HZ = 0.01
DRIFT_TAU_S = 60.0
VAGAL_WITHDRAWAL = 0.8
MAYER_WITHDRAWAL = 0.45
DIASTOLIC_SHARE = 0.6
RR_LIMITS_MS = (250.0, 2000.0)

# The three oscillators (HF, LF, drift) are stacked as rows so one call advances them all.
_HF, _LF, _DRIFT = 0, 1, 2
_BANDWIDTH_HZ = np.array(
    [[HF_BANDWIDTH_HZ], [LF_BANDWIDTH_HZ], [1.0 / (2.0 * np.pi * DRIFT_TAU_S)]], np.float32
)
_DECAY_RATE = np.float32(-2.0 * np.pi) * _BANDWIDTH_HZ
# Innovations are uniform with unit variance, four times cheaper to draw than normals: the
# oscillators sum many of them, so their output is Gaussian all the same (central limit). The
# white beat-to-beat noise, seen directly in successive differences, stays normal.
_UNIT_UNIFORM = np.float32(np.sqrt(12.0))


@dataclass
class BeatState:
    """Mutable state of the beat generator for ``n`` persons.

    ``next_beat_s`` (float64, shape ``(n,)``) is when each person's next beat fires and
    ``pending_rr_ms`` the interval that ends there; ``stress`` is the autonomic stress state
    (0 to 1) at the last beat; ``osc_re``/``osc_im`` (shape ``(3, n)``) hold the HF, LF and
    drift oscillators, whose real parts have unit variance.
    """

    next_beat_s: np.ndarray
    pending_rr_ms: np.ndarray
    stress: np.ndarray
    osc_re: np.ndarray
    osc_im: np.ndarray

    @classmethod
    def initial(cls, profiles: ProfileArrays, t0_s: float, rng: np.random.Generator) -> BeatState:
        """Stationary start at rest: oscillators drawn from their steady state, beats de-phased."""
        n = profiles.resting_hr_bpm.shape[0]
        z = rng.standard_normal((7, n), dtype=np.float32)
        state = cls(
            next_beat_s=np.zeros(n),
            pending_rr_ms=np.zeros(n, np.float32),
            stress=np.zeros(n, np.float32),
            osc_re=z[0:3],
            osc_im=z[3:6],
        )
        rr = _next_rr(profiles, state, z[6])
        state.pending_rr_ms = rr
        state.next_beat_s = t0_s + rng.uniform(0.0, 1.0, n) * rr / 1000.0
        return state

    def take(self, keep: np.ndarray) -> BeatState:
        """The state of the persons selected by ``keep`` (boolean mask or indices)."""
        return BeatState(*(getattr(self, f.name)[..., keep] for f in fields(self)))

    @staticmethod
    def concat(states: list[BeatState]) -> BeatState:
        """Stack the persons of several states."""
        return BeatState(
            *(
                np.concatenate([getattr(s, f.name) for s in states], axis=-1)
                for f in fields(BeatState)
            )
        )


@dataclass
class BeatBlock:
    """Beats from one call of :func:`generate_beats`: arrays of shape ``(n_iter, n_persons)``.

    ``valid[k, p]`` says whether person ``p`` had a ``k``-th beat in the block; other cells are
    padding. Times in s, intervals in ms, pressures in mmHg, breathing in breaths per minute,
    labels as codes into :data:`heartsim.physiology.stress.LABELS`.
    """

    valid: np.ndarray
    t_s: np.ndarray
    rr_ms: np.ndarray
    stress_level: np.ndarray
    label: np.ndarray
    systolic_mmhg: np.ndarray
    diastolic_mmhg: np.ndarray
    breathing_rate_bpm: np.ndarray

    @property
    def n_beats(self) -> int:
        """Number of real beats in the block."""
        return int(self.valid.sum())


def breathing_rate_bpm(profiles: ProfileArrays, stress: np.ndarray) -> np.ndarray:
    """Breathing rate (breaths per minute) at stress level ``stress``."""
    return profiles.breathing_rate_bpm + profiles.breathing_reactivity_bpm * stress


def heart_rate_bpm(profiles: ProfileArrays, stress: np.ndarray) -> np.ndarray:
    """Mean heart rate (bpm) the autonomic state ``stress`` drives towards."""
    return profiles.resting_hr_bpm + profiles.hr_reactivity_bpm * stress


def _next_rr(profiles: ProfileArrays, state: BeatState, noise: np.ndarray) -> np.ndarray:
    s = state.stress
    vagal = 1.0 - VAGAL_WITHDRAWAL * s
    re = state.osc_re
    rr = (
        60000.0 / heart_rate_bpm(profiles, s)
        + profiles.rsa_amplitude_ms * vagal * re[_HF]
        + profiles.mayer_amplitude_ms * (1.0 - MAYER_WITHDRAWAL * s) * re[_LF]
        + profiles.drift_sd_ms * re[_DRIFT]
        + profiles.beat_noise_sd_ms * vagal * noise
    )
    # minimum/maximum: several times faster than np.clip on small arrays.
    return np.minimum(np.maximum(rr, np.float32(RR_LIMITS_MS[0])), np.float32(RR_LIMITS_MS[1]))


def generate_beats(
    state: BeatState,
    profiles: ProfileArrays,
    schedule: Schedule,
    t_end_s: float,
    rng: np.random.Generator,
    *,
    capacity: int = 4,
) -> BeatBlock:
    """Produce every beat that fires at or before ``t_end_s``, advancing ``state`` in place.

    The beat loop (:func:`run_beats`) then the bulk derivations (:meth:`RawBeats.finish`), both
    with ``rng``. Parameters as for :func:`run_beats`.
    """
    return run_beats(state, profiles, schedule, t_end_s, rng, capacity=capacity).finish(
        profiles, schedule, rng
    )


def run_beats(
    state: BeatState,
    profiles: ProfileArrays,
    schedule: Schedule,
    t_end_s: float,
    rng: np.random.Generator,
    *,
    capacity: int = 4,
) -> RawBeats:
    """The sequential beat loop: every beat at or before ``t_end_s``, advancing ``state``.

    Parameters
    ----------
    state
        Generator state; updated to just after the last produced beat of each person.
    profiles
        The persons' profiles (same order as ``state``).
    schedule
        The persons' stressors.
    t_end_s
        Simulation time (s) up to which beats are produced.
    rng
        Random generator; the only source of randomness.
    capacity
        Initial number of beat slots per person (grows as needed).
    """
    n = state.stress.shape[0]
    out = _Buffers(capacity, n)
    freq_hz = np.zeros((3, n), np.float32)
    freq_hz[_LF] = MAYER_HZ
    two_pi = np.float32(2.0 * np.pi)
    cursor = schedule.cursor(state.next_beat_s)
    k = 0
    while True:
        fire = state.next_beat_s <= t_end_s
        all_fire = bool(fire.all())
        if not all_fire and not fire.any():
            break
        noise = rng.random((6, n), dtype=np.float32)
        noise -= 0.5
        noise *= _UNIT_UNIFORM
        beat_noise = rng.standard_normal(n, dtype=np.float32)
        t = state.next_beat_s
        pending = state.pending_rr_ms if all_fire else np.where(fire, state.pending_rr_ms, 0.0)
        dt = pending * np.float32(1e-3)
        cursor = schedule.advance(cursor, t)
        target = schedule.target_level[cursor]
        stress = relax(state.stress, target, dt, profiles.onset_tau_s, profiles.recovery_tau_s)
        # Advance HF (at the current breathing frequency), LF and drift exactly over dt.
        freq_hz[_HF] = breathing_rate_bpm(profiles, stress) * np.float32(1.0 / 60.0)
        decay = np.exp(_DECAY_RATE * dt)
        phase = two_pi * freq_hz * dt
        cos, sin = decay * np.cos(phase), decay * np.sin(phase)
        kick = np.sqrt(1.0 - decay * decay)
        re, im = state.osc_re, state.osc_im
        new_re = cos * re - sin * im + kick * noise[0:3]
        new_im = sin * re + cos * im + kick * noise[3:6]
        # Blood pressure needs only these two oscillator values: it is computed in bulk later.
        out.put(k, t, state.pending_rr_ms, stress, new_re[_LF], new_im[_HF], cursor)
        k += 1

        if all_fire:  # the common case in batch runs: no masking needed
            state.stress, state.osc_re, state.osc_im = stress, new_re, new_im
            state.pending_rr_ms = _next_rr(profiles, state, beat_noise)
            state.next_beat_s = t + state.pending_rr_ms * 1e-3
            continue
        state.stress = np.where(fire, stress, state.stress)
        state.osc_re = np.where(fire, new_re, re)
        state.osc_im = np.where(fire, new_im, im)
        rr = _next_rr(profiles, state, beat_noise)
        state.pending_rr_ms = np.where(fire, rr, state.pending_rr_ms)
        state.next_beat_s = np.where(fire, t + rr * 1e-3, t)
    return out.raw(k, t_end_s)


@dataclass
class RawBeats:
    """What the beat loop records, arrays of shape ``(n_iter, n_persons)``: beat times (s),
    intervals (ms), stress, the LF oscillator and the HF oscillator's imaginary part (for blood
    pressure) and the schedule step (for labels). :meth:`finish` derives the rest in bulk."""

    t_s: np.ndarray
    rr_ms: np.ndarray
    stress: np.ndarray
    lf: np.ndarray
    hf_im: np.ndarray
    cursor: np.ndarray
    t_end_s: float

    def finish(
        self, profiles: ProfileArrays, schedule: Schedule, rng: np.random.Generator
    ) -> BeatBlock:
        """Validity, labels, breathing and blood pressure, vectorised over the whole block.

        A person who did not fire in row ``k`` had its pending beat, later than ``t_end_s``,
        recorded there: that is what marks the cell as padding.
        """
        stress = self.stress
        noise = rng.random((2, *stress.shape), dtype=np.float32)
        noise -= 0.5
        noise *= _UNIT_UNIFORM
        # Stress raises pressure; Mayer waves (LF) and breathing (HF) modulate it.
        sbp_rise = profiles.sbp_reactivity_mmhg * stress
        return BeatBlock(
            valid=self.t_s <= self.t_end_s,
            t_s=self.t_s,
            rr_ms=self.rr_ms,
            stress_level=stress,
            label=label_codes(stress, schedule.active[self.cursor]),
            systolic_mmhg=profiles.systolic_mmhg
            + sbp_rise
            + 3.0 * self.lf
            + 1.5 * self.hf_im
            + noise[0],
            diastolic_mmhg=profiles.diastolic_mmhg
            + DIASTOLIC_SHARE * sbp_rise
            + 2.0 * self.lf
            + 0.7 * noise[1],
            breathing_rate_bpm=breathing_rate_bpm(profiles, stress),
        )


class _Buffers:
    """Growable ``(k, n)`` output rows in compact dtypes (memory per beat stays low)."""

    _DTYPES = (np.float64, np.float32, np.float32, np.float32, np.float32, np.int32)

    def __init__(self, capacity: int, n: int) -> None:
        self.arrays = [np.empty((max(capacity, 1), n), dt) for dt in self._DTYPES]

    def put(self, k: int, *values: np.ndarray) -> None:
        if k >= self.arrays[0].shape[0]:
            self.arrays = [np.concatenate([a, np.empty_like(a)]) for a in self.arrays]
        for array, value in zip(self.arrays, values, strict=True):
            array[k] = value

    def raw(self, k: int, t_end_s: float) -> RawBeats:
        return RawBeats(*(a[:k] for a in self.arrays), t_end_s=t_end_s)
