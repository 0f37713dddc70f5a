"""Sliding-window summaries of beats at tick times: what one heartbeat message reports.

One function serves the live engine (recent beats of every person, each tick) and batch
datasets (all beats, all ticks): series of several persons are laid end to end on one sorted
*key* axis (``person_index * KEY_STRIDE_S + t_s``), so a single ``searchsorted`` finds every
window and cumulative sums give every window's totals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Heart rate and blood pressure average the beats of the last 5 s (like a bedside monitor).
RATE_WINDOW_S = 5.0
#: ``variability`` is RMSSD over the beats of the last 30 s (standard ultra-short-term HRV).
RMSSD_WINDOW_S = 30.0
#: Spacing (s) of persons on the key axis: times from -KEY_STRIDE_S/2 to +KEY_STRIDE_S/2 (about
#: 58 days either side of 0) map into one person's stretch.
KEY_STRIDE_S = 1.0e7
_KEY_OFFSET_S = KEY_STRIDE_S / 2


def beat_keys(person_index: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """Keys that sort beats by person, then time."""
    return person_index.astype(np.float64) * KEY_STRIDE_S + (t_s + _KEY_OFFSET_S)


def key_person(keys: np.ndarray) -> np.ndarray:
    """Person index (as float) of each key."""
    return np.floor(keys / KEY_STRIDE_S)


def key_time(keys: np.ndarray) -> np.ndarray:
    """Time (s) of each key."""
    return keys - key_person(keys) * KEY_STRIDE_S - _KEY_OFFSET_S


@dataclass(frozen=True)
class WindowStats:
    """Per-tick summaries, arrays aligned with the requested ticks.

    ``hr_bpm`` (from the mean RR of the last 5 s, or of the last beat if none), ``rmssd_ms``
    (last 30 s; NaN with fewer than two successive intervals), ``systolic_mmhg`` and
    ``diastolic_mmhg`` (means over the last 5 s), ``n_beats`` (beats at or before the tick).
    """

    hr_bpm: np.ndarray
    rmssd_ms: np.ndarray
    systolic_mmhg: np.ndarray
    diastolic_mmhg: np.ndarray
    n_beats: np.ndarray


def window_stats(
    keys: np.ndarray,
    rr_ms: np.ndarray,
    systolic_mmhg: np.ndarray,
    diastolic_mmhg: np.ndarray,
    tick_keys: np.ndarray,
) -> WindowStats:
    """Summaries of the beats before each tick.

    Parameters
    ----------
    keys
        Sorted beat keys from :func:`beat_keys` (several persons' series end to end).
    rr_ms, systolic_mmhg, diastolic_mmhg
        Per-beat values aligned with ``keys`` (ms, mmHg).
    tick_keys
        Keys of the ticks (same person offset as the beats they summarise).
    """
    n = keys.shape[0]
    rr = rr_ms.astype(np.float64)
    person = key_person(keys)
    # Successive differences count only within one person's series.
    same = np.zeros(n, bool)
    same[1:] = person[1:] == person[:-1]
    sq = np.zeros(n)
    sq[1:] = np.diff(rr) ** 2
    sq[~same] = 0.0

    def cum(x: np.ndarray) -> np.ndarray:
        out = np.zeros(n + 1)
        np.cumsum(x, out=out[1:])
        return out

    c_rr, c_sq, c_pair = cum(rr), cum(sq), cum(same.astype(np.float64))
    c_sbp, c_dbp = cum(systolic_mmhg.astype(np.float64)), cum(diastolic_mmhg.astype(np.float64))

    tick_person_start = key_person(tick_keys) * KEY_STRIDE_S
    hi = np.searchsorted(keys, tick_keys, side="right")
    first = np.searchsorted(keys, tick_person_start, side="left")
    lo5 = np.maximum(np.searchsorted(keys, tick_keys - RATE_WINDOW_S, side="right"), first)
    lo30 = np.maximum(np.searchsorted(keys, tick_keys - RMSSD_WINDOW_S, side="right"), first)
    # With no beat in the last 5 s, fall back to the last beat (if the person has any).
    lo5 = np.where((hi - lo5 == 0) & (hi > first), hi - 1, lo5)
    count5 = hi - lo5

    with np.errstate(invalid="ignore", divide="ignore"):
        mean_rr = (c_rr[hi] - c_rr[lo5]) / count5
        # Pairs inside the window: beats lo30+1 .. hi-1 paired with their predecessor.
        start = np.minimum(lo30 + 1, hi)
        pairs = c_pair[hi] - c_pair[start]
        rmssd = np.where(pairs >= 1, np.sqrt((c_sq[hi] - c_sq[start]) / pairs), np.nan)
        return WindowStats(
            hr_bpm=60000.0 / mean_rr,
            rmssd_ms=rmssd,
            systolic_mmhg=(c_sbp[hi] - c_sbp[lo5]) / count5,
            diastolic_mmhg=(c_dbp[hi] - c_dbp[lo5]) / count5,
            n_beats=hi - first,
        )
