"""The control panel and the live plot against real servers (no kernel: widgets work without one).

Buttons are pressed with ``button.click()``, which runs the callbacks as a browser click would.
The servers tick fast (50 Hz) so that live updates and rate limits show within a second or two.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import ipywidgets
import numpy as np
import pytest

from heartsim.engine import Engine, SimulationState
from heartsim.hub import Hub
from heartsim.notebook import start_server
from heartsim.server import HeartsimServer
from heartsim.widgets import (
    ControlPanel,
    controls,
    live_plot,
    parse_duration,
    prediction_badge,
)

TICK_HZ = 50.0


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` every 10 ms until true; fail after ``timeout_s``."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout_s)


@pytest.fixture
async def server() -> AsyncIterator[HeartsimServer]:
    """A real server on a free loopback port: two persons, 50 Hz, not started."""
    server = HeartsimServer(port=0, tick_hz=TICK_HZ, seed=7, persons=2)
    await server.start()
    yield server
    await asyncio.wait_for(server.stop(), 10)


@pytest.fixture
async def panel(server: HeartsimServer) -> AsyncIterator[ControlPanel]:
    panel = controls(server)
    yield panel
    panel.close()
    await panel.wait_stopped()


def other_tasks(before: set[asyncio.Task[Any]]) -> list[str]:
    """Names of the tasks alive now that were not before (this one excluded), sorted."""
    current = asyncio.current_task()
    return sorted(t.get_name() for t in asyncio.all_tasks() - before if t is not current)


def new_messages(server: HeartsimServer, after_seq: int, person: str = "p0") -> list[dict]:
    history = server.hub.history(person)
    return [m.data() for m in history.after(after_seq)] if history is not None else []


def latest_seq(server: HeartsimServer, person: str = "p0") -> int:
    latest = server.hub.latest(person)
    return latest.seq if latest is not None else 0


# ----- the control panel -----------------------------------------------------------------------
async def test_panel_is_a_widget_tree_with_every_control(panel: ControlPanel) -> None:
    assert isinstance(panel, ipywidgets.VBox)
    tree = list(_walk(panel))
    for part in (
        panel.start_button,
        panel.stop_button,
        panel.baseline,
        panel.baseline_button,
        panel.stress_level,
        panel.stress_duration,
        panel.stress_button,
        panel.person,
        panel.refresh_button,
        panel.status,
        panel.error,
    ):
        assert part in tree
    assert panel.person.options == ("p0", "p1")
    assert panel.baseline.value == pytest.approx(panel._bridge.engine.profile().resting_hr_bpm, 1)
    assert "<b>stopped</b>" in panel.status.value
    assert repr(panel) == "ControlPanel(person='p0')"


def _walk(box: ipywidgets.Box) -> Iterator[ipywidgets.Widget]:
    for child in box.children:
        yield child
        if isinstance(child, ipywidgets.Box):
            yield from _walk(child)


async def test_start_and_stop_buttons_drive_the_engine(
    server: HeartsimServer, panel: ControlPanel
) -> None:
    engine = server.engine
    panel.start_button.click()
    assert engine.state is SimulationState.RUNNING
    assert panel.message.value == "Simulation started" and panel.error.value == ""
    await wait_until(lambda: latest_seq(server) >= 3)

    panel.start_button.click()
    assert panel.message.value == "Simulation already running"

    panel.stop_button.click()
    assert engine.state is SimulationState.STOPPED
    assert panel.message.value == "Simulation stopped"
    assert "<b>stopped</b>" in panel.status.value  # at once, not at the next message
    seq = latest_seq(server)
    await asyncio.sleep(0.2)
    assert latest_seq(server) == seq  # no samples while stopped


async def test_trigger_stress_raises_the_engines_stress(
    server: HeartsimServer, panel: ControlPanel
) -> None:
    panel.start_button.click()
    await wait_until(lambda: latest_seq(server) >= 5)
    assert server.engine.latest()["stress_level"] == 0.0
    seq = latest_seq(server)

    panel.stress_level.value = 1.0
    panel.stress_duration.value = "30"
    panel.stress_button.click()
    assert panel.error.value == "", panel.error.value
    assert panel.message.value == "Stress 1 triggered for p0 for 30 s"

    await wait_until(lambda: server.engine.latest()["stress_level"] > 0.08, timeout_s=5)
    after = new_messages(server, seq)
    assert {m["label"] for m in after} == {"stress"}
    levels = [m["stress_level"] for m in after]
    assert levels == sorted(levels)  # rising, tick after tick
    assert server.engine.latest("p1")["stress_level"] == 0.0  # only the selected person

    # The status line follows the live messages.
    await wait_until(lambda: " · stress · " in panel.status.value)


async def test_level_zero_ends_the_episode(server: HeartsimServer, panel: ControlPanel) -> None:
    panel.start_button.click()
    panel.stress_button.click()
    await wait_until(lambda: server.engine.latest() is not None)
    panel.stress_level.value = 0.0
    panel.stress_button.click()
    assert panel.message.value == "Stress of p0 ended"
    seq = latest_seq(server)
    await wait_until(lambda: latest_seq(server) > seq)
    assert server.engine.latest()["label"] != "stress"


async def test_set_baseline_button(server: HeartsimServer, panel: ControlPanel) -> None:
    panel.baseline.value = 95
    panel.baseline_button.click()
    assert server.engine.profile("p0").resting_hr_bpm == 95
    assert panel.message.value == "Baseline of p0 set to 95 bpm"
    # The slider cannot leave the engine's range (40 to 120 bpm): out-of-range values clamp.
    panel.baseline.value = 500
    assert panel.baseline.value == 120


INVALID_DURATIONS = {
    "0.5": "duration_s must be between 1 and 3600, got 0.5",
    "5000": "duration_s must be between 1 and 3600, got 5000.0",
    "nan": "duration_s must be between 1 and 3600, got nan",
    "soon": "duration must be a number of seconds (1 to 3600) or empty for the default 60 s, "
    "got 'soon'",
}


async def test_invalid_stress_durations_are_shown_and_change_nothing(
    server: HeartsimServer, panel: ControlPanel
) -> None:
    panel.start_button.click()
    await wait_until(lambda: latest_seq(server) >= 2)
    seq = latest_seq(server)
    for duration, expected in INVALID_DURATIONS.items():
        panel.stress_duration.value = duration
        panel.stress_button.click()
        assert panel.last_error == f"Trigger stress: {expected}"
        assert expected in panel.error.value and panel.message.value == ""

    await wait_until(lambda: latest_seq(server) >= seq + 10)
    after = new_messages(server, seq)
    assert {m["label"] for m in after} == {"rest"}
    assert max(m["stress_level"] for m in after) == 0.0

    # A valid action afterwards clears the error.
    panel.stress_duration.value = ""
    panel.stress_button.click()
    assert panel.error.value == "" and panel.last_error is None
    assert panel.message.value == "Stress 0.8 triggered for p0 for 60 s"


async def test_stress_while_stopped_is_refused_in_the_panel(
    server: HeartsimServer, panel: ControlPanel
) -> None:
    panel.stress_button.click()
    assert "Trigger stress: the simulation is stopped; press Start first" in panel.error.value
    assert server.engine.state is SimulationState.STOPPED
    # Nothing was scheduled: once started, the person is at rest.
    panel.start_button.click()
    assert panel.error.value == ""
    await wait_until(lambda: latest_seq(server) >= 10)
    assert {m["label"] for m in new_messages(server, 0)} == {"rest"}


async def test_persons_refresh_select_and_vanish(
    server: HeartsimServer, panel: ControlPanel
) -> None:
    engine = server.engine
    new = engine.add_person()
    assert new not in panel.person.options
    panel.refresh_button.click()
    assert panel.person.options == ("p0", "p1", new)
    assert panel.person.value == "p0"
    assert panel.message.value == f"3 persons: p0, p1, {new}"

    panel.person.value = "p1"
    assert panel.baseline.value == pytest.approx(engine.profile("p1").resting_hr_bpm, abs=0.5)
    panel.start_button.click()
    await wait_until(lambda: "p1 · " in panel.status.value and " bpm" in panel.status.value)

    panel.baseline.value = 100
    panel.baseline_button.click()
    assert engine.profile("p1").resting_hr_bpm == 100
    assert engine.profile("p0").resting_hr_bpm != 100

    # The person goes away behind the panel's back: the next action says so, nothing changes.
    engine.remove_person("p1")
    panel.stress_button.click()
    assert "person 'p1' is unknown" in panel.error.value
    panel.baseline_button.click()
    assert "person 'p1' is unknown" in panel.error.value
    panel.refresh_button.click()
    assert panel.person.options == ("p0", new)


async def test_status_line_updates_from_live_messages_at_a_bounded_rate(
    server: HeartsimServer,
) -> None:
    panel = controls(server, status_hz=4)
    try:
        server.engine.start()  # started elsewhere (as through the REST API)
        await wait_until(
            lambda: "<b>running</b>" in panel.status.value and "bpm" in panel.status.value
        )
        await wait_until(lambda: latest_seq(server) >= 10)

        def shows_latest() -> bool:
            latest = server.engine.latest()
            return f"{latest['bpm']} bpm" in panel.status.value

        await wait_until(shows_latest)
        assert "RMSSD " in panel.status.value and " ms" in panel.status.value
        assert "0 WebSocket clients" in panel.status.value

        n0, t0 = panel.status_updates, time.monotonic()
        await asyncio.sleep(1.0)
        rate = (panel.status_updates - n0) / (time.monotonic() - t0)
        assert 1 <= rate <= 4 + 1, rate  # 50 messages per second, at most 4 updates

        # Stopped elsewhere: no more messages, the idle refresh still shows it.
        server.engine.stop()
        await wait_until(lambda: "<b>stopped</b>" in panel.status.value, timeout_s=3)
    finally:
        panel.close()
        await panel.wait_stopped()


async def test_panel_options_are_validated(server: HeartsimServer) -> None:
    with pytest.raises(ValueError, match="person 'nobody' is unknown"):
        controls(server, person="nobody")
    with pytest.raises(ValueError, match="status_hz"):
        controls(server, status_hz=0)
    panel = controls(server, person="p1")
    assert panel.person.value == "p1"
    panel.close()
    await panel.wait_stopped()


def test_parse_duration() -> None:
    assert parse_duration(" ") is None
    assert parse_duration("12.5") == 12.5
    with pytest.raises(ValueError, match="got 'x'"):
        parse_duration("x")


# ----- the live plot ---------------------------------------------------------------------------
async def test_live_plot_lines_receive_data_and_redraws_are_bounded_by_fps(
    server: HeartsimServer,
) -> None:
    plot = live_plot(server, window_s=30, fps=5)
    try:
        assert plot.backend == "ipympl"
        assert isinstance(plot.widget, ipywidgets.VBox)
        server.engine.start()
        await wait_until(lambda: len(plot.lines["bpm"].get_xdata()) >= 20)
        for name in ("bpm", "rmssd", "systolic", "diastolic"):
            assert len(plot.lines[name].get_ydata()) >= 20, name
        data = plot.data()
        latest = server.engine.latest()
        assert data["t"][-1] <= latest["t"]
        assert data["systolic"].min() > data["diastolic"].max() - 30
        assert 30 < data["bpm"].mean() < 200

        d0, t0 = plot.draws, time.monotonic()
        await asyncio.sleep(1.2)
        elapsed = time.monotonic() - t0
        draws = plot.draws - d0
        # 60 messages in these 1.2 s, but at most 5 redraws a second (one frame of slack).
        assert 5 * elapsed - 4 <= draws <= 5 * elapsed + 1, (draws, elapsed)
        lo, hi = plot.axes[-1].get_xlim()
        assert hi - lo == pytest.approx(30)
    finally:
        plot.stop()
        await plot.wait_stopped()


def run_ticks(server: HeartsimServer, n: int) -> None:
    """``n`` extra ticks right now (simulated time runs ahead of the real-time clock)."""
    for _ in range(n):
        server.runner.tick()


async def test_live_plot_breaks_its_lines_where_stop_and_start_reset_the_person(
    server: HeartsimServer,
) -> None:
    plot = live_plot(server, fps=10, window_s=30)
    try:
        server.engine.start()
        await wait_until(lambda: len(plot.data()["t"]) >= 20)
        server.engine.stop()
        server.engine.start()  # back at baseline; t goes on
        await wait_until(lambda: (plot.data()["run"] == 2).sum() >= 10)
        data = plot.data()
        (boundary,) = np.flatnonzero(np.diff(data["run"]))
        t, bpm = plot.lines["bpm"].get_data()
        (gap,) = np.flatnonzero(np.isnan(t))
        assert np.isnan(bpm[gap])
        assert (t[gap - 1], t[gap + 1]) == (data["t"][boundary], data["t"][boundary + 1])
        assert data["t"][boundary + 1] > data["t"][boundary]  # no jump back: only the break
    finally:
        plot.stop()
        await plot.wait_stopped()


async def test_live_plot_window_and_backlog(server: HeartsimServer) -> None:
    server.engine.start()
    run_ticks(server, 100)  # 2 s of history
    plot = live_plot(server, window_s=1.0, fps=10, backend="static")
    try:
        # The buffered history of the last window_s arrives at once, before new messages.
        await wait_until(lambda: len(plot.data()["t"]) >= 40)
        t = plot.data()["t"]
        assert t[-1] - t[0] <= 1.0
        assert len(t) <= TICK_HZ * 1.0 + 1
    finally:
        plot.stop()
        await plot.wait_stopped()


async def test_live_plot_shades_stress_episodes(server: HeartsimServer) -> None:
    plot = live_plot(server, window_s=20, fps=10)
    try:
        server.engine.start()
        await wait_until(lambda: len(plot.data()["t"]) >= 10)
        assert plot.episodes == []
        server.engine.trigger_stress(0.9, duration_s=1.0)
        run_ticks(server, 60)

        def episode_over() -> bool:
            labels = plot.data()["label"]
            return "stress" in labels and labels[-1] != "stress"

        await wait_until(episode_over)
        episodes = plot.episodes
        stress = [(start, end) for label, start, end in episodes if label == "stress"]
        assert len(stress) == 1
        start, end = stress[0]
        assert 0.9 <= end - start <= 1.2
        assert len(plot._spans) == 3 * len(episodes)  # one span per axis and episode
    finally:
        plot.stop()
        await plot.wait_stopped()


async def test_static_fallback_renders_png_images(server: HeartsimServer) -> None:
    plot = live_plot(server, window_s=10, fps=5, backend="static")
    try:
        assert plot.canvas is None and isinstance(plot.image, ipywidgets.Image)
        first = bytes(plot.image.value)
        assert first.startswith(b"\x89PNG")
        server.engine.start()
        await wait_until(lambda: bytes(plot.image.value) != first)
        assert bytes(plot.image.value).startswith(b"\x89PNG")
    finally:
        plot.stop()
        await plot.wait_stopped()


async def test_live_plot_displays_as_its_widget(server: HeartsimServer) -> None:
    plot = live_plot(server, person="p1", fps=2)
    try:
        bundle = plot._repr_mimebundle_()
        assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == (
            plot.widget.model_id
        )
        assert bundle["text/plain"] == (
            "LivePlot(person='p1', window_s=120, fps=2, backend='ipympl')"
        )
    finally:
        plot.close()
        await plot.wait_stopped()


async def test_live_plot_switches_person(server: HeartsimServer) -> None:
    plot = live_plot(server, fps=10)
    try:
        server.engine.set_baseline(50, person="p0")
        server.engine.set_baseline(115, person="p1")
        server.engine.start()
        await wait_until(lambda: len(plot.data()["t"]) >= 5)
        plot.set_person("p1")
        assert plot.person == "p1"
        await wait_until(lambda: len(plot.data()["t"]) >= 5)
        assert server.hub.subscriber_count("p0") == 0
        assert server.hub.subscriber_count("p1") == 1
        with pytest.raises(ValueError, match="unknown"):
            plot.set_person("p9")
    finally:
        plot.stop()
        await plot.wait_stopped()


async def test_live_plot_options_are_validated(server: HeartsimServer) -> None:
    for kwargs, match in [
        ({"fps": 0}, "fps"),
        ({"fps": 100}, "fps"),
        ({"window_s": 0}, "window_s"),
        ({"backend": "svg"}, "backend"),
        ({"person": "p9"}, "unknown"),
    ]:
        with pytest.raises(ValueError, match=match):
            live_plot(server, **kwargs)
    assert server.hub.subscriber_count() == 0


async def test_a_failing_redraw_is_shown_in_the_widget_not_lost(
    server: HeartsimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plot = live_plot(server, fps=10)

    def broken() -> None:
        raise ZeroDivisionError("drawing went wrong")

    monkeypatch.setattr(plot, "_draw", broken)
    server.engine.start()
    await wait_until(lambda: not plot.running)
    assert "live plot stopped: ZeroDivisionError: drawing went wrong" in plot.info.value
    await plot.wait_stopped()


# ----- lifecycle -------------------------------------------------------------------------------
async def test_stop_leaves_no_tasks_and_no_subscriptions(server: HeartsimServer) -> None:
    before = asyncio.all_tasks()
    server.engine.start()
    plots = [live_plot(server, fps=10), live_plot(server, fps=10, person="p1")]
    panel = controls(server)
    await wait_until(lambda: all(len(p.data()["t"]) >= 5 for p in plots))
    assert len(other_tasks(before)) == 6  # a reader and a renderer each
    assert server.hub.subscriber_count() == 3

    for plot in plots:
        plot.stop()
        plot.stop()  # idempotent
    panel.close()
    for thing in (*plots, panel):
        await thing.wait_stopped()
    assert other_tasks(before) == []
    assert server.hub.subscriber_count() == 0
    assert not any(p.running for p in plots) and not panel.running
    draws = [p.draws for p in plots]
    await asyncio.sleep(0.3)
    assert [p.draws for p in plots] == draws


async def test_server_shutdown_ends_the_widgets_tasks() -> None:
    server = HeartsimServer(port=0, tick_hz=TICK_HZ, seed=1)
    await server.start()
    before = asyncio.all_tasks()
    panel, plot = controls(server), live_plot(server, fps=10)
    server.engine.start()
    await wait_until(lambda: len(plot.data()["t"]) >= 3)
    await wait_until(lambda: "<b>running</b>" in panel.status.value)
    await server.stop()  # closes every hub subscription
    await wait_until(lambda: not plot.running and not panel.running)
    assert "live plot ended: server shutting down" in plot.info.value
    assert [n for n in other_tasks(before) if n.startswith("heartsim-widget")] == []
    # The panel says so, rather than the engine's last state ("running"), and its controls
    # are disabled.
    assert panel.status.value == "<b>disconnected</b> · p0 · server shutting down"
    assert panel.disconnected == "server shutting down"
    assert all(control.disabled for control in panel._controls)
    panel.close()


async def test_a_stopped_panel_says_its_status_no_longer_follows(
    server: HeartsimServer, panel: ControlPanel
) -> None:
    panel.stop()
    await panel.wait_stopped()
    assert panel.status.value.endswith(" · live status off (stop() was called)")
    server.engine.start()  # elsewhere: the line cannot know
    panel.stop_button.click()  # the buttons keep working, and render the line once more
    assert panel.message.value == "Simulation stopped"
    assert panel.status.value.startswith("<b>stopped</b> · p0")
    assert panel.status.value.endswith("live status off (stop() was called)")


async def test_panel_of_a_start_server_handle_says_disconnected_after_stop() -> None:
    handle = start_server(port=None, tick_hz=TICK_HZ, seed=2, persons=1)
    await handle.wait_ready()
    panel = controls(handle)
    try:
        panel.start_button.click()
        await wait_until(
            lambda: "<b>running</b>" in panel.status.value and "bpm" in panel.status.value
        )
        assert not panel.start_button.disabled and panel.disconnected is None
        await handle.stop()
        await wait_until(lambda: panel.disconnected is not None)
        assert "<b>running</b>" not in panel.status.value
        assert panel.status.value.startswith("<b>disconnected</b> · p0 · ")
        assert all(control.disabled for control in panel._controls)
    finally:
        panel.close()
        await handle.stop()


def test_widgets_need_a_loop() -> None:
    handle = SimpleNamespace(engine=Engine(seed=1), hub=Hub())
    with pytest.raises(RuntimeError, match="need a running asyncio loop"):
        controls(handle)
    with pytest.raises(RuntimeError, match="need a running asyncio loop"):
        live_plot(handle)
    with pytest.raises(TypeError, match=r"with \.engine and \.hub"):
        controls(object())


# ----- the prediction badge --------------------------------------------------------------------
class ScriptedPredictor:
    """Stands in for a LivePredictor: null during a person's first ``warm`` messages, then
    "stress"; raises once ``fail`` is set."""

    window_s = 60.0
    feature_names = ("rmssd_ms",)
    errors = 0
    last_error = None

    def __init__(self, warm: int) -> None:
        self.warm = warm
        self.seen: dict[str, int] = {}
        self.fail = False

    def update_many(self, samples: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        if self.fail:
            raise RuntimeError("model exploded")
        out: list[dict[str, Any] | None] = []
        for sample in samples:
            n = self.seen[sample["person_id"]] = self.seen.get(sample["person_id"], 0) + 1
            ready = {"prediction": "stress", "confidence": 0.9, "stress_score": 0.9}
            out.append(ready if n > self.warm else None)
        return out

    def forget(self, person_id: str | None = None) -> None:
        self.seen.clear()


async def test_prediction_badge_says_what_the_model_does_now(server: HeartsimServer) -> None:
    badge = prediction_badge(server)
    try:
        assert isinstance(badge, ipywidgets.HTML)
        assert badge.status == "no model" and "no model attached" in badge.value
        predictor = ScriptedPredictor(warm=25)
        server.runner.attach_predictor(predictor, name="scripted")  # type: ignore[arg-type]
        server.engine.start()
        await wait_until(lambda: badge.status == "warming up")
        assert "none yet (the first 60 s window is filling)" in badge.value
        await wait_until(lambda: badge.status == "predicting")
        assert ">stress</b> (stress score 0.90)" in badge.value and "truth: rest" in badge.value

        # Detached: the messages carry nulls again, and the badge does not claim a warm-up.
        server.detach_model()
        await wait_until(lambda: badge.status == "no model")
        await asyncio.sleep(0.3)
        assert badge.status == "no model"
        assert "no model attached" in badge.value and "window is filling" not in badge.value

        failing = ScriptedPredictor(warm=0)
        failing.fail = True
        server.runner.attach_predictor(failing, name="failing")  # type: ignore[arg-type]
        await wait_until(lambda: badge.status == "model failing")
        assert "the model failed (predictor failed: RuntimeError('model exploded'))" in badge.value

        server.engine.stop()
        await wait_until(lambda: "simulation stopped" in badge.value)
        await server.stop()
        await wait_until(lambda: badge.status == "disconnected")
        assert badge.value == "prediction: <b>disconnected</b> (server shutting down)"
    finally:
        badge.close()
        await badge.wait_stopped()


async def test_prediction_badge_needs_a_runner_and_valid_options(server: HeartsimServer) -> None:
    with pytest.raises(TypeError, match=r"with \.runner"):
        prediction_badge(SimpleNamespace(engine=server.engine, hub=server.hub))
    with pytest.raises(ValueError, match="rate_hz must be between 0 and 30"):
        prediction_badge(server, rate_hz=0)
    with pytest.raises(ValueError, match="unknown"):
        prediction_badge(server, person="nobody")


# ----- a server on a background thread's loop (mode="thread") ----------------------------------
class ThreadedServer(SimpleNamespace):
    """A server whose loop runs in a background thread, and a handle with ``.loop`` for it."""

    def __init__(self) -> None:
        loop = asyncio.new_event_loop()
        server = HeartsimServer(port=0, tick_hz=TICK_HZ, seed=3)
        super().__init__(engine=server.engine, hub=server.hub, loop=loop, server=server)
        self.run_loop()
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)

    def run_loop(self) -> None:
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def run(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on the server's loop."""
        return asyncio.run_coroutine_threadsafe(_call(fn), self.loop).result(5)

    def close(self) -> None:
        if not self.loop.is_running():
            self.run_loop()
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.stop_loop()
        self.loop.close()


async def _call(fn: Callable[[], Any]) -> Any:
    return fn()


@pytest.fixture
def threaded() -> Iterator[ThreadedServer]:
    server = ThreadedServer()
    yield server
    server.close()


def widget_tasks_on(threaded: ThreadedServer) -> list[str]:
    """Names of the widget tasks on the server's loop, sorted."""
    names = threaded.run(lambda: [t.get_name() for t in asyncio.all_tasks(threaded.loop)])
    return sorted(name for name in names if name.startswith("heartsim-widget"))


async def test_thread_mode_commands_and_live_updates_cross_loops(
    threaded: ThreadedServer,
) -> None:
    engine = threaded.engine
    before = asyncio.all_tasks()
    panel = controls(threaded)
    plot = live_plot(threaded, fps=5, window_s=10)
    try:
        assert panel._bridge.threaded
        assert panel._bridge.ui_loop is asyncio.get_running_loop()

        panel.start_button.click()
        assert engine.state is SimulationState.RUNNING
        await wait_until(lambda: len(plot.data()["t"]) >= 20)
        await wait_until(lambda: "<b>running</b>" in panel.status.value)
        await wait_until(lambda: "bpm" in panel.status.value)

        panel.stress_button.click()
        assert panel.message.value == "Stress 0.8 triggered for p0 for 60 s"
        await wait_until(lambda: any(label == "stress" for label, _, _ in plot.episodes))
        panel.stress_duration.value = "0"
        panel.stress_button.click()
        assert "duration_s must be between 1 and 3600" in panel.error.value

        d0, t0 = plot.draws, time.monotonic()
        await asyncio.sleep(1.0)
        assert plot.draws - d0 <= 5 * (time.monotonic() - t0) + 1

        # The readers live on the server's loop, the renderers on this one.
        assert widget_tasks_on(threaded) == ["heartsim-widget-feed-p0"] * 2
        assert other_tasks(before) == ["heartsim-widget-render-p0"] * 2
        assert threaded.hub.subscriber_count() == 2
    finally:
        panel.close()
        plot.stop()
        await panel.wait_stopped()
        await plot.wait_stopped()
    assert other_tasks(before) == []
    assert widget_tasks_on(threaded) == []
    assert threaded.hub.subscriber_count() == 0


async def test_thread_mode_panel_says_disconnected_when_the_server_loop_dies(
    threaded: ThreadedServer,
) -> None:
    panel = controls(threaded)
    try:
        panel.start_button.click()
        await wait_until(lambda: "<b>running</b>" in panel.status.value)
        threaded.stop_loop()  # the loop ends without a shutdown: nothing closes the feed
        await wait_until(lambda: panel.disconnected is not None, timeout_s=3)
        assert panel.disconnected == "the server's event loop has stopped"
        assert panel.status.value == (
            "<b>disconnected</b> · p0 · the server's event loop has stopped"
        )
        assert threaded.engine.state is SimulationState.RUNNING  # what it said before
        assert all(control.disabled for control in panel._controls)
        panel.stop_button.click()  # (a click from code still runs, and is refused)
        assert "event loop is not running" in panel.error.value
    finally:
        panel.stop()
        threaded.run_loop()  # for the fixture's shutdown
        await panel.wait_stopped()
        panel.close()


async def test_thread_mode_commands_fail_cleanly_once_the_server_loop_is_gone(
    threaded: ThreadedServer,
) -> None:
    panel = controls(threaded)
    asyncio.run_coroutine_threadsafe(threaded.server.stop(), threaded.loop).result(10)
    threaded.stop_loop()
    await panel.wait_stopped()  # the shutdown ended the subscription
    panel.start_button.click()
    assert "event loop is not running (was the server stopped?)" in panel.error.value
    assert threaded.engine.state is SimulationState.STOPPED
    panel.close()
