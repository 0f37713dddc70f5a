"""Population realism: heartsim's HRV against published norms (Nunan et al. 2010) and the
direction and size of acute-stress responses (Castaldo et al. 2015; Kim et al. 2018)."""

import numpy as np
import pandas as pd
import pytest

from heartsim import Episode, simulate
from heartsim.hrv import hrv_frequency, hrv_time

N_PERSONS = 40
WINDOW = (300.0, 600.0)  # a 5-minute window after 5 minutes of settling


def window_hrv(beats: pd.DataFrame, start: float, end: float) -> pd.DataFrame:
    rows = {}
    for pid, g in beats[(beats.t_s >= start) & (beats.t_s < end)].groupby(
        "person_id", observed=True
    ):
        rr = g["rr_ms"].to_numpy()
        rows[pid] = {
            **hrv_time(rr),
            **hrv_frequency(rr),
            "systolic": g["systolic_mmhg"].mean(),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


@pytest.fixture(scope="module")
def rest():
    result = simulate(n_persons=N_PERSONS, duration_s=WINDOW[1], seed=2026, protocol="rest")
    return result, window_hrv(result.beats, *WINDOW)


@pytest.fixture(scope="module")
def stressed():
    # Rest 10 min, strong stress (0.9) for 10 min, then 10 min of recovery.
    episode = Episode(600.0, 1200.0, 0.9)
    result = simulate(n_persons=N_PERSONS, duration_s=1800.0, seed=2026, protocol=[episode])
    return result, window_hrv(result.beats, *WINDOW), window_hrv(result.beats, 900.0, 1200.0)


def test_resting_hrv_matches_healthy_adult_norms(rest):
    _, h = rest
    assert 25 <= h.rmssd_ms.median() <= 60
    assert 35 <= h.sdnn_ms.median() <= 80
    assert 5 <= h.pnn50_pct.median() <= 40
    assert 0.5 <= h.lf_hf.median() <= 4
    assert h.mean_hr_bpm.between(55, 85).all()
    # Spread between persons like Nunan et al.'s (RMSSD 42 +- 15 ms, SDNN 50 +- 16 ms).
    assert 8 <= h.rmssd_ms.std() <= 30 and 8 <= h.sdnn_ms.std() <= 30


def test_every_spectrum_peaks_at_breathing_rate_and_near_0_1_hz(rest):
    result, h = rest
    # Breathing fluctuates slowly around the person's rate: compare with its mean in the window.
    beats = result.beats[result.beats.t_s.between(*WINDOW)]
    breathing_hz = beats.groupby("person_id", observed=True).breathing_rate_bpm.mean() / 60.0
    error = (h.hf_peak_hz - breathing_hz.loc[h.index]).abs()
    assert error.max() <= 0.03, error.sort_values().tail()
    assert h.lf_peak_hz.between(0.07, 0.13).all(), h.lf_peak_hz.describe()


def test_strong_stress_raises_hr_and_bp_and_withdraws_vagal_tone(stressed):
    _, rest_h, stress_h = stressed
    d_hr = stress_h.mean_hr_bpm - rest_h.mean_hr_bpm
    assert d_hr.between(20, 50).all(), d_hr.describe()
    assert (stress_h.rmssd_ms <= 0.6 * rest_h.rmssd_ms).all()
    assert (stress_h.hf_ms2 < rest_h.hf_ms2).all()
    assert (stress_h.lf_hf > rest_h.lf_hf).mean() >= 0.9
    assert stress_h.lf_hf.median() > 1.5 * rest_h.lf_hf.median()
    d_sbp = stress_h.systolic - rest_h.systolic
    assert d_sbp.between(15, 35).all(), d_sbp.describe()


def test_heart_rate_recovers_within_five_minutes(stressed):
    result, rest_h, _ = stressed
    beats = result.beats
    # The stress-driven part of heart rate five minutes after the end: kinetics, no noise.
    at_5_min = beats[beats.t_s >= 1200 + 300].groupby("person_id", observed=True).first()
    reactivity = result.persons.set_index("person_id")["hr_reactivity_bpm"]
    assert (at_5_min.stress_level * reactivity.loc[at_5_min.index]).max() < 2.0
    # Observed: the fifth minute's mean HR against the person's own resting mean.
    late = beats[(beats.t_s >= 1200 + 240) & (beats.t_s < 1200 + 300)]
    hr_after = late.groupby("person_id", observed=True)["hr_bpm"].mean()
    gap = (hr_after - rest_h.mean_hr_bpm.loc[hr_after.index]).abs()
    assert gap.median() < 2.5 and (gap < 5).mean() >= 0.9, gap.describe()


def test_labels_follow_the_protocol(stressed):
    result, _, _ = stressed
    beats = result.beats
    assert set(beats[beats.t_s < 600].label) == {"rest"}
    assert set(beats[(beats.t_s >= 600) & (beats.t_s < 1200)].label) == {"stress"}
    after = beats[beats.t_s >= 1200]
    assert after.label.iloc[0] == "recovery" and "rest" in set(after.label)
    stress_levels = beats[(beats.t_s >= 900) & (beats.t_s < 1200)].stress_level
    assert stress_levels.min() > 0.8


def test_live_engine_and_batch_have_indistinguishable_hrv():
    """One person, 200 independent copies: ten minutes live (2 Hz ticks) against ten minutes in
    batch; HRV of the last five minutes compared as distributions."""
    from scipy.stats import mannwhitneyu

    from heartsim import Engine, sample_population

    profile = sample_population(1, seed=99)[0]
    copies = [profile.replace(person_id=f"copy{i}") for i in range(200)]
    engine = Engine(persons=copies, seed=1)
    engine.start()
    rows = [
        (s["person_id"], s["t"], rr)
        for _ in range(1200)
        for s in engine.advance(0.5)
        for rr in s["rr_ms"]
    ]
    live_beats = pd.DataFrame(rows, columns=["person_id", "t_s", "rr_ms"])
    batch_beats = simulate(persons=copies, duration_s=600, seed=2, protocol="rest").beats

    def per_person(beats):
        late = beats[beats.t_s > 300]
        return pd.DataFrame(
            [hrv_time(g.rr_ms.to_numpy()) for _, g in late.groupby("person_id", observed=True)]
        )

    live, batch = per_person(live_beats), per_person(batch_beats)
    for measure in ("mean_nn_ms", "sdnn_ms", "rmssd_ms", "pnn50_pct"):
        assert mannwhitneyu(live[measure], batch[measure]).pvalue > 0.01, measure
        # Medians agree within 3 standard errors of their difference (the standard error of a
        # median is about 1.25 sd / sqrt(n)) and within 5 % where that is the looser bound.
        se = 1.2533 * np.hypot(live[measure].std(), batch[measure].std()) / np.sqrt(len(live))
        tolerance = max(3.0 * se, 0.05 * batch[measure].median())
        assert abs(live[measure].median() - batch[measure].median()) <= tolerance, measure


def test_breathing_rises_with_stress_but_is_not_a_function_of_it(stressed):
    result, _, _ = stressed
    beats = result.beats
    gain = result.persons.set_index("person_id").breathing_reactivity_bpm

    def mean_breathing(start_s, end_s):
        window = beats[beats.t_s.between(start_s, end_s)]
        return window.groupby("person_id", observed=True).breathing_rate_bpm.mean()

    rise = mean_breathing(900.0, 1200.0) - mean_breathing(*WINDOW)
    # The rise follows each person's reactivity (at level 0.9), give or take the fluctuation.
    assert ((rise - 0.9 * gain.loc[rise.index]).abs() < 2.0).all(), rise.describe()
    # At the same stress level breathing still varies: it does not give the label away.
    at_rest = beats[beats.stress_level == 0.0].groupby("person_id", observed=True)
    assert at_rest.breathing_rate_bpm.std().between(0.2, 1.5).all()
