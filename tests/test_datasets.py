import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from support import run_notebook

import heartsim
from heartsim import (
    CustomProtocol,
    Engine,
    Episode,
    LabProtocol,
    PersonProfile,
    Protocol,
    RestProtocol,
    load,
    simulate,
)
from heartsim.datasets import GROUP_SIZE
from heartsim.hrv import hrv_frequency
from heartsim.physiology.beats import generate_beats
from heartsim.protocols import as_protocol

BEAT_COLUMNS = [
    "person_id", "t_s", "rr_ms", "hr_bpm", "stress_level", "label", "systolic_mmhg",
    "diastolic_mmhg", "breathing_rate_bpm",
]  # fmt: skip
SAMPLE_COLUMNS = [
    "person_id", "seq", "t_s", "timestamp", "hr_bpm", "rmssd_ms", "stress_level",
    "systolic_mmhg", "diastolic_mmhg", "label", "breathing_rate_bpm", "rr_ms",
]  # fmt: skip
# Internal code must not read the old names (the tests of the shim catch their warnings).
pytestmark = pytest.mark.filterwarnings("error::FutureWarning")


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
    assert list(samples.columns) == SAMPLE_COLUMNS
    assert len(samples) == 4 * 1800 * 2
    p0 = samples[samples.person_id == "p0"]
    assert p0.seq.tolist() == list(range(1, 3601))
    assert p0.t_s.to_numpy() == pytest.approx(np.arange(1, 3601) / 2)
    assert samples.rmssd_ms.notna().all()  # warm-up fills the first window
    # The rr_ms lists partition the beats.
    beats_p0 = lab.beats[lab.beats.person_id == "p0"]
    flat = [x for lst in p0.rr_ms for x in lst]
    assert flat == pytest.approx(beats_p0.rr_ms.astype(float).round(1).tolist(), abs=0.051)
    stress = samples[samples.label == "stress"]
    assert stress.hr_bpm.mean() > samples[samples.label == "rest"].hr_bpm.mean() + 10


def test_samples_agree_with_the_live_engine_window_definitions(lab):
    """bpm over the last 5 s and RMSSD over the last 30 s, recomputed here by hand."""
    beats = lab.beats[lab.beats.person_id == "p2"]
    samples = lab.samples[lab.samples.person_id == "p2"].set_index("t_s")
    for tick in (300.0, 901.5, 1500.0):
        recent = beats[(beats.t_s > tick - 30) & (beats.t_s <= tick)].rr_ms.to_numpy(np.float64)
        rmssd = np.sqrt(np.mean(np.diff(recent) ** 2))
        five = beats[(beats.t_s > tick - 5) & (beats.t_s <= tick)].rr_ms.to_numpy(np.float64)
        assert samples.loc[tick, "rmssd_ms"] == pytest.approx(rmssd, abs=0.01)
        assert samples.loc[tick, "hr_bpm"] == round(60000 / five.mean())


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
    assert back.parameters == lab.parameters


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


# ----- names with units, and the old names for one more release --------------------------------
def test_old_column_names_still_read_with_a_future_warning(lab):
    samples, beats = lab.samples, lab.beats
    for old, new in [("t", "t_s"), ("bpm", "hr_bpm"), ("variability", "rmssd_ms"),
                     ("systolic", "systolic_mmhg"), ("diastolic", "diastolic_mmhg"),
                     ("respiration_rate", "breathing_rate_bpm")]:  # fmt: skip
        with pytest.warns(FutureWarning, match=f"'{old}' is now '{new}'.*heartsim 0.3"):
            pd.testing.assert_series_equal(samples[old], samples[new])
        with pytest.warns(FutureWarning, match=f"'{old}' is now '{new}'"):
            pd.testing.assert_series_equal(getattr(samples, old), samples[new])
    with pytest.warns(FutureWarning, match="beats column 'respiration_rate'"):
        assert beats.respiration_rate.equals(beats.breathing_rate_bpm)
    with pytest.warns(FutureWarning) as caught:
        pd.testing.assert_frame_equal(samples[["t", "bpm"]], samples[["t_s", "hr_bpm"]])
    assert ["'t' is now 't_s'" in str(caught[0].message), "'bpm' is now" in str(caught[1].message)]
    assert len(caught) == 2
    # Filtered tables keep the old names working, as the examples of heartsim 0.1 did.
    stress = samples[samples.label == "stress"]
    with pytest.warns(FutureWarning, match="'bpm'"):
        assert stress.bpm.mean() == stress.hr_bpm.mean()
    with pytest.raises(AttributeError):
        beats.bpm  # noqa: B018 (never a beats column)
    with pytest.raises(KeyError):
        beats["variability"]


def test_the_warning_points_at_the_callers_line(lab):
    with pytest.warns(FutureWarning) as caught:
        lab.samples["bpm"]
        lab.samples.bpm  # noqa: B018
        lab.samples[["bpm"]]
    assert {w.filename for w in caught} == {__file__}


def test_repr_is_one_short_line(lab):
    text = repr(lab)
    assert text == (
        "SimulationResult(persons=4, duration=30m (1800 s), protocol='lab', seed=7, tick_hz=2, "
        f"start_time='2000-01-01T00:00:00Z', beats={len(lab.beats):,} rows, samples=14,400 rows)"
    )
    rest = simulate(n_persons=1, duration_s=60, seed=1, protocol=LabProtocol(stress_s=(60, 60)))
    assert "protocol=LabProtocol" in repr(rest) and "\n" not in repr(rest)


# ----- durations and start times -----------------------------------------------------------------
def test_duration_text_is_accepted_like_the_cli():
    a = simulate(n_persons=1, duration_s="1m30s", seed=2)
    b = simulate(n_persons=1, duration_s=90, seed=2)
    assert a.duration_s == 90.0
    pd.testing.assert_frame_equal(a.beats, b.beats)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "duration_s must look like 90, 90s, 30m, 1.5h, 1h30m or 2d12h and be more"),
        ("-5m", "duration_s must be more than 0 and at most 30d (2.592e+06 s), got '-5m'"),
        ("31d", "duration_s must be more than 0 and at most 30d (2.592e+06 s), got '31d'"),
        (float("nan"), "duration_s must be more than 0 and at most 30d (2.592e+06 s), got nan"),
        (True, "duration_s must be a number of seconds or text"),
    ],
)
def test_bad_durations_name_the_parameter_range_and_value(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        simulate(n_persons=1, duration_s=value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -3}, "seed must be a non-negative integer, got -3"),
        ({"seed": 1.5}, "seed must be a non-negative integer, got 1.5"),
        ({"n_persons": True}, "n_persons must be an integer between 1 and 1000000, got True"),
        ({"tick_hz": "2"}, "tick_hz must be a number of Hz between 0.1 and 50, got '2'"),
        ({"start_time": "2024-05-01"}, "start_time must be epoch seconds"),
        ({"start_time": -1}, "start_time must be between 1970-01-01T00:00:00Z"),
        ({"persons": [{"person_id": "a", "pulse": 3}]}, "persons: "),
    ],
)
def test_bad_arguments_say_what_is_allowed_and_what_was_given(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        simulate(**{"n_persons": 1, "duration_s": 60, **kwargs})


def test_timestamps_start_at_start_time_and_agree_with_the_live_engine():
    default = simulate(n_persons=1, duration_s=10, seed=1)
    assert default.samples["timestamp"].iloc[0] == pd.Timestamp("2000-01-01T00:00:00.5Z")
    start = "2024-05-01T10:00:00+02:00"
    batch = simulate(n_persons=2, duration_s=10, seed=1, start_time=start)
    stamps = batch.samples["timestamp"]
    assert str(stamps.dtype) == "datetime64[ns, UTC]"
    expected = pd.Timestamp("2024-05-01T08:00:00Z") + pd.to_timedelta(batch.samples.t_s, "s")
    assert (stamps == expected).all()
    # Same start time, same clock: the engine's messages carry the same stamps at the same t.
    engine = Engine(persons=2, seed=1, start_time=start)
    engine.start()
    live = [m for _ in range(20) for m in engine.advance(0.5)]
    by_t = batch.samples.set_index(["person_id", "t_s"])["timestamp"]
    for message in live:
        assert pd.Timestamp(message["timestamp"]) == by_t[(message["person_id"], message["t"])]
        assert message["ts"] == by_t[(message["person_id"], message["t"])].timestamp()


# ----- meta.json reproduces the run --------------------------------------------------------------
class _EveryMinute(Protocol):
    """A protocol heartsim does not know: 10 s of stress every minute."""

    def episodes(self, person_ids, duration_s, rng):
        return [[Episode(t, t + 10.0, 0.7) for t in range(30, int(duration_s), 60)]] * len(
            person_ids
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_persons": 2, "seed": 5},
        {"n_persons": 2, "seed": None},
        {
            "n_persons": 2,
            "seed": 1,
            "protocol": LabProtocol(baseline_s=(30, 60), stress_s=(60, 90)),
        },
        {"n_persons": 2, "seed": 1, "protocol": [Episode(50, 150, 0.8)]},
        {"n_persons": 2, "seed": 1, "protocol": {"p1": [Episode(20, 60, 0.5)]}},
        {"n_persons": 2, "seed": 1, "protocol": _EveryMinute()},
        {"seed": 3, "persons": [PersonProfile("anna", resting_hr_bpm=55.0)], "protocol": "rest"},
        {"n_persons": 1, "seed": 1, "tick_hz": 4.0, "start_time": "2024-05-01T08:00:00Z"},
    ],
    ids=["lab", "fresh-seed", "lab-params", "episodes", "per-person", "foreign", "persons", "tick"],
)
def test_meta_json_parameters_reproduce_the_tables(tmp_path, kwargs):
    first = simulate(duration_s=300, **kwargs)
    first.save(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["heartsim_version"] == heartsim.__version__
    assert meta["rows"] == {name: len(getattr(first, name)) for name in meta["rows"]}
    assert set(meta["rows"]) == {"beats", "samples", "persons", "episodes"}
    again = simulate(**meta["parameters"])
    pd.testing.assert_frame_equal(again.beats, first.beats)
    pd.testing.assert_frame_equal(again.samples, first.samples)
    pd.testing.assert_frame_equal(again.episodes, first.episodes)
    assert isinstance(first.seed, int) and meta["parameters"]["seed"] == first.seed


def test_protocols_round_trip_through_their_dict_form():
    for protocol in (LabProtocol(intensity=(0.5, 0.9)), RestProtocol(),
                     CustomProtocol([Episode(1, 2, 0.5)]),
                     CustomProtocol({"p0": [Episode(1, 2, 0.5)]})):  # fmt: skip
        spec = json.loads(json.dumps(protocol.to_dict()))
        assert as_protocol(spec) == protocol
    for bad, message in [
        ({"type": "lab", "stress_s": 5}, "protocol 'lab' takes"),
        ({"type": "lab", "speed": [1, 2]}, "no parameter(s) ['speed']"),
        ({"type": "panic"}, "a protocol dict is"),
        ({"type": "custom", "schedule": [[1, 2]]}, "an episode is"),
        ({"type": "lab", "stress_s": [9, 1]}, "stress_s must be a (min, max) pair"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            as_protocol(bad)


def test_a_dataset_saved_by_heartsim_0_1_loads_with_the_new_names(lab, tmp_path):
    old_samples = lab.samples.drop(columns="timestamp").rename(
        columns={"t_s": "t", "hr_bpm": "bpm", "rmssd_ms": "variability", "systolic_mmhg":
                 "systolic", "diastolic_mmhg": "diastolic", "breathing_rate_bpm":
                 "respiration_rate"}
    )  # fmt: skip
    tables = {
        "beats": lab.beats.rename(columns={"breathing_rate_bpm": "respiration_rate"}),
        "samples": old_samples,
        "persons": lab.persons,
        "episodes": lab.episodes,
    }
    for name, table in tables.items():
        pd.DataFrame(table).to_parquet(tmp_path / f"{name}.parquet", index=False)
    (tmp_path / "meta.json").write_text('{"duration_s": 1800.0, "tick_hz": 2.0, "seed": 7}')
    back = load(tmp_path)
    pd.testing.assert_frame_equal(back.beats, lab.beats)
    pd.testing.assert_frame_equal(back.samples, lab.samples)
    assert "protocol=unknown" in repr(back)
    # Its drawn episodes stand in for the unknown protocol: the run can still be reproduced.
    again = simulate(**back.parameters)
    pd.testing.assert_frame_equal(again.beats, lab.beats)


# ----- summary and plot --------------------------------------------------------------------------
def test_summary_gives_hrv_per_person_and_phase(lab):
    table = lab.summary()
    assert table.index.names == ["person_id", "phase"]
    assert set(table.index.get_level_values("phase")) == {"rest", "stress", "recovery"}
    assert list(table.columns) == [
        "beats", "duration_s", "mean_hr_bpm", "sdnn_ms", "rmssd_ms", "lf_ms2", "hf_ms2",
        "lf_hf", "systolic_mmhg", "diastolic_mmhg", "breathing_rate_bpm", "stress_level",
    ]  # fmt: skip
    assert table["beats"].sum() == len(lab.beats)
    # By hand for one person and phase, with heartsim.hrv's definitions.
    beats = lab.beats[(lab.beats.person_id == "p1")].reset_index(drop=True)
    stress = beats[beats.label == "stress"]
    stretch = (stress.index.to_series().diff() != 1).cumsum()
    rr = stress.rr_ms.to_numpy(np.float64)
    diffs = np.concatenate(
        [np.diff(g.rr_ms.to_numpy(np.float64)) for _, g in stress.groupby(stretch)]
    )
    row = table.loc[("p1", "stress")]
    assert row["beats"] == len(stress)
    assert row["mean_hr_bpm"] == pytest.approx(60000 / rr.mean())
    assert row["sdnn_ms"] == pytest.approx(rr.std(ddof=1))
    assert row["rmssd_ms"] == pytest.approx(np.sqrt(np.mean(diffs**2)))
    longest = max((g for _, g in stress.groupby(stretch)), key=len)
    if stretch.nunique() == 1:
        bands = hrv_frequency(longest.rr_ms.to_numpy(np.float64))
        assert row["lf_hf"] == pytest.approx(bands["lf_hf"])
    # Stress raises heart rate and lowers RMSSD for everybody.
    hr = table["mean_hr_bpm"].unstack()
    rmssd = table["rmssd_ms"].unstack()
    assert (hr["stress"] > hr["rest"]).all() and (rmssd["stress"] < rmssd["rest"]).all()
    assert "lf_hf" not in lab.summary(frequency=False)


def test_plot_draws_one_persons_signals_with_the_phases_shaded(lab):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import Rectangle

    figure = lab.plot(person="p2")
    hr_ax, rmssd_ax, bp_ax, breath_ax = figure.axes
    rows = lab.samples[lab.samples.person_id == "p2"]
    hr_line = hr_ax.get_lines()[0]
    assert len(hr_line.get_xdata()) == len(rows) == 3600
    assert list(hr_line.get_ydata()) == rows.hr_bpm.tolist()
    assert list(breath_ax.get_lines()[0].get_ydata()) == rows.breathing_rate_bpm.tolist()
    assert [line.get_label() for line in bp_ax.get_lines()] == ["systolic", "diastolic"]
    assert rmssd_ax.get_ylabel() == "RMSSD (ms)" and breath_ax.get_xlabel().endswith("(min)")
    # Every stress episode of p2 is shaded (x in minutes here, the run is 30 min).
    spans = [p for p in hr_ax.patches if isinstance(p, Rectangle)]
    red = [
        p for p in spans if p.get_facecolor()[:3] == pytest.approx((0.839, 0.153, 0.157), abs=0.01)
    ]
    episodes = lab.episodes[lab.episodes.person_id == "p2"]
    assert len(red) == len(episodes) > 0
    for patch, episode in zip(red, episodes.itertuples(), strict=True):
        assert patch.get_x() * 60 == pytest.approx(episode.start_s, abs=0.6)
        assert (patch.get_x() + patch.get_width()) * 60 == pytest.approx(episode.end_s, abs=0.6)
    FigureCanvasAgg(figure).draw()  # renders
    with pytest.raises(ValueError, match="person must be one of"):
        lab.plot(person="nobody")


def test_plot_draws_on_given_axes_without_building_every_samples_row():
    from matplotlib.figure import Figure

    result = simulate(n_persons=3, duration_s=120, seed=2)
    axes = Figure().subplots(4, 1, sharex=True)
    assert result.plot(axes=axes) is axes[0].figure
    assert "samples" not in result.__dict__  # one person's ticks were computed, not everyone's
    assert axes[0].get_title().startswith("p0: 2m")
    with pytest.raises(ValueError, match="4 matplotlib axes"):
        result.plot(axes=axes[:2])


def test_plot_shows_once_in_a_notebook_and_the_result_in_one_line():
    cells = [
        "import heartsim\nresult = heartsim.simulate(n_persons=1, duration_s=120, seed=1)",
        "result.plot()",
        "result",
    ]
    _, plotted, shown = run_notebook(cells, timeout_s=120).cells
    assert [sorted(o.get("data", {})) for o in plotted.outputs] == [["image/png", "text/plain"]]
    (text,) = [o["data"]["text/plain"] for o in shown.outputs]
    assert text.startswith("SimulationResult(persons=1, duration=2m (120 s)") and "\n" not in text
