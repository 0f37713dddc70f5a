"""Labelled feature tables from a running server: :func:`collect` (and :func:`collect_async`).

:func:`heartsim.ml.make_dataset` simulates in batch; :func:`collect` records a live server's
heartbeat messages and featurises them with :class:`heartsim.ml.HRVFeatures`, giving the same
table (one row per window and person: features, ``person_id``, ``t_end_s``, ``stressed``,
``stress_level``, ``label``, ``stress_share`` and the episode columns). What the features see
is exactly what a stream consumer sees: the ``rr_ms`` lists of the messages.

Where the time comes from
-------------------------
In-process server (a :func:`heartsim.start_server` handle or a
:class:`heartsim.server.HeartsimServer`): **virtual time**. The server's clock is suspended and
the simulation is stepped back to back (one tick at the engine's ``tick_hz`` each, as the
runner would), so 20 simulated minutes of 10 persons take 1 to 2 s (~0.5 ms per tick). Each
tick goes through the runner as usual: it is published to the hub (WebSocket clients, widgets
and in-process subscribers receive the messages, much faster than real time), and an attached
model predicts on it. The server keeps answering requests meanwhile; afterwards its clock
resumes from the new simulated time. :func:`fast_forward` does the stepping without recording.

Remote server (a :class:`heartsim.Client` or a URL): **real time**. The messages are recorded
from the WebSocket stream (:meth:`heartsim.Client.collect`) for ``duration_s`` wall-clock
seconds: 20 minutes take 20 minutes.

Stress
------
With ``protocol=None`` (default) nothing is triggered: the table holds whatever the server
simulates (episodes triggered by someone else, spontaneous ones with
``spontaneous_stress_per_h``), labelled from the messages' ground-truth fields. With a protocol
(``"lab"``, a :class:`heartsim.protocols.Protocol`, a list of
:class:`heartsim.physiology.Episode` or a mapping person id -> episodes, as for
:func:`heartsim.ml.make_dataset`), its episodes are drawn with ``seed`` for the collected
persons, their times counted from the start of the collection, and started with
:meth:`heartsim.Engine.trigger_stress` (in process: at their exact simulated time, a tick is
split if needed; remote: ``POST /simulation/trigger-stress`` at the wall-clock time). Like any
trigger, each replaces the person's current and pending episodes. The episode columns
(``episode_start_s``, ...) describe the episodes ``collect`` started; stress from other
sources is labelled in ``stressed``/``label`` but not listed there. An episode still running when
the collection ends goes on afterwards (in process: in the server's real time).

Times (``t_end_s``, episode times) are the server's simulation time, the stream's ``t``.

Examples
--------
In a notebook cell (the server runs on the kernel's loop)::

    h = heartsim.start_server(persons=8, seed=1)
    data = await heartsim.ml.collect_async(h, 20 * 60, protocol="lab", seed=1)  # ~1 s

From a script (no event loop; ``collect`` blocks)::

    data = heartsim.ml.collect(h, 20 * 60, protocol="lab", seed=1)
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from heartsim.client import Client, _allow_reentry, _run_on
from heartsim.engine import SimulationState
from heartsim.ml.dataset import add_episode_columns
from heartsim.ml.features import HRVFeatures
from heartsim.notebook import ServerHandle
from heartsim.physiology import Episode
from heartsim.protocols import Protocol, as_protocol
from heartsim.server import HeartsimServer

__all__ = ["collect", "collect_async", "fast_forward"]

ProtocolLike = str | Protocol | Sequence[Episode] | Mapping[str, Sequence[Episode]]
Source = ServerHandle | HeartsimServer | Client | str

#: Longest collection (s): 30 days, as :func:`heartsim.simulate`.
MAX_DURATION_S: Final[float] = 30 * 86400.0
#: Message fields kept for featurising (the rest of each message is dropped at once).
_FIELDS: Final[tuple[str, ...]] = (
    "person_id",
    "seq",
    "t",
    "rr_ms",
    "label",
    "stress_level",
    "systolic",
    "diastolic",
    "respiration_rate",
)
#: Simulated times closer than this (s) are the same instant (tick arithmetic in floats).
_EPS_S: Final[float] = 1e-6
_EPISODE_COLUMNS: Final[list[str]] = ["person_id", "start_s", "end_s", "level"]

# In-process servers being stepped right now: two drivers would interleave their ticks.
_driving: weakref.WeakSet[HeartsimServer] = weakref.WeakSet()


# ----- public API ------------------------------------------------------------------------------
async def collect_async(
    source: Source,
    duration_s: float,
    *,
    window_s: float = 60.0,
    step_s: float = 5.0,
    persons: Sequence[str] | None = None,
    protocol: ProtocolLike | None = None,
    seed: int | None = None,
    include_bp: bool = False,
    include_breathing: bool = False,
    frequency: bool | None = None,
    baseline_s: float | None = 600.0,
    trend_s: float = 30.0,
) -> pd.DataFrame:
    """Record ``duration_s`` seconds of a server's stream and return its labelled window features.

    See the module documentation for virtual time (in-process servers) versus real time
    (remote servers) and for how stress episodes get into the data.

    Parameters
    ----------
    source : ServerHandle, HeartsimServer, Client or str
        A :func:`heartsim.start_server` handle (any mode, awaited from any loop), a
        :class:`heartsim.server.HeartsimServer` running on the calling loop, or a remote
        server: a :class:`heartsim.Client` (e.g. with a token) or its URL.
    duration_s : float
        Simulated seconds to record (in process), or wall-clock seconds (remote).
    window_s, step_s : float
        Window length and spacing of window ends (s), as for :class:`HRVFeatures`.
    persons : sequence of str, optional
        Persons to record (default: all the server's persons at the start).
    protocol : str, Protocol, list of Episode or mapping, optional
        Stress episodes to start during the collection (times from its start); ``None``
        starts none.
    seed : int or None
        Seed of the protocol's random draws (durations, intensities).
    include_bp, include_breathing, frequency, baseline_s, trend_s
        Passed to :class:`HRVFeatures`.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`heartsim.ml.make_dataset`, in the same order and types; a
        person's first window ends ``window_s`` after the collection starts.
        ``attrs["hrv_features"]`` holds the feature parameters.

    Raises
    ------
    ValueError
        Invalid arguments, unknown persons.
    TypeError
        ``source`` is not a server, handle, client or URL.
    RuntimeError
        In process: the simulation is not running (start it first: ``h.engine.start()``,
        ``POST /simulation/start``), is stopped during the collection, or another
        collection is stepping the same server.
    heartsim.HeartsimError
        Remote: the stream or a trigger failed.
    """
    featuriser = HRVFeatures(
        window_s=window_s,
        step_s=step_s,
        include_bp=include_bp,
        include_breathing=include_breathing,
        frequency=frequency,
        baseline_s=baseline_s,
        trend_s=trend_s,
    ).fit()  # checks the parameters before any time is spent
    duration_s = _check_duration(duration_s)
    plan = _Plan.make(persons, protocol, seed, duration_s)
    if isinstance(source, (str, Client)):
        messages, episodes = await _record_remote(source, plan)
    else:
        server, loop = _in_process(source)
        messages, episodes = await _on_loop(loop, _step(source, server, plan, record=True))
    frame = pd.DataFrame(messages, columns=list(_FIELDS))
    table = featuriser.transform(frame)
    if "stressed" not in table:  # nothing collected: keep make_dataset's columns anyway
        for column in ("stressed", "stress_level", "label", "stress_share"):
            table[column] = pd.Series(dtype=bool if column == "stressed" else float)
    table = add_episode_columns(table, episodes)
    table.attrs["hrv_features"] = featuriser.get_params()
    return table


def collect(
    source: Source,
    duration_s: float,
    *,
    window_s: float = 60.0,
    step_s: float = 5.0,
    persons: Sequence[str] | None = None,
    protocol: ProtocolLike | None = None,
    seed: int | None = None,
    include_bp: bool = False,
    include_breathing: bool = False,
    frequency: bool | None = None,
    baseline_s: float | None = 600.0,
    trend_s: float = 30.0,
) -> pd.DataFrame:
    """Blocking :func:`collect_async` (same arguments, result and errors).

    Without a running event loop in this thread (a script), it runs on a private loop (an
    in-process server in thread mode is stepped on its own loop). Inside a running loop (a
    notebook cell) it re-enters that loop with ``nest_asyncio2``, as ``Client.sync`` does (see
    :class:`heartsim.client.SyncClient` for what that process-wide patch costs), so a server
    on the kernel's loop keeps serving. In a notebook prefer ``await collect_async(...)``.
    """
    coroutine = collect_async(
        source,
        duration_s,
        window_s=window_s,
        step_s=step_s,
        persons=persons,
        protocol=protocol,
        seed=seed,
        include_bp=include_bp,
        include_breathing=include_breathing,
        frequency=frequency,
        baseline_s=baseline_s,
        trend_s=trend_s,
    )
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    try:
        _allow_reentry(loop)
    except BaseException:
        coroutine.close()
        raise
    return _run_on(loop, coroutine)


async def fast_forward(
    source: ServerHandle | HeartsimServer,
    duration_s: float,
    *,
    protocol: ProtocolLike | None = None,
    persons: Sequence[str] | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """Advance an in-process server by ``duration_s`` simulated seconds in virtual time.

    The stepping of :func:`collect_async` without recording: every tick is published as
    usual (subscribers, widgets and an attached model see it), back to back. For example,
    to get past a model's 60 s warm-up without waiting a minute.

    Parameters
    ----------
    source : ServerHandle or HeartsimServer
        As for :func:`collect_async` (in-process only).
    duration_s : float
        Simulated seconds.
    protocol, persons, seed
        Stress episodes to start on the way, as for :func:`collect_async`.

    Returns
    -------
    pandas.DataFrame
        The episodes started: ``person_id``, ``start_s``, ``end_s`` (simulation s), ``level``.
    """
    duration_s = _check_duration(duration_s)
    plan = _Plan.make(persons, protocol, seed, duration_s)
    if isinstance(source, (str, Client)):
        raise TypeError(
            "fast_forward needs an in-process server (a start_server handle or a "
            "HeartsimServer); a remote server runs in real time"
        )
    server, loop = _in_process(source)
    _, episodes = await _on_loop(loop, _step(source, server, plan, record=False))
    return episodes


# ----- arguments -------------------------------------------------------------------------------
def _check_duration(duration_s: object) -> float:
    if (
        isinstance(duration_s, bool)
        or not isinstance(duration_s, (int, float, np.number))
        or not 0.0 < float(duration_s) <= MAX_DURATION_S
    ):
        raise ValueError(
            f"duration_s must be a number of seconds > 0 and at most {MAX_DURATION_S:g}, "
            f"got {duration_s!r}"
        )
    return float(duration_s)


class _Plan:
    """Who is recorded and which episodes start when (seconds from the collection's start)."""

    def __init__(
        self,
        persons: list[str] | None,
        protocol: Protocol | None,
        seed: int | None,
        duration_s: float,
    ) -> None:
        self.persons = persons
        self.protocol = protocol
        self.seed = seed
        self.duration_s = duration_s

    @classmethod
    def make(
        cls,
        persons: Sequence[str] | None,
        protocol: ProtocolLike | None,
        seed: int | None,
        duration_s: float,
    ) -> _Plan:
        if persons is not None:
            if isinstance(persons, str) or not all(isinstance(p, str) for p in persons):
                raise ValueError(f"persons must be a sequence of person ids, got {persons!r}")
            persons = list(dict.fromkeys(persons))
            if not persons:
                raise ValueError("persons must name at least one person")
        return cls(
            list(persons) if persons is not None else None,
            None if protocol is None else as_protocol(protocol),
            seed,
            duration_s,
        )

    def resolve(self, known: Sequence[str]) -> list[str]:
        """The recorded persons, checked against the server's."""
        if self.persons is None:
            return list(known)
        unknown = [p for p in self.persons if p not in known]
        if unknown:
            raise ValueError(f"unknown person(s) {unknown}; the server has {list(known)}")
        return self.persons

    def events(self, persons: list[str]) -> list[tuple[float, str, Episode]]:
        """``(offset_s, person, episode)`` in time order (episode times are offsets too)."""
        if self.protocol is None:
            return []
        drawn = self.protocol.episodes(persons, self.duration_s, np.random.default_rng(self.seed))
        events = [
            (e.start_s, pid, e)
            for pid, episodes in zip(persons, drawn, strict=True)
            for e in episodes
            if e.start_s < self.duration_s
        ]
        for offset, _, _ in events:
            if offset < 0.0:
                raise ValueError(f"protocol episodes must start at or after 0 s, got {offset!r}")
        return sorted(events, key=lambda event: event[0])


def _episodes_frame(rows: list[tuple[str, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=_EPISODE_COLUMNS)


# ----- in process ------------------------------------------------------------------------------
def _in_process(source: object) -> tuple[HeartsimServer, asyncio.AbstractEventLoop | None]:
    """The server and the loop it runs on (``None``: the calling loop)."""
    if isinstance(source, ServerHandle):
        return source.server, source.loop
    if isinstance(source, HeartsimServer):
        return source, None
    raise TypeError(
        "source must be a start_server handle, a HeartsimServer, a heartsim.Client or a URL, "
        f"got {type(source).__name__}"
    )


async def _on_loop(loop: asyncio.AbstractEventLoop | None, coroutine: Any) -> Any:
    """Await ``coroutine`` on ``loop`` (the server's), from whichever loop is calling."""
    here = asyncio.get_running_loop()
    if loop is None or loop is here:
        return await coroutine
    if loop.is_closed() or not loop.is_running():
        coroutine.close()
        raise RuntimeError("the heartsim server's event loop is not running (was it stopped?)")
    # Cancelling the wrapper (an interrupted cell) cancels the stepping on the server's loop.
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, loop))


async def _step(
    source: ServerHandle | HeartsimServer, server: HeartsimServer, plan: _Plan, *, record: bool
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Step ``server`` in virtual time for the plan's duration (on the server's loop).

    Returns the recorded messages (trimmed to :data:`_FIELDS`) and the episodes started.
    """
    if isinstance(source, ServerHandle) and source.state == "starting":
        # The server's start-up starts its runner; stepping must not race with it. (Awaited
        # only then: any await here would let the server's clock tick once more, and the
        # data would no longer follow from the seed alone.)
        await source.wait_ready()
    engine, runner = server.engine, server.runner
    if engine.state is not SimulationState.RUNNING:
        raise RuntimeError(
            f"the simulation is {engine.state.value}: start it first (h.engine.start() in the "
            "server's loop, POST /simulation/start, or start_server(autostart=True))"
        )
    if server in _driving:
        raise RuntimeError("another collect/fast_forward is already stepping this server")
    persons = plan.resolve(engine.person_ids)
    wanted = set(persons)
    events = plan.events(persons)
    messages: list[dict[str, Any]] = []
    started: list[tuple[str, float, float, float]] = []

    _driving.add(server)
    resume = runner.running
    await runner.stop()  # suspend the server's own clock; the ticks below replace it
    try:
        t0 = engine.t_s
        end = t0 + plan.duration_s
        pending = [(t0 + offset, pid, episode) for offset, pid, episode in events]
        i = 0
        while engine.t_s < end - _EPS_S:
            while i < len(pending) and pending[i][0] <= engine.t_s + _EPS_S:
                _, pid, episode = pending[i]
                i += 1
                if pid in engine.person_ids:  # a person removed meanwhile is skipped
                    length = episode.end_s - episode.start_s
                    applied = engine.trigger_stress(episode.level, length, person=pid)
                    started.append((pid, applied.start_s, applied.end_s, applied.level))
            if engine.state is not SimulationState.RUNNING:
                raise RuntimeError(
                    f"the simulation was {engine.state.value} during the collection, at "
                    f"t = {engine.t_s:.1f} s"
                )
            dt = min(1.0 / engine.tick_hz, end - engine.t_s)
            if i < len(pending):
                dt = min(dt, pending[i][0] - engine.t_s)  # split the tick at an onset
            errors = runner.tick_errors
            samples = runner.tick(dt)
            if runner.tick_errors != errors:
                raise RuntimeError(
                    f"a simulation tick failed at t = {engine.t_s:.1f} s (see the heartsim.runner "
                    "log); the collected stream would have a gap"
                )
            if record:
                messages.extend(
                    {k: s.get(k) for k in _FIELDS} for s in samples if s["person_id"] in wanted
                )
            await asyncio.sleep(0)  # let the server answer requests and subscribers read
    finally:
        _driving.discard(server)
        if resume and server.started:
            runner.start()
    return messages, _episodes_frame(started)


# ----- remote ----------------------------------------------------------------------------------
async def _record_remote(
    source: str | Client, plan: _Plan
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Record a remote server's stream in real time, starting the plan's episodes on the way."""
    client = Client(source) if isinstance(source, str) else source
    try:
        listing = await client.persons()
        persons = plan.resolve([p["person_id"] for p in listing["persons"]])
        events = plan.events(persons)
        started: list[tuple[str, float, float, float]] = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def trigger() -> None:
            for offset, pid, episode in events:
                await asyncio.sleep(max(0.0, t0 + offset - loop.time()))
                reply = await client.trigger_stress(
                    episode.level, episode.end_s - episode.start_s, person=pid
                )
                started.append((pid, float(reply["start_t"]), float(reply["end_t"]), episode.level))

        triggers = asyncio.ensure_future(trigger())
        try:
            frame = await client.collect(plan.duration_s, person=persons)
            if triggers.done():
                triggers.result()  # a failed trigger: raise it
        finally:
            triggers.cancel()
            await asyncio.gather(triggers, return_exceptions=True)
    finally:
        await client.aclose()  # this loop's connections (the client stays usable)
    frame = frame[[c for c in _FIELDS if c in frame.columns]]
    return frame.to_dict("records") if len(frame) else [], _episodes_frame(started)
