"""Notebook widgets: a control panel, a live plot and a prediction badge, fed by the hub like
any other client.

:func:`controls` gives an ipywidgets panel that starts and stops the simulation, sets a person's
resting heart rate, triggers stress, and shows a live status line; :func:`live_plot` gives a
matplotlib figure of heart rate, RMSSD and blood pressure with stress episodes shaded;
:func:`prediction_badge` a line with the attached model's latest call. They take anything with
``.engine`` and ``.hub`` (the handle of ``heartsim.start_server()``, or a
:class:`~heartsim.server.HeartsimServer`) and, when the server runs on a background thread's
loop, ``.loop``.

They show the truth or say they are disconnected: once the server stops (or the loop that runs
it ends), the panel's status line and the badge say "disconnected" (why) instead of the last
state they saw, and the panel's controls are disabled; the badge says "no model attached" as
soon as the model is detached.

How they stay out of the way of the kernel:

- **Commands** go straight to the engine on the loop that owns it: a direct call when that is
  the widgets' own loop (the kernel's), otherwise a call scheduled on the server's loop whose
  result (or error) is waited for, briefly, by the button callback.
- **Live data** comes from a hub subscription (:meth:`heartsim.hub.Hub.stream`, bounded, oldest
  messages dropped if the widget falls behind), read by a task on the loop that owns the hub.
  A second task on the widgets' loop updates the widgets at most ``fps`` (plot) or ``status_hz``
  (status line) times per second, so widget and matplotlib state is only ever touched from
  the thread the widgets were made on (the kernel's). In thread mode, data keeps being
  collected while a cell blocks the kernel; the widgets catch up when it is free again.
- **Errors** never vanish into a background task: invalid actions (out of range, stress while
  stopped, unknown person) are shown in the panel, failures of the live tasks in the widget
  itself, and both are logged. Nothing is printed.
- ``stop()`` (or ``close()``) cancels both tasks and drops the subscription; ``await
  wait_stopped()`` returns once they have finished.

The figure is made without pyplot (a :class:`matplotlib.figure.Figure` with its own canvas), so
it is never registered with pyplot, never shown twice, and never left open in
``plt.get_fignums()``. With ipympl installed it is an interactive ipympl canvas; otherwise (or
with ``backend="static"``) a PNG in an :class:`ipywidgets.Image`, re-rendered at ``fps``.

Examples
--------
In a notebook (the kernel's loop runs the server)::

    from heartsim.notebook import start_server
    from heartsim.widgets import controls, live_plot

    server = start_server(seed=1)
    panel = controls(server)
    plot = live_plot(server, window_s=60, fps=5)
    display(panel, plot)
    ...
    plot.stop()
    panel.close()
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import concurrent.futures
import html
import io
import logging
import math
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Literal, Protocol, TypeVar

import ipywidgets as widgets
import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from heartsim.engine import (
    DEFAULT_STRESS_DURATION_S,
    MAX_STRESS_DURATION_S,
    MAX_TICK_HZ,
    Engine,
    SimulationState,
)
from heartsim.hub import CLOSE_GOING_AWAY, Hub, SubscriptionClosedError
from heartsim.physiology.profiles import PROFILE_RANGES

__all__ = [
    "ControlPanel",
    "LivePlot",
    "PredictionBadge",
    "ServerLike",
    "controls",
    "live_plot",
    "prediction_badge",
    "server_down",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest a button callback waits (s) for a command run on a server thread's loop.
COMMAND_TIMEOUT_S = 5.0
#: Longest :meth:`LivePlot.wait_stopped` / :meth:`ControlPanel.wait_stopped` wait (s).
STOP_TIMEOUT_S = 5.0
MAX_FPS = 30.0
MAX_WINDOW_S = 3600.0
#: Seconds without messages after which the status line refreshes anyway (state changes made
#: elsewhere, e.g. through the REST API, show up even when no samples flow).
STATUS_IDLE_S = 1.0
#: Most points drawn per line (longer windows are thinned evenly; the data are kept).
MAX_DRAWN_POINTS = 2000
#: y ranges the first layout is made with (heart rate, RMSSD, blood pressure).
_TYPICAL_YLIM = ((40.0, 140.0), (0.0, 100.0), (50.0, 160.0))
#: Shading (colour, alpha) of the episodes, by message ``label``.
EPISODE_COLORS = {"stress": ("#d62728", 0.18), "recovery": ("#ff7f0e", 0.08)}
_ERROR_COLOR = "#b00020"


class ServerLike(Protocol):
    """What the widgets need: the engine and the hub it publishes to.

    A server handle of ``heartsim.start_server()`` or a :class:`~heartsim.server.HeartsimServer`
    qualifies. An object whose engine and hub belong to a loop running in another thread must
    also have a ``loop`` attribute naming that loop.
    """

    @property
    def engine(self) -> Engine:
        """The simulation."""

    @property
    def hub(self) -> Hub:
        """Where the simulation's messages fan out from."""


# ----- loops -----------------------------------------------------------------------------------
def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _invoke(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    return fn(*args, **kwargs)


class _Bridge:
    """The two loops of a widget: the one owning engine and hub, and the widgets' own.

    In "loop" mode both are the kernel's loop. With the server on a background thread's loop
    (``handle.loop``), the widgets' loop is the one running where the widget was created (the
    kernel's), or the server's own if none runs there (a script).
    """

    def __init__(self, handle: ServerLike) -> None:
        try:
            self.engine: Engine = handle.engine
            self.hub: Hub = handle.hub
        except AttributeError as exc:
            raise TypeError(
                f"expected a heartsim server or server handle (with .engine and .hub), got "
                f"{type(handle).__name__}"
            ) from exc
        self.handle = handle
        here = _running_loop()
        owner: asyncio.AbstractEventLoop | None = getattr(handle, "loop", None) or here
        if owner is None:
            raise RuntimeError(
                "heartsim widgets need a running asyncio loop: create them in a Jupyter cell "
                "(the kernel's loop), inside a coroutine, or pass a handle whose server runs "
                "on a background thread's loop (start_server(mode='thread'))"
            )
        self.owner_loop = owner
        self.ui_loop = here if here is not None else owner

    @property
    def threaded(self) -> bool:
        """Whether the hub's loop differs from the widgets' loop."""
        return self.owner_loop is not self.ui_loop

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the owner loop; its result, or its exception re-raised.

        Raises
        ------
        RuntimeError
            The server's loop is not running (the server was stopped).
        TimeoutError
            The server's loop did not run the call within :data:`COMMAND_TIMEOUT_S`.
        """
        loop = self.owner_loop
        if _running_loop() is loop:
            return fn(*args, **kwargs)
        if loop.is_closed() or not loop.is_running():
            raise RuntimeError(
                "the heartsim server's event loop is not running (was the server stopped?)"
            )
        future = asyncio.run_coroutine_threadsafe(_invoke(fn, args, kwargs), loop)
        try:
            return future.result(COMMAND_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(
                f"the heartsim server did not answer within {COMMAND_TIMEOUT_S:g} s"
            ) from None


class _TaskRef:
    """A task on ``loop``, started, cancelled and awaited from any thread.

    ``on_error`` is called (on ``loop``) with the exception that ended the task, if any.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], Coroutine[Any, Any, None]],
        name: str,
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.loop = loop
        self.name = name
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._factory = factory
        self._on_error = on_error
        self._task: asyncio.Task[None] | None = None
        self._cancelled = False
        if _running_loop() is loop:
            self._start()
        else:
            loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if self._cancelled:  # cancelled before it could start: never create the coroutine
            self._finish()
            return
        self._task = self.loop.create_task(self._factory(), name=self.name)
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                logger.error("%s failed", self.name, exc_info=exc)
                self._on_error(exc)
        self._finish()

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)

    def _cancel(self) -> None:
        self._cancelled = True
        if self._task is not None:
            self._task.cancel()

    def cancel(self) -> None:
        """Cancel the task (from any thread; idempotent)."""
        if _running_loop() is self.loop:
            self._cancel()
        elif self.loop.is_closed():
            self._finish()  # a closed loop runs nothing any more
        else:
            self.loop.call_soon_threadsafe(self._cancel)

    def done(self) -> bool:
        """Whether the task has finished (or will never run)."""
        return self.finished.done()

    async def wait(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Wait until the task has finished.

        Raises
        ------
        TimeoutError
            Not finished within ``timeout_s`` s.
        """
        # asyncio.wait, not wait_for: a timeout must not cancel ``finished`` for later waiters.
        done, _ = await asyncio.wait({asyncio.wrap_future(self.finished)}, timeout=timeout_s)
        if not done:
            raise TimeoutError(f"{self.name} did not finish within {timeout_s:g} s")


# ----- the live feed ---------------------------------------------------------------------------
Deliver = Callable[[list[dict[str, Any]], "str | None"], None]


def _since_for_backlog(hub: Hub, person: str, backlog_s: float) -> int | None:
    """The ``since`` seq that replays ``person``'s last ``backlog_s`` s of buffered messages."""
    history = hub.history(person)
    if backlog_s <= 0 or history is None or len(history) == 0:
        return None
    messages = history.after(None)
    first = bisect.bisect_left(messages, messages[-1].t - backlog_s, key=lambda m: m.t)
    return messages[first].seq - 1


class _Feed:
    """One person's messages: hub (on its loop) to ``deliver`` (on the widgets' loop).

    ``deliver(batch, closed)`` gets the decoded messages received since its last call, at most
    ``rate_hz`` times per second; also with an empty batch every ``idle_s`` s without messages
    (if set), and a last time with ``closed`` naming why the subscription ended.

    Parameters
    ----------
    bridge
        The loops.
    person
        Whose messages.
    deliver
        Called on the widgets' loop.
    on_error
        Called on the widgets' loop if either task fails unexpectedly.
    rate_hz
        Most ``deliver`` calls per second.
    maxsize
        Most messages held between two ``deliver`` calls (oldest dropped beyond).
    backlog_s
        Seconds of buffered history replayed first (0: live messages only).
    idle_s
        Seconds without messages after which ``deliver`` is called anyway (``None``: never).
    """

    def __init__(
        self,
        bridge: _Bridge,
        person: str,
        deliver: Deliver,
        on_error: Callable[[BaseException], None],
        *,
        rate_hz: float,
        maxsize: int,
        backlog_s: float = 0.0,
        idle_s: float | None = None,
    ) -> None:
        self.bridge = bridge
        self.person = person
        self.deliver = deliver
        self.on_error = on_error
        self.period_s = 1.0 / rate_hz
        self.maxsize = maxsize
        self.backlog_s = backlog_s
        self.idle_s = idle_s
        self.delivered = 0
        self._lock = threading.Lock()  # guards the hand-over between the two loops
        self._pending: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxsize)
        self._closed: str | None = None
        #: Close code of the ended subscription (1001: the server shut down), else ``None``.
        self.close_code: int | None = None
        self._wake = asyncio.Event()  # binds to the widgets' loop at its first wait
        self._wake_scheduled = False
        self._tasks: list[_TaskRef] = []

    def start(self) -> None:
        """Start the reading task (hub's loop) and the delivering task (widgets' loop)."""
        bridge = self.bridge
        self._tasks = [
            _TaskRef(
                bridge.owner_loop,
                self._read,
                f"heartsim-widget-feed-{self.person}",
                self._read_failed,
            ),
            _TaskRef(
                bridge.ui_loop,
                self._deliver_loop,
                f"heartsim-widget-render-{self.person}",
                self._deliver_failed,
            ),
        ]

    def stop(self) -> None:
        """Cancel both tasks (idempotent); the subscription is dropped as the reader ends."""
        for task in self._tasks:
            task.cancel()

    @property
    def running(self) -> bool:
        """Whether either task is still alive."""
        return any(not task.done() for task in self._tasks)

    async def wait_stopped(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Wait until both tasks have finished."""
        for task in self._tasks:
            await task.wait(timeout_s)

    # on the hub's loop
    async def _read(self) -> None:
        hub = self.bridge.hub
        since = _since_for_backlog(hub, self.person, self.backlog_s)
        subscription = hub.stream(
            self.person, since=since, maxsize=self.maxsize, overflow="drop_oldest"
        )
        try:
            while True:
                batch = [(await subscription.get()).data()]
                while (message := subscription.get_nowait()) is not None:
                    batch.append(message.data())
                with self._lock:
                    self._pending.extend(batch)
                self._notify()
        except SubscriptionClosedError as exc:
            self.close_code = exc.code
            self._close(exc.reason or "subscription closed")
        finally:
            hub.unsubscribe(subscription)

    def _deliver_failed(self, exc: BaseException) -> None:
        self.stop()  # nobody would read what the reader collects
        self.on_error(exc)

    def _read_failed(self, exc: BaseException) -> None:
        self._close(f"{type(exc).__name__}: {exc}")

    def _close(self, reason: str) -> None:
        with self._lock:
            self._closed = reason
        self._notify()

    def _notify(self) -> None:
        if not self.bridge.threaded:
            self._wake.set()
            return
        with self._lock:
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        try:
            self.bridge.ui_loop.call_soon_threadsafe(self._set_wake)
        except RuntimeError:  # the widgets' loop is closed (kernel shutting down)
            logger.debug("widget loop closed; dropping a wake-up of %s", self.person)

    def _set_wake(self) -> None:
        with self._lock:
            self._wake_scheduled = False
        self._wake.set()

    # on the widgets' loop
    async def _deliver_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = -math.inf
        while True:
            # The idle refresh is a timer that sets the event, not asyncio.wait_for: up to
            # Python 3.11, wait_for can swallow a cancellation that races with the event.
            idle = None if self.idle_s is None else loop.call_later(self.idle_s, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                if idle is not None:
                    idle.cancel()
            delay = last + self.period_s - loop.time()
            if delay > 0:  # the rate limit: coalesce what arrives meanwhile
                await asyncio.sleep(delay)
            self._wake.clear()
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
                closed = self._closed
            self.deliver(batch, closed)
            self.delivered += 1
            last = loop.time()
            if closed is not None:
                return


# ----- helpers ---------------------------------------------------------------------------------
def _resolve_person(bridge: _Bridge, person: str | None) -> str:
    def resolve() -> str:
        engine = bridge.engine
        if person is None:
            return engine.default_person
        if person not in engine.person_ids:
            raise ValueError(f"person {person!r} is unknown; known persons: {engine.person_ids}")
        return person

    return bridge.call(resolve)


def _client_count(handle: object) -> int | None:
    """Connected WebSocket clients of the server behind ``handle`` (``None`` if unknown)."""
    for owner in (handle, getattr(handle, "server", None)):
        state = getattr(getattr(owner, "app", None), "state", None)
        context = getattr(state, "heartsim", None)
        count = getattr(context, "websocket_clients", None)
        if isinstance(count, int):
            return count
    return None


def server_down(handle: object, loop: asyncio.AbstractEventLoop | None = None) -> str | None:
    """Why the server behind ``handle`` no longer serves (``None``: as far as known, it does).

    Reads only what is safe from any thread: the state of a ``start_server()`` handle, whether
    a :class:`~heartsim.server.HeartsimServer` (``handle`` or ``handle.server``) serves, and
    whether ``loop`` (the one owning its engine) still runs.
    """
    if loop is not None and (loop.is_closed() or not loop.is_running()):
        return "the server's event loop has stopped"
    state = getattr(handle, "state", None)
    if isinstance(state, str):  # a ServerHandle: "starting", "running", "stopping", ...
        if state in ("starting", "running"):
            return None
        error = getattr(handle, "error", None)
        return f"server {state}" + (f": {error}" if error is not None else "")
    for owner in (handle, getattr(handle, "server", None)):
        started = getattr(owner, "started", None)
        if isinstance(started, bool):
            return None if started else "server stopped"
    return None


def _error_html(text: str) -> str:
    return f'<span style="color:{_ERROR_COLOR}">&#9888; {html.escape(text, quote=False)}</span>'


def _format(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def parse_duration(text: str) -> float | None:
    """Parse the stress duration field: seconds, or ``None`` (the default) when blank.

    Raises
    ------
    ValueError
        ``text`` is not a number.
    """
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"duration must be a number of seconds (1 to {MAX_STRESS_DURATION_S:g}) or empty "
            f"for the default {DEFAULT_STRESS_DURATION_S:g} s, got {text!r}"
        ) from None


# ----- the control panel -----------------------------------------------------------------------
class _FedByHub:
    """Lifecycle shared by the live widgets: their tasks live in ``self._feed``."""

    _feed: _Feed | None = None

    @property
    def running(self) -> bool:
        """Whether the widget's live tasks are alive."""
        return self._feed is not None and self._feed.running

    def stop(self) -> None:
        """Stop the live updates: cancel the tasks and drop the subscription (idempotent).

        Buttons of a control panel keep working."""
        if self._feed is not None:
            self._feed.stop()

    async def wait_stopped(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Wait until the live tasks have finished (after :meth:`stop` or a server shutdown)."""
        if self._feed is not None:
            await self._feed.wait_stopped(timeout_s)


class ControlPanel(_FedByHub, widgets.VBox):
    """Buttons and sliders that command the engine, a live status line and an error line.

    Made by :func:`controls`; see there. The parts are attributes, for tests and for linking
    to other widgets: ``start_button``, ``stop_button``, ``baseline`` (slider, bpm),
    ``baseline_button``, ``stress_level`` (slider, 0 to 1), ``stress_duration`` (text, s),
    ``stress_button``, ``person`` (dropdown), ``refresh_button``, ``status``, ``message`` and
    ``error`` (HTML). :attr:`disconnected` says why the server is out of reach, if it is.
    """

    _feed: _Feed | None = None  # also for close() from __del__ after a failed __init__

    def __init__(
        self, handle: ServerLike, *, person: str | None = None, status_hz: float = 4.0
    ) -> None:
        if not 0 < status_hz <= MAX_FPS:
            raise ValueError(f"status_hz must be between 0 and {MAX_FPS:g}, got {status_hz!r}")
        bridge = _Bridge(handle)
        person = _resolve_person(bridge, person)
        persons = bridge.call(lambda: bridge.engine.person_ids)
        resting_bpm = bridge.call(lambda: bridge.engine.profile(person).resting_hr_bpm)
        bpm_low, bpm_high = PROFILE_RANGES["resting_hr_bpm"]
        auto = widgets.Layout(width="auto")
        start_button = widgets.Button(description="Start", icon="play", button_style="success")
        stop_button = widgets.Button(description="Stop", icon="stop", button_style="danger")
        person_dropdown = widgets.Dropdown(
            options=persons, value=person, description="Person", layout=widgets.Layout(width="14em")
        )
        refresh_button = widgets.Button(
            icon="refresh", tooltip="Refresh the list of persons", layout=auto
        )
        baseline = widgets.FloatSlider(
            value=resting_bpm,
            min=bpm_low,
            max=bpm_high,
            step=1.0,
            description="Baseline",
            readout_format=".0f",
            continuous_update=False,
            tooltip="Resting heart rate, beats per minute",
        )
        baseline_button = widgets.Button(description="Set baseline (bpm)", layout=auto)
        stress_level = widgets.FloatSlider(
            value=0.8,
            min=0.0,
            max=1.0,
            step=0.05,
            description="Stress",
            readout_format=".2f",
            continuous_update=False,
            tooltip="Intensity of the stressor, 0 (ends any episode) to 1",
        )
        stress_duration = widgets.Text(
            value="",
            placeholder=f"{DEFAULT_STRESS_DURATION_S:g} (default)",
            description="Duration (s)",
            layout=widgets.Layout(width="14em"),
        )
        stress_button = widgets.Button(
            description="Trigger stress", icon="bolt", button_style="warning", layout=auto
        )
        status = widgets.HTML(value="")
        message = widgets.HTML(value="")
        error = widgets.HTML(value="")
        super().__init__(
            children=[
                widgets.HBox([start_button, stop_button, person_dropdown, refresh_button]),
                widgets.HBox([baseline, baseline_button]),
                widgets.HBox([stress_level, stress_duration, stress_button]),
                status,
                message,
                error,
            ]
        )
        self.start_button = start_button
        self.stop_button = stop_button
        self.person = person_dropdown
        self.refresh_button = refresh_button
        self.baseline = baseline
        self.baseline_button = baseline_button
        self.stress_level = stress_level
        self.stress_duration = stress_duration
        self.stress_button = stress_button
        self.status = status
        self.message = message
        self.error = error
        #: The last error shown (``None`` after a successful action).
        self.last_error: str | None = None
        #: How many times the status line was rendered.
        self.status_updates = 0
        #: Why the panel is disconnected (the server stopped, its loop ended), else ``None``;
        #: its controls are disabled meanwhile.
        self.disconnected: str | None = None
        self._shut_down: str | None = None  # the hub closed the feed: the server shut down
        self._live_off = False  # stop() was called: the status line no longer follows
        self._bridge = bridge
        self._handle = handle
        self._status_hz = status_hz
        self._latest: dict[str, Any] | None = None
        self._closed_reason: str | None = None
        self._feed: _Feed | None = None

        start_button.on_click(lambda _: self._act("Start", self._start))
        stop_button.on_click(lambda _: self._act("Stop", self._stop))
        baseline_button.on_click(lambda _: self._act("Set baseline", self._set_baseline))
        stress_button.on_click(lambda _: self._act("Trigger stress", self._trigger_stress))
        refresh_button.on_click(lambda _: self._act("Refresh persons", self._refresh_persons))
        person_dropdown.observe(self._on_person, names="value")
        self._follow(person)

    def __repr__(self) -> str:
        return f"ControlPanel(person={self.person.value!r})"

    # ----- actions -----------------------------------------------------------------------------
    def _act(self, action: str, command: Callable[[], str]) -> None:
        """Run a button's command; show its outcome, or its error, in the panel."""
        try:
            outcome = command()
        except (ValueError, KeyError, RuntimeError, TimeoutError) as exc:
            self.show_error(f"{action}: {exc}")
        except Exception as exc:  # the one broad catch: a callback's error must reach the panel
            logger.exception("%s failed", action)
            self.show_error(f"{action} failed: {type(exc).__name__}: {exc}")
        else:
            self.error.value = ""
            self.last_error = None
            self.message.value = html.escape(outcome, quote=False)
        self._render_status()

    def show_error(self, text: str) -> None:
        """Show ``text`` in the panel's error line (and log it)."""
        logger.info("control panel: %s", text)
        self.last_error = text
        self.message.value = ""
        self.error.value = _error_html(text)

    def _start(self) -> str:
        started = self._bridge.call(self._bridge.engine.start)
        return "Simulation started" if started else "Simulation already running"

    def _stop(self) -> str:
        stopped = self._bridge.call(self._bridge.engine.stop)
        return "Simulation stopped" if stopped else "Simulation already stopped"

    def _set_baseline(self) -> str:
        bpm, person = self.baseline.value, self.person.value
        self._bridge.call(self._bridge.engine.set_baseline, bpm, person=person)
        return f"Baseline of {person} set to {bpm:g} bpm"

    def _trigger_stress(self) -> str:
        level, person = self.stress_level.value, self.person.value
        duration_s = parse_duration(self.stress_duration.value)
        engine = self._bridge.engine

        def trigger() -> tuple[float, float]:
            # As the REST route: stress needs a running simulation (it would silently vanish at
            # the next start otherwise).
            if engine.state is not SimulationState.RUNNING:
                raise ValueError(f"the simulation is {engine.state.value}; press Start first")
            episode = engine.trigger_stress(level, duration_s, person=person)
            return episode.level, episode.end_s - episode.start_s

        level, duration = self._bridge.call(trigger)
        if level == 0:
            return f"Stress of {person} ended"
        return f"Stress {level:g} triggered for {person} for {duration:g} s"

    def _refresh_persons(self) -> str:
        persons = self._bridge.call(lambda: self._bridge.engine.person_ids)
        current = self.person.value
        with self.person.hold_trait_notifications():
            self.person.options = persons
            if current in persons:
                self.person.value = current
        return f"{len(persons)} person{'s' * (len(persons) != 1)}: {', '.join(persons)}"

    def _on_person(self, change: dict[str, Any]) -> None:
        person = change["new"]
        if person is None or person == change["old"]:
            return

        def follow() -> str:
            bpm = self._bridge.call(lambda: self._bridge.engine.profile(person).resting_hr_bpm)
            self.baseline.value = bpm
            self._follow(person)
            return f"Showing {person}"

        self._act("Select person", follow)

    # ----- the live status ---------------------------------------------------------------------
    def _follow(self, person: str) -> None:
        if self._feed is not None:
            self._feed.stop()
        self._latest = self._bridge.call(self._bridge.engine.latest, person)
        self._closed_reason = None
        self._feed = _Feed(
            self._bridge,
            person,
            self._on_messages,
            self._on_feed_error,
            rate_hz=self._status_hz,
            maxsize=16,
            idle_s=STATUS_IDLE_S,
        )
        self._feed.start()
        self._render_status()

    def _on_messages(self, batch: list[dict[str, Any]], closed: str | None) -> None:
        if batch and batch[-1]["person_id"] == self.person.value:
            self._latest = batch[-1]
        if closed is not None:
            self._closed_reason = closed
            if self._feed is not None and self._feed.close_code == CLOSE_GOING_AWAY:
                self._shut_down = closed
        self._render_status()

    def _on_feed_error(self, exc: BaseException) -> None:
        self.show_error(f"live status stopped: {type(exc).__name__}: {exc}")

    @property
    def _controls(self) -> tuple[widgets.DOMWidget, ...]:
        return (
            self.start_button,
            self.stop_button,
            self.person,
            self.refresh_button,
            self.baseline,
            self.baseline_button,
            self.stress_level,
            self.stress_duration,
            self.stress_button,
        )

    def _render_status(self) -> None:
        down = self._shut_down or server_down(self._handle, self._bridge.owner_loop)
        self.disconnected = down
        for control in self._controls:
            if control.disabled != (down is not None):
                control.disabled = down is not None
        person = html.escape(str(self.person.value))
        if down is not None:
            # The engine's state would be stale: nothing runs it any more.
            self.status.value = f"<b>disconnected</b> · {person} · {html.escape(down, quote=False)}"
            self.status_updates += 1
            return
        state = self._bridge.engine.state.value  # one attribute read: safe from any thread
        parts = [f"<b>{html.escape(state)}</b>", person]
        sample = self._latest
        if sample is not None:
            parts += [
                f"{_format(sample.get('bpm'), '.0f')} bpm",
                f"RMSSD {_format(sample.get('variability'), '.1f')} ms",
                f"stress {_format(sample.get('stress_level'), '.2f')}",
                html.escape(str(sample.get("label", "–"))),
            ]
        clients = _client_count(self._handle)
        if clients is not None:
            parts.append(f"{clients} WebSocket client{'s' * (clients != 1)}")
        if self._closed_reason is not None:
            parts.append(_error_html(f"live status ended: {self._closed_reason}"))
        elif self._live_off:
            parts.append("live status off (stop() was called)")
        self.status.value = " · ".join(parts)
        self.status_updates += 1

    # ----- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the live status (idempotent): the status line says it no longer updates (it
        is still rendered after each action); the buttons keep working."""
        super().stop()
        if self._feed is not None and not self._live_off:
            self._live_off = True
            self._render_status()

    def close(self) -> None:
        """Stop the live status and close the panel and all its widgets."""
        self.stop()
        for widget in list(_descendants(self)):
            widget.close()
        super().close()


def _descendants(box: widgets.Box) -> Iterator[widgets.Widget]:
    for child in box.children:
        if isinstance(child, widgets.Box):
            yield from _descendants(child)
        yield child


def controls(
    handle: ServerLike, *, person: str | None = None, status_hz: float = 4.0
) -> ControlPanel:
    """A panel that commands the simulation and shows its live status.

    Start/Stop buttons; a baseline slider (resting heart rate, 40 to 120 bpm) with its "Set
    baseline" button; a stress level slider (0 to 1), an optional duration (s, default 60) and a
    "Trigger stress" button; a person dropdown with a refresh button; a status line (state,
    person, heart rate in bpm, RMSSD in ms, stress level, label, WebSocket clients) updated
    live from the hub; and a line showing the outcome or the error of the last action. Invalid
    actions (stress while stopped, an out-of-range duration, an unknown person) change nothing
    and say why in the panel. Once the server stops (or its loop ends) the status line says
    "disconnected" and why, and the controls are disabled.

    Parameters
    ----------
    handle
        The server handle of ``heartsim.start_server()``, a
        :class:`~heartsim.server.HeartsimServer`, or anything with ``.engine`` and ``.hub``
        (plus ``.loop`` if they live on another thread's loop).
    person
        The person shown and commanded first (default: the engine's default person).
    status_hz
        Most status line updates per second.

    Returns
    -------
    ControlPanel
        An :class:`ipywidgets.VBox`; display it. ``stop()``/``close()`` end its live status.

    Raises
    ------
    ValueError
        Unknown ``person`` or ``status_hz`` out of range.
    RuntimeError
        No running asyncio loop to attach to (see :class:`ServerLike`).
    """
    return ControlPanel(handle, person=person, status_hz=status_hz)


# ----- the prediction badge --------------------------------------------------------------------
def _runner_of(handle: object) -> Any:
    for owner in (handle, getattr(handle, "server", None)):
        runner = getattr(owner, "runner", None)
        if runner is not None and hasattr(runner, "model_stats"):
            return runner
    raise TypeError(
        f"expected a heartsim server or server handle (with .runner), got {type(handle).__name__}"
    )


class PredictionBadge(_FedByHub, widgets.HTML):
    """One line: the attached model's latest call for a person, next to the ground truth.

    Made by :func:`prediction_badge`; see there. :attr:`status` says what the line shows.
    """

    _feed: _Feed | None = None

    def __init__(self, handle: ServerLike, *, person: str | None = None, rate_hz: float = 5.0):
        if not 0 < rate_hz <= MAX_FPS:
            raise ValueError(f"rate_hz must be between 0 and {MAX_FPS:g}, got {rate_hz!r}")
        bridge = _Bridge(handle)
        runner = _runner_of(handle)
        person = _resolve_person(bridge, person)
        super().__init__(value="")
        self.person = person
        #: ``"predicting"``, ``"warming up"`` (the model's first window is filling),
        #: ``"model failing"``, ``"no model"``, ``"no data"`` or ``"disconnected"``.
        self.status = "no data"
        self._bridge = bridge
        self._handle = handle
        self._runner = runner
        self._latest: dict[str, Any] | None = bridge.call(bridge.engine.latest, person)
        self._model_errors = runner.model_stats().errors
        self._shut_down: str | None = None
        self._closed_reason: str | None = None
        self._live_off = False
        self._feed = _Feed(
            bridge,
            person,
            self._on_messages,
            self._on_error,
            rate_hz=rate_hz,
            maxsize=16,
            idle_s=STATUS_IDLE_S,
        )
        self._feed.start()
        self._render()

    def __repr__(self) -> str:
        return f"PredictionBadge(person={self.person!r}, status={self.status!r})"

    def _on_messages(self, batch: list[dict[str, Any]], closed: str | None) -> None:
        if batch:
            self._latest = batch[-1]
        if closed is not None:
            self._closed_reason = closed
            if self._feed is not None and self._feed.close_code == CLOSE_GOING_AWAY:
                self._shut_down = closed
        self._render()

    def _on_error(self, exc: BaseException) -> None:
        self._closed_reason = f"{type(exc).__name__}: {exc}"
        self._render()

    def _call(self) -> str:
        """What the model says now, from the latest message and the runner (read-only)."""
        message = self._latest
        stats = self._runner.model_stats()  # attribute reads: safe from any thread
        errors, self._model_errors = stats.errors - self._model_errors, stats.errors
        if not stats.attached:
            self.status = "no model"
            return "no model attached"
        prediction = None if message is None else message.get("prediction")
        if prediction is None:
            if errors > 0:
                self.status = "model failing"
                return _error_html(f"none: the model failed ({stats.last_error})")
            self.status = "warming up"
            window_s = getattr(self._runner.predictor, "window_s", None)
            window = "" if window_s is None else f"{window_s:g} s "
            return f"none yet (the first {window}window is filling)"
        self.status = "predicting"
        color = "#d62728" if prediction == "stress" else "#2ca02c"
        said = f'<b style="color:{color}">{html.escape(str(prediction))}</b>'
        score = message.get("stress_score") if message is not None else None
        return said if score is None else f"{said} (stress score {score:.2f})"

    def _render(self) -> None:
        down = self._shut_down or server_down(self._handle, self._bridge.owner_loop)
        if down is not None:
            self.status = "disconnected"
            self.value = f"prediction: <b>disconnected</b> ({html.escape(down, quote=False)})"
            return
        said = self._call()
        message = self._latest
        if message is None:
            if self.status != "no model":
                self.status = "no data"
            self.value = f"prediction: {said} · no data yet (start the simulation)"
            return
        parts = [
            f"t = {message['t']:.0f} s",
            f"prediction: {said}",
            f"truth: {html.escape(str(message.get('label', '–')))}",
        ]
        state = self._bridge.engine.state.value
        if state != "running":
            parts.append(f"simulation {html.escape(state)}")
        if self._closed_reason is not None:
            parts.append(_error_html(f"live updates ended: {self._closed_reason}"))
        elif self._live_off:
            parts.append("live updates off (stop() was called)")
        self.value = " · ".join(parts)

    def stop(self) -> None:
        """Stop the live updates (idempotent); the line says it no longer updates."""
        super().stop()
        if self._feed is not None and not self._live_off:
            self._live_off = True
            self._render()

    def close(self) -> None:
        """Stop the live updates and close the widget."""
        self.stop()
        super().close()


def prediction_badge(
    handle: ServerLike, *, person: str | None = None, rate_hz: float = 5.0
) -> PredictionBadge:
    """A live line with the attached model's latest prediction for ``person`` and the truth.

    It says what is true now: the model's call (``stress`` in red, ``calm`` in green) with its
    stress score; "none yet (the first 60 s window is filling)" while an attached model warms
    up; "no model attached" without one (also right after ``detach_model()``); the model's
    error when it fails; "disconnected" once the server has stopped. Fed by a hub
    subscription, redrawn at most ``rate_hz`` times per second.

    Parameters
    ----------
    handle
        The server handle of ``heartsim.start_server()`` or a
        :class:`~heartsim.server.HeartsimServer` (anything with ``.engine``, ``.hub`` and
        ``.runner``, or ``.server.runner``).
    person
        Whose predictions (default: the engine's default person).
    rate_hz
        Most updates per second (0 to 30).

    Returns
    -------
    PredictionBadge
        An :class:`ipywidgets.HTML`; display it. ``stop()``/``close()`` end its updates.
    """
    return PredictionBadge(handle, person=person, rate_hz=rate_hz)


# ----- the live plot ---------------------------------------------------------------------------
Backend = Literal["auto", "ipympl", "static"]


def _ipympl_available() -> bool:
    try:
        import ipympl.backend_nbagg  # noqa: F401
    except ImportError:
        return False
    return True


def _runs(t: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    """``(start, end)`` times of the runs of ``True`` in ``mask``; a run ends at the next
    sample's time (or the last sample)."""
    if not mask.any():
        return []
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.minimum(np.flatnonzero(edges == -1), len(t) - 1)
    return [(float(t[s]), float(t[e])) for s, e in zip(starts, ends, strict=True)]


class LivePlot(_FedByHub):
    """A live matplotlib figure of one person's heart rate, RMSSD and blood pressure.

    Made by :func:`live_plot`; see there.

    Attributes
    ----------
    figure
        The :class:`matplotlib.figure.Figure` (three stacked axes sharing the time axis).
    lines
        The lines by name: ``"bpm"``, ``"rmssd"``, ``"systolic"``, ``"diastolic"``.
    widget
        What is displayed: the canvas (or image) above an info line.
    backend
        ``"ipympl"`` or ``"static"``.
    draws
        How many times the figure was redrawn.
    """

    def __init__(
        self,
        handle: ServerLike,
        *,
        window_s: float = 120.0,
        fps: float = 5.0,
        person: str | None = None,
        backend: Backend = "auto",
        figsize: tuple[float, float] = (8.0, 6.0),
    ) -> None:
        if not 0 < window_s <= MAX_WINDOW_S:
            raise ValueError(f"window_s must be between 0 and {MAX_WINDOW_S:g}, got {window_s!r}")
        if not 0 < fps <= MAX_FPS:
            raise ValueError(f"fps must be between 0 and {MAX_FPS:g}, got {fps!r}")
        if backend not in ("auto", "ipympl", "static"):
            raise ValueError(f"backend must be 'auto', 'ipympl' or 'static', got {backend!r}")
        if backend == "auto":
            backend = "ipympl" if _ipympl_available() else "static"
        self._bridge = _Bridge(handle)
        self.person = _resolve_person(self._bridge, person)
        self.window_s = float(window_s)
        self.fps = float(fps)
        self.backend: Literal["ipympl", "static"] = backend
        self.draws = 0
        self.max_points = math.ceil(self.window_s * MAX_TICK_HZ) + 1
        self._data: collections.deque[tuple[float, float, float, float, float, str, int]] = (
            collections.deque(maxlen=self.max_points)
        )
        self._spans: list[Artist] = []
        self._closed_reason: str | None = None
        self._feed: _Feed | None = None

        # No pyplot: the figure is never registered with it, so it is never shown twice (an
        # implicit show at the end of the cell) nor kept open after close().
        self.figure = Figure(figsize=figsize, layout="constrained")
        ax_hr, ax_rmssd, ax_bp = self.axes = self.figure.subplots(3, 1, sharex=True)
        self.lines = {
            "bpm": ax_hr.plot([], [], color="#1f77b4", label="heart rate")[0],
            "rmssd": ax_rmssd.plot([], [], color="#2ca02c", label="RMSSD")[0],
            "systolic": ax_bp.plot([], [], color="#9467bd", label="systolic")[0],
            "diastolic": ax_bp.plot([], [], color="#8c564b", label="diastolic")[0],
        }
        ax_hr.set_ylabel("heart rate (bpm)")
        ax_rmssd.set_ylabel("RMSSD (ms)")
        ax_bp.set_ylabel("blood pressure (mmHg)")
        ax_bp.set_xlabel("simulation time (s)")
        ax_bp.legend(loc="upper left", fontsize="small")
        ax_hr.legend(
            handles=[
                Patch(color=color, alpha=alpha * 2, label=label)
                for label, (color, alpha) in EPISODE_COLORS.items()
            ],
            loc="upper left",
            fontsize="small",
        )
        ax_hr.set_title(f"{self.person}: last {self.window_s:g} s", fontsize="medium")
        for ax in self.axes:
            ax.grid(alpha=0.3)
        ax_bp.set_xlim(-self.window_s, 0.0)
        # Lay the figure out once, with typical tick labels, then keep it: constrained layout
        # on every frame would almost double the cost of each redraw on the kernel's loop.
        for ax, (low, high) in zip(self.axes, _TYPICAL_YLIM, strict=True):
            ax.set_ylim(low, high)
        self.figure.draw_without_rendering()
        self.figure.set_layout_engine("none")
        for ax in self.axes:
            ax.autoscale(enable=True, axis="y")  # set_ylim turned it off

        self.info = widgets.HTML(value="")
        self.canvas: widgets.DOMWidget | None = None
        self.image: widgets.Image | None = None
        if self.backend == "ipympl":
            from ipympl.backend_nbagg import Canvas, FigureManager

            self.canvas = Canvas(self.figure)
            with warnings.catch_warnings():
                # ipympl's Toolbar passes the canvas on to traitlets, which deprecates that;
                # harmless, and not ours to fix.
                warnings.filterwarnings(
                    "ignore", "Passing unrecognized arguments", DeprecationWarning
                )
                FigureManager(self.canvas, 0)  # the toolbar; attaches itself to the canvas
            self.canvas.header_visible = False
            self.canvas.toolbar_position = "right"
            view: widgets.Widget = self.canvas
        else:
            FigureCanvasAgg(self.figure)
            self.image = widgets.Image(format="png")
            view = self.image
        self.widget = widgets.VBox([view, self.info])
        self._draw()
        self._subscribe()

    def __repr__(self) -> str:
        return (
            f"LivePlot(person={self.person!r}, window_s={self.window_s:g}, fps={self.fps:g}, "
            f"backend={self.backend!r})"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = self.widget._repr_mimebundle_(**kwargs)
        data["text/plain"] = repr(self)
        return data

    # ----- data --------------------------------------------------------------------------------
    def _subscribe(self) -> None:
        self._feed = _Feed(
            self._bridge,
            self.person,
            self._on_messages,
            self._on_error,
            rate_hz=self.fps,
            maxsize=max(256, self.max_points),
            backlog_s=self.window_s,
        )
        self._feed.start()

    def set_person(self, person: str) -> None:
        """Plot ``person`` from now on (the plot restarts with their buffered history).

        Raises
        ------
        ValueError
            ``person`` is unknown.
        """
        person = _resolve_person(self._bridge, person)
        if person == self.person and self.running:
            return
        self.stop()
        self.person = person
        self._data.clear()
        self._closed_reason = None
        self.info.value = ""
        self.axes[0].set_title(f"{person}: last {self.window_s:g} s", fontsize="medium")
        self._subscribe()

    def data(self) -> dict[str, np.ndarray]:
        """The plotted window as arrays: ``t`` (s), ``bpm``, ``rmssd`` (ms), ``systolic`` and
        ``diastolic`` (mmHg), ``label``, ``run`` (the messages' run: a new one after each stop
        and start, where the lines break)."""
        rows = list(self._data)
        columns = list(zip(*rows, strict=True)) if rows else [()] * 7
        names = ("t", "bpm", "rmssd", "systolic", "diastolic")
        out = {
            name: np.asarray(column, dtype=float)
            for name, column in zip(names, columns[:5], strict=True)
        }
        out["label"] = np.asarray(columns[5], dtype=object)
        out["run"] = np.asarray(columns[6], dtype=np.int64)
        return out

    @property
    def episodes(self) -> list[tuple[str, float, float]]:
        """The shaded episodes in the window: ``(label, start_s, end_s)``."""
        data = self.data()
        return [
            (label, start, end)
            for label in EPISODE_COLORS
            for start, end in _runs(data["t"], data["label"] == label)
        ]

    def _on_messages(self, batch: list[dict[str, Any]], closed: str | None) -> None:
        nan = math.nan
        for m in batch:
            rmssd = m.get("variability")
            self._data.append(
                (
                    float(m["t"]),
                    float(m["bpm"]),
                    nan if rmssd is None else float(rmssd),
                    float(m["systolic"]),
                    float(m["diastolic"]),
                    str(m.get("label", "rest")),
                    int(m.get("run", 0)),
                )
            )
        if self._data:
            horizon = self._data[-1][0] - self.window_s
            while self._data[0][0] < horizon:
                self._data.popleft()
        if closed is not None:
            self._closed_reason = closed
            self.info.value = _error_html(f"live plot ended: {closed}")
        if batch:
            self._draw()

    def _on_error(self, exc: BaseException) -> None:
        self._closed_reason = f"{type(exc).__name__}: {exc}"
        self.info.value = _error_html(f"live plot stopped: {self._closed_reason}")

    # ----- drawing -----------------------------------------------------------------------------
    def _draw(self) -> None:
        data = self.data()
        step = max(1, math.ceil(len(data["t"]) / MAX_DRAWN_POINTS))  # no more points than pixels
        # A stop then start put everyone back at baseline (t goes on): a NaN breaks the lines.
        run = data["run"][::step]
        restarts = np.flatnonzero(np.diff(run) != 0) + 1
        t = np.insert(data["t"][::step], restarts, np.nan)
        for name, line in self.lines.items():
            line.set_data(t, np.insert(data[name][::step], restarts, np.nan))
        for span in self._spans:
            span.remove()
        self._spans = [
            ax.axvspan(
                start,
                end,
                color=EPISODE_COLORS[label][0],
                alpha=EPISODE_COLORS[label][1],
                linewidth=0,
            )
            for label, start, end in self.episodes
            for ax in self.axes
        ]
        if len(t):
            self.axes[-1].set_xlim(t[-1] - self.window_s, t[-1])
            for ax in self.axes:
                ax.relim()
                ax.autoscale_view(scalex=False)
        if self.canvas is not None:
            self.canvas.draw_idle()
        elif self.image is not None:
            buffer = io.BytesIO()
            self.figure.savefig(buffer, format="png")
            self.image.value = buffer.getvalue()
        self.draws += 1

    # ----- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Stop and close the widgets (the figure is not shown any more)."""
        self.stop()
        for widget in (self.canvas, self.image, self.info, self.widget):
            if widget is not None:
                widget.close()


def live_plot(
    handle: ServerLike,
    window_s: float = 120.0,
    fps: float = 5.0,
    person: str | None = None,
    *,
    backend: Backend = "auto",
    figsize: tuple[float, float] = (8.0, 6.0),
) -> LivePlot:
    """A live figure of heart rate (bpm), RMSSD (ms) and blood pressure (mmHg) over time.

    Fed by a hub subscription: it starts with the buffered history of the last ``window_s``
    seconds, then follows the live messages. Stress episodes (message ``label`` "stress") are
    shaded red, recovery orange. The figure is redrawn at most ``fps`` times per second however
    fast the simulation ticks.

    Parameters
    ----------
    handle
        The server handle of ``heartsim.start_server()``, a
        :class:`~heartsim.server.HeartsimServer`, or anything with ``.engine`` and ``.hub``
        (plus ``.loop`` if they live on another thread's loop).
    window_s
        Seconds of simulation time shown (0 to 3600).
    fps
        Most redraws per second (0 to 30).
    person
        Whose data (default: the engine's default person).
    backend
        ``"ipympl"`` (interactive canvas), ``"static"`` (a PNG image widget, re-rendered), or
        ``"auto"``: ipympl when installed.
    figsize
        Figure size (inches).

    Returns
    -------
    LivePlot
        Display it (it shows its :attr:`LivePlot.widget`); :meth:`LivePlot.stop` ends it.

    Raises
    ------
    ValueError
        ``window_s``, ``fps`` or ``backend`` invalid, or ``person`` unknown.
    RuntimeError
        No running asyncio loop to attach to (see :class:`ServerLike`).
    """
    return LivePlot(
        handle, window_s=window_s, fps=fps, person=person, backend=backend, figsize=figsize
    )
