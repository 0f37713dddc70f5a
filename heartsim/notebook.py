"""A heartsim server from a notebook cell (or a script): :func:`start_server`, :func:`stop_server`.

One call gives a running simulation server and a :class:`ServerHandle` (its URLs, status,
``stop()`` and a rich display)::

    h = heartsim.notebook.start_server()       # cell 1: returns at once, already listening
    await heartsim.Client(h.url).current()     # cell 2

Where the server runs
---------------------
``mode="loop"`` (the default, for notebooks)
    The server and the simulation run as tasks on the event loop of the calling thread: in
    Jupyter, the kernel's own loop, which keeps running them between (and during awaiting)
    cells. ``start_server`` binds and listens on the socket synchronously before returning,
    so a busy port raises :class:`OSError` right in the cell, and a connection made by the
    very next cell (or from a blocking call in this one) waits in the listen backlog until
    uvicorn's task accepts it. Code that blocks the kernel (``time.sleep``, a long
    ``model.fit()``, a blocking HTTP call to this same server) stalls the server for as long;
    use ``await`` in cells, or ``mode="thread"``.
``mode="thread"``
    A daemon thread with its own event loop; ``start_server`` returns once the server is up.
    It keeps serving through blocking cells and CPU work. The engine and hub then live on that
    thread: change them through :meth:`ServerHandle.call`, the REST API or a
    :class:`heartsim.Client`, and read the stream with :meth:`ServerHandle.subscribe`. A
    command called directly from another thread (``h.engine.start()``) raises
    :class:`RuntimeError` rather than racing with a tick in progress.

In a script or a plain REPL there is no running loop; ``"loop"`` then falls back to
``"thread"`` (logged at INFO level) and :meth:`ServerHandle.stop` is an ordinary blocking call:
no asyncio needed.

Guarantees
----------
- No signal handlers are installed (uvicorn's would make "interrupt kernel" stop the server);
  interrupting the kernel interrupts the cell, never the server.
- A busy port is an :class:`OSError` in the calling cell, never a dead kernel; a stray
  ``SystemExit`` from uvicorn becomes a :class:`RuntimeError` logged on ``heartsim.notebook``.
- Re-running a ``start_server(...)`` cell returns the running server's handle (a module-level
  registry keyed by host and requested port; ``port=None`` is one key), or restarts it when the
  arguments differ (on the same port when possible).
- :func:`stop_server` and :meth:`ServerHandle.stop` free the port (its listening socket closes
  before the call returns); an ``atexit`` hook stops thread-mode servers; the listening socket
  is not inherited by child processes, so nothing listens once the kernel process has ended.
- Nothing is printed from background tasks (such output lands in whichever cell happens to be
  running, or nowhere): start-up failures and shutdowns are logged on ``heartsim.notebook`` and
  shown by the handle's display and :meth:`ServerHandle.status`.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import html
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from typing import Any, Literal, TypeVar

from heartsim.engine import Engine
from heartsim.hub import CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION, Hub, Message, QueueSubscriber
from heartsim.hub import Subscriber as _HubSubscriber
from heartsim.options import DEFAULT_HOST
from heartsim.runner import Runner
from heartsim.server import HeartsimServer

__all__ = ["ServerHandle", "Stopping", "Subscription", "start_server", "stop_server"]

logger = logging.getLogger(__name__)

Mode = Literal["loop", "thread"]
State = Literal["starting", "running", "stopping", "stopped", "failed"]

#: Longest wait for a server to come up (s); uvicorn is usually up within ~50 ms.
START_TIMEOUT_S = 15.0
#: Longest blocking wait for a server to stop (s): uvicorn's graceful shutdown takes up to 3 s.
STOP_TIMEOUT_S = 10.0

_T = TypeVar("_T")


# ----- what stop() returns -------------------------------------------------------------------
class Stopping:
    """The result of :meth:`ServerHandle.stop` and :func:`stop_server`: await it, or don't.

    By the time ``stop()`` returns, the listening socket is closed (the port is free) and, in
    thread mode or from a script, the server has completely stopped. In loop mode the rest of
    the shutdown (closing open connections, about 0.2 s, at most ~3 s) runs as a task on the
    loop: ``await`` this object to wait for it. Awaiting never raises shutdown problems (they
    are logged), and interrupting the wait does not interrupt the shutdown.
    """

    def __init__(self, futures: list[asyncio.Future[None]], what: str) -> None:
        self._futures = futures
        self._what = what

    def done(self) -> bool:
        """Whether the shutdown has completed."""
        return all(future.done() for future in self._futures)

    def __await__(self) -> Generator[Any, None, None]:
        if self._futures:
            shielded = [asyncio.shield(future) for future in self._futures]
            yield from asyncio.gather(*shielded, return_exceptions=True).__await__()

    def __repr__(self) -> str:
        if self.done():
            return f"<{self._what}: stopped>"
        return f"<{self._what}: stopping; await it to wait>"


# ----- subscriptions -------------------------------------------------------------------------
class _ForwardingSubscriber(_HubSubscriber):
    """Lives on the server's loop; hands each message to a queue on another loop."""

    def __init__(
        self,
        person_id: str,
        hub: Hub,
        source: asyncio.AbstractEventLoop,
        target: asyncio.AbstractEventLoop,
        local: QueueSubscriber,
    ) -> None:
        super().__init__(person_id)
        self._hub = hub
        self._source = source
        self._target = target
        self._local = local

    def deliver(self, message: Message) -> bool:
        if self._target.is_closed():
            return False
        self._target.call_soon_threadsafe(self._local_deliver, message)
        return True

    def _local_deliver(self, message: Message) -> None:  # on the target loop
        if not self._local.closed and not self._local.deliver(message):
            self._local.close(CLOSE_POLICY_VIOLATION, "too slow: subscription buffer overflow")
            if not self._source.is_closed():
                self._source.call_soon_threadsafe(self._hub.unsubscribe, self)

    def close(self, code: int, reason: str) -> None:
        super().close(code, reason)
        if not self._target.is_closed():
            self._target.call_soon_threadsafe(self._local.close, code, reason)


class Subscription:
    """An in-process subscription to one person's messages; ``async for message in sub``.

    Made by :meth:`ServerHandle.subscribe`. Iterate it on the loop it was made on; each item is
    a :class:`heartsim.hub.Message` (``message.data()`` decodes it into a dict). Iteration ends
    when the server stops or :meth:`close` is called.
    """

    def __init__(
        self, handle: ServerHandle, queue: QueueSubscriber, remote: _HubSubscriber
    ) -> None:
        self._handle = handle
        self._queue = queue
        self._remote = remote

    @property
    def person_id(self) -> str:
        """Whose messages these are."""
        return self._queue.person_id

    @property
    def dropped(self) -> int:
        """Messages discarded because the consumer fell behind (``overflow="drop_oldest"``)."""
        return self._queue.dropped

    @property
    def closed(self) -> bool:
        """Whether the subscription has ended (buffered messages may still be waiting)."""
        return self._queue.closed

    def get_nowait(self) -> Message | None:
        """The next buffered message, or ``None``."""
        return self._queue.get_nowait()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._queue.__aiter__()

    def close(self) -> None:
        """Unsubscribe (idempotent); iteration ends once the buffer is drained."""
        self._queue.close(CLOSE_GOING_AWAY, "unsubscribed")
        if self._handle.state in ("starting", "running"):
            with contextlib.suppress(RuntimeError, concurrent.futures.TimeoutError):
                self._handle.call(self._handle.hub.unsubscribe, self._remote)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ----- the handle ----------------------------------------------------------------------------
class ServerHandle:
    """A heartsim server started by :func:`start_server`: URLs, status, ``stop()``, display.

    Attributes
    ----------
    server : heartsim.server.HeartsimServer
        The server itself (its ``engine``, ``hub``, ``runner`` and FastAPI ``app``).
    mode : {"loop", "thread"}
        Where it runs (see :mod:`heartsim.notebook`); ``"thread"`` also when ``"loop"`` was
        asked for outside a running event loop.

    Examples
    --------
    >>> from heartsim.notebook import start_server
    >>> h = start_server(tick_hz=10, seed=1)  # a script: serves from a background thread
    >>> h.status()["state"], h.mode
    ('running', 'thread')
    >>> h.stop()  # blocking here; in a notebook cell: await h.stop()
    <heartsim server ...: stopped>
    """

    def __init__(
        self,
        server: HeartsimServer,
        *,
        mode: Mode,
        key: tuple[str, int | None],
        settings: dict[str, Any],
    ) -> None:
        self.server = server
        self.mode: Mode = mode
        self._key = key
        self._settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._thread: threading.Thread | None = None
        self._state: State = "starting"
        self._error: BaseException | None = None
        self._ready: concurrent.futures.Future[ServerHandle] = concurrent.futures.Future()
        self._start_task: asyncio.Task[None] | None = None
        self._stop_future: asyncio.Future[None] | concurrent.futures.Future[None] | None = None
        self._created_at = time.monotonic()
        self._ready_at: float | None = None

    # ----- what it is ------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The simulation; in thread mode, change it through :meth:`call` (commands called
        directly from another thread than the server's raise :class:`RuntimeError`)."""
        return self.server.engine

    @property
    def hub(self) -> Hub:
        """The fan-out; use it on the server's loop only (see :meth:`subscribe`)."""
        return self.server.hub

    @property
    def runner(self) -> Runner:
        """The runner (:class:`heartsim.runner.Runner`) ticking the engine."""
        return self.server.runner

    @property
    def host(self) -> str:
        """The address listened on."""
        return self.server.host

    @property
    def port(self) -> int:
        """The port listened on (a free one was picked for ``port=None``)."""
        return self.server.port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``: the REST API, e.g. for :class:`heartsim.Client`."""
        return self.server.url

    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT/ws/heartbeat``: the message stream."""
        return self.server.ws_url

    @property
    def dashboard_url(self) -> str:
        """The live dashboard, as a browser reaches it.

        ``{url}/``; under JupyterHub (``JUPYTERHUB_SERVICE_PREFIX`` set, e.g. ``/user/ada/``)
        the browser cannot reach the kernel's loopback port, so the link goes through
        jupyter-server-proxy: ``{prefix}proxy/{port}/``.
        """
        return self._browser_url("")

    @property
    def docs_url(self) -> str:
        """The interactive API documentation, as a browser reaches it (see dashboard_url)."""
        return self._browser_url("docs")

    def _browser_url(self, path: str) -> str:
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
        if prefix:
            return f"{prefix.rstrip('/')}/proxy/{self.port}/{path}"
        return f"{self.url}/{path}"

    @property
    def state(self) -> State:
        """``"starting"``, ``"running"``, ``"stopping"``, ``"stopped"`` or ``"failed"``."""
        if self._state == "running" and not self._serving():
            return "failed" if self._error is not None else "stopped"
        return self._state

    @property
    def error(self) -> BaseException | None:
        """Why the server failed, if it did."""
        return self._error

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the server runs on (the engine and hub belong to it)."""
        return self._loop

    def _serving(self) -> bool:
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        if self._thread is not None and not self._thread.is_alive():
            return False
        return self.server.started

    def _alive(self) -> bool:
        if self._state == "starting":
            loop = self._loop
            return loop is not None and not loop.is_closed()
        return self._state == "running" and self._serving()

    # ----- status and display ----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """A snapshot of the server's state and counters.

        Returns
        -------
        dict
            ``state`` (see :attr:`state`), ``mode``, ``url``, ``ws_url``, ``dashboard_url``,
            ``simulation`` (``"running"``, ``"stopped"``, ...), ``persons``, ``tick_hz`` (Hz),
            ``clients`` (open WebSocket connections), ``subscribers`` (hub subscriptions, in
            process ones included), ``uptime_s`` (s since the server came up, 0 before),
            ``messages_published``, ``messages_sent``, ``messages_dropped``,
            ``clients_dropped`` and ``error`` (``None`` or the failure's text).
        """
        hub = self.server.hub.stats()
        engine = self.server.engine
        now = time.monotonic()
        up = 0.0
        if self._ready_at is not None and self.state == "running":
            up = now - self._ready_at
        return {
            "state": self.state,
            "mode": self.mode,
            "url": self.url,
            "ws_url": self.ws_url,
            "dashboard_url": self.dashboard_url,
            "simulation": engine.state.value,
            "persons": len(engine.person_ids),
            "tick_hz": engine.tick_hz,
            "clients": self.server.app.state.heartsim.websocket_clients,
            "subscribers": hub.subscribers,
            "uptime_s": round(up, 3),
            "messages_published": hub.messages_published,
            "messages_sent": hub.messages_sent,
            "messages_dropped": hub.messages_dropped,
            "clients_dropped": hub.clients_dropped,
            "error": None if self._error is None else _describe(self._error),
        }

    def _repr_html_(self) -> str:
        status = self.status()
        esc = html.escape
        color = {
            "running": "#2e7d32",
            "starting": "#f9a825",
            "stopping": "#f9a825",
            "failed": "#c62828",
        }.get(status["state"], "#757575")
        dashboard = esc(status["dashboard_url"])
        docs = esc(self.docs_url)
        lines = [
            f"<b>heartsim server</b> "
            f'<span style="color:{color}">&#9679; {esc(status["state"])}</span>'
            f" &middot; simulation {esc(status['simulation'])}"
            f" &middot; {esc(self.mode)} mode",
            f'Dashboard: <a href="{dashboard}" target="_blank" rel="noopener">{dashboard}</a>'
            f' &middot; <a href="{docs}" target="_blank" rel="noopener">API docs</a>',
            f"REST: <code>{esc(status['url'])}</code> &middot; "
            f"WebSocket: <code>{esc(status['ws_url'])}</code>",
            f"{status['persons']} person{'s' if status['persons'] != 1 else ''} at "
            f"{status['tick_hz']:g} Hz &middot; {status['clients']} WebSocket "
            f"client{'s' if status['clients'] != 1 else ''} &middot; "
            f"{status['messages_sent']} messages sent, {status['messages_dropped']} dropped",
        ]
        if self._settings.get("token") is not None:
            lines.append("Token required: add <code>#token=...</code> to the dashboard link.")
        if status["error"] is not None:
            lines.append(f'<span style="color:#c62828">Error: {esc(status["error"])}</span>')
        body = "<br>".join(lines)
        return (
            '<div class="heartsim-server" style="border-left:4px solid '
            f'{color};padding:4px 10px;line-height:1.6">{body}</div>'
        )

    def __repr__(self) -> str:
        return (
            f"<heartsim server {self.url} {self.state}, mode={self.mode}, "
            f"simulation {self.server.engine.state.value}>"
        )

    # ----- readiness -------------------------------------------------------------------------
    async def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> ServerHandle:
        """Wait until the server serves requests (at most ``timeout_s`` s); returns ``self``.

        Not needed for connections (they queue from the moment :func:`start_server` returns),
        but useful before reading state that the start-up sets (e.g. the simulation started by
        ``autostart``). Raises the start-up error if the server failed, and
        :class:`TimeoutError` if it is not ready in time.
        """
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._ready)), timeout_s)
        return self

    # ----- running code where the server lives -----------------------------------------------
    def _on_server_thread(self) -> bool:
        return self._loop_thread_id == threading.get_ident()

    def call(self, function: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """Run ``function(*args, **kwargs)`` on the server's loop and return its result.

        The engine and hub belong to the server's loop; in thread mode, change them through
        this (it blocks at most :data:`STOP_TIMEOUT_S` s): ``function`` then runs between two
        ticks. In loop mode, called from that loop's thread, it simply calls ``function``.

        Examples
        --------
        >>> h.call(h.engine.trigger_stress, 0.8, duration_s=60)  # doctest: +SKIP
        """
        if self._on_server_thread():
            return function(*args, **kwargs)
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            raise RuntimeError(f"the heartsim server at {self.url} is not running")
        result: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(function(*args, **kwargs))
            except Exception as exc:
                result.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return result.result(timeout=STOP_TIMEOUT_S)

    def attach_model(self, model: Any, **options: Any) -> Any:
        """Put ``model``'s live stress predictions in every message (see
        :meth:`heartsim.server.HeartsimServer.attach_model`); returns the live predictor."""
        return self.call(self.server.attach_model, model, **options)

    def detach_model(self) -> None:
        """Messages carry null predictions again."""
        self.call(self.server.detach_model)

    def subscribe(
        self,
        person: str | None = None,
        *,
        since: int | None = None,
        maxsize: int = 256,
        overflow: str = "drop_oldest",
    ) -> Subscription:
        """Subscribe, in process, to one person's messages, on the calling thread's loop.

        Works in both modes: in thread mode the messages cross from the server's thread. Made
        for widgets and live plots; iterate it with ``async for`` and :meth:`Subscription.close`
        it when done.

        Parameters
        ----------
        person
            Person id (default: the default person).
        since
            Replay the buffered messages after this ``seq`` first.
        maxsize
            Most messages buffered for a slow consumer.
        overflow
            ``"drop_oldest"`` (keep the latest, count the rest in
            :attr:`Subscription.dropped`) or ``"disconnect"`` (end the subscription).
        """
        loop = asyncio.get_running_loop()
        person_id = person if person is not None else self.server.engine.default_person
        local = QueueSubscriber(person_id, maxsize=maxsize, overflow=overflow)
        if self._on_server_thread():
            self.server.hub.subscribe(local, since=since)
            return Subscription(self, local, local)
        source = self._loop
        if source is None:
            raise RuntimeError(f"the heartsim server at {self.url} is not running")
        remote = _ForwardingSubscriber(person_id, self.server.hub, source, loop, local)
        self.call(self.server.hub.subscribe, remote, since)
        return Subscription(self, local, remote)

    # ----- lifecycle -------------------------------------------------------------------------
    def _begin(self) -> None:
        """Schedule the start on the server's loop (call on that loop's thread)."""
        loop = self._loop
        assert loop is not None
        self._start_task = loop.create_task(self._run_start(), name=f"heartsim-start-{self.port}")

    async def _run_start(self) -> None:
        try:
            await self.server.start()
        except asyncio.CancelledError:
            if not self._ready.done():
                self._ready.set_exception(RuntimeError("stopped before it was ready"))
            raise
        except SystemExit as exc:  # never let it reach the kernel
            await self._failed(RuntimeError(f"heartsim server exited with code {exc.code}"))
        except Exception as exc:
            await self._failed(exc)
        else:
            if self._state == "starting":
                self._state = "running"
            self._ready_at = time.monotonic()
            if not self._ready.done():
                self._ready.set_result(self)
            logger.info("heartsim server running at %s (%s mode)", self.url, self.mode)

    async def _failed(self, exc: BaseException) -> None:
        self._state = "failed"
        self._error = exc
        _unregister(self)
        logger.error("heartsim server at %s failed to start: %s", self.url, _describe(exc))
        try:
            await self.server.stop()
        except (RuntimeError, OSError) as stop_exc:
            logger.warning("cleaning up after the failure: %s", stop_exc)
        if not self._ready.done():
            self._ready.set_exception(exc)

    async def _shutdown(self) -> None:
        """Stop everything (on the server's loop)."""
        if self._state != "failed":
            self._state = "stopping"
        start = self._start_task
        if start is not None and not start.done():
            start.cancel()
            await asyncio.wait({start})
        try:
            await self.server.stop()
        except (RuntimeError, OSError) as exc:
            logger.warning("heartsim server at %s stopped with an error: %s", self.url, exc)
        self.server.close_listener()
        if self._state != "failed":
            self._state = "stopped"
        if not self._ready.done():
            self._ready.set_exception(RuntimeError("stopped before it was ready"))
        logger.info("heartsim server at %s stopped", self.url)

    def stop(self) -> Stopping:
        """Stop the server and free its port.

        The listening socket is closed before this returns. Called from the loop the server
        runs on (a notebook cell, ``mode="loop"``), the rest of the shutdown runs as a task:
        ``await h.stop()`` waits for it. Anywhere else (thread mode, a script) this blocks
        until the server has stopped (at most :data:`STOP_TIMEOUT_S` s), and the returned
        :class:`Stopping` is already done (awaiting it is harmless). Idempotent.

        Returns
        -------
        Stopping
            Awaitable; ``done()`` tells whether the shutdown has completed.
        """
        _unregister(self)
        what = f"heartsim server {self.url}"
        loop = self._loop
        previous = self._stop_future
        if loop is None or loop.is_closed() or not loop.is_running():
            # Never started, or its loop has ended (e.g. the asyncio.run() it ran in returned):
            # nothing serves any more and nothing could run a shutdown; release the socket.
            self._abandon()
            return Stopping([], what)
        if previous is not None:  # stopping already
            if self._on_server_thread():
                return Stopping([previous] if isinstance(previous, asyncio.Future) else [], what)
            if isinstance(previous, asyncio.Future):
                previous = asyncio.run_coroutine_threadsafe(_wait(previous), loop)
            self._wait_cross_thread(previous)
            return Stopping([], what)
        if self._state != "failed":
            self._state = "stopping"
        if self._on_server_thread():
            self.server.close_listener()
            task = loop.create_task(self._shutdown(), name=f"heartsim-stop-{self.port}")
            task.add_done_callback(_log_failure)
            if self._thread is not None:  # stopped from its own thread: end that thread too
                task.add_done_callback(lambda _: loop.stop())
            self._stop_future = task
            return Stopping([task], what)
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        self._stop_future = future
        self._wait_cross_thread(future)
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(loop.stop)
            self._thread.join(STOP_TIMEOUT_S)
        return Stopping([], what)

    def _wait_cross_thread(self, future: concurrent.futures.Future[None]) -> None:
        try:
            future.result(timeout=STOP_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            logger.warning(
                "heartsim server at %s did not stop within %s s", self.url, STOP_TIMEOUT_S
            )
        except (RuntimeError, OSError, concurrent.futures.CancelledError) as exc:
            logger.warning("heartsim server at %s stopped with an error: %s", self.url, exc)

    def _abandon(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.server.close_listener()
        if self._state != "failed":
            self._state = "stopped"
        if not self._ready.done():
            self._ready.set_exception(RuntimeError("stopped before it was ready"))

    # ----- re-running the cell ---------------------------------------------------------------
    def _matches(self, settings: Mapping[str, Any], loop: asyncio.AbstractEventLoop | None) -> bool:
        if not self._alive():
            return False
        if self.mode == "loop" and self._loop is not loop:
            return False
        try:
            return bool(self._settings == settings)
        except (ValueError, TypeError):  # e.g. numpy arrays among the settings
            return False


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("stopping the heartsim server failed", exc_info=task.exception())


async def _wait(future: asyncio.Future[None]) -> None:
    await asyncio.shield(future)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# ----- the registry --------------------------------------------------------------------------
_registry: dict[tuple[str, int | None], ServerHandle] = {}
_registry_lock = threading.Lock()


def _lookup(host: str, port: int | None) -> ServerHandle | None:
    with _registry_lock:
        handle = _registry.get((host, port))
        if handle is None and port is not None:  # asked by the port a port=None server got
            handle = next(
                (h for h in _registry.values() if h.host == host and h.port == port), None
            )
        return handle


def _unregister(handle: ServerHandle) -> None:
    with _registry_lock:
        if _registry.get(handle._key) is handle:
            del _registry[handle._key]


def _registered() -> list[ServerHandle]:
    with _registry_lock:
        return list(_registry.values())


# ----- starting and stopping -----------------------------------------------------------------
def start_server(
    port: int | None = None,
    host: str = DEFAULT_HOST,
    persons: int = 1,
    tick_hz: float = 2.0,
    seed: int | None = None,
    token: str | None = None,
    mode: Mode = "loop",
    autostart: bool = True,
    **server_settings: Any,
) -> ServerHandle:
    """Start a heartsim server (or return the one this call already started).

    Returns at once, with the server listening: connections made from the next cell (or
    from a blocking call in this one) are accepted.

    Parameters
    ----------
    port
        TCP port; ``None`` (or 0) picks a free one (read ``handle.port``).
    host
        Address to listen on; loopback by default. Any other address needs ``token`` (or
        ``insecure=True``).
    persons
        Number of virtual persons.
    tick_hz
        Messages per second and person (Hz).
    seed
        Random seed (``None``: a fresh simulation each time).
    token
        If set, control routes and the WebSocket require it.
    mode
        ``"loop"`` (default): on the calling thread's running event loop (a notebook
        kernel's); falls back to ``"thread"`` where no loop is running (a script).
        ``"thread"``: on a daemon background thread with its own loop, for notebooks that
        block the kernel (long computations, blocking HTTP calls to this server).
    autostart
        Start the simulation as soon as the server is up (default ``True``: one call gives a
        running simulation). With ``False`` it waits for ``POST /simulation/start``.
    **server_settings
        Further :class:`heartsim.server.HeartsimServer` arguments: ``engine``,
        ``spontaneous_stress_per_h``, ``public_read``, ``cors_origins``, ``max_clients``,
        ``rate_limit``, ``websocket``, ``max_body_bytes``, ``predict_limits``,
        ``max_persons``, ``history_bytes``, ``insecure``, ``clock``, ``log_level``.

    Returns
    -------
    ServerHandle
        URLs, :meth:`~ServerHandle.status`, :meth:`~ServerHandle.stop` and a rich display.
        Calling ``start_server`` again with the same ``host`` and ``port`` (``None`` counts as
        one port) returns this same handle while the server runs and the arguments are equal;
        with different arguments the server is restarted (on the same port when possible).

    Raises
    ------
    OSError
        The port is in use (or the host is not an address of this machine).
    ValueError
        Invalid settings (e.g. ``tick_hz`` out of range, a non-loopback host without token).
    RuntimeError
        The server failed to start (thread mode; in loop mode the failure is reported by
        :meth:`ServerHandle.wait_ready`, the handle's status and the log).

    Examples
    --------
    In a notebook cell (the server runs on the kernel's loop; the cell returns at once):

    >>> h = start_server(tick_hz=10, seed=1)  # doctest: +SKIP
    >>> h  # shows a card: state, dashboard and API links, clients  # doctest: +SKIP

    In a later cell:

    >>> await heartsim.Client(h.url).current()  # doctest: +SKIP
    >>> await h.stop()  # doctest: +SKIP

    In a script (no asyncio needed; the server runs on a background thread):

    >>> import httpx
    >>> h = start_server(tick_hz=10)
    >>> httpx.get(h.url + "/health").json()["status"]
    'healthy'
    >>> h.stop()  # doctest: +ELLIPSIS
    <heartsim server http://127.0.0.1:...: stopped>
    """
    if mode not in ("loop", "thread"):
        raise ValueError(f"mode must be 'loop' or 'thread', got {mode!r}")
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
    ):
        raise ValueError(f"port must be None or an integer from 0 to 65535, got {port!r}")
    requested = port or None
    caller = _running_loop()
    effective: Mode = mode
    if mode == "loop" and caller is None:
        logger.info(
            "no running event loop in this thread (a script or plain REPL): serving from a "
            "background thread instead (mode='thread')"
        )
        effective = "thread"
    settings = {
        "persons": persons,
        "tick_hz": tick_hz,
        "seed": seed,
        "token": token,
        "mode": effective,
        "autostart": autostart,
        **server_settings,
    }

    reuse_port = 0
    existing = _lookup(host, requested)
    if existing is not None:
        if existing._matches(settings, caller):
            logger.info("heartsim server already running at %s: returning it", existing.url)
            return existing
        logger.info("restarting the heartsim server at %s with new settings", existing.url)
        reuse_port = existing.port
        existing.stop()

    def build(bind_port: int) -> HeartsimServer:
        engine = server_settings.get("engine")
        rest = {k: v for k, v in server_settings.items() if k != "engine"}
        return HeartsimServer(
            engine,
            host=host,
            port=bind_port,
            persons=persons,
            seed=seed,
            tick_hz=tick_hz,
            token=token,
            autostart=autostart,
            **rest,
        )

    server = build(requested if requested is not None else reuse_port)
    try:
        server.bind()
    except OSError as exc:
        if requested is None and reuse_port:  # the restarted server's port is still held
            server = build(0)
            server.bind()
        else:
            raise OSError(
                exc.errno,
                f"cannot listen on {host}:{requested}: {exc.strerror or exc}. Another server "
                "may be using it: pass port=None for a free port, or stop that server "
                "(heartsim.notebook.stop_server() stops every server started here)",
            ) from exc

    handle = ServerHandle(server, mode=effective, key=(host, requested), settings=settings)
    with _registry_lock:
        _registry[handle._key] = handle
    if effective == "loop":
        assert caller is not None
        handle._loop = caller
        handle._loop_thread_id = threading.get_ident()
        handle._begin()
        logger.info("heartsim server listening at %s (loop mode)", handle.url)
        return handle
    _launch_thread(handle)
    return handle


def _launch_thread(handle: ServerHandle) -> None:
    loop = asyncio.new_event_loop()
    handle._loop = loop
    thread = threading.Thread(
        target=_run_loop_forever,
        args=(loop, handle),
        name=f"heartsim-server-{handle.port}",
        daemon=True,
    )
    handle._thread = thread
    thread.start()
    loop.call_soon_threadsafe(handle._begin)
    try:
        handle._ready.result(timeout=START_TIMEOUT_S + 5)
    except concurrent.futures.TimeoutError:
        handle.stop()
        raise RuntimeError(f"heartsim server did not start within {START_TIMEOUT_S} s") from None
    except BaseException:  # its start-up error, or an interrupt while waiting
        handle.stop()
        raise


def _run_loop_forever(loop: asyncio.AbstractEventLoop, handle: ServerHandle) -> None:
    handle._loop_thread_id = threading.get_ident()
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    except SystemExit as exc:  # a task's stray sys.exit(): end this server, not the process
        handle._error = RuntimeError(f"heartsim server exited with code {exc.code}")
        handle._state = "failed"
        logger.error("heartsim server at %s exited with code %s", handle.url, exc.code)
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            if not handle._ready.done():
                handle._ready.set_exception(RuntimeError("the server thread ended"))


def stop_server(handle: ServerHandle | None = None) -> Stopping:
    """Stop ``handle``'s server, or every server started by :func:`start_server` if ``None``.

    Frees the ports before returning; see :meth:`ServerHandle.stop` for when to ``await``
    the result (in a notebook cell: ``await stop_server()``; in a script: ``stop_server()``).

    Returns
    -------
    Stopping
        Awaitable; ``done()`` tells whether every shutdown has completed.
    """
    handles = [handle] if handle is not None else _registered()
    futures: list[asyncio.Future[None]] = []
    for each in handles:
        futures.extend(each.stop()._futures)
    what = f"heartsim server {handle.url}" if handle is not None else "heartsim servers"
    return Stopping(futures, what)


@atexit.register
def _stop_thread_servers_at_exit() -> None:
    for handle in _registered():
        if handle.mode == "thread":
            with contextlib.suppress(Exception):
                handle.stop()
