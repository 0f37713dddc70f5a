import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from heartsim import Episode, LabProtocol, load, simulate
from heartsim.datasets import GROUP_SIZE
from heartsim.physiology.beats import generate_beats

BEAT_COLUMNS = [
    "person_id", "t_s", "rr_ms", "hr_bpm", "stress_level", "label", "systolic_mmhg",
    "diastolic_mmhg", "respiration_rate",
]  # fmt: skip


@pytest.fixture(scope="module")
def lab():
    return simulate(n_persons=4, duration_s=1800, seed=7)


def test_beats_table_is_tidy_sorted_and_complete(lab):
    beats = lab.beats
    assert list(beats.columns) == BEAT_COLUMNS
    assert list(beats.person_id.cat.categories) == ["p0", "p1", "p2", "p3"]
    for _, g in beats.groupby("person_id", observed=True):
        t = g.t_s.to_numpy()
        assert (np.diff(t) > 0).all() and t[0] >= 0 and t[-1] <= 1800
        # Each interval is the time since the previous beat.
        assert np.diff(t) * 1000 == pytest.approx(g.rr_ms.to_numpy()[1:], abs=0.05)
    assert beats.hr_bpm.to_numpy() == pytest.approx(60000 / beats.rr_ms.to_numpy(), rel=1e-5)
    assert set(beats.label) == {"rest", "stress", "recovery"}


def test_lab_protocol_draws_phases_and_intensities_per_person(lab):
    episodes = lab.episodes
    assert set(episodes.person_id) == {"p0", "p1", "p2", "p3"}
    assert episodes.level.between(0.3, 1.0).all() and episodes.level.nunique() == len(episodes)
    durations = episodes.end_s - episodes.start_s
    assert durations.between(180, 420).all()
    assert episodes.start_s.between(240, 1800).all()
    beats = lab.beats
    for row in episodes.itertuples():
        inside = beats[
            (beats.person_id == row.person_id) & beats.t_s.between(row.start_s + 1, row.end_s - 1)
        ]
        assert set(inside.label) == {"stress"}


def test_samples_table_matches_the_stream_messages(lab):
    samples = lab.samples
    assert len(samples) == 4 * 1800 * 2
    p0 = samples[samples.person_id == "p0"]
    assert p0.seq.tolist() == list(range(1, 3601))
    assert p0.t.to_numpy() == pytest.approx(np.arange(1, 3601) / 2)
    assert samples.variability.notna().all()  # warm-up fills the first window
    # The rr_ms lists partition the beats.
    beats_p0 = lab.beats[lab.beats.person_id == "p0"]
    flat = [x for lst in p0.rr_ms for x in lst]
    assert flat == pytest.approx(beats_p0.rr_ms.astype(float).round(1).tolist(), abs=0.051)
    stress = samples[samples.label == "stress"]
    assert stress.bpm.mean() > samples[samples.label == "rest"].bpm.mean() + 10


def test_samples_agree_with_the_live_engine_window_definitions(lab):
    """bpm over the last 5 s and RMSSD over the last 30 s, recomputed here by hand."""
    beats = lab.beats[lab.beats.person_id == "p2"]
    samples = lab.samples[lab.samples.person_id == "p2"].set_index("t")
    for tick in (300.0, 901.5, 1500.0):
        recent = beats[(beats.t_s > tick - 30) & (beats.t_s <= tick)].rr_ms.to_numpy(np.float64)
        rmssd = np.sqrt(np.mean(np.diff(recent) ** 2))
        five = beats[(beats.t_s > tick - 5) & (beats.t_s <= tick)].rr_ms.to_numpy(np.float64)
        assert samples.loc[tick, "variability"] == pytest.approx(rmssd, abs=0.01)
        assert samples.loc[tick, "bpm"] == round(60000 / five.mean())


def test_same_seed_same_tables_and_different_seed_differs():
    a = simulate(n_persons=3, duration_s=300, seed=1)
    b = simulate(n_persons=3, duration_s=300, seed=1)
    c = simulate(n_persons=3, duration_s=300, seed=2)
    pd.testing.assert_frame_equal(a.beats, b.beats)
    pd.testing.assert_frame_equal(a.samples, b.samples)
    assert not a.beats.rr_ms.equals(c.beats.rr_ms)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_round_trip_through_files(lab, tmp_path, fmt):
    written = lab.save(tmp_path / "ds", format=fmt)
    assert {p.name for p in written} >= {f"beats.{fmt}", f"samples.{fmt}", "meta.json"}
    back = load(tmp_path / "ds")
    exact = fmt == "parquet"
    pd.testing.assert_frame_equal(back.beats, lab.beats, check_exact=exact, check_dtype=exact)
    assert back.samples.rr_ms.map(list).tolist() == lab.samples.rr_ms.tolist()
    pd.testing.assert_frame_equal(
        back.samples.drop(columns="rr_ms"), lab.samples.drop(columns="rr_ms"), check_dtype=exact
    )
    assert (back.duration_s, back.tick_hz, back.seed) == (1800.0, 2.0, 7)


def test_custom_schedules_for_everybody_or_per_person():
    everybody = simulate(n_persons=2, duration_s=200, seed=1, protocol=[Episode(50, 150, 0.8)])
    assert everybody.episodes.person_id.tolist() == ["p0", "p1"]
    per_person = simulate(
        n_persons=2, duration_s=200, seed=1, protocol={"p1": [Episode(20, 60, 0.5)]}
    )
    beats = per_person.beats
    assert set(beats[beats.person_id == "p0"].label) == {"rest"}
    assert "stress" in set(beats[beats.person_id == "p1"].label)
    tuned = simulate(
        n_persons=1, duration_s=900, seed=1, protocol=LabProtocol(intensity=(1.0, 1.0))
    )
    assert tuned.episodes.level.eq(1.0).all()


def test_progress_callback_reaches_one():
    seen = []
    simulate(n_persons=2, duration_s=700, seed=1, progress=seen.append)
    assert seen[-1] == pytest.approx(1.0) and seen == sorted(seen)


def test_tables_do_not_depend_on_workers_or_progress():
    # More persons than one group (GROUP_SIZE), so groups really run on several threads.
    n = 2 * GROUP_SIZE + 5
    one = simulate(n_persons=n, duration_s=40, seed=3, workers=1)
    seen = []
    many = simulate(n_persons=n, duration_s=40, seed=3, workers=3, progress=seen.append)
    pd.testing.assert_frame_equal(one.beats, many.beats)
    pd.testing.assert_frame_equal(one.samples, many.samples)
    assert seen == pytest.approx([GROUP_SIZE / n, 2 * GROUP_SIZE / n, 1.0])


def test_an_interruption_drops_the_groups_not_started(monkeypatch):
    import heartsim.datasets as datasets

    calls = []
    shut_down = threading.Event()

    class Pool(ThreadPoolExecutor):
        # Records when simulate() shuts its pool down (cancelling what has not started).
        def shutdown(self, wait=True, *, cancel_futures=False):
            super().shutdown(wait=False, cancel_futures=cancel_futures)
            shut_down.set()
            super().shutdown(wait=wait)

    def counting(*args, **kwargs):
        calls.append(kwargs["persons"])
        if kwargs["persons"].start > 0:
            # Later groups wait for the shutdown: however slow the interrupted thread is to
            # get there (a busy machine), the worker cannot run ahead through every group.
            shut_down.wait(timeout=10)
        return generate_beats(*args, **kwargs)

    def interrupt(fraction):
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "ThreadPoolExecutor", Pool)
    monkeypatch.setattr(datasets, "generate_beats", counting)
    with pytest.raises(KeyboardInterrupt):
        simulate(n_persons=5 * GROUP_SIZE, duration_s=10, seed=1, workers=1, progress=interrupt)
    # Group 1 reported and was interrupted; group 2 may have started; groups 3-5 never ran.
    started = {group.start for group in calls}
    assert 0 in started and started <= {0, GROUP_SIZE}


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"duration_s": -5}, "duration_s"),
        ({"duration_s": 0}, "duration_s"),
        ({"n_persons": 0}, "n_persons"),
        ({"tick_hz": 0}, "tick_hz"),
        ({"workers": 0}, "workers"),
        ({"workers": 1.5}, "workers"),
        ({"protocol": "panic"}, "protocol"),
        ({"protocol": {"nobody": []}}, "unknown persons"),
        ({"protocol": LabProtocol}, "protocol"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        simulate(**{"n_persons": 1, "duration_s": 60, **kwargs})


def test_lab_protocol_validates_its_spans():
    with pytest.raises(ValueError, match="intensity"):
        LabProtocol(intensity=(0.5, 1.5))
    with pytest.raises(ValueError, match="stress_s"):
        LabProtocol(stress_s=(300, 100))


def test_load_rejects_a_folder_without_a_dataset(tmp_path):
    with pytest.raises(ValueError, match="no heartsim dataset"):
        load(tmp_path)
