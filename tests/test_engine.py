import concurrent.futures
import math
import time
from datetime import UTC, datetime

import numpy as np
import pytest

from heartsim import Engine, PersonProfile, SimulationState

MESSAGE_FIELDS = {
    "type", "seq", "person_id", "t", "timestamp", "ts", "bpm", "variability", "stress_level",
    "systolic", "diastolic", "state", "prediction", "confidence", "stress_score", "rr_ms",
    "label", "respiration_rate", "run",
}  # fmt: skip


def run(engine: Engine, seconds: float, dt: float = 0.5) -> list[dict]:
    out = []
    for _ in range(round(seconds / dt)):
        out.extend(engine.advance(dt))
    return out


def test_samples_carry_every_message_field_with_the_right_types():
    engine = Engine(persons=2, seed=1)
    assert engine.advance(0.5) == []  # stopped: nothing
    engine.start()
    samples = run(engine, 5.0)
    assert len(samples) == 20
    for s in samples:
        assert set(s) == MESSAGE_FIELDS
        assert s["type"] == "heartbeat" and s["state"] == "running"
        assert isinstance(s["bpm"], int) and 40 <= s["bpm"] <= 140
        assert isinstance(s["systolic"], int) and isinstance(s["diastolic"], int)
        assert s["systolic"] > s["diastolic"]
        assert s["variability"] > 0  # a full 30 s window from the first tick (warm-up)
        assert 0.0 <= s["stress_level"] <= 1.0 and s["label"] == "rest"
        assert s["prediction"] is None and s["confidence"] is None and s["stress_score"] is None
        assert s["timestamp"].endswith("Z")
        assert all(250 <= rr <= 2000 for rr in s["rr_ms"])
    p0 = [s for s in samples if s["person_id"] == "p0"]
    assert [s["seq"] for s in p0] == list(range(1, 11))
    assert [s["t"] for s in p0] == pytest.approx(np.arange(1, 11) * 0.5)


def test_rr_intervals_tile_simulated_time():
    engine = Engine(persons=3, seed=2)
    engine.start()
    samples = run(engine, 120.0)
    for pid in engine.person_ids:
        rr = [x for s in samples if s["person_id"] == pid for x in s["rr_ms"]]
        # The beats of 120 s span 120 s, give or take one interval at each end.
        assert abs(sum(rr) / 1000.0 - 120.0) < 2.5
        assert 60000 / np.mean(rr) == pytest.approx(engine.profile(pid).resting_hr_bpm, abs=6)


def test_same_seed_and_commands_give_identical_samples():
    def scripted(seed):
        engine = Engine(persons=3, seed=seed, spontaneous_stress_per_h=20, start_time=0)
        engine.start()
        out = run(engine, 20)
        engine.trigger_stress(0.8, duration_s=30, person="p1")
        out += run(engine, 40)
        engine.set_baseline(60)
        out += run(engine, 10)
        return out

    assert scripted(11) == scripted(11)
    assert scripted(11) != scripted(12)


def test_stress_raises_hr_bp_breathing_and_lowers_variability_then_recovers():
    # Breathing rises by 7 /min, well clear of its slow fluctuation (SD 0.7 /min).
    profile = PersonProfile(
        hr_reactivity_bpm=35.0, sbp_reactivity_mmhg=25.0, breathing_reactivity_bpm=8.0
    )
    engine = Engine(persons=[profile], seed=5)
    engine.start()
    rest_samples = run(engine, 60)
    rest = rest_samples[-1]
    rest_bpm = np.mean([s["bpm"] for s in rest_samples[-60:]])
    engine.trigger_stress(0.9, duration_s=180)
    during = run(engine, 20)
    # Onset takes tens of seconds: not there after 5 s, mostly there after 60 s.
    assert during[9]["stress_level"] < 0.4
    stressed = run(engine, 155)
    assert all(s["label"] == "stress" for s in during + stressed)
    peak = stressed[-1]
    assert peak["stress_level"] > 0.85
    assert peak["bpm"] - rest_bpm > 20
    assert peak["systolic"] - rest["systolic"] > 12
    assert peak["respiration_rate"] > rest["respiration_rate"] + 3
    assert peak["variability"] < 0.7 * rest["variability"]
    run(engine, 5)
    after = run(engine, 300)
    assert after[0]["label"] == "recovery"
    assert after[-1]["label"] == "rest"
    assert abs(np.mean([s["bpm"] for s in after[-60:]]) - rest_bpm) < 5


def test_trigger_stress_defaults_and_zero_level_ends_episode():
    engine = Engine(seed=1)
    engine.start()
    episode = engine.trigger_stress(0.7)
    assert episode.end_s - episode.start_s == 60.0
    run(engine, 10)
    engine.trigger_stress(0.0)
    assert engine.advance(0.5)[0]["label"] == "recovery"


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda e: e.trigger_stress(1.5), "stress_level"),
        (lambda e: e.trigger_stress(-0.1), "stress_level"),
        (lambda e: e.trigger_stress(float("nan")), "stress_level"),
        (lambda e: e.trigger_stress(0.5, duration_s=-3), "duration_s"),
        (lambda e: e.trigger_stress(0.5, person="nobody"), "nobody"),
        (lambda e: e.set_baseline(300), "bpm"),
        (lambda e: e.set_baseline(20), "bpm"),
        (lambda e: e.set_baseline("fast"), "bpm"),
        (lambda e: e.advance(-1.0), "dt_s"),
        (lambda e: e.advance(0.0), "dt_s"),
        (lambda e: e.remove_person("nobody"), "nobody"),
        (lambda e: e.configure(spontaneous_stress_per_h=-1), "spontaneous_stress_per_h"),
    ],
)
def test_bad_input_names_the_parameter_and_leaves_state_unchanged(call, name):
    engine = Engine(persons=2, seed=3, start_time=0)
    engine.start()
    run(engine, 2)
    before = (engine.t_s, engine.state, engine.profile(), engine.person_ids)
    twin = Engine(persons=2, seed=3, start_time=0)
    twin.start()
    run(twin, 2)
    with pytest.raises(ValueError, match=name):
        call(engine)
    assert (engine.t_s, engine.state, engine.profile(), engine.person_ids) == before
    assert engine.advance(0.5) == twin.advance(0.5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"persons": 0}, "persons"), ({"tick_hz": 0}, "tick_hz"), ({"tick_hz": 1000}, "tick_hz")],
)
def test_constructor_validates(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Engine(**kwargs)


def test_unique_ids_are_required():
    with pytest.raises(ValueError, match="unique"):
        Engine(persons=[PersonProfile(person_id="a"), PersonProfile(person_id="a")])


def test_state_machine_and_start_resets_to_baseline():
    engine = Engine(seed=4)
    assert engine.state is SimulationState.STOPPED
    assert engine.start() is True and engine.start() is False
    engine.trigger_stress(1.0, duration_s=600)
    run(engine, 60)
    assert engine.latest()["stress_level"] > 0.8
    assert engine.pause() is True and engine.pause() is False
    t = engine.t_s
    assert engine.advance(0.5) == [] and engine.t_s == t  # paused: time frozen
    assert engine.resume() is True
    assert engine.stop() is True and engine.stop() is False
    assert engine.start() is True
    sample = engine.advance(0.5)[0]
    assert sample["stress_level"] == 0.0 and sample["label"] == "rest"
    assert sample["seq"] == 121  # seq keeps increasing across restarts


def test_run_counts_starts_from_stopped_and_marks_the_reset():
    # t goes on across stop/start, so only `run` tells a consumer that the physiology reset.
    engine = Engine(seed=4)
    engine.start()
    engine.trigger_stress(1.0, duration_s=600)
    first = run(engine, 30)
    engine.pause()
    engine.resume()  # a pause is not a reset: same run
    first += run(engine, 1)
    engine.stop()
    engine.start()
    second = run(engine, 1)
    assert {s["run"] for s in first} == {1} and {s["run"] for s in second} == {2}
    assert engine.runs == 2
    assert second[0]["t"] == pytest.approx(first[-1]["t"] + 0.5)  # no jump in t
    assert first[-1]["stress_level"] > 0.5 and second[0]["stress_level"] == 0.0
    engine.pause()
    engine.start()  # from pause: a resume
    assert engine.runs == 2 and run(engine, 0.5)[0]["run"] == 2


def test_add_and_remove_persons_while_running():
    engine = Engine(persons=2, seed=6)
    engine.start()
    run(engine, 5)
    new_id = engine.add_person()
    assert engine.add_person(PersonProfile(person_id="alice", resting_hr_bpm=58)) == "alice"
    assert engine.person_ids == ["p0", "p1", new_id, "alice"]
    samples = run(engine, 10)
    alice = [s for s in samples if s["person_id"] == "alice"]
    assert len(alice) == 20 and alice[0]["variability"] > 0
    assert abs(np.mean([s["bpm"] for s in alice]) - 58) < 8
    engine.remove_person("p1")
    samples = engine.advance(0.5)
    assert [s["person_id"] for s in samples] == ["p0", new_id, "alice"]
    assert samples[2]["bpm"] == pytest.approx(58, abs=12)
    with pytest.raises(ValueError, match="already exists"):
        engine.add_person(PersonProfile(person_id="alice"))
    for pid in ["p0", new_id]:
        engine.remove_person(pid)
    with pytest.raises(ValueError, match="last one"):
        engine.remove_person("alice")


def test_spontaneous_episodes_fire_at_the_configured_rate():
    engine = Engine(persons=20, seed=8, spontaneous_stress_per_h=6)
    engine.start()
    labels = {s["label"] for s in run(engine, 1200, dt=1.0)}
    assert "stress" in labels
    quiet = Engine(persons=20, seed=8)
    quiet.start()
    assert {s["label"] for s in run(quiet, 600, dt=1.0)} == {"rest"}


def test_timestamps_follow_the_start_time():
    for start in (
        1_700_000_000.0,
        "2023-11-14T22:13:20Z",
        datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
    ):
        engine = Engine(seed=1, start_time=start)
        engine.start()
        sample = engine.advance(0.5)[0]
        assert engine.start_time_s == 1_700_000_000.0
        assert sample["ts"] == 1_700_000_000.5
        assert sample["timestamp"] == "2023-11-14T22:13:20.500000Z"
        assert math.isfinite(sample["variability"])


def test_the_default_start_time_is_now_not_1970():
    before = time.time()
    engine = Engine(seed=1)
    engine.start()
    sample = engine.advance(0.5)[0]
    assert before <= engine.start_time_s <= time.time()
    assert sample["ts"] == pytest.approx(engine.start_time_s + 0.5)
    assert sample["timestamp"].startswith(str(datetime.now(UTC).year))


def test_epoch_s_still_works_with_a_warning_until_0_3():
    with pytest.warns(FutureWarning, match="start_time"):
        engine = Engine(seed=1, epoch_s=1_700_000_000.0)
    with pytest.warns(FutureWarning, match="start_time_s"):
        assert engine.epoch_s == engine.start_time_s == 1_700_000_000.0


@pytest.mark.parametrize("start", ["2023-11-14T22:13:20", "soon", -1.0, datetime(2023, 1, 1)])
def test_a_bad_start_time_is_refused_naming_it(start):
    with pytest.raises(ValueError, match=r"start_time must .*, got"):
        Engine(seed=1, start_time=start)


def test_epoch_names_the_run_and_is_validated():
    first, second = Engine(seed=1), Engine(seed=1)
    assert first.epoch != second.epoch  # same seed, different runs: different seq numberings
    assert len(first.epoch) == 16
    assert Engine(epoch="lab-2026.1").epoch == "lab-2026.1"
    for bad in ("", "x" * 65, "a b", "é", 12):
        with pytest.raises(ValueError, match="epoch must be"):
            Engine(epoch=bad)


def test_a_re_added_person_id_continues_its_seq_instead_of_reusing_it():
    engine = Engine(persons=2, seed=3)
    engine.start()
    run(engine, 3)  # seq 1..6 for both
    engine.remove_person("p1")
    run(engine, 1)
    engine.add_person(PersonProfile(person_id="p1"))
    seqs = [s["seq"] for s in run(engine, 1) if s["person_id"] == "p1"]
    assert seqs == [7, 8]


def test_ids_beyond_the_retired_memory_restart_above_every_forgotten_seq(monkeypatch):
    monkeypatch.setattr("heartsim.engine.MAX_RETIRED_IDS", 2)
    engine = Engine(persons=1, seed=3)
    engine.start()
    for name, ticks in (("a", 5), ("b", 1), ("c", 1), ("d", 1)):
        engine.add_person(PersonProfile(person_id=name))
        run(engine, ticks * 0.5)
        engine.remove_person(name)
    # "a" (seq 5) was forgotten when "c" retired, so every id new from then on ("d") and "a"
    # itself start above 5; "d" (seq 6) is still remembered.
    engine.add_person(PersonProfile(person_id="a"))
    engine.add_person(PersonProfile(person_id="d"))
    seqs = {s["person_id"]: s["seq"] for s in engine.advance(0.5)}
    assert seqs["a"] == 6 and seqs["d"] == 7
    engine.add_person(PersonProfile(person_id="new"))
    assert {s["person_id"]: s["seq"] for s in engine.advance(0.5)}["new"] == 6


# ----- one owner ---------------------------------------------------------------------------------
COMMANDS = {
    "start": lambda e: e.start(),
    "stop": lambda e: e.stop(),
    "pause": lambda e: e.pause(),
    "resume": lambda e: e.resume(),
    "trigger_stress": lambda e: e.trigger_stress(0.5),
    "set_baseline": lambda e: e.set_baseline(70),
    "update_profile": lambda e: e.update_profile(resting_hr_bpm=70),
    "configure": lambda e: e.configure(tick_hz=5),
    "add_person": lambda e: e.add_person(),
    "remove_person": lambda e: e.remove_person("p1"),
    "advance": lambda e: e.advance(0.5),
}


def in_thread(fn):
    """``fn()`` on another thread; its result, or the exception it raised."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(fn)
        exc = future.exception()
        return exc if exc is not None else future.result()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bound_engine_refuses_commands_from_other_threads(command):
    engine = Engine(persons=2, seed=1)
    engine.start()
    engine.bind_owner()
    before = (engine.state, engine.person_ids, engine.tick_hz, engine.profile("p0"), engine.t_s)
    refused = in_thread(lambda: COMMANDS[command](engine))
    assert isinstance(refused, RuntimeError)
    assert f"Engine.{command} called from thread" in str(refused)
    assert "handle.call(" in str(refused)  # says what to do instead
    after = (engine.state, engine.person_ids, engine.tick_hz, engine.profile("p0"), engine.t_s)
    assert after == before  # nothing changed
    COMMANDS[command](engine)  # the owner may


def test_reads_are_allowed_from_any_thread_and_ownership_can_end():
    engine = Engine(persons=2, seed=1)
    engine.start()
    engine.advance(0.5)
    alive = {"loop": True}
    engine.bind_owner(lambda: alive["loop"])
    assert in_thread(lambda: (engine.state, engine.person_ids, engine.latest()["seq"])) == (
        SimulationState.RUNNING,
        ["p0", "p1"],
        1,
    )
    assert isinstance(in_thread(engine.stop), RuntimeError)
    alive["loop"] = False  # the owner's loop has ended: anyone may use the engine again
    assert in_thread(engine.stop) is True
    engine.bind_owner()
    assert isinstance(in_thread(engine.start), RuntimeError)
    engine.release_owner()
    assert in_thread(engine.start) is True


def test_an_unbound_engine_works_from_any_thread():
    engine = Engine(seed=1)
    assert in_thread(engine.start) is True
    assert len(in_thread(lambda: engine.advance(0.5))) == 1


def test_max_persons_caps_construction_and_add_person():
    from heartsim.engine import PersonLimitError

    with pytest.raises(ValueError, match=r"persons \(3\) exceeds max_persons \(2\)"):
        Engine(persons=3, max_persons=2)
    with pytest.raises(ValueError, match="max_persons must be an integer >= 1"):
        Engine(max_persons=0)
    engine = Engine(persons=1, seed=2, max_persons=2)
    assert engine.add_person() == "p1"
    with pytest.raises(PersonLimitError, match=r"max_persons \(2\) reached"):
        engine.add_person(PersonProfile(person_id="carol"))
    assert engine.person_ids == ["p0", "p1"]  # unchanged
    engine.remove_person("p1")
    assert engine.add_person(PersonProfile(person_id="carol")) == "carol"
    assert Engine(persons=5).max_persons is None  # no cap unless asked (batch simulate)
