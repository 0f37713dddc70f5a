"""Tests for heartsim.hrv, using NeuroKit2 as an independent oracle.

RR series are synthesised with a seeded generator: a mean interval, a respiratory sinus
arrhythmia (RSA) sinusoid in the HF band, a Mayer-wave sinusoid in the LF band and white
noise, each sinusoid evaluated at the beat's own onset time.

NeuroKit2 is fed the exact intervals as ``{"RRI": rr_ms, "RRI_Time": beat_times_s}``
rather than via ``nk.intervals_to_peaks``, which rounds beats to whole samples and would
add up to ±0.5 ms of quantisation noise to every interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import neurokit2 as nk
import numpy as np
import pytest

from heartsim.hrv import hrv_frequency, hrv_summary, hrv_time, rmssd_ms

TIME_RTOL = 0.01  # time domain vs NeuroKit2
FREQ_RTOL = 0.15  # LF, HF and LF/HF vs NeuroKit2
PEAK_ATOL_HZ = 0.005  # just over one 1/256 Hz bin
NK_SAMPLING_RATE = 1000


@dataclass(frozen=True)
class RRSpec:
    """Parameters of a synthetic RR series (ms, Hz, s)."""

    seed: int
    mean_ms: float = 850.0
    hf_amp_ms: float = 40.0
    hf_hz: float = 0.25
    lf_amp_ms: float = 30.0
    lf_hz: float = 0.1
    noise_ms: float = 15.0
    duration_s: float = 300.0


def synth_rr(spec: RRSpec) -> np.ndarray:
    """Generate RR intervals in ms covering ``spec.duration_s`` seconds."""
    rng = np.random.default_rng(spec.seed)
    hf_phase, lf_phase = rng.uniform(0.0, 2.0 * np.pi, size=2)
    rr: list[float] = []
    t_s = 0.0
    while t_s < spec.duration_s:
        interval = (
            spec.mean_ms
            + spec.hf_amp_ms * np.sin(2.0 * np.pi * spec.hf_hz * t_s + hf_phase)
            + spec.lf_amp_ms * np.sin(2.0 * np.pi * spec.lf_hz * t_s + lf_phase)
            + spec.noise_ms * rng.standard_normal()
        )
        rr.append(interval)
        t_s += interval / 1000.0
    return np.asarray(rr)


def nk_input(rr: np.ndarray) -> dict[str, np.ndarray]:
    """RR intervals in the dict form NeuroKit2 0.2.x accepts (RRI in ms, RRI_Time in s)."""
    return {"RRI": rr, "RRI_Time": np.cumsum(rr) / 1000.0}


def nk_mean_rate_bpm(rr: np.ndarray) -> float:
    """NeuroKit2's mean heart rate: the mean of its interpolated instantaneous rate.

    This is how ``nk.ecg_intervalrelated`` computes ``ECG_Rate_Mean``; ``nk.hrv_time`` has
    no mean-HR output.
    """
    peaks = nk.intervals_to_peaks(rr, sampling_rate=NK_SAMPLING_RATE)
    rate = nk.signal_rate(peaks, sampling_rate=NK_SAMPLING_RATE, desired_length=peaks[-1] + 1)
    return float(np.mean(rate[peaks[0] : peaks[-1] + 1]))


def rel_err(ours: float, ref: float) -> float:
    return abs(ours - ref) / abs(ref) if ref != 0 else abs(ours)


SPECS = {
    "rest": RRSpec(seed=0),
    "rest-seed1": RRSpec(seed=1),
    "slow-hr-athlete": RRSpec(
        seed=2, mean_ms=1050.0, hf_amp_ms=55.0, hf_hz=0.2, lf_amp_ms=35.0, lf_hz=0.09
    ),
    "lf-dominant": RRSpec(seed=3, mean_ms=800.0, hf_amp_ms=20.0, lf_amp_ms=45.0, noise_ms=10.0),
    "stressed": RRSpec(
        seed=4, mean_ms=560.0, hf_amp_ms=9.0, hf_hz=0.33, lf_amp_ms=12.0, lf_hz=0.1, noise_ms=4.0
    ),
}
CASES = pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))


# --------------------------------------------------------------------------- time domain


@CASES
def test_time_domain_matches_neurokit(spec: RRSpec) -> None:
    rr = synth_rr(spec)
    ours = hrv_time(rr)
    ref = nk.hrv_time(nk_input(rr), sampling_rate=NK_SAMPLING_RATE).iloc[0]
    pairs = {
        "mean_nn_ms": ref["HRV_MeanNN"],
        "sdnn_ms": ref["HRV_SDNN"],
        "rmssd_ms": ref["HRV_RMSSD"],
        "pnn50_pct": ref["HRV_pNN50"],
        "mean_hr_bpm": nk_mean_rate_bpm(rr),
    }
    for key, expected in pairs.items():
        assert rel_err(ours[key], float(expected)) <= TIME_RTOL, (key, ours[key], expected)


def test_time_domain_series_are_realistic() -> None:
    """Guard the fixtures: the stressed series really is fast and low in variability."""
    rest, stressed = hrv_time(synth_rr(SPECS["rest"])), hrv_time(synth_rr(SPECS["stressed"]))
    assert 65.0 < rest["mean_hr_bpm"] < 75.0
    assert stressed["mean_hr_bpm"] > 100.0
    assert stressed["rmssd_ms"] < rest["rmssd_ms"] / 2.0
    assert stressed["sdnn_ms"] < rest["sdnn_ms"] / 2.0
    assert rest["pnn50_pct"] > 5.0


def test_time_definitions_match_neurokit_exactly_on_short_series() -> None:
    """On 6 intervals, ddof or pNN50-denominator slips change results by >10 %."""
    rr = np.array([800.0, 900.0, 800.0, 820.0, 760.0, 835.0])
    ours = hrv_time(rr)
    ref = nk.hrv_time(nk_input(rr), sampling_rate=NK_SAMPLING_RATE).iloc[0]
    assert ours["mean_nn_ms"] == pytest.approx(ref["HRV_MeanNN"], rel=1e-12)
    assert ours["sdnn_ms"] == pytest.approx(ref["HRV_SDNN"], rel=1e-12)
    assert ours["rmssd_ms"] == pytest.approx(ref["HRV_RMSSD"], rel=1e-12)
    assert ours["pnn50_pct"] == pytest.approx(ref["HRV_pNN50"], rel=1e-12)


def test_time_domain_hand_computed() -> None:
    rr = [800.0, 900.0, 800.0, 820.0]  # diffs +100, -100, +20
    out = hrv_time(rr)
    assert out["mean_nn_ms"] == pytest.approx(830.0)
    assert out["sdnn_ms"] == pytest.approx(np.sqrt(6800.0 / 3.0))  # ddof=1
    assert out["rmssd_ms"] == pytest.approx(np.sqrt(20400.0 / 3.0))
    assert out["pnn50_pct"] == pytest.approx(50.0)  # 2 of 4 intervals, NeuroKit2 convention
    assert out["mean_hr_bpm"] == pytest.approx(60000.0 / 830.0)
    assert set(out) == {"mean_nn_ms", "sdnn_ms", "rmssd_ms", "pnn50_pct", "mean_hr_bpm"}
    assert all(type(v) is float for v in out.values())


def test_pnn50_threshold_is_strict() -> None:
    assert hrv_time([800.0, 850.0, 800.0])["pnn50_pct"] == 0.0
    assert hrv_time([800.0, 850.5, 800.0])["pnn50_pct"] == pytest.approx(200.0 / 3.0)


def test_rmssd_helper_scalar_and_batch() -> None:
    rr = synth_rr(SPECS["rest"])
    assert rmssd_ms(rr) == pytest.approx(hrv_time(rr)["rmssd_ms"], rel=1e-12)
    assert isinstance(rmssd_ms(rr), float)
    batch = np.stack([rr[:100], rr[100:200], rr[200:300]])
    got = rmssd_ms(batch)
    assert isinstance(got, np.ndarray)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, [hrv_time(row)["rmssd_ms"] for row in batch], rtol=1e-12)


# ---------------------------------------------------------------------- frequency domain


def _nk_frequency(rr: np.ndarray) -> dict[str, float]:
    # normalize=False: NeuroKit2's default divides the PSD by its maximum, so its LF/HF
    # would be unitless fractions rather than ms².
    ref = nk.hrv_frequency(nk_input(rr), sampling_rate=NK_SAMPLING_RATE, normalize=False)
    row = ref.iloc[0]
    return {"lf_ms2": row["HRV_LF"], "hf_ms2": row["HRV_HF"], "lf_hf": row["HRV_LFHF"]}


@CASES
def test_frequency_domain_matches_neurokit(spec: RRSpec) -> None:
    rr = synth_rr(spec)
    ours = hrv_frequency(rr)
    ref = _nk_frequency(rr)
    for key, expected in ref.items():
        assert rel_err(ours[key], float(expected)) <= FREQ_RTOL, (key, ours[key], expected)


@pytest.mark.parametrize("duration_s", [60.0, 90.0, 120.0, 600.0])
def test_frequency_domain_matches_neurokit_across_durations(duration_s: float) -> None:
    """Exercise the short (50 s segment), half-record and 256 s Welch layouts."""
    rr = synth_rr(RRSpec(seed=10 + int(duration_s), duration_s=duration_s))
    ours = hrv_frequency(rr)
    ref = _nk_frequency(rr)
    for key, expected in ref.items():
        assert rel_err(ours[key], float(expected)) <= FREQ_RTOL, (key, ours[key], expected)


@CASES
def test_peak_frequencies_land_on_generated_rhythms(spec: RRSpec) -> None:
    out = hrv_frequency(synth_rr(spec))
    assert out["lf_peak_hz"] == pytest.approx(spec.lf_hz, abs=PEAK_ATOL_HZ)
    assert out["hf_peak_hz"] == pytest.approx(spec.hf_hz, abs=PEAK_ATOL_HZ)


@pytest.mark.parametrize("duration_s", [60.0, 300.0, 600.0])
def test_band_power_of_pure_sinusoids_is_half_amplitude_squared(duration_s: float) -> None:
    """Absolute check independent of NeuroKit2: a sinusoid of amplitude A has power A²/2."""
    hf_only = synth_rr(RRSpec(seed=5, lf_amp_ms=0.0, noise_ms=0.0, duration_s=duration_s))
    lf_only = synth_rr(RRSpec(seed=5, hf_amp_ms=0.0, noise_ms=0.0, duration_s=duration_s))
    hf_out, lf_out = hrv_frequency(hf_only), hrv_frequency(lf_only)
    assert hf_out["hf_ms2"] == pytest.approx(40.0**2 / 2.0, rel=0.05)
    assert hf_out["lf_ms2"] < 1e-3 * hf_out["hf_ms2"]
    assert lf_out["lf_ms2"] == pytest.approx(30.0**2 / 2.0, rel=0.05)
    assert lf_out["hf_ms2"] < 1e-3 * lf_out["lf_ms2"]


def test_band_edges_are_0_04_0_15_0_4_hz() -> None:
    """Rhythms 0.005–0.03 Hz inside each band edge land wholly in that band.

    A 10-minute record gives 256 s segments, whose Hann main lobe (±0.008 Hz) fits.
    """
    for lf_hz, hf_hz in [(0.045, 0.16), (0.145, 0.37)]:
        spec = RRSpec(
            seed=6, mean_ms=700.0, lf_hz=lf_hz, hf_hz=hf_hz, noise_ms=0.0, duration_s=600.0
        )
        out = hrv_frequency(synth_rr(spec))
        assert out["lf_ms2"] == pytest.approx(30.0**2 / 2.0, rel=0.05), lf_hz
        assert out["hf_ms2"] == pytest.approx(40.0**2 / 2.0, rel=0.05), hf_hz


def test_frequency_domain_is_stable_across_resample_rates() -> None:
    rr = synth_rr(SPECS["rest"])
    at4, at8 = hrv_frequency(rr), hrv_frequency(rr, resample_hz=8.0)
    for key in ("lf_ms2", "hf_ms2", "lf_hf"):
        assert at8[key] == pytest.approx(at4[key], rel=0.02)


def test_frequency_domain_keys_and_types() -> None:
    out = hrv_frequency(synth_rr(SPECS["rest"]))
    assert list(out) == ["lf_ms2", "hf_ms2", "lf_hf", "lf_peak_hz", "hf_peak_hz"]
    assert all(type(v) is float for v in out.values())
    assert out["lf_hf"] == pytest.approx(out["lf_ms2"] / out["hf_ms2"])
    assert 0.04 <= out["lf_peak_hz"] < 0.15
    assert 0.15 <= out["hf_peak_hz"] < 0.4


def test_summary_merges_time_and_frequency() -> None:
    rr = synth_rr(SPECS["stressed"])
    summary = hrv_summary(rr)
    assert summary == {**hrv_time(rr), **hrv_frequency(rr)}
    assert len(summary) == 10


def test_inputs_are_not_modified() -> None:
    rr = synth_rr(SPECS["rest"])
    before = rr.copy()
    hrv_summary(rr)
    np.testing.assert_array_equal(rr, before)


# ------------------------------------------------------------------------------- errors

ALL_FUNCS = pytest.mark.parametrize("func", [hrv_time, hrv_frequency, hrv_summary, rmssd_ms])


@ALL_FUNCS
@pytest.mark.parametrize("rr", [[], [800.0], [800.0, 810.0]])
def test_too_few_intervals(func, rr: list[float]) -> None:
    with pytest.raises(ValueError, match=rf"rr_ms.*at least 3.*got {len(rr)}"):
        func(rr)


@ALL_FUNCS
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(func, bad: float) -> None:
    rr = np.full(400, 800.0)
    rr[7] = bad
    with pytest.raises(ValueError, match=r"rr_ms must be finite.*1 NaN or infinite"):
        func(rr)


@ALL_FUNCS
@pytest.mark.parametrize("bad", [0.0, -800.0, 3000.5, 1e6])
def test_out_of_range(func, bad: float) -> None:
    rr = np.full(400, 800.0)
    rr[3] = bad
    with pytest.raises(ValueError, match=r"rr_ms values must lie in the range \(0, 3000\] ms"):
        func(rr)


def test_range_bounds_are_inclusive_of_3000_ms() -> None:
    assert hrv_time([3000.0, 3000.0, 3000.0])["mean_hr_bpm"] == pytest.approx(20.0)


@pytest.mark.parametrize("func", [hrv_time, hrv_frequency, hrv_summary])
def test_multidimensional_input_rejected(func) -> None:
    with pytest.raises(ValueError, match=r"rr_ms must be one-dimensional.*\(2, 200\)"):
        func(np.full((2, 200), 800.0))


@ALL_FUNCS
def test_non_numeric_rejected(func) -> None:
    with pytest.raises(ValueError, match=r"rr_ms must be numeric"):
        func(["800", "a lot", "900"])


@pytest.mark.parametrize("func", [hrv_frequency, hrv_summary])
def test_frequency_requires_60_s(func) -> None:
    rr = np.full(59, 1000.0)  # 59 s
    with pytest.raises(ValueError, match=r"rr_ms must span at least 60 s.*got 59\.0 s"):
        func(rr)
    # Time domain is fine on the same data, and 60 s is enough for the spectrum; a
    # perfectly constant rhythm has no band power and an undefined LF/HF.
    assert hrv_time(rr)["mean_nn_ms"] == 1000.0
    flat = hrv_frequency(np.full(60, 1000.0))
    assert flat["lf_ms2"] == flat["hf_ms2"] == 0.0
    assert np.isnan(flat["lf_hf"])


@pytest.mark.parametrize("resample_hz", [0.0, -4.0, 0.8, np.nan, np.inf, "fast", None])
def test_bad_resample_rate(resample_hz) -> None:
    with pytest.raises(ValueError, match=r"resample_hz must be a finite number above 0\.8 Hz"):
        hrv_frequency(synth_rr(SPECS["rest"]), resample_hz=resample_hz)
