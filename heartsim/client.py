"""Client for a heartsim server: an async API and its blocking twin under ``client.sync``.

:class:`Client` speaks the wire contract (REST routes and ``WS /ws/heartbeat``) of a running
heartsim server, local or remote:

- every method is a coroutine (``await client.health()``); :meth:`Client.stream` is an async
  iterator of heartbeat messages that survives dropped connections: it reconnects with
  exponential backoff and resumes with ``?since=<last seq>``, so the consumer sees every message
  exactly once, in order (within the server's history buffer, 10 minutes by default);
- ``client.sync`` has the same methods, blocking (``client.sync.health()``,
  ``for message in client.sync.stream(limit=10)``), for scripts and notebooks;
- errors answered by the server become a :class:`HeartsimError` carrying the HTTP status and the
  server's own message (e.g. the 422 that names the offending field and its range); invalid
  arguments caught before any request raise :class:`ValueError` naming the parameter. Ranges
  (what bpm is physiological, how intense a stressor may be) are checked by the server only,
  so client and server never disagree about them.

Blocking calls and event loops
------------------------------
A blocking call made from a thread with no running event loop (a script, a worker thread) runs
on a private event loop created for that call and closed after it. A blocking call made from
*inside* a running loop (a Jupyter cell: the kernel runs cells on its loop) would deadlock if the
server ran on that same loop (as :class:`heartsim.server.HeartsimServer` does in a notebook): the
loop that must answer would be blocked waiting for the answer. There, the call re-enters the
running loop with ``nest_asyncio2`` so the server (and any other task) keeps running meanwhile.
See :class:`SyncClient` for what that patch costs and why it is applied only then.

Examples
--------
A complete, runnable session against a server on a free port:

>>> import asyncio
>>> from heartsim.client import Client
>>> from heartsim.server import HeartsimServer
>>> async def main():
...     async with HeartsimServer(port=0, tick_hz=10, autostart=True) as server:
...         async with Client(server.url) as client:
...             health = await client.health()
...             frame = await client.collect(duration_s=1.0)
...     return health["status"], list(frame.columns[:3]), len(frame) >= 5
>>> asyncio.run(main())
('healthy', ['seq', 'person_id', 't'], True)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import math
import numbers
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from collections.abc import Sequence as SequenceABC
from types import TracebackType
from typing import Any, Literal, TypeVar, cast
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
import pandas as pd
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from heartsim.schema import HeartbeatMessage

__all__ = [
    "DEFAULT_URL",
    "HEARTBEAT_COLUMNS",
    "TIMESTAMP_DTYPE",
    "Client",
    "HeartsimError",
    "StreamRestartedError",
    "SyncClient",
    "messages_to_frame",
]

logger = logging.getLogger(__name__)

#: Where ``heartsim serve`` listens by default.
DEFAULT_URL = "http://127.0.0.1:8001"

#: Columns of :func:`messages_to_frame` (and :meth:`Client.collect`), in order: the heartbeat
#: message fields of the wire contract, without the constant ``type``.
HEARTBEAT_COLUMNS: tuple[str, ...] = tuple(
    name for name in HeartbeatMessage.model_fields if name != "type"
)
#: dtype of the ``timestamp`` column of those frames: UTC at nanosecond resolution, on
#: pandas 2 and 3 alike.
TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit="ns", tz="UTC")

try:
    _VERSION = importlib.metadata.version("heartsim")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    _VERSION = "0"
_USER_AGENT = f"heartsim-client/{_VERSION}"

#: Messages asked for per ``GET /heartbeat/history`` request when paging.
_HISTORY_PAGE = 5000
#: Longest wait for the closing handshake of a stream we end ourselves, s.
_CLOSE_TIMEOUT_S = 2.0
#: WebSocket close codes after which reconnecting may help (RFC 6455 and IANA registry):
#: going away (server restart), abnormal closure (no close frame: the connection dropped),
#: internal error, service restart, try again later (too many clients), bad gateway.
_RETRIABLE_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
#: Handshake refusals that end by themselves: too many handshakes from this address (429), too
#: many clients (503); retried after at least their ``Retry-After``.
_RETRIABLE_STATUSES = frozenset({429, 503})

_T = TypeVar("_T")
_DONE = object()
#: What :meth:`Client.stream` does when the server restarted: yield a marker, or raise.
OnRestart = Literal["mark", "raise"]


class HeartsimError(RuntimeError):
    """The server refused a request or a stream, or could not be reached.

    Parameters
    ----------
    message
        The server's explanation (its ``message`` field, or the WebSocket close reason), or what
        went wrong on the way to it.
    status_code
        HTTP status (``None`` for connection failures and stream closes).
    error
        The server's short error title, e.g. ``"Invalid parameter"``.
    field
        For a 422: the offending parameter as the server named it, e.g. ``"bpm"``.
    close_code
        For a refused or lost stream: the WebSocket close code (1006 when the connection
        dropped without one).
    retry_after_s
        For a 429: seconds the server asked to wait (its ``Retry-After``), s.
    request
        ``"METHOD /path"`` or the stream URL, for the message.

    Examples
    --------
    >>> err = HeartsimError("bpm must be between 40 and 120, got 300.0", status_code=422,
    ...                     error="Invalid parameter", field="bpm",
    ...                     request="POST /simulation/set-baseline")
    >>> print(err)
    POST /simulation/set-baseline: 422 Invalid parameter: bpm must be between 40 and 120, got 300.0
    >>> err.status_code, err.field
    (422, 'bpm')
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        field: str | None = None,
        close_code: int | None = None,
        retry_after_s: float | None = None,
        request: str | None = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.error = error
        self.field = field
        self.close_code = close_code
        self.retry_after_s = retry_after_s
        self.request = request
        head = " ".join(str(part) for part in (status_code, error) if part is not None)
        text = f"{head}: {message}" if head else message
        super().__init__(f"{request}: {text}" if request else text)

    @classmethod
    def from_response(cls, response: httpx.Response) -> HeartsimError:
        """The error for a non-2xx ``response`` (any body shape; heartsim's is parsed)."""
        request = f"{response.request.method} {response.request.url.path}"
        error: str | None = response.reason_phrase or None
        field: str | None = None
        try:
            body = response.json()
        except ValueError:  # not JSON (a proxy's HTML page, an empty body)
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            message = body["message"]
            error = body.get("error") if isinstance(body.get("error"), str) else error
            field = body.get("field") if isinstance(body.get("field"), str) else None
        elif isinstance(body, dict) and "detail" in body:  # plain FastAPI / Starlette shape
            message = str(body["detail"])
        else:
            message = response.text.strip()[:500] or "(empty response)"
        retry_after: float | None = None
        if response.status_code == 429:
            try:
                retry_after = float(response.headers.get("retry-after", ""))
            except ValueError:
                retry_after = None
        return cls(
            message,
            status_code=response.status_code,
            error=error,
            field=field,
            retry_after_s=retry_after,
            request=request,
        )


class StreamRestartedError(HeartsimError):
    """The server was restarted while a stream was resuming: its ``seq`` numbering is new.

    Raised by :meth:`Client.stream` with ``on_restart="raise"``. ``seq`` values of
    ``previous_epoch`` and ``epoch`` are unrelated; messages of the old run after
    ``previous_seq`` that were not received are lost.

    Parameters
    ----------
    previous_epoch, epoch
        The run the consumer's ``seq`` belonged to, and the server's current run.
    previous_seq
        The last ``seq`` of the old run the consumer received.
    """

    def __init__(
        self, previous_epoch: str, epoch: str, previous_seq: int | None, *, request: str
    ) -> None:
        self.previous_epoch = previous_epoch
        self.epoch = epoch
        self.previous_seq = previous_seq
        super().__init__(
            f"the server restarted (epoch {previous_epoch} -> {epoch}); seq numbering is new, "
            f"messages of the old run after seq {previous_seq} are lost; resume with "
            f"stream(since=0, epoch={epoch!r}) to read the new run from its start",
            request=request,
        )


# ----- argument checks -------------------------------------------------------------------------
def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _optional_number(name: str, value: object) -> float | None:
    return None if value is None else _number(name, value)


def _positive(name: str, value: object) -> float:
    number = _number(name, value)
    if number <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def _optional_int(name: str, value: object, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum} or None, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _person(value: object, name: str = "person") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty person id (str) or None, got {value!r}")
    return value


def _person_id(value: object) -> str:
    """A person id for a URL path: a non-empty string, percent-encoded."""
    if value is None:
        raise ValueError("person_id must be a non-empty person id (str), got None")
    return quote(cast(str, _person(value, "person_id")), safe="")


def _persons(value: object) -> list[str | None]:
    if value is None or isinstance(value, str):
        return [_person(value)]
    if not isinstance(value, SequenceABC) or not value:
        raise ValueError(
            f"person must be a person id, a non-empty sequence of them, or None, got {value!r}"
        )
    return list(dict.fromkeys(_person(item) for item in value))


# ----- results ---------------------------------------------------------------------------------
def messages_to_frame(messages: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Heartbeat messages as a tidy table: one row per message.

    Parameters
    ----------
    messages
        Heartbeat message dicts, e.g. from :meth:`Client.history` or :meth:`Client.stream`;
        other message types are skipped.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`HEARTBEAT_COLUMNS` in order (then any field a newer server added):
        ``seq``, ``person_id``, ``t`` (simulation time, s), ``timestamp`` (UTC at nanosecond
        resolution, :data:`TIMESTAMP_DTYPE`, with pandas 2 and 3 alike), ``ts`` (wall-clock
        epoch, s), ``bpm`` (beats/min), ``variability`` (RMSSD, ms), ``stress_level`` (0 to 1),
        ``systolic``/``diastolic`` (mmHg), ``state``, model outputs, ``rr_ms`` (a *list* per
        row: the RR intervals, ms, of the beats completed since the previous message),
        ``label``, ``respiration_rate`` (breaths/min) and ``run`` (starts so far: a stop then
        start resets the person, ``t`` goes on). Rows are sorted by person, then ``seq``; an
        empty input gives an empty table with these columns.

    Examples
    --------
    >>> frame = messages_to_frame([{"type": "heartbeat", "seq": 1, "person_id": "p0",
    ...                             "timestamp": "2025-01-01T00:00:00Z", "rr_ms": [812.5, 790.0]}])
    >>> frame.loc[0, "rr_ms"], str(frame["timestamp"].dtype)
    ([812.5, 790.0], 'datetime64[ns, UTC]')
    """
    rows = [dict(m) for m in messages if m.get("type", "heartbeat") == "heartbeat"]
    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame()
    extra = [c for c in frame.columns if c not in HEARTBEAT_COLUMNS and c != "type"]
    frame = frame.reindex(columns=[*HEARTBEAT_COLUMNS, *extra])
    if rows:
        frame = frame.sort_values(["person_id", "seq"], kind="stable", ignore_index=True)
    # Nanoseconds whatever pandas defaults to (pandas 3 parses strings at microseconds), so
    # frames from any install concatenate, compare and save alike.
    timestamps = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    frame["timestamp"] = timestamps.astype(TIMESTAMP_DTYPE)
    return frame


# ----- the client ------------------------------------------------------------------------------
class Client:
    """Async client of a heartsim server; blocking twins of every method under :attr:`sync`.

    Parameters
    ----------
    url
        The server's base URL, ``http://`` or ``https://`` (a path prefix is kept), e.g.
        ``HeartsimServer.url``.
    token
        The server's token, if it requires one; sent as ``Authorization: Bearer TOKEN`` on
        every request and on the WebSocket handshake (never in URLs, which end up in logs).
    timeout_s
        Longest wait for an HTTP answer, a WebSocket handshake and the stream's first message, s.
    reconnect_attempts
        How many consecutive reconnections :meth:`stream` tries after its connection drops
        before raising :class:`HeartsimError` (0: never reconnect). The count restarts once a
        reconnected stream delivers a message.
    reconnect_backoff_s
        Wait before the first reconnection, s; doubled after each failed one (with +-20 %
        jitter, so many clients do not reconnect in lockstep), up to ``max_backoff_s``.
    max_backoff_s
        Longest wait between reconnections, s.

    Notes
    -----
    HTTP connections are pooled per event loop (an ``httpx.AsyncClient`` cannot move between
    loops); :meth:`aclose` (or ``async with``) closes the pool of the running loop. Blocking calls
    made without a running loop use a private loop per call and close its pool themselves.

    Examples
    --------
    Against a server started on this loop (runnable as is):

    >>> import asyncio
    >>> from heartsim.server import HeartsimServer
    >>> async def main():
    ...     async with HeartsimServer(port=0, tick_hz=20) as server:
    ...         async with Client(server.url) as client:
    ...             await client.start()
    ...             await client.trigger_stress(0.8, duration_s=30)
    ...             beats = [m async for m in client.stream(limit=5)]
    ...             await client.stop()
    ...     return [m["seq"] for m in beats] == list(range(beats[0]["seq"], beats[0]["seq"] + 5))
    >>> asyncio.run(main())
    True

    Blocking, from a script (``heartsim serve --start`` running elsewhere):

    >>> client = Client("http://127.0.0.1:8001")  # doctest: +SKIP
    >>> client.sync.set_baseline(64)  # doctest: +SKIP
    >>> frame = client.sync.collect(duration_s=10)  # doctest: +SKIP
    >>> for message in client.sync.stream(limit=4):  # doctest: +SKIP
    ...     print(message["seq"], message["bpm"], message["rr_ms"])
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        reconnect_attempts: int = 5,
        reconnect_backoff_s: float = 0.25,
        max_backoff_s: float = 5.0,
    ) -> None:
        if not isinstance(url, str):
            raise ValueError(f"url must be a string such as {DEFAULT_URL!r}, got {url!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty string or None")
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        #: ``ws(s)://HOST:PORT[/prefix]/ws/heartbeat``.
        self.ws_url = urlunsplit(
            (ws_scheme, parts.netloc, parts.path.rstrip("/") + "/ws/heartbeat", "", "")
        )
        self.timeout_s = _positive("timeout_s", timeout_s)
        attempts = _optional_int("reconnect_attempts", reconnect_attempts, 0)
        self.reconnect_attempts = 0 if attempts is None else attempts
        self.reconnect_backoff_s = _positive("reconnect_backoff_s", reconnect_backoff_s)
        self.max_backoff_s = _positive("max_backoff_s", max_backoff_s)
        self._token = token
        self._https: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._random = random.Random()
        #: The blocking twins of this client's methods.
        self.sync = SyncClient(self)

    def __repr__(self) -> str:
        token = ", token=***" if self._token else ""
        return f"Client({self.url!r}{token})"

    # ----- plumbing ----------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": _USER_AGENT}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        http = self._https.get(loop)
        if http is None or http.is_closed:
            for other in [other for other in list(self._https) if other.is_closed()]:
                # Its loop is gone (e.g. several asyncio.run() without aclose()): nothing can
                # await the old pool any more; forget it rather than pin the loop.
                self._https.pop(other, None)
            http = httpx.AsyncClient(
                base_url=self.url, timeout=self.timeout_s, headers=self._headers()
            )
            self._https[loop] = http
        return http

    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, object] | None = None,
        *,
        body: Mapping[str, object] | None = None,
        text: bool = False,
        answers: tuple[int, ...] = (),
    ) -> Any:
        """The decoded JSON answer; :class:`HeartsimError` for an error status not in
        ``answers`` (statuses whose body is the answer, e.g. /health's 503)."""
        query = {k: cast(Any, v) for k, v in (params or {}).items() if v is not None}
        try:
            response = await self._http().request(method, path, params=query, json=body)
        except httpx.TimeoutException as exc:
            raise HeartsimError(
                f"no answer from {self.url} within {self.timeout_s:g} s ({type(exc).__name__})",
                request=f"{method} {path}",
            ) from exc
        except httpx.TransportError as exc:
            raise HeartsimError(
                f"cannot reach the heartsim server at {self.url} ({exc!s}); is it running?",
                request=f"{method} {path}",
            ) from exc
        if response.is_error:
            payload = None
            if response.status_code in answers:
                with contextlib.suppress(ValueError):  # e.g. a proxy's HTML error page
                    payload = response.json()
            if not isinstance(payload, dict):
                raise HeartsimError.from_response(response)
            return payload
        return response.text if text else response.json()

    async def _release_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        http = self._https.pop(loop, None)
        if http is not None:
            await http.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections of the running loop (the client stays usable)."""
        await self._release_loop(asyncio.get_running_loop())

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sync.close()

    # ----- REST --------------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        """Service health: ``GET /health`` (public, needs no token).

        Returns
        -------
        dict
            ``status`` (``"healthy"``; ``"degraded"`` or ``"unhealthy"`` when the server
            answers 503, with ``reasons`` saying why: that is a report, not an error),
            ``simulation_state``, ``base_bpm`` (beats/min), ``websocket_clients``, ``uptime_s``
            (s), ``version``, ``tick_hz`` (Hz), delivery counters, ``tick_errors`` and tick
            timing (ms).
        """
        return await self._request("GET", "/health", answers=(503,))

    async def current(self, person: str | None = None) -> dict[str, Any]:
        """The latest heartbeat message: ``GET /heartbeat/current``.

        Parameters
        ----------
        person
            Person id; the default person if ``None``.

        Returns
        -------
        dict
            One heartbeat message (see :func:`messages_to_frame` for its fields and units).

        Raises
        ------
        HeartsimError
            404 before the first sample ("Start simulation first ...") or for an unknown person.
        """
        return await self._request("GET", "/heartbeat/current", {"person": _person(person)})

    async def start(self) -> dict[str, Any]:
        """Start (or resume) the simulation: ``POST /simulation/start``.

        Returns
        -------
        dict
            ``{"message": ..., "state": "running"}``; already running is not an error.
        """
        return await self._request("POST", "/simulation/start")

    async def stop(self) -> dict[str, Any]:
        """Stop the simulation: ``POST /simulation/stop`` (already stopped is not an error).

        Returns
        -------
        dict
            ``{"message": ..., "state": "stopped"}``.
        """
        return await self._request("POST", "/simulation/stop")

    async def pause(self) -> dict[str, Any]:
        """Freeze simulated time without resetting anyone: ``POST /simulation/pause``.

        Returns
        -------
        dict
            ``{"message": ..., "state": "paused"}``; pausing a paused or stopped simulation
            changes nothing (the message says so).
        """
        return await self._request("POST", "/simulation/pause")

    async def resume(self) -> dict[str, Any]:
        """Continue a paused simulation: ``POST /simulation/resume`` (idempotent like pause).

        Returns
        -------
        dict
            ``{"message": ..., "state": ...}``.
        """
        return await self._request("POST", "/simulation/resume")

    async def config(self) -> dict[str, Any]:
        """The simulation parameters: ``GET /simulation/config``.

        Returns
        -------
        dict
            ``tick_hz`` (messages per second and person, Hz), ``spontaneous_stress_per_h``
            (episodes per hour and person), ``clock``, ``state``, ``persons``,
            ``default_person``.
        """
        return await self._request("GET", "/simulation/config")

    async def configure(
        self, tick_hz: float | None = None, spontaneous_stress_per_h: float | None = None
    ) -> dict[str, Any]:
        """Change simulation parameters: ``POST /simulation/config`` (``None``: unchanged).

        Parameters
        ----------
        tick_hz
            Messages per second and person, Hz.
        spontaneous_stress_per_h
            Mean spontaneous stress episodes per hour and person (0 disables).

        Returns
        -------
        dict
            The parameters after the change, as :meth:`config`.

        Raises
        ------
        ValueError
            A value is not a finite number.
        HeartsimError
            422 naming the parameter and its range (nothing changes).
        """
        params = {
            "tick_hz": _optional_number("tick_hz", tick_hz),
            "spontaneous_stress_per_h": _optional_number(
                "spontaneous_stress_per_h", spontaneous_stress_per_h
            ),
        }
        return await self._request("POST", "/simulation/config", params)

    async def trigger_stress(
        self, level: float, duration_s: float | None = None, person: str | None = None
    ) -> dict[str, Any]:
        """Start an acute stress episode now: ``POST /simulation/trigger-stress``.

        Parameters
        ----------
        level
            Intensity of the stressor, 0 (ends any episode) to 1 (sent as ``stress_level``).
        duration_s
            Length of the episode, s; the server's default if ``None``.
        person
            Person id; the default person if ``None``.

        Returns
        -------
        dict
            ``message``, ``person_id``, ``stress_level``, ``duration_s`` (s), ``start_t`` and
            ``end_t`` (simulation time, s), ``state``.

        Raises
        ------
        ValueError
            ``level`` or ``duration_s`` is not a finite number.
        HeartsimError
            400 when the simulation is not running; 422 (naming ``stress_level`` or
            ``duration_s`` and the allowed range) when a value is out of range.
        """
        params = {
            "stress_level": _number("level", level),
            "duration_s": _optional_number("duration_s", duration_s),
            "person": _person(person),
        }
        return await self._request("POST", "/simulation/trigger-stress", params)

    async def set_baseline(self, bpm: float, person: str | None = None) -> dict[str, Any]:
        """Set the resting heart rate: ``POST /simulation/set-baseline``.

        Parameters
        ----------
        bpm
            Resting heart rate, beats per minute (the server accepts a physiological range).
        person
            Person id; the default person if ``None``.

        Returns
        -------
        dict
            ``message``, ``person_id`` and ``base_bpm`` (beats/min).

        Raises
        ------
        ValueError
            ``bpm`` is not a finite number.
        HeartsimError
            422 naming ``bpm`` and its range when out of range (nothing changes).
        """
        params = {"bpm": _number("bpm", bpm), "person": _person(person)}
        return await self._request("POST", "/simulation/set-baseline", params)

    async def persons(self) -> dict[str, Any]:
        """The simulated persons: ``GET /persons``.

        Returns
        -------
        dict
            ``default_person`` (id) and ``persons`` (a list of profiles, default first).
        """
        return await self._request("GET", "/persons")

    async def person(self, person_id: str) -> dict[str, Any]:
        """One person's profile: ``GET /persons/{person_id}`` (404 if unknown)."""
        return await self._request("GET", f"/persons/{_person_id(person_id)}")

    async def add_person(self, person_id: str | None = None, **profile: float) -> dict[str, Any]:
        """Add a person: ``POST /persons``; simulated from now on.

        Parameters
        ----------
        person_id
            Its id; ``None``: the server picks a fresh ``pN``.
        **profile
            Profile fields with units in their names (``resting_hr_bpm=64``,
            ``hr_reactivity_bpm=30``, ...; see GET /persons). None at all draws a random
            realistic person.

        Returns
        -------
        dict
            ``message``, ``person_id`` and ``person`` (the full profile).

        Raises
        ------
        HeartsimError
            409 if the id exists or the server's person limit is reached; 422 naming a field
            and its range.
        """
        body: dict[str, object] = dict(profile)
        if person_id is not None:
            body["person_id"] = _person_id(person_id)
        return await self._request("POST", "/persons", body=body)

    async def update_person(self, person_id: str, **profile: float) -> dict[str, Any]:
        """Change profile fields of a live person: ``PATCH /persons/{person_id}``.

        The fields are validated together; on a 422 (naming the field) nothing changes.
        Returns the whole profile after the change.
        """
        return await self._request("PATCH", f"/persons/{_person_id(person_id)}", body=dict(profile))

    async def remove_person(self, person_id: str) -> dict[str, Any]:
        """Remove a person: ``DELETE /persons/{person_id}``; its streams end (close 1000).

        Raises
        ------
        HeartsimError
            404 if unknown; 409 for the last person (a server always has one).
        """
        return await self._request("DELETE", f"/persons/{_person_id(person_id)}")

    async def predict(
        self,
        rr_ms: SequenceABC[float] | None = None,
        features: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        """Score RR intervals or a feature row with the server's model: ``POST /predict``.

        Parameters
        ----------
        rr_ms
            One person's consecutive RR intervals, ms, oldest first, ending now.
        features
            Or one feature row (the names of GET /health's ``model.features``).

        Returns
        -------
        dict
            ``prediction`` (``"stress"`` or ``"rest"``), ``confidence``, ``stress_score``, ...

        Raises
        ------
        ValueError
            Neither or both of ``rr_ms`` and ``features`` given.
        HeartsimError
            409 when no model is attached; 422 naming the field; 413 when the request is
            too large.
        """
        if (rr_ms is None) == (features is None):
            raise ValueError("predict needs exactly one of rr_ms or features")
        body: dict[str, object] = (
            {"rr_ms": [float(rr) for rr in rr_ms]}
            if rr_ms is not None
            else {"features": dict(features or {})}
        )
        return await self._request("POST", "/predict", body=body)

    async def message_schema(self) -> dict[str, Any]:
        """The JSON Schema of the stream's messages: ``GET /schema/messages``."""
        return await self._request("GET", "/schema/messages")

    async def metrics(self) -> str:
        """Counters and timings in the Prometheus text format: ``GET /metrics``."""
        return await self._request("GET", "/metrics", text=True)

    async def history(
        self, since: int | None = None, limit: int | None = None, person: str | None = None
    ) -> list[dict[str, Any]]:
        """Buffered heartbeat messages, oldest first: ``GET /heartbeat/history`` (paged).

        Parameters
        ----------
        since
            Only messages with ``seq > since``; ``None``: from the oldest buffered one, or with
            ``limit`` the newest ``limit`` messages.
        limit
            Most messages returned; ``None``: every buffered message that matches (the client
            pages through the buffer).
        person
            Person id; the default person if ``None``.

        Returns
        -------
        list of dict
            Heartbeat messages (pass them to :func:`messages_to_frame` for a table). When some
            messages after ``since`` are no longer buffered, a warning is logged.
        """
        since = _optional_int("since", since, 0)
        limit = _optional_int("limit", limit, 1)
        person = _person(person)
        path = "/heartbeat/history"
        newest = since is None and limit is not None
        if since is None and limit is not None and limit <= _HISTORY_PAGE:
            page = await self._request("GET", path, {"limit": limit, "person": person})
            return list(page["messages"])
        # Page forward from ``since`` (or the oldest buffered message) with the server's cursor.
        cursor = 0 if since is None else since
        out: list[dict[str, Any]] = []
        while limit is None or newest or len(out) < limit:
            want = _HISTORY_PAGE
            if limit is not None and not newest:
                want = min(_HISTORY_PAGE, limit - len(out))
            page = await self._request(
                "GET", path, {"since": cursor, "limit": want, "person": person}
            )
            if since is not None and not out and page.get("missed"):
                logger.warning(
                    "history of %s after seq %d: %d messages are no longer buffered",
                    page.get("person_id"),
                    since,
                    page["missed"],
                )
            messages = page["messages"]
            out.extend(messages)
            if not page.get("more") or not messages:
                break
            cursor = messages[-1]["seq"]
        return out[-limit:] if newest and limit is not None else out

    # ----- streaming ---------------------------------------------------------------------------
    def stream(
        self,
        limit: int | None = None,
        since: int | None = None,
        person: str | None = None,
        *,
        epoch: str | None = None,
        on_restart: OnRestart = "mark",
    ) -> AsyncIterator[dict[str, Any]]:
        """Live heartbeat messages from ``WS /ws/heartbeat``, with transparent reconnection.

        Parameters
        ----------
        limit
            Stop after this many messages; ``None``: until the consumer stops iterating.
        since
            First replay the buffered messages with ``seq > since``, then go live; ``None``:
            live messages only.
        person
            Person id; the default person if ``None``.
        epoch
            The server run that ``since`` belongs to (the ``epoch`` of its ``connected``
            message or history page); ``None``: trust ``since``. Give it when resuming a
            stream saved earlier, so that a restarted server is noticed.
        on_restart
            What to do when the server turns out to have restarted (its ``epoch`` changed, so
            its ``seq`` numbering is new): ``"mark"`` logs a warning, yields one marker
            ``{"type": "restart", "person_id", "previous_epoch", "epoch", "previous_seq"}``
            and goes on with the new run from its oldest buffered message; ``"raise"`` raises
            :class:`StreamRestartedError`. The two runs are never spliced.

        Yields
        ------
        dict
            Heartbeat messages (the ``connected`` and ``pong`` messages are consumed here), in
            ``seq`` order, and with ``on_restart="mark"`` a ``restart`` marker where the
            server's run changed. Fields and units: see :func:`messages_to_frame`.

        Raises
        ------
        ValueError
            At call time, for an invalid ``limit``, ``since`` or ``person``.
        HeartsimError
            The first connection fails; the server refuses the handshake (HTTP 401 wrong
            token, 403 foreign origin, 404 unknown person, 422 bad ``since``; the error carries
            ``status_code`` and the server's message), ends the stream (1000: the person was
            removed), or the connection drops and ``reconnect_attempts`` reconnections fail in
            a row.
        StreamRestartedError
            With ``on_restart="raise"``, the server restarted (a subclass of HeartsimError).

        Notes
        -----
        When the connection drops (no close frame, server restart 1001/1012, keepalive 1011,
        the server closing a too-slow consumer 1008) or a handshake is refused for now (HTTP
        503 too many clients, 429 too many handshakes: after at least their ``Retry-After``),
        the stream reconnects after ``reconnect_backoff_s`` (doubling) with
        ``?since=<last seq seen>``; the server replays
        what was missed, and any message already yielded is skipped, so the consumer sees no gap
        and no duplicate. Only messages older than the server's history buffer can be lost; that
        is logged as a warning. Reconnections send the run's ``epoch`` along, so a restarted
        server is noticed (see ``on_restart``) even when its new ``seq`` has already passed the
        old one.

        Breaking out of ``async for`` early leaves the connection open until the iterator is
        garbage-collected; use ``limit`` or :func:`contextlib.aclosing` to close it promptly.
        """
        if epoch is not None and not isinstance(epoch, str):
            raise ValueError(f"epoch must be a string (a connected message's epoch), got {epoch!r}")
        if on_restart not in ("mark", "raise"):
            raise ValueError(f"on_restart must be 'mark' or 'raise', got {on_restart!r}")
        return self._stream(
            _optional_int("limit", limit, 1),
            _optional_int("since", since, 0),
            _person(person),
            epoch,
            on_restart,
        )

    def _stream_url(self, person: str | None, since: int | None, epoch: str | None) -> str:
        query = {
            key: value
            for key, value in (("person", person), ("since", since), ("epoch", epoch))
            if value is not None
        }
        return f"{self.ws_url}?{urlencode(query)}" if query else self.ws_url

    def _backoff_s(self, failures: int) -> float:
        delay = min(self.reconnect_backoff_s * 2 ** (failures - 1), self.max_backoff_s)
        return delay * self._random.uniform(0.8, 1.2)

    async def _stream(
        self,
        limit: int | None,
        since: int | None,
        person: str | None,
        epoch: str | None = None,
        on_restart: OnRestart = "mark",
    ) -> AsyncIterator[dict[str, Any]]:
        delivered = 0
        last_seq = since  # every message with seq <= last_seq was yielded (or not wanted)
        failures = 0  # reconnections in a row without a message
        connected_once = False
        while True:
            url = self._stream_url(person, last_seq, epoch if last_seq is not None else None)
            retry_after_s = 0.0
            try:
                async with connect(
                    url,
                    additional_headers=self._headers(),
                    user_agent_header=None,
                    compression=None,  # the server never compresses (frames are pre-built)
                    open_timeout=self.timeout_s,
                    close_timeout=_CLOSE_TIMEOUT_S,
                ) as ws:
                    hello = await _hello(ws, self.timeout_s)
                    marker = _restart_marker(hello, epoch, last_seq)
                    if marker is not None:
                        if on_restart == "raise":
                            await _close_draining(ws)
                            raise StreamRestartedError(
                                marker["previous_epoch"],
                                marker["epoch"],
                                last_seq,
                                request=url,
                            )
                        logger.warning(
                            "stream of %s: the server restarted (epoch %s -> %s) after seq %s; "
                            "following the new run from its oldest buffered message",
                            marker["person_id"],
                            marker["previous_epoch"],
                            marker["epoch"],
                            last_seq,
                        )
                        last_seq = hello.get("since")
                    else:
                        last_seq = _resume_point(hello, last_seq, reconnected=connected_once)
                    epoch = hello.get("epoch", epoch)
                    if connected_once:
                        logger.info(
                            "stream %s resumed after seq %s (%s replayed)",
                            self.ws_url,
                            last_seq,
                            hello.get("replayed"),
                        )
                    connected_once = True
                    if marker is not None:
                        try:
                            yield marker
                        except GeneratorExit:
                            await _close_draining(ws)
                            raise
                    async for raw in ws:
                        message = _decode(raw)
                        if message.get("type") != "heartbeat":
                            continue
                        seq = message["seq"]
                        if last_seq is not None and seq <= last_seq:
                            continue  # already yielded before the reconnection
                        if last_seq is not None and seq > last_seq + 1:
                            logger.warning(
                                "stream of %s: messages %d to %d were lost (no longer "
                                "buffered by the server)",
                                message.get("person_id"),
                                last_seq + 1,
                                seq - 1,
                            )
                        last_seq = seq
                        failures = 0
                        try:
                            yield message
                        except GeneratorExit:  # the consumer stopped iterating
                            await _close_draining(ws)
                            raise
                        delivered += 1
                        if limit is not None and delivered >= limit:
                            await _close_draining(ws)
                            return
                    code, reason = ws.close_code, ws.close_reason or ""
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                reason = exc.rcvd.reason if exc.rcvd is not None else "connection dropped"
            except InvalidStatus as exc:
                status = exc.response.status_code
                said = _refusal_text(exc.response.body)
                if status not in _RETRIABLE_STATUSES and (status < 500 or not connected_once):
                    raise HeartsimError(
                        f"the server refused the WebSocket handshake with HTTP {status}{said}",
                        status_code=status,
                        request=url,
                    ) from exc
                code, reason = None, f"handshake answered HTTP {status}{said}"
                retry_after_s = _retry_after_s(exc.response.headers.get("Retry-After"))
            except (TimeoutError, OSError, InvalidHandshake) as exc:
                if not connected_once:
                    raise HeartsimError(
                        f"cannot open the stream at {url}: {exc!s} ({type(exc).__name__}); "
                        "is the server running?",
                        request=url,
                    ) from exc
                code, reason = None, f"{type(exc).__name__}: {exc!s}"
            if not _retriable(code, reason):
                raise HeartsimError(
                    f"the server closed the stream: {reason or 'no reason given'}",
                    close_code=code,
                    request=url,
                )
            failures += 1
            if failures > self.reconnect_attempts:
                raise HeartsimError(
                    f"stream lost ({_describe_close(code, reason)}) and "
                    f"{self.reconnect_attempts} reconnection attempts failed; resume later with "
                    f"stream(since={last_seq})",
                    close_code=code,
                    request=url,
                )
            delay = max(self._backoff_s(failures), retry_after_s)
            logger.info(
                "stream %s dropped (%s); reconnecting in %.2f s (attempt %d of %d)",
                self.ws_url,
                _describe_close(code, reason),
                delay,
                failures,
                self.reconnect_attempts,
            )
            await asyncio.sleep(delay)

    async def collect(
        self, duration_s: float, person: str | SequenceABC[str] | None = None
    ) -> pd.DataFrame:
        """Record the live stream for ``duration_s`` seconds into a table.

        Parameters
        ----------
        duration_s
            How long to record, s (wall-clock time).
        person
            Person id, a sequence of ids (recorded concurrently, one stream each), or ``None``
            for the default person.

        Returns
        -------
        pandas.DataFrame
            One row per heartbeat message, about ``duration_s * tick_hz`` rows per person
            while the simulation runs (none while it is stopped); columns and units as in
            :func:`messages_to_frame` (``rr_ms`` is a list column).

        Raises
        ------
        ValueError
            ``duration_s`` is not a positive number, or ``person`` is malformed.
        HeartsimError
            A stream cannot be opened or is lost for good (see :meth:`stream`).
        """
        duration_s = _positive("duration_s", duration_s)
        persons = _persons(person)
        rows: list[dict[str, Any]] = []

        async def record(who: str | None) -> None:
            async for message in self._stream(None, None, who):
                if message.get("type") == "heartbeat":  # not a restart marker (logged)
                    rows.append(message)

        tasks = [asyncio.ensure_future(record(who)) for who in persons]
        try:
            done, _ = await asyncio.wait(tasks, timeout=duration_s)
            for task in done:
                task.result()  # a stream ended early: raise its error
        finally:
            for task in tasks:
                task.cancel()
            # Cancelling closes each stream (its WebSocket) before we return.
            await asyncio.gather(*tasks, return_exceptions=True)
        return messages_to_frame(rows)


async def _close_draining(ws: ClientConnection) -> None:
    """Close ``ws`` promptly although messages may still be queued: a full receive queue stops
    reading, so the server's close frame would wait behind them until the close timeout."""
    closing = asyncio.ensure_future(ws.close())
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass
    await closing


async def _hello(ws: ClientConnection, timeout_s: float) -> dict[str, Any]:
    hello = _decode(await asyncio.wait_for(ws.recv(), timeout_s))
    if hello.get("type") != "connected":
        raise HeartsimError(
            f"expected a 'connected' message first, got {str(hello)[:200]}; is this a heartsim "
            "server?"
        )
    return hello


def _decode(raw: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except ValueError as exc:
        raise HeartsimError(f"the server sent a message that is not JSON: {raw[:200]!r}") from exc
    if not isinstance(message, dict):
        raise HeartsimError(f"the server sent a message that is not an object: {raw[:200]!r}")
    return message


def _restart_marker(
    hello: Mapping[str, Any], epoch: str | None, last_seq: int | None
) -> dict[str, Any] | None:
    """The ``restart`` marker if ``hello`` says the server's run is not ``epoch``'s."""
    if epoch is None or last_seq is None or "epoch" not in hello:
        return None  # nothing to resume, or a server that predates epochs
    if hello["epoch"] == epoch and not hello.get("restarted"):
        return None
    return {
        "type": "restart",
        "person_id": hello.get("person_id"),
        "previous_epoch": epoch,
        "epoch": hello["epoch"],
        "previous_seq": last_seq,
    }


def _resume_point(hello: Mapping[str, Any], last_seq: int | None, *, reconnected: bool) -> int:
    """The seq after which messages are new to the consumer, given the server's hello."""
    latest = hello.get("latest_seq")
    if last_seq is None:
        # Live from here: the server sends seq > latest. Remembering it makes a later
        # reconnection replay what was produced in between (0: nothing was buffered yet).
        return latest if latest is not None else 0
    restarted = latest < last_seq if latest is not None else last_seq > 0
    if reconnected and restarted:
        logger.warning(
            "the server's seq went back from %s to %s (was it restarted?); following the new "
            "numbering, messages produced while disconnected are lost",
            last_seq,
            latest,
        )
        return latest if latest is not None else 0
    # Messages after last_seq no longer buffered show up as a seq jump, logged by the reader.
    return last_seq


def _refusal_text(body: bytes | bytearray | None) -> str:
    """``": <message>"`` from a refused handshake's JSON error body, or ``""``."""
    try:
        message = json.loads(body or b"").get("message")
    except (ValueError, AttributeError):
        return ""
    return f": {str(message)[:300]}" if message else ""


def _retry_after_s(value: str | None) -> float:
    """Seconds of a ``Retry-After`` header (0 if absent or not a number of seconds)."""
    try:
        return min(max(float(value or 0), 0.0), 60.0)
    except ValueError:
        return 0.0


def _retriable(code: int | None, reason: str) -> bool:
    if code is None or code in _RETRIABLE_CLOSE_CODES:
        return True
    # The server closes a consumer that cannot keep up with 1008 too; resuming catches up.
    return code == 1008 and reason.startswith("too slow")


def _describe_close(code: int | None, reason: str) -> str:
    return f"close {code}: {reason}" if code is not None else reason


# ----- the blocking twin -----------------------------------------------------------------------
def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _allow_reentry(loop: asyncio.AbstractEventLoop) -> None:
    """Make ``loop`` re-entrant with nest_asyncio2 (once; see :class:`SyncClient`)."""
    if getattr(loop, "_nest_patched", False):
        return
    import nest_asyncio2  # imported here: nothing is patched until a blocking call needs it

    logger.info(
        "blocking heartsim call inside a running event loop: patching asyncio with "
        "nest_asyncio2 so the loop keeps serving while the call waits (process-wide; "
        "use 'await client.<method>()' to avoid it)"
    )
    # The loop step now running is the unpatched one: it will still pop the callbacks that were
    # ready when it began. The first nested run may consume some of them, and that step would
    # then pop from an empty queue and kill the kernel (IndexError, seen ~1 run in 10). After
    # that first nested run, pad the queue back with no-op callbacks (harmless).
    expected = len(getattr(loop, "_ready", ()))
    try:
        nest_asyncio2.apply(loop)
    except ValueError as exc:  # e.g. uvloop: not an asyncio.BaseEventLoop
        raise RuntimeError(
            f"cannot make a blocking heartsim call inside the running {type(loop).__name__} "
            f"({exc}); use 'await client.<method>()' instead of client.sync"
        ) from exc
    patched_run = type(loop).run_until_complete

    def first_nested_run(future: Any) -> Any:
        try:
            return patched_run(loop, future)
        finally:
            del loop.run_until_complete  # back to the class's (patched) method
            ready = loop._ready  # type: ignore[attr-defined]
            for _ in range(expected - len(ready)):
                ready.append(asyncio.Handle(lambda: None, (), loop, None))

    loop.run_until_complete = first_nested_run  # type: ignore[method-assign]


async def _anext_or_done(iterator: AsyncIterator[_T]) -> _T | object:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _DONE


class SyncClient:
    """The blocking twins of a :class:`Client`'s methods (``client.sync``).

    Each method takes the same arguments, returns the same value and raises the same errors as
    its async namesake; :meth:`stream` is a plain iterator.

    Where a blocking call runs
        - **No running event loop in this thread** (a script, a worker thread, a plain Python
          shell): on a private event loop created for the call (for :meth:`stream`, for the
          iteration) and closed afterwards, with its HTTP connections. Nothing is patched.
          Each call therefore opens its own connection (well under a millisecond on loopback).
        - **Inside a running event loop** (a Jupyter/IPython cell, or a coroutine): a plain
          blocking wait would freeze that loop, and with it a heartsim server running on it (a
          notebook's :class:`~heartsim.server.HeartsimServer`): the request could never be
          answered (deadlock until the timeout) and every subscriber would stall. Instead the
          call re-enters the running loop (``loop.run_until_complete``), which serves the
          server, widgets and other tasks while the call waits. That needs
          ``nest_asyncio2.apply()``, which this class calls on the first such call, never
          at import.

    What the nest_asyncio2 patch costs
        It is process-wide and lasts until the process ends: ``asyncio.Task``/``Future``
        become the pure-Python implementations for everything created afterwards, the loop's
        class gets a re-entrant, pure-Python ``run_until_complete`` / ``run_forever`` /
        ``_run_once``, and ``asyncio.run``/``get_event_loop`` are replaced. Speed changes depend
        on the workload; behaviour changes are the real cost: code that relies on a loop
        refusing to nest no longer gets that error, ``anyio.run()`` still fails, and on Python
        3.13 a later ``uvicorn.run()`` in the same process breaks. nest_asyncio2 is the
        maintained fork that ipykernel itself depends on. To avoid the patch altogether,
        ``await`` the async methods in notebooks (top-level ``await`` works in cells).

    While a re-entrant call waits, other tasks run *inside* it; while the body of a
    ``for message in client.sync.stream()`` loop runs, the loop (and an in-kernel server) is
    blocked, exactly as with any other blocking cell code.

    Parameters
    ----------
    client
        The async client whose methods are run.

    Examples
    --------
    Blocking calls from a worker thread while the server runs on the main loop (runnable):

    >>> import asyncio
    >>> from heartsim.server import HeartsimServer
    >>> async def main():
    ...     async with HeartsimServer(port=0, tick_hz=20, autostart=True) as server:
    ...         client = Client(server.url)
    ...         def blocking():
    ...             return [m["seq"] for m in client.sync.stream(limit=3)]
    ...         seqs = await asyncio.to_thread(blocking)
    ...     return len(seqs), seqs == sorted(seqs)
    >>> asyncio.run(main())
    (3, True)

    In a notebook whose kernel also runs the server (``await server.start()`` in a cell):

    >>> Client(server.url).sync.collect(duration_s=2)  # doctest: +SKIP
    """

    def __init__(self, client: Client) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"SyncClient({self._client!r})"

    # ----- running coroutines ------------------------------------------------------------------
    def _call(self, function: Callable[..., Coroutine[Any, Any, _T]], *args: Any, **kw: Any) -> _T:
        loop = _running_loop()
        if loop is not None:
            _allow_reentry(loop)
            return _run_on(loop, function(*args, **kw))
        loop = asyncio.new_event_loop()
        try:
            return _run_on(loop, function(*args, **kw))
        finally:
            self._close_private_loop(loop)

    def _close_private_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_until_complete(self._client._release_loop(loop))
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def _iterate(self, iterator: AsyncIterator[_T]) -> Iterator[_T]:
        loop = _running_loop()
        private = loop is None
        if loop is None:
            loop = asyncio.new_event_loop()
        else:
            _allow_reentry(loop)
        try:
            while True:
                item = _run_on(loop, _anext_or_done(iterator))
                if item is _DONE:
                    return
                yield cast(_T, item)
        finally:
            try:
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    _run_on(loop, aclose())
            finally:
                if private:
                    self._close_private_loop(loop)

    # ----- the twins ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Blocking :meth:`Client.health`."""
        return self._call(self._client.health)

    def current(self, person: str | None = None) -> dict[str, Any]:
        """Blocking :meth:`Client.current`."""
        return self._call(self._client.current, person)

    def start(self) -> dict[str, Any]:
        """Blocking :meth:`Client.start`."""
        return self._call(self._client.start)

    def stop(self) -> dict[str, Any]:
        """Blocking :meth:`Client.stop`."""
        return self._call(self._client.stop)

    def pause(self) -> dict[str, Any]:
        """Blocking :meth:`Client.pause`."""
        return self._call(self._client.pause)

    def resume(self) -> dict[str, Any]:
        """Blocking :meth:`Client.resume`."""
        return self._call(self._client.resume)

    def config(self) -> dict[str, Any]:
        """Blocking :meth:`Client.config`."""
        return self._call(self._client.config)

    def configure(
        self, tick_hz: float | None = None, spontaneous_stress_per_h: float | None = None
    ) -> dict[str, Any]:
        """Blocking :meth:`Client.configure` (``tick_hz`` in Hz, episodes per hour)."""
        return self._call(self._client.configure, tick_hz, spontaneous_stress_per_h)

    def trigger_stress(
        self, level: float, duration_s: float | None = None, person: str | None = None
    ) -> dict[str, Any]:
        """Blocking :meth:`Client.trigger_stress` (``level`` 0 to 1, ``duration_s`` in s)."""
        return self._call(self._client.trigger_stress, level, duration_s, person)

    def set_baseline(self, bpm: float, person: str | None = None) -> dict[str, Any]:
        """Blocking :meth:`Client.set_baseline` (``bpm`` in beats per minute)."""
        return self._call(self._client.set_baseline, bpm, person)

    def persons(self) -> dict[str, Any]:
        """Blocking :meth:`Client.persons`."""
        return self._call(self._client.persons)

    def person(self, person_id: str) -> dict[str, Any]:
        """Blocking :meth:`Client.person`."""
        return self._call(self._client.person, person_id)

    def add_person(self, person_id: str | None = None, **profile: float) -> dict[str, Any]:
        """Blocking :meth:`Client.add_person`."""
        return self._call(self._client.add_person, person_id, **profile)

    def update_person(self, person_id: str, **profile: float) -> dict[str, Any]:
        """Blocking :meth:`Client.update_person`."""
        return self._call(self._client.update_person, person_id, **profile)

    def remove_person(self, person_id: str) -> dict[str, Any]:
        """Blocking :meth:`Client.remove_person`."""
        return self._call(self._client.remove_person, person_id)

    def predict(
        self,
        rr_ms: SequenceABC[float] | None = None,
        features: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        """Blocking :meth:`Client.predict` (``rr_ms`` in ms)."""
        return self._call(self._client.predict, rr_ms, features)

    def message_schema(self) -> dict[str, Any]:
        """Blocking :meth:`Client.message_schema`."""
        return self._call(self._client.message_schema)

    def metrics(self) -> str:
        """Blocking :meth:`Client.metrics`."""
        return self._call(self._client.metrics)

    def history(
        self, since: int | None = None, limit: int | None = None, person: str | None = None
    ) -> list[dict[str, Any]]:
        """Blocking :meth:`Client.history`."""
        return self._call(self._client.history, since, limit, person)

    def stream(
        self,
        limit: int | None = None,
        since: int | None = None,
        person: str | None = None,
        *,
        epoch: str | None = None,
        on_restart: OnRestart = "mark",
    ) -> Iterator[dict[str, Any]]:
        """Blocking :meth:`Client.stream`: ``for message in client.sync.stream(limit=10)``.

        Arguments are checked at call time. The connection closes when the iterator ends,
        is closed, or is garbage-collected; while the loop body runs, nothing is received
        (the server buffers, and a consumer too slow for too long is resumed transparently).
        """
        return self._iterate(
            self._client.stream(limit, since, person, epoch=epoch, on_restart=on_restart)
        )

    def collect(
        self, duration_s: float, person: str | SequenceABC[str] | None = None
    ) -> pd.DataFrame:
        """Blocking :meth:`Client.collect` (``duration_s`` in s)."""
        return self._call(self._client.collect, duration_s, person)

    def close(self) -> None:
        """Blocking :meth:`Client.aclose`."""
        self._call(self._client.aclose)


def _run_on(loop: asyncio.AbstractEventLoop, awaitable: Coroutine[Any, Any, _T]) -> _T:
    """Run ``awaitable`` to completion on ``loop`` (re-entrantly if it is running).

    If the wait is interrupted (KeyboardInterrupt: "interrupt kernel"), the task is cancelled
    rather than left running in the background of a long-lived loop.
    """
    task = asyncio.ensure_future(awaitable, loop=loop)
    try:
        return loop.run_until_complete(task)
    finally:
        if not task.done():
            task.cancel()
