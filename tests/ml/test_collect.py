"""``heartsim.ml.collect``: make_dataset's table from a running server.

In process the server is stepped in virtual time (20 simulated minutes in about a second);
remote, the stream is recorded in real time. Async tests stand in for notebook cells: their
loop is the one a ``start_server`` handle in loop mode joins.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import numpy as np
import pandas as pd
import pytest

from heartsim import Client, Episode, HeartsimServer
from heartsim.ml import (
    HRVFeatures,
    StressClassifier,
    collect,
    collect_async,
    fast_forward,
    make_dataset,
)
from heartsim.ml.dataset import EPISODE_COLUMNS
from heartsim.notebook import start_server, stop_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
async def stop_everything() -> AsyncIterator[None]:
    """No test leaves a start_server server behind."""
    yield
    await asyncio.wait_for(stop_server(), 15)


def dtypes(table: pd.DataFrame) -> list[tuple[str, str]]:
    """Column names and dtype kinds (categoricals compare by kind, not by their categories)."""
    return [(name, str(dtype)) for name, dtype in table.dtypes.items()]


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return make_dataset(n_persons=2, seed=1, duration_s=600)


async def test_same_table_as_make_dataset_with_labelled_stress(reference: pd.DataFrame) -> None:
    async with HeartsimServer(port=0, persons=3, seed=4, autostart=True) as server:
        data = await collect_async(server, 900, protocol="lab", seed=2)
    assert dtypes(data) == dtypes(reference)
    assert data.attrs["hrv_features"] == reference.attrs["hrv_features"]
    assert sorted(data["person_id"].unique()) == ["p0", "p1", "p2"]
    # Every person met the lab protocol's stressor, and the truth says so.
    for _, person in data.groupby("person_id", observed=True):
        assert person["stressed"].any() and not person["stressed"].all()
        assert set(person["label"].unique()) >= {"rest", "stress"}
        assert np.isfinite(person["episode_start_s"]).any()
        steps = np.diff(person["t_end_s"].to_numpy())
        assert np.allclose(steps, 5.0)
    stressed = data[data["stressed"]]
    assert (stressed["stress_level"] > 0).all()
    assert (stressed["t_end_s"] >= stressed["episode_start_s"]).all()
    # Good enough to train on.
    model = StressClassifier().fit(data, data["stressed"])
    assert model.feature_names == ["hr_delta_bpm", "rmssd_log_ratio", "hr_trend_bpm"]


async def test_twenty_minutes_take_seconds_and_the_clock_resumes() -> None:
    handle = start_server(persons=4, seed=1)
    await handle.wait_ready()
    t0 = handle.engine.t_s
    started = time.perf_counter()
    data = await collect_async(handle, 20 * 60, protocol="lab", seed=1)
    elapsed = time.perf_counter() - started
    assert elapsed < 10.0, f"20 simulated minutes took {elapsed:.1f} s"
    assert handle.engine.t_s == pytest.approx(t0 + 1200.0, abs=1e-6)
    # (20 min - the first 60 s window) / 5 s per window, per person
    assert len(data) == pytest.approx(4 * (1200 - 60) / 5, abs=4 * 2)
    # The server's own clock ticks again afterwards.
    assert handle.runner.running
    before = handle.engine.t_s
    await asyncio.sleep(1.2)
    assert handle.engine.t_s > before
    await handle.stop()


async def test_features_are_those_of_the_streamed_messages() -> None:
    """What collect featurises is what a hub subscriber (a WebSocket client) receives."""
    async with HeartsimServer(port=0, persons=2, seed=6, autostart=True) as server:
        seq = {pid: server.hub.latest(pid) for pid in server.engine.person_ids}
        after = {pid: (m.seq if m is not None else None) for pid, m in seq.items()}
        data = await collect_async(server, 300, protocol=[Episode(120.0, 240.0, 0.8)])
        streamed = []
        for pid in server.engine.person_ids:
            history = server.hub.history(pid)
            assert history is not None
            streamed += [m.data() for m in history.after(after[pid])]
    assert len(streamed) == 2 * 300 * 2  # 2 Hz, 2 persons, no tick lost
    table = HRVFeatures().fit_transform(streamed)
    pd.testing.assert_frame_equal(data[table.columns].reset_index(drop=True), table)


async def test_protocol_episodes_start_at_their_exact_simulated_time() -> None:
    async with HeartsimServer(port=0, persons=2, seed=3, tick_hz=2, autostart=True) as server:
        await fast_forward(server, 10.0)
        t0 = server.engine.t_s
        schedule = {"p1": [Episode(100.25, 190.0, 0.9)]}
        data = await collect_async(server, 400, protocol=schedule, persons=["p1"])
    assert set(data["person_id"]) == {"p1"}
    onset = t0 + 100.25
    assert (data["episode_start_s"].dropna() == onset).all()
    assert (data["episode_end_s"].dropna() == t0 + 190.0).all()
    assert (data["episode_level"].dropna() == 0.9).all()
    before = data[data["t_end_s"] <= onset]
    assert (before["stress_share"] == 0).all() and before["episode_start_s"].isna().all()
    during = data[(data["t_end_s"] >= onset + 60.5) & (data["t_end_s"] <= t0 + 190.0)]
    assert len(during) > 0 and during["stressed"].all()
    assert (data[data["t_end_s"] > onset]["stress_share"] > 0).any()


async def test_same_seed_same_table() -> None:
    async def once() -> pd.DataFrame:
        server = HeartsimServer(port=0, persons=3, seed=9)  # autostart=False
        async with server:
            server.engine.start()  # right before collecting: no real-time tick in between
            return await collect_async(server, 600, protocol="lab", seed=5)

    first, second = await once(), await once()
    pd.testing.assert_frame_equal(first, second)


async def test_fast_forward_feeds_subscribers_and_an_attached_model() -> None:
    data = make_dataset(n_persons=4, seed=3, duration_s=1200)
    model = StressClassifier().fit(data, data["stressed"])
    handle = start_server(persons=1, tick_hz=10, seed=2)
    await handle.wait_ready()
    handle.attach_model(model)
    subscription = handle.subscribe(maxsize=10_000)
    episodes = await fast_forward(handle, 120.0, protocol=[Episode(90.0, 110.0, 0.7)])
    messages = []
    while (message := subscription.get_nowait()) is not None:
        messages.append(message.data())
    subscription.close()
    await handle.stop()
    assert len(episodes) == 1 and episodes.loc[0, "level"] == 0.7
    ours = [m for m in messages if m["t"] > episodes.loc[0, "start_s"] - 90.0]
    assert len(ours) >= 1200  # every tick of the fast-forward, none dropped
    assert subscription.dropped == 0
    assert ours[-1]["prediction"] in ("stress", "calm")
    assert any(m["label"] == "stress" for m in ours)


async def test_handle_in_thread_mode_from_another_loop() -> None:
    handle = start_server(persons=2, seed=8, mode="thread")
    data = await collect_async(handle, 180, protocol="lab", seed=1)
    assert len(data) == pytest.approx(2 * (180 - 60) / 5, abs=4)
    assert handle.runner.running
    await handle.stop()


def test_blocking_collect_from_a_script() -> None:
    handle = start_server(persons=2, seed=8)  # no loop here: thread mode
    try:
        data = collect(handle, 120, window_s=30, step_s=10, baseline_s=None)
    finally:
        handle.stop()
    time_features = ["mean_hr_bpm", "sdnn_ms", "rmssd_ms", "pnn50_pct", "sd1_ms", "sd2_ms"]
    assert list(data.columns[:6]) == time_features
    assert "hr_delta_bpm" not in data
    assert len(data) == pytest.approx(2 * (120 - 30) / 10, abs=2)


BLOCKING_IN_A_CELL = """
import asyncio
from heartsim.ml import collect
from heartsim.notebook import start_server

async def cell():
    h = start_server(persons=2, seed=1)  # loop mode: on this loop, like a kernel's
    await h.wait_ready()
    data = collect(h, 300, protocol="lab", seed=1)  # blocking, inside the running loop
    print(len(data), h.runner.running)
    await h.stop()

asyncio.run(cell())
"""


def test_blocking_collect_inside_a_running_loop() -> None:
    """A notebook cell calling the blocking twin: it re-enters the loop (nest_asyncio2),
    run in a subprocess because that patch is process-wide."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BLOCKING_IN_A_CELL)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    windows, running = result.stdout.split()
    assert int(windows) == pytest.approx(2 * (300 - 60) / 5, abs=4)
    assert running == "True"


async def test_remote_server_in_real_time() -> None:
    async with HeartsimServer(port=0, persons=2, seed=2, tick_hz=10, autostart=True) as server:
        client = Client(server.url)
        started = time.perf_counter()
        data = await collect_async(
            client,
            12.0,
            window_s=10,
            step_s=1,
            baseline_s=None,
            protocol={"p1": [Episode(0.5, 30.0, 1.0)]},
        )
        elapsed = time.perf_counter() - started
    assert 12.0 <= elapsed < 30.0
    assert set(data["person_id"]) == {"p0", "p1"}
    assert len(data) >= 2
    p1 = data[data["person_id"] == "p1"]
    assert p1["episode_start_s"].notna().all() and (p1["episode_level"] == 1.0).all()
    assert (p1["stress_share"] > 0).all()
    assert data[data["person_id"] == "p0"]["episode_start_s"].isna().all()
    assert set(EPISODE_COLUMNS) <= set(data.columns)


async def test_refusals() -> None:
    async with HeartsimServer(port=0, persons=1, seed=1) as server:  # simulation stopped
        with pytest.raises(RuntimeError, match="simulation is stopped: start it first"):
            await collect_async(server, 60)
        server.engine.start()
        with pytest.raises(ValueError, match="unknown person"):
            await collect_async(server, 60, persons=["p7"])
        with pytest.raises(ValueError, match="duration_s"):
            await collect_async(server, 0)
        with pytest.raises(ValueError, match="window_s"):
            await collect_async(server, 60, window_s=5)
        with pytest.raises(TypeError, match="source must be"):
            await collect_async(object(), 60)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="in-process"):
            await fast_forward(server.url, 60)  # type: ignore[arg-type]
        first = asyncio.ensure_future(fast_forward(server, 600))
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="already stepping"):
            await collect_async(server, 60)
        await first
        # Stopped half-way (e.g. from the dashboard): an error, not an endless loop.
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, server.engine.stop)
        with pytest.raises(RuntimeError, match="stopped during the collection"):
            await collect_async(server, 3600)
        assert server.runner.running
