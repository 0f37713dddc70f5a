"""Running the API: :class:`HeartsimServer` (any asyncio loop) and the ``heartsim serve`` command.

:class:`HeartsimServer` is built to run on a loop it does not own (a Jupyter kernel's, a
background thread's, a test's):

- it binds the listening socket itself (``SO_REUSEADDR``; port 0 picks a free port), so a busy
  port raises :class:`OSError` in the caller instead of uvicorn's ``sys.exit(3)``, which inside
  a task would escape and end the whole process (a kernel);
- any other ``SystemExit`` from uvicorn (e.g. a failed lifespan startup) becomes a
  :class:`RuntimeError`;
- it installs no signal handlers: uvicorn's ``capture_signals`` would otherwise replace SIGINT
  while serving (in Jupyter, "interrupt kernel" would silently stop the server).

The CLI (:func:`run_serve`), which owns its process, does handle Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import uvicorn

from heartsim.api import (
    DEFAULT_RATE_LIMIT,
    DEFAULT_WS_CONNECT_LIMIT,
    RateLimit,
    WebSocketSettings,
    create_app,
)
from heartsim.api.limits import DEFAULT_MAX_BODY_BYTES, PredictLimits
from heartsim.api.logs import redact_logs
from heartsim.engine import Engine
from heartsim.hub import DEFAULT_HISTORY_BYTES, Hub
from heartsim.options import DEFAULT_HOST, DEFAULT_MAX_PERSONS, DEFAULT_PORT
from heartsim.runner import Clock, Runner

if TYPE_CHECKING:  # heartsim.ml pulls in scikit-learn: imported only when a model is used
    from heartsim.ml import LivePredictor, StressClassifier

logger = logging.getLogger(__name__)

#: Protocol-level cap on inbound WebSocket messages (bytes); the app's own cap is smaller.
WS_MAX_SIZE = 64 * 1024
#: Pending connections the listening socket queues (uvicorn's default), e.g. while bound by
#: :meth:`HeartsimServer.bind` before the serving task first runs.
BACKLOG = 2048
_START_TIMEOUT_S = 15.0


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to whoever owns the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install nothing (see the module docstring)."""
        yield


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts local connections (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def served_hosts(host: str, allowed_hosts: Iterable[str] | None) -> list[str]:
    """The ``Host`` names a server bound to ``host`` answers to, besides ``localhost``,
    ``*.localhost`` and IP addresses (see :class:`heartsim.api.security.AllowedHosts`).

    ``allowed_hosts`` plus ``host`` itself when it is a name. With ``allowed_hosts=None`` under
    JupyterHub (``JUPYTERHUB_SERVICE_PREFIX`` set): any name, because browsers reach the server
    only through jupyter-server-proxy, which forwards the hub's public name as ``Host`` and has
    already authenticated the user.
    """
    names = list(allowed_hosts or ())
    if allowed_hosts is None and os.environ.get("JUPYTERHUB_SERVICE_PREFIX"):
        logger.info("under JupyterHub: any Host name is served (requests come through its proxy)")
        names.append("*")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if host:
            names.append(host)
    return names


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not the default 0: asyncio only sets TCP_NODELAY on accepted
    # sockets whose proto says TCP, and without it Nagle plus delayed ACKs add ~40 ms to every
    # keep-alive HTTP response after the first.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    # Left non-inheritable (Python's default): a child process started with close_fds=False or
    # os.system() (a notebook's "!cmd") would otherwise keep the port listening after we exit.
    return sock


class HeartsimServer:
    """The heartsim API served by uvicorn on the current asyncio loop.

    Parameters
    ----------
    engine
        The simulation; built from ``persons``, ``seed``, ``tick_hz`` and
        ``spontaneous_stress_per_h`` if ``None``.
    host, port
        Where to listen; ``port=0`` picks a free port (read :attr:`port` after :meth:`start`).
    persons, seed, tick_hz, spontaneous_stress_per_h, max_persons
        Engine settings when ``engine`` is ``None`` (``max_persons``: most persons at once,
        1,000 by default; an engine passed in keeps its own).
    history_bytes
        Memory budget of all persons' message history together, bytes (512 MiB by default;
        ``None``: unlimited): beyond it the oldest messages go first (see
        :class:`~heartsim.hub.Hub`).
    token, public_read, cors_origins, max_clients, rate_limit, websocket, ws_connect_limit
        Access control and delivery settings, see :func:`heartsim.api.create_app`.
    max_body_bytes, predict_limits
        Request bounds (body size; POST /predict's concurrency and rate), see
        :func:`heartsim.api.create_app`.
    allowed_hosts
        Host names served besides ``localhost``, IP addresses and ``host`` (``"*.example.org"``
        for subdomains, ``"*"`` for any), see :func:`served_hosts`; requests naming another
        ``Host`` get 400 (DNS rebinding protection).
    forwarded_allow_ips
        Proxy addresses (comma-separated string or list; ``"*"``: any) whose
        ``X-Forwarded-For`` / ``X-Forwarded-Proto`` headers are believed. ``None`` (default):
        none, so the client address (rate limits) is always the TCP peer's and no client can
        pick its own by sending the header.
    insecure
        Allow a non-loopback ``host`` without a ``token`` (anyone who can reach the port can
        then control the simulation); refused otherwise.
    clock
        ``"real"`` or ``"virtual"`` (see :class:`~heartsim.runner.Runner`).
    autostart
        Start the simulation as soon as the server is up.
    log_level
        uvicorn's log level.

    Examples
    --------
    >>> async def main():  # doctest: +SKIP
    ...     async with HeartsimServer(port=0, autostart=True) as server:
    ...         print(server.url, server.ws_url)
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        persons: int = 1,
        seed: int | None = None,
        tick_hz: float = 2.0,
        spontaneous_stress_per_h: float = 0.0,
        max_persons: int = DEFAULT_MAX_PERSONS,
        history_bytes: int | None = DEFAULT_HISTORY_BYTES,
        token: str | None = None,
        public_read: bool = True,
        cors_origins: Iterable[str] = (),
        max_clients: int = 1000,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        websocket: WebSocketSettings | None = None,
        ws_connect_limit: RateLimit | None = DEFAULT_WS_CONNECT_LIMIT,
        allowed_hosts: Iterable[str] | None = None,
        forwarded_allow_ips: str | Iterable[str] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        predict_limits: PredictLimits | None = None,
        insecure: bool = False,
        clock: Clock = "real",
        autostart: bool = False,
        log_level: str = "warning",
    ) -> None:
        if not is_loopback(host) and token is None and not insecure:
            raise ValueError(
                f"refusing to serve on {host!r} without a token: anyone who can reach it could "
                "control it. Pass token=..., bind 127.0.0.1, or insecure=True."
            )
        if engine is None:
            engine = Engine(
                persons=persons,
                seed=seed,
                tick_hz=tick_hz,
                spontaneous_stress_per_h=spontaneous_stress_per_h,
                max_persons=max_persons,
            )
        self.engine = engine
        self.hub = Hub(history_bytes=history_bytes)
        self.runner = Runner(engine, self.hub, clock=clock)
        self.app = create_app(
            runner=self.runner,
            token=token,
            public_read=public_read,
            cors_origins=cors_origins,
            max_clients=max_clients,
            rate_limit=rate_limit,
            websocket=websocket,
            allowed_hosts=served_hosts(host, allowed_hosts),
            ws_connect_limit=ws_connect_limit,
            max_body_bytes=max_body_bytes,
            predict_limits=predict_limits,
        )
        if isinstance(forwarded_allow_ips, str):
            forwarded_allow_ips = forwarded_allow_ips.split(",")
        trusted = [ip.strip() for ip in forwarded_allow_ips or () if ip.strip()]
        #: Proxies whose forwarded headers are believed (``None``: nobody's).
        self.forwarded_allow_ips: list[str] | None = trusted or None
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.autostart = autostart
        self.log_level = log_level
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None  # bound by bind(), not yet handed to uvicorn

    # ----- addresses ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port (the requested one until :meth:`start`)."""
        return self._port if self._port is not None else self._requested_port

    @property
    def _url_host(self) -> str:
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"[{host}]" if ":" in host else host

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (the dashboard is at ``url + "/"``)."""
        return f"http://{self._url_host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT/ws/heartbeat``."""
        return f"ws://{self._url_host}:{self.port}/ws/heartbeat"

    @property
    def started(self) -> bool:
        """Whether the server is up and serving."""
        return self._server is not None and self._server.started and not self._task_done

    @property
    def _task_done(self) -> bool:
        return self._task is None or self._task.done()

    # ----- lifecycle ---------------------------------------------------------------------------
    def bind(self) -> int:
        """Bind and listen now, synchronously; :meth:`start` then serves this socket.

        For callers that cannot await (a notebook's ``start_server``): a busy port raises
        :class:`OSError` at once, and connections made before the serving task first runs wait
        in the backlog instead of being refused. Idempotent; no loop needed.

        Returns
        -------
        int
            The bound port.

        Raises
        ------
        OSError
            The address is unavailable (port busy, host not local).
        RuntimeError
            Already serving.
        """
        if self._sock is None:
            if not self._task_done:
                raise RuntimeError(f"server already running at {self.url}")
            sock = _bind(self.host, self._requested_port)
            try:
                sock.listen(BACKLOG)
            except OSError:
                sock.close()
                raise
            self._sock = sock
            self._port = sock.getsockname()[1]
        return self.port

    def close_listener(self) -> None:
        """Stop accepting connections now, synchronously; :meth:`stop` ends the rest.

        Frees the port at once (for code that cannot await, e.g. to rebind it), except during
        the few milliseconds of uvicorn's startup after :meth:`start` handed it the socket.
        Open connections and the app are left to :meth:`stop`. Call it on the server's loop.
        """
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self._server is not None:
            for listener in getattr(self._server, "servers", ()):
                listener.close()

    async def start(self) -> HeartsimServer:
        """Bind (unless :meth:`bind` did), start serving on the running loop, wait until ready.

        Raises
        ------
        OSError
            The address is unavailable (port busy, host not local).
        RuntimeError
            Already started, or the server failed to start.
        """
        if not self._task_done:
            raise RuntimeError(f"server already running at {self.url}")
        self.bind()
        ws_settings = self.app.state.heartsim.ws
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self._port,
            ws="websockets-sansio",  # the protocol the fan-out's fast path is written for
            ws_per_message_deflate=False,  # frames are encoded once, for every client alike
            ws_max_size=WS_MAX_SIZE,
            ws_ping_interval=ws_settings.ping_interval_s,
            ws_ping_timeout=ws_settings.ping_timeout_s,
            lifespan="on",
            # Forwarded headers only from configured proxies: uvicorn would otherwise believe
            # them from 127.0.0.1, letting any local client pose as any address.
            proxy_headers=self.forwarded_allow_ips is not None,
            forwarded_allow_ips=self.forwarded_allow_ips,
            log_config=None,
            log_level=self.log_level,
            access_log=False,
            timeout_graceful_shutdown=3,
            backlog=BACKLOG,
        )
        self._server = _EmbeddedServer(config)
        sock, self._sock = self._sock, None  # uvicorn owns it from here (and closes it)
        self._task = asyncio.get_running_loop().create_task(
            self._serve(self._server, sock), name=f"heartsim-server-{self._port}"
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("heartsim server stopped during startup")
            if time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError(f"heartsim server did not start within {_START_TIMEOUT_S} s")
            await asyncio.sleep(0.005)
        if self.autostart:
            self.engine.start()
        logger.info("heartsim serving at %s", self.url)
        return self

    @staticmethod
    async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:
            # uvicorn calls sys.exit() on startup failures; inside a task that would end the
            # process (a Jupyter kernel). Report it as an ordinary error instead.
            raise RuntimeError(f"uvicorn exited with code {exc.code} (see its log)") from None
        finally:
            sock.close()

    async def stop(self) -> None:
        """Close every client and stop serving (idempotent)."""
        if self._sock is not None:  # bound but never started
            self._sock.close()
            self._sock = None
        server, task = self._server, self._task
        if server is None or task is None:
            return
        if not task.done():
            # Close stream clients first: stalled ones are aborted after a short grace instead
            # of holding uvicorn's graceful shutdown until its timeout.
            self.hub.close_all()
            server.should_exit = True
            try:
                await task
            except RuntimeError as exc:
                logger.warning("heartsim server stopped with an error: %s", exc)
        self._task = None

    async def __aenter__(self) -> HeartsimServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ----- model -------------------------------------------------------------------------------
    def attach_model(self, model: Any, *, name: str | None = None, **options: Any) -> LivePredictor:
        """Put a stress model's live predictions in every message, from the next tick on.

        Each message then carries ``prediction`` (``"stress"`` / ``"calm"``), ``confidence``
        and ``stress_score`` (0 to 1) for its person, from that person's recent beats (null
        during a person's first ``window_s``, 60 s by default, of stream time). ``POST
        /predict`` uses the same model. A model error never stops the stream: the messages
        concerned carry nulls and the error is counted in ``GET /health`` (``model.errors``)
        and ``/metrics``. Attaching replaces any attached model (predictions restart with
        the warm-up).

        Call it on the server's event loop thread (in a notebook's ``mode="thread"``, through
        ``ServerHandle.call``); it returns at once (no I/O).

        Parameters
        ----------
        model : heartsim.ml.StressClassifier
            A fitted model (e.g. ``StressClassifier.load(path)``), fitted on a feature table.
        name : str, optional
            Label shown in ``GET /health`` (default: the model's class name).
        **options
            Passed to :class:`heartsim.ml.LivePredictor` (``hold_s``, ``window_s``, ...).

        Returns
        -------
        heartsim.ml.LivePredictor
            The predictor now feeding the stream (read its per-person ``latest(...)``).

        Raises
        ------
        ValueError
            If the model cannot predict live (not fitted on a feature table, unknown
            features, options contradicting its training).
        """
        from heartsim.ml import LivePredictor

        predictor = LivePredictor(model, **options)
        label = name or type(model).__name__
        self.runner.attach_predictor(predictor, name=label)
        logger.info("model %s attached (features %s)", label, predictor.feature_names)
        return predictor

    def detach_model(self) -> None:
        """Stop predicting: messages carry null predictions again (no-op without a model)."""
        if self.runner.predictor is not None:
            self.runner.attach_predictor(None)
            logger.info("model detached")

    def __repr__(self) -> str:
        state = "running" if self.started else "stopped"
        return f"HeartsimServer({self.url}, {state}, simulation {self.engine.state.value})"


# ----- the CLI -------------------------------------------------------------------------------
def load_model_file(path: str | Path) -> StressClassifier:
    """Load a :class:`heartsim.ml.StressClassifier` file for ``heartsim serve --model``.

    Raises
    ------
    ValueError
        With a message naming the file and the problem: missing, not a heartsim model,
        written by other heartsim / scikit-learn versions, or unusable live.
    """
    from heartsim.ml import LivePredictor, ModelFileError, StressClassifier

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {str(path)!r} does not exist")
    try:
        model = StressClassifier.load(path)
    except ModelFileError as exc:
        raise ValueError(str(exc)) from None
    # joblib files are pickles: a damaged or foreign file fails in many ways.
    except Exception as exc:
        raise ValueError(
            f"{str(path)!r} is not a readable StressClassifier file ({type(exc).__name__}: "
            f"{exc}); save one with StressClassifier.save"
        ) from None
    try:
        LivePredictor(model)
    except ValueError as exc:
        raise ValueError(f"{str(path)!r} cannot predict live: {exc}") from None
    return model


async def _serve_until_signalled(server: HeartsimServer) -> None:
    await server.start()
    print(f"heartsim dashboard: {server.url}/", flush=True)  # the one line for humans / scripts
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C raises KeyboardInterrupt
            pass
    try:
        await stop.wait()
        logger.info("shutting down")
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await server.stop()


def _history_bytes(history_mb: float) -> int:
    if not (math.isfinite(history_mb) and history_mb > 0):
        raise ValueError(f"history_mb must be a number > 0, got {history_mb!r}")
    return max(1, round(history_mb * 2**20))


def run_serve(args: argparse.Namespace) -> int:
    """Run ``heartsim serve`` until Ctrl-C / SIGTERM; returns the exit code.

    Exit codes: 0 after a clean shutdown, 1 if the address cannot be bound or the server fails,
    2 for invalid settings (e.g. a non-loopback host without ``--token`` or ``--insecure``, or
    a ``--model`` file that is missing, not a heartsim model or from other versions).
    """
    # Whatever prints this process's logs redacts tokens (uvicorn logs request paths).
    redact_logs(handlers=logging.getLogger().handlers)
    if not is_loopback(args.host) and not args.token and not args.insecure:
        logger.error(
            "refusing to serve on %s without a token: anyone who can reach it could control it. "
            "Pass --token TOKEN (or set HEARTSIM_TOKEN), bind 127.0.0.1, or add --insecure.",
            args.host,
        )
        return 2
    if not is_loopback(args.host) and not args.token:
        logger.warning("serving on %s without a token (--insecure)", args.host)
    try:
        server = HeartsimServer(
            host=args.host,
            port=args.port,
            persons=args.persons,
            seed=args.seed,
            tick_hz=args.tick_hz,
            spontaneous_stress_per_h=args.spontaneous_per_h,
            max_persons=args.max_persons,
            history_bytes=_history_bytes(args.history_mb),
            token=args.token or None,
            insecure=args.insecure,
            cors_origins=args.cors_origins,
            max_clients=args.max_clients,
            allowed_hosts=args.allowed_hosts or None,
            forwarded_allow_ips=args.forwarded_allow_ips,
            ws_connect_limit=(
                RateLimit(args.ws_connects_per_s, args.ws_connect_burst)
                if args.ws_connects_per_s > 0
                else None
            ),
            autostart=getattr(args, "start", False),
            log_level="info",
        )
    except ValueError as exc:
        logger.error("invalid setting: %s", exc)
        return 2
    model_file = getattr(args, "model", None)
    if model_file is not None:
        try:
            server.attach_model(load_model_file(model_file), name=Path(model_file).name)
        except ValueError as exc:
            logger.error("--model: %s", exc)
            return 2
    # What exists now (libraries, the compiled beat loop, app, engine) lives as long as the
    # process: frozen, full garbage collections no longer walk it, so they pause the ticker and
    # the fan-out for less (bench_fanout, 2,000 clients connecting: 29 -> 14 ms each).
    gc.collect()
    gc.freeze()
    try:
        asyncio.run(_serve_until_signalled(server))
    except OSError as exc:
        logger.error("cannot serve on %s:%s: %s", args.host, args.port, exc)
        return 1
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:  # platforms without loop signal handlers
        logger.info("interrupted")
    return 0
