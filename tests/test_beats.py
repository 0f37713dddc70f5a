"""The compiled beat loop: layout of its output, resumption, and independence of persons."""

import dataclasses

import numpy as np
import pytest

from heartsim.physiology import BeatState, Episode, ProfileArrays, Schedule, sample_population
from heartsim.physiology.beats import generate_beats


def _setup(n=5, seed=3):
    arrays = ProfileArrays.from_profiles(sample_population(n, seed=seed))
    schedule = Schedule.from_episodes([[Episode(60.0, 180.0, 0.9)]] * n)
    state = BeatState.initial(arrays, 0.0, np.random.default_rng(seed))
    return arrays, schedule, state


def _copy(state):
    return BeatState(*(getattr(state, f.name).copy() for f in dataclasses.fields(state)))


def test_block_is_person_major_and_intervals_tile_time():
    arrays, schedule, state = _setup()
    block = generate_beats(state, arrays, schedule, 300.0, np.random.default_rng(1))
    assert block.counts.sum() == block.n_beats
    for p, (t, rr) in enumerate(zip(block.split(block.t_s), block.split(block.rr_ms), strict=True)):
        assert t[0] >= 0.0 and t[-1] <= 300.0 < state.next_beat_s[p]
        # Each recorded interval ends at its beat: the gap since the previous beat.
        assert np.diff(t) * 1000 == pytest.approx(rr[1:], abs=0.05)
        assert state.next_beat_s[p] - t[-1] == pytest.approx(
            state.pending_rr_ms[p] / 1000, abs=1e-4
        )
    labels = set(block.label.tolist())
    assert labels == {0, 1, 2}  # rest, stress, recovery


def test_running_out_of_room_resumes_with_identical_beats():
    arrays, schedule, state = _setup()
    roomy, tight = _copy(state), _copy(state)
    a = generate_beats(roomy, arrays, schedule, 400.0, np.random.default_rng(2))
    b = generate_beats(tight, arrays, schedule, 400.0, np.random.default_rng(2), capacity=1)
    for field in dataclasses.fields(a):
        np.testing.assert_array_equal(getattr(a, field.name), getattr(b, field.name))
    for field in dataclasses.fields(roomy):
        np.testing.assert_array_equal(getattr(roomy, field.name), getattr(tight, field.name))


def test_a_range_of_persons_advances_only_them():
    arrays, schedule, state = _setup()
    before = _copy(state)
    block = generate_beats(
        state, arrays, schedule, 120.0, np.random.default_rng(4), persons=slice(1, 3)
    )
    assert block.counts.shape == (2,) and block.counts.min() > 100
    moved = state.next_beat_s != before.next_beat_s
    assert moved.tolist() == [False, True, True, False, False]


def test_successive_calls_continue_where_the_last_stopped():
    arrays, schedule, state = _setup(n=2)
    rng = np.random.default_rng(5)
    first = generate_beats(state, arrays, schedule, 100.0, rng)
    second = generate_beats(state, arrays, schedule, 200.0, rng)
    for p in range(2):
        gap = second.split(second.t_s)[p][0] - first.split(first.t_s)[p][-1]
        assert gap * 1000 == pytest.approx(second.split(second.rr_ms)[p][0], abs=0.05)
