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
drift (time constant 60 s) and ``e`` white beat-to-beat noise. Breathing rises with stress and
fluctuates slowly around that rate (SD 0.7 breaths/min), so it tracks stress without being a
function of it. Systolic and diastolic pressure follow the same state: a stress rise plus Mayer
waves (Traube-Hering-Mayer) and breathing modulation.

Each beat depends on the one before (its interval sets how far the oscillators and the stress
state move), so the beat loop is sequential per person. It is compiled with Numba: one pass per
person writes every beat straight into person-major output columns, live (a fraction of a beat
per tick) and in batch (hours per call) alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numba
import numpy as np

from heartsim.physiology.profiles import ProfileArrays
from heartsim.physiology.stress import Schedule, label_codes

MAYER_HZ = 0.1
#: Bandwidths (Hz, half width at half maximum of the spectral peak) of the HF (RSA) and LF
#: (Mayer) oscillators; the drift is the same process at zero frequency.
HF_BANDWIDTH_HZ = 0.006
LF_BANDWIDTH_HZ = 0.01
DRIFT_TAU_S = 60.0
VAGAL_WITHDRAWAL = 0.8
MAYER_WITHDRAWAL = 0.45
DIASTOLIC_SHARE = 0.6
#: Standard deviation (breaths per minute) of the slow breathing-rate fluctuation around the
#: stress-driven rate (time constant DRIFT_TAU_S): breathing tracks stress without revealing it.
BREATHING_SD_BPM = 0.7
MIN_BREATHING_BPM = 4.0
RR_LIMITS_MS = (250.0, 2000.0)

# The three oscillators, rows of BeatState.osc_re / osc_im.
_HF, _LF, _DRIFT = 0, 1, 2
_HF_DECAY_PER_S = -2.0 * math.pi * HF_BANDWIDTH_HZ
_LF_DECAY_PER_S = -2.0 * math.pi * LF_BANDWIDTH_HZ
_DRIFT_DECAY_PER_S = -1.0 / DRIFT_TAU_S
_LF_TURN_PER_S = 2.0 * math.pi * MAYER_HZ
# Oscillator and pressure innovations are uniform with unit variance (cheaper than normals):
# the oscillators sum many of them, so their output is Gaussian all the same (central limit).
# The white beat-to-beat noise, seen directly in successive differences, stays normal.
_UNIT_UNIFORM = math.sqrt(12.0)
# The profile fields the beat loop reads, as rows of one array (see _stacked_profiles). Numba's
# on-disk cache only notices changes to this file: everything the loop compiles lives here.
_PROFILE_ROWS = (
    "resting_hr_bpm",
    "rsa_amplitude_ms",
    "mayer_amplitude_ms",
    "drift_sd_ms",
    "beat_noise_sd_ms",
    "breathing_rate_bpm",
    "systolic_mmhg",
    "diastolic_mmhg",
    "hr_reactivity_bpm",
    "sbp_reactivity_mmhg",
    "breathing_reactivity_bpm",
    "onset_tau_s",
    "recovery_tau_s",
)
(
    _REST_HR,
    _RSA,
    _MAYER,
    _DRIFT_SD,
    _NOISE_SD,
    _BREATHING,
    _SBP,
    _DBP,
    _HR_GAIN,
    _SBP_GAIN,
    _BREATHING_GAIN,
    _ONSET_TAU,
    _RECOVERY_TAU,
) = range(len(_PROFILE_ROWS))
# What the beat loop writes per beat; labels are derived from stress and `active` afterwards.
_OUTPUTS = (
    ("t_s", np.float64),
    ("rr_ms", np.float32),
    ("stress_level", np.float32),
    ("active", np.bool_),
    ("systolic_mmhg", np.float32),
    ("diastolic_mmhg", np.float32),
    ("breathing_rate_bpm", np.float32),
)


@numba.vectorize(["float64(" + ", ".join(["float64"] * 11) + ")"], cache=True)
def interval_ms(
    resting_hr_bpm, hr_gain_bpm, rsa_ms, mayer_ms, drift_ms, noise_ms, stress, hf, lf, drift, e
):  # pragma: no cover - compiled
    """The next RR interval (ms) from the stress state, the oscillators' real parts and a unit
    normal ``e``; clipped to :data:`RR_LIMITS_MS`. A ufunc, also called inside the beat loop."""
    vagal = 1.0 - VAGAL_WITHDRAWAL * stress
    rr = (
        60000.0 / (resting_hr_bpm + hr_gain_bpm * stress)
        + rsa_ms * vagal * hf
        + mayer_ms * (1.0 - MAYER_WITHDRAWAL * stress) * lf
        + drift_ms * drift
        + noise_ms * vagal * e
    )
    return min(max(rr, RR_LIMITS_MS[0]), RR_LIMITS_MS[1])


@numba.vectorize(["float64(float64, float64, float64, float64)"], cache=True)
def breathing_rate_bpm(resting_bpm, gain_bpm, stress, fluctuation):  # pragma: no cover - compiled
    """Breathing rate (breaths per minute): the resting rate, raised by stress, plus a slow
    fluctuation (``fluctuation`` has unit variance; scaled by :data:`BREATHING_SD_BPM`). A
    ufunc, also called inside the beat loop."""
    rate = resting_bpm + gain_bpm * stress + BREATHING_SD_BPM * fluctuation
    return max(rate, MIN_BREATHING_BPM)


@dataclass
class BeatState:
    """Mutable state of the beat generator for ``n`` persons, float64 arrays.

    ``next_beat_s`` (shape ``(n,)``) is when each person's next beat fires and
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
        z = rng.standard_normal((7, n))
        p = profiles
        rr = interval_ms(
            p.resting_hr_bpm,
            p.hr_reactivity_bpm,
            p.rsa_amplitude_ms,
            p.mayer_amplitude_ms,
            p.drift_sd_ms,
            p.beat_noise_sd_ms,
            np.zeros(n),
            z[_HF],
            z[_LF],
            z[_DRIFT],
            z[6],
        )
        return cls(
            next_beat_s=t0_s + rng.uniform(0.0, 1.0, n) * rr / 1000.0,
            pending_rr_ms=rr,
            stress=np.zeros(n),
            osc_re=np.ascontiguousarray(z[0:3]),
            osc_im=np.ascontiguousarray(z[3:6]),
        )

    def breathing_rate_bpm(self, profiles: ProfileArrays) -> np.ndarray:
        """Each person's breathing rate (breaths per minute) at their last beat."""
        return breathing_rate_bpm(
            profiles.breathing_rate_bpm,
            profiles.breathing_reactivity_bpm,
            self.stress,
            self.osc_im[_DRIFT],
        )

    def take(self, keep: np.ndarray) -> BeatState:
        """The state of the persons selected by ``keep`` (boolean mask or indices)."""
        return BeatState(
            *(np.ascontiguousarray(getattr(self, f.name)[..., keep]) for f in fields(self))
        )

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
    """Beats from one call of :func:`generate_beats`, person-major: person 0's beats in time
    order, then person 1's, ... ``counts[p]`` is how many beats person ``p`` (of the persons
    simulated) has. Times in s, intervals in ms, pressures in mmHg, breathing in breaths per
    minute, labels as codes into :data:`heartsim.physiology.stress.LABELS`.
    """

    counts: np.ndarray
    t_s: np.ndarray
    rr_ms: np.ndarray
    stress_level: np.ndarray
    label: np.ndarray
    systolic_mmhg: np.ndarray
    diastolic_mmhg: np.ndarray
    breathing_rate_bpm: np.ndarray

    @property
    def n_beats(self) -> int:
        """Number of beats in the block."""
        return self.t_s.shape[0]

    def person_index(self, dtype: type = np.int32) -> np.ndarray:
        """Each beat's person, as an index into the simulated persons."""
        return np.repeat(np.arange(self.counts.shape[0], dtype=dtype), self.counts)

    @staticmethod
    def concat(blocks: list[BeatBlock]) -> BeatBlock:
        """The blocks' persons one after another (one block is returned as is)."""
        if len(blocks) == 1:
            return blocks[0]
        return BeatBlock(
            *(np.concatenate([getattr(b, f.name) for b in blocks]) for f in fields(BeatBlock))
        )

    def split(self, values: np.ndarray) -> list[np.ndarray]:
        """``values`` (one per beat) cut into one array per person."""
        return np.split(values, np.cumsum(self.counts)[:-1])


def generate_beats(
    state: BeatState,
    profiles: ProfileArrays,
    schedule: Schedule,
    t_end_s: float,
    rng: np.random.Generator,
    *,
    persons: slice = slice(None),
    capacity: int | None = None,
) -> BeatBlock:
    """Produce every beat that fires at or before ``t_end_s``, advancing ``state`` in place.

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
        Random generator; the only source of randomness (drawn person after person).
    persons
        Only these persons (a contiguous range) are advanced; the block holds their beats.
    capacity
        Initial room for beats (default: enough for the fastest mean heart rate the profiles
        allow); the loop pauses and resumes with more room when it runs out.
    """
    first, stop, _ = persons.indices(state.stress.shape[0])
    t_end_s = float(t_end_s)
    params = np.stack([getattr(profiles, name) for name in _PROFILE_ROWS])
    if capacity is None:
        ahead_s = np.maximum(t_end_s - state.next_beat_s[first:stop], 0.0)
        fastest_hz = (params[_REST_HR, first:stop] + params[_HR_GAIN, first:stop]) / 60.0
        capacity = int(1.05 * float(ahead_s @ fastest_hz)) + 2 * (stop - first) + 16
    columns = [np.empty(capacity, dtype) for _, dtype in _OUTPUTS]
    counts = np.zeros(stop - first, np.int64)
    person, filled = first, 0
    while True:
        person, filled = _beat_loop(
            rng, t_end_s, person, stop, filled, first, params, state.next_beat_s,
            state.pending_rr_ms, state.stress, state.osc_re, state.osc_im, schedule.change_s,
            schedule.target_level, schedule.active, schedule.width, counts, *columns,
        )  # fmt: skip
        if person == stop:
            break
        columns = [np.concatenate([c, np.empty(c.shape[0] // 2 + 16, c.dtype)]) for c in columns]
    t_s, rr_ms, stress, active, systolic, diastolic, breathing = (c[:filled] for c in columns)
    labels = label_codes(stress, active)
    return BeatBlock(counts, t_s, rr_ms, stress, labels, systolic, diastolic, breathing)


@numba.njit(cache=True, nogil=True)
def _relax(stress, target, dt_s, onset_tau_s, recovery_tau_s):  # pragma: no cover - compiled
    """Advance the stress state by ``dt_s`` s towards ``target`` (exact first-order solution):
    with the onset time constant (s) while rising, the recovery one while falling."""
    tau = onset_tau_s if target > stress else recovery_tau_s
    return target + (stress - target) * math.exp(-dt_s / tau)


@numba.njit(cache=True, nogil=True)
def _unit_uniform(rng: np.random.Generator) -> float:  # pragma: no cover - compiled
    return (rng.random() - 0.5) * _UNIT_UNIFORM


@numba.njit(cache=True, nogil=True)
def _rotate(re, im, decay_rate, turn, dt, rng):  # pragma: no cover - compiled
    """Advance one complex OU oscillator (unit stationary variance) exactly over ``dt`` s."""
    decay = math.exp(decay_rate * dt)
    kick = math.sqrt(1.0 - decay * decay)
    if turn == 0.0:
        return decay * re + kick * _unit_uniform(rng), decay * im + kick * _unit_uniform(rng)
    cos, sin = decay * math.cos(turn * dt), decay * math.sin(turn * dt)
    new_re = cos * re - sin * im + kick * _unit_uniform(rng)
    new_im = sin * re + cos * im + kick * _unit_uniform(rng)
    return new_re, new_im


@numba.njit(cache=True, nogil=True)
def _beat_loop(
    rng, t_end_s, person, stop, filled, first, params, next_beat_s, pending_rr_ms, stress,
    osc_re, osc_im, change_s, target_level, active, width, counts,
    out_t, out_rr, out_stress, out_active, out_sbp, out_dbp, out_breathing,
):  # fmt: skip  # pragma: no cover - compiled
    """Persons ``person`` to ``stop - 1``, each up to ``t_end_s``, written from row ``filled``.

    Returns ``(person, filled)``: ``person == stop`` when done, else the outputs were full and
    the call can be repeated with larger ones (the state is saved after every person's run).
    """
    capacity = out_t.shape[0]
    while person < stop:
        p = person
        t, rr, s = next_beat_s[p], pending_rr_ms[p], stress[p]
        hf_re, lf_re, dr_re = osc_re[_HF, p], osc_re[_LF, p], osc_re[_DRIFT, p]
        hf_im, lf_im, dr_im = osc_im[_HF, p], osc_im[_LF, p], osc_im[_DRIFT, p]
        step = p * width
        while t <= t_end_s and filled < capacity:
            dt = rr * 1e-3
            while t >= change_s[step + 1]:
                step += 1
            target = float(target_level[step])
            s = _relax(s, target, dt, params[_ONSET_TAU, p], params[_RECOVERY_TAU, p])
            # The drift's two parts are independent: the real one moves the heart period, the
            # imaginary one the breathing rate (whose frequency the HF oscillator follows).
            dr_re, dr_im = _rotate(dr_re, dr_im, _DRIFT_DECAY_PER_S, 0.0, dt, rng)
            breathing = breathing_rate_bpm(
                float(params[_BREATHING, p]), float(params[_BREATHING_GAIN, p]), s, dr_im
            )
            turn_hf = 2.0 * math.pi * breathing / 60.0
            hf_re, hf_im = _rotate(hf_re, hf_im, _HF_DECAY_PER_S, turn_hf, dt, rng)
            lf_re, lf_im = _rotate(lf_re, lf_im, _LF_DECAY_PER_S, _LF_TURN_PER_S, dt, rng)
            # Stress raises pressure; Mayer waves (LF) and breathing (HF) modulate it.
            sbp_rise = params[_SBP_GAIN, p] * s
            out_t[filled] = t
            out_rr[filled] = rr
            out_stress[filled] = s
            out_active[filled] = active[step]
            out_sbp[filled] = (
                params[_SBP, p] + sbp_rise + 3.0 * lf_re + 1.5 * hf_im + _unit_uniform(rng)
            )
            out_dbp[filled] = (
                params[_DBP, p]
                + DIASTOLIC_SHARE * sbp_rise
                + 2.0 * lf_re
                + 0.7 * _unit_uniform(rng)
            )
            out_breathing[filled] = breathing
            filled += 1
            counts[p - first] += 1
            rr = interval_ms(
                float(params[_REST_HR, p]), float(params[_HR_GAIN, p]), float(params[_RSA, p]),
                float(params[_MAYER, p]), float(params[_DRIFT_SD, p]), float(params[_NOISE_SD, p]),
                s, hf_re, lf_re, dr_re, rng.standard_normal(),
            )  # fmt: skip
            t += rr * 1e-3
        next_beat_s[p], pending_rr_ms[p], stress[p] = t, rr, s
        osc_re[_HF, p], osc_re[_LF, p], osc_re[_DRIFT, p] = hf_re, lf_re, dr_re
        osc_im[_HF, p], osc_im[_LF, p], osc_im[_DRIFT, p] = hf_im, lf_im, dr_im
        if t <= t_end_s:
            return person, filled
        person += 1
    return person, filled
