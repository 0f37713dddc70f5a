"""Heart-rate-variability (HRV) measures shared by the engine, the ML features and the tests.

All functions are pure: they take RR (NN) intervals in milliseconds and return plain floats
in the units named by each key's suffix (``_ms``, ``_ms2``, ``_pct``, ``_bpm``, ``_hz``).

Definitions follow the Task Force of the ESC/NASPE (1996) and are chosen to agree with
NeuroKit2 (``neurokit2.hrv_time`` / ``neurokit2.hrv_frequency``, checked against 0.2.13):

* ``sdnn_ms`` uses the sample standard deviation (``ddof=1``).
* ``rmssd_ms`` is the root of the mean of the squared successive differences (N-1 terms).
* ``pnn50_pct`` counts successive differences strictly greater than 50 ms and divides by the
  number of *intervals* N (the Task Force wording "NN50 divided by the total number of NN
  intervals"), not by the N-1 differences as some tools (e.g. Kubios) do.
* ``mean_hr_bpm`` is ``60000 / mean_nn_ms``: beats per minute of elapsed time, i.e. the
  time-weighted mean of the instantaneous heart rate (what NeuroKit2's ``ECG_Rate_Mean``
  estimates from its interpolated rate signal). NeuroKit2's ``hrv_time`` has no mean HR.

The frequency domain uses the classic resample-then-Welch method; see :func:`hrv_frequency`.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.interpolate import CubicSpline
from scipy.signal import welch

__all__ = [
    "HF_BAND_HZ",
    "LF_BAND_HZ",
    "MAX_RR_MS",
    "MIN_FREQ_DURATION_S",
    "MIN_INTERVALS",
    "hrv_frequency",
    "hrv_summary",
    "hrv_time",
    "rmssd_ms",
]

#: Fewest RR intervals accepted by any measure (two successive differences).
MIN_INTERVALS: Final[int] = 3
#: Largest plausible RR interval in ms (20 bpm); intervals must lie in (0, MAX_RR_MS].
MAX_RR_MS: Final[float] = 3000.0
#: Shortest recording, in seconds, accepted by the frequency-domain measures.
MIN_FREQ_DURATION_S: Final[float] = 60.0
#: Low-frequency band in Hz, half-open [low, high).
LF_BAND_HZ: Final[tuple[float, float]] = (0.04, 0.15)
#: High-frequency band in Hz, half-open [low, high).
HF_BAND_HZ: Final[tuple[float, float]] = (0.15, 0.4)

# Welch segment length bounds, in seconds. The lower bound holds two full cycles of the
# LF lower edge (2 / 0.04 Hz = 50 s); the upper bound is the customary 256 s (Kubios
# default, 1024 samples at 4 Hz, ten cycles of 0.04 Hz, bin spacing 1/256 Hz).
_MIN_SEGMENT_S: Final[float] = 2.0 / LF_BAND_HZ[0]
_MAX_SEGMENT_S: Final[float] = 256.0
# The FFT is zero-padded to at least this many seconds so the frequency grid (used for the
# peak frequencies) is never coarser than 1/256 Hz, whatever the segment length.
_FFT_GRID_S: Final[float] = 256.0


def _as_rr_array(rr_ms: npt.ArrayLike, *, allow_batch: bool = False) -> np.ndarray:
    """Validate RR intervals and return them as a float64 array.

    Parameters
    ----------
    rr_ms : array_like
        RR intervals in milliseconds. One-dimensional unless ``allow_batch`` is true, in
        which case the last axis holds the intervals of each series.
    allow_batch : bool, optional
        Accept arrays with more than one dimension.

    Returns
    -------
    numpy.ndarray
        The intervals as ``float64``, in ms.

    Raises
    ------
    ValueError
        If ``rr_ms`` is not numeric, has the wrong shape, holds fewer than
        :data:`MIN_INTERVALS` intervals, holds non-finite values, or holds values outside
        (0, :data:`MAX_RR_MS`] ms.
    """
    try:
        rr = np.asarray(rr_ms, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"rr_ms must be numeric RR intervals in ms: {err}") from err
    if rr.ndim == 0 or (rr.ndim > 1 and not allow_batch):
        want = "at least one-dimensional" if allow_batch else "one-dimensional"
        raise ValueError(f"rr_ms must be {want}, got an array of shape {rr.shape}")
    n = rr.shape[-1]
    if n < MIN_INTERVALS:
        raise ValueError(f"rr_ms must contain at least {MIN_INTERVALS} RR intervals, got {n}")
    finite = np.isfinite(rr)
    if not finite.all():
        bad = int(rr.size - np.count_nonzero(finite))
        raise ValueError(f"rr_ms must be finite, got {bad} NaN or infinite value(s)")
    out_of_range = (rr <= 0.0) | (rr > MAX_RR_MS)
    if out_of_range.any():
        raise ValueError(
            f"rr_ms values must lie in the range (0, {MAX_RR_MS:g}] ms, got "
            f"{int(np.count_nonzero(out_of_range))} value(s) outside it "
            f"(min {rr.min():g} ms, max {rr.max():g} ms)"
        )
    return rr


def rmssd_ms(rr_ms: npt.ArrayLike) -> float | np.ndarray:
    """Root mean square of successive RR differences.

    Vectorised over leading axes, so a batch of equal-length series can be processed in one
    call (e.g. windows for ML features).

    Parameters
    ----------
    rr_ms : array_like, shape (..., n)
        RR intervals in ms; the last axis holds one series of ``n >= 3`` intervals.

    Returns
    -------
    float or numpy.ndarray
        RMSSD in ms: ``sqrt(mean(diff(rr_ms) ** 2))`` over the ``n - 1`` differences. A
        float for one-dimensional input, otherwise an array of shape ``(...)``.

    Raises
    ------
    ValueError
        For invalid ``rr_ms`` (see :func:`hrv_time`).
    """
    rr = _as_rr_array(rr_ms, allow_batch=True)
    out = np.sqrt(np.mean(np.diff(rr, axis=-1) ** 2, axis=-1))
    return float(out) if rr.ndim == 1 else out


def hrv_time(rr_ms: npt.ArrayLike) -> dict[str, float]:
    """Time-domain HRV measures.

    Parameters
    ----------
    rr_ms : array_like, shape (n,)
        Successive RR (NN) intervals in ms, ``n >= 3``, each in (0, 3000] ms.

    Returns
    -------
    dict[str, float]
        ``mean_nn_ms``
            Mean RR interval, ms.
        ``sdnn_ms``
            Sample standard deviation of the RR intervals (``ddof=1``), ms.
        ``rmssd_ms``
            Root mean square of successive differences, ms.
        ``pnn50_pct``
            Percentage of successive differences with ``|diff| > 50 ms``, divided by the
            number of intervals ``n`` (NeuroKit2 / Task Force convention), %.
        ``mean_hr_bpm``
            ``60000 / mean_nn_ms``: beats per minute of elapsed time, bpm.

    Raises
    ------
    ValueError
        If ``rr_ms`` is not one-dimensional, has fewer than 3 intervals, contains NaN or
        infinite values, or contains values outside (0, 3000] ms.
    """
    rr = _as_rr_array(rr_ms)
    diffs = np.diff(rr)
    mean_nn = float(np.mean(rr))
    nn50 = int(np.count_nonzero(np.abs(diffs) > 50.0))
    return {
        "mean_nn_ms": mean_nn,
        "sdnn_ms": float(np.std(rr, ddof=1)),
        "rmssd_ms": float(np.sqrt(np.mean(diffs**2))),
        "pnn50_pct": 100.0 * nn50 / rr.size,
        "mean_hr_bpm": 60_000.0 / mean_nn,
    }


def _welch_layout(n_samples: int, fs: float) -> tuple[int, int, int]:
    """Choose Welch segment length, overlap and FFT length for ``n_samples`` at ``fs`` Hz.

    The segment is half the record, clipped to [50 s, 256 s] and never longer than the
    record. The overlap is the smallest one of at least 50 % whose segments tile the whole
    record, so no tail of the data is silently dropped.

    Returns
    -------
    tuple of int
        ``(nperseg, noverlap, nfft)`` in samples.
    """
    seg_s = min(max(n_samples / fs / 2.0, _MIN_SEGMENT_S), _MAX_SEGMENT_S)
    nperseg = min(round(seg_s * fs), n_samples)
    max_step = nperseg - nperseg // 2  # 50 % overlap
    if n_samples > nperseg:
        n_segments = math.ceil((n_samples - nperseg) / max_step) + 1
        step = (n_samples - nperseg) // (n_segments - 1)
    else:
        step = nperseg
    nfft = max(nperseg, math.ceil(_FFT_GRID_S * fs))
    return nperseg, nperseg - step, nfft


def hrv_frequency(rr_ms: npt.ArrayLike, resample_hz: float = 4.0) -> dict[str, float]:
    """Frequency-domain HRV measures from a Welch spectrum of the resampled RR series.

    Method (Task Force 1996, as in Kubios and NeuroKit2):

    1. Each interval is placed at the time of the beat that ends it
       (``t = cumsum(rr_ms) / 1000`` s) and the tachogram is resampled evenly at
       ``resample_hz`` with a cubic spline over ``[t[0], t[-1]]``.
    2. The mean is removed and Welch's method is applied (Hann window, linear detrend of
       each segment, one-sided density in ms²/Hz). The segment is half the record,
       clipped to 50–256 s: at least 50 s so each segment holds two full cycles of the
       0.04 Hz LF edge (a Hann main lobe of ±2/50 s = ±0.04 Hz), at most the customary
       256 s (ten cycles, 1/256 Hz bins); half the record averages three or more
       overlapping segments instead of one noisy periodogram on a 5-min record. Overlap is
       ≥ 50 % and chosen so the segments cover the whole record. The FFT is zero-padded
       to a 1/256 Hz grid.
    3. Band power is the PSD integrated over each half-open band (rectangle rule on the
       grid, so adjacent bands share no bin and sum to the variance they contain).

    Parameters
    ----------
    rr_ms : array_like, shape (n,)
        Successive RR (NN) intervals in ms, each in (0, 3000] ms, together spanning at
        least 60 s (``sum(rr_ms) >= 60000``).
    resample_hz : float, optional
        Even resampling rate of the tachogram in Hz (default 4 Hz). Must exceed 0.8 Hz
        so the HF band lies below the Nyquist frequency.

    Returns
    -------
    dict[str, float]
        ``lf_ms2``
            Power in 0.04–0.15 Hz, ms².
        ``hf_ms2``
            Power in 0.15–0.4 Hz, ms².
        ``lf_hf``
            ``lf_ms2 / hf_ms2`` (dimensionless; ``inf`` if ``hf_ms2`` is 0, ``nan`` if both
            are).
        ``lf_peak_hz``
            Frequency of the largest PSD value within the LF band, Hz.
        ``hf_peak_hz``
            Frequency of the largest PSD value within the HF band, Hz.

    Raises
    ------
    ValueError
        For invalid ``rr_ms`` (see :func:`hrv_time`), if ``rr_ms`` spans less than 60 s,
        or if ``resample_hz`` is not a finite number above 0.8 Hz.
    """
    rr = _as_rr_array(rr_ms)
    min_fs = 2.0 * HF_BAND_HZ[1]
    try:
        fs = float(resample_hz)
    except (TypeError, ValueError):
        fs = math.nan
    if not (math.isfinite(fs) and fs > min_fs):
        raise ValueError(
            f"resample_hz must be a finite number above {min_fs:g} Hz "
            f"(twice the HF upper edge), got {resample_hz!r}"
        )
    beat_times_s = np.cumsum(rr) / 1000.0
    duration_s = float(beat_times_s[-1])
    if duration_s < MIN_FREQ_DURATION_S:
        raise ValueError(
            f"rr_ms must span at least {MIN_FREQ_DURATION_S:g} s for frequency-domain HRV, "
            f"got {duration_s:.1f} s"
        )

    n_grid = math.floor((beat_times_s[-1] - beat_times_s[0]) * fs) + 1
    grid_s = beat_times_s[0] + np.arange(n_grid) / fs
    tachogram = CubicSpline(beat_times_s, rr)(grid_s)
    tachogram -= tachogram.mean()

    nperseg, noverlap, nfft = _welch_layout(tachogram.size, fs)
    freqs, psd = welch(
        tachogram,
        fs=fs,
        window="hann",
        nperseg=nperseg,
        noverlap=noverlap,
        nfft=nfft,
        detrend="linear",
        scaling="density",
    )
    df = float(freqs[1] - freqs[0])

    out: dict[str, float] = {}
    for name, (lo, hi) in (("lf", LF_BAND_HZ), ("hf", HF_BAND_HZ)):
        in_band = (freqs >= lo) & (freqs < hi)
        band_psd = psd[in_band]
        out[f"{name}_ms2"] = float(np.sum(band_psd) * df)
        out[f"{name}_peak_hz"] = float(freqs[in_band][np.argmax(band_psd)])
    lf, hf = out["lf_ms2"], out["hf_ms2"]
    if hf > 0.0:
        out["lf_hf"] = lf / hf
    else:
        out["lf_hf"] = math.inf if lf > 0.0 else math.nan
    return {key: out[key] for key in ("lf_ms2", "hf_ms2", "lf_hf", "lf_peak_hz", "hf_peak_hz")}


def hrv_summary(rr_ms: npt.ArrayLike, resample_hz: float = 4.0) -> dict[str, float]:
    """Time- and frequency-domain HRV measures in one dictionary.

    Parameters
    ----------
    rr_ms : array_like, shape (n,)
        Successive RR (NN) intervals in ms, each in (0, 3000] ms, spanning at least 60 s.
    resample_hz : float, optional
        Resampling rate for the frequency domain, Hz (see :func:`hrv_frequency`).

    Returns
    -------
    dict[str, float]
        The keys of :func:`hrv_time` followed by those of :func:`hrv_frequency`.

    Raises
    ------
    ValueError
        As :func:`hrv_time` and :func:`hrv_frequency`.
    """
    return {**hrv_time(rr_ms), **hrv_frequency(rr_ms, resample_hz=resample_hz)}
