"""The hub: the one place messages fan out from.

The runner publishes each tick's samples here. The hub

- encodes every sample **once** (orjson) into a :class:`Message`, which also carries the
  ready-made WebSocket text frame, so a thousand WebSocket clients cost one encoding and
  one framing, not a thousand;
- keeps a bounded per-person history (:class:`History`) for ``GET /heartbeat/history`` and
  for WebSocket ``?since=`` replay, within one byte budget for all persons together
  (``history_bytes``): once it is reached, the globally oldest messages go first, so the
  history kept gets shorter (not the stream) as persons or the tick rate grow;
- hands each message to every subscriber of its person. A subscriber's :meth:`~Subscriber.deliver`
  never blocks: it either takes the message into its own bounded buffer or reports overflow,
  upon which the hub disconnects it and counts it. A slow subscriber therefore never delays
  the others, and memory stays bounded.

Replay then live, with no gap and no duplicate: :meth:`Hub.subscribe` replays the buffered
messages after ``since`` and registers the subscriber in one synchronous step, and messages are
delivered synchronously from :meth:`Hub.publish`, so no message can fall between the two.

Messages travel from publisher to the fan-out through a :class:`Backend`. :class:`LocalBackend`
delivers in-process; a Redis backend (multi-server) can implement the same three methods.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import collections
import itertools
import logging
import operator
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

logger = logging.getLogger(__name__)

#: Close codes (RFC 6455) the hub asks subscribers to close with.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008

_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2) of ``payload``.

    Servers never mask their frames, so the same bytes are valid on every connection; without a
    negotiated extension that rewrites frames (we never compress), they are exactly what the
    ``websockets`` protocol would produce.
    """
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


class Message:
    """One encoded message: JSON ``payload`` and its WebSocket ``frame``, built once.

    Only ``frame`` is stored; ``payload`` is a zero-copy view into it.
    """

    __slots__ = ("frame", "payload_offset", "person_id", "seq", "t")

    def __init__(self, person_id: str, seq: int, t: float, payload: bytes) -> None:
        self.person_id = person_id
        self.seq = seq
        self.t = t
        self.frame = text_frame(payload)
        self.payload_offset = len(self.frame) - len(payload)

    @classmethod
    def from_frame(
        cls, person_id: str, seq: int, t: float, frame: bytes, payload_offset: int
    ) -> Message:
        """A message from an already built ``frame`` whose JSON starts at ``payload_offset``."""
        message = cls.__new__(cls)
        message.person_id, message.seq, message.t = person_id, seq, t
        message.frame, message.payload_offset = frame, payload_offset
        return message

    @classmethod
    def encode(cls, sample: Mapping[str, Any]) -> Message:
        """Encode one heartbeat sample (a dict with ``person_id``, ``seq`` and ``t``)."""
        return cls(
            sample["person_id"],
            sample["seq"],
            sample["t"],
            orjson.dumps(sample, option=_ORJSON_OPTIONS),
        )

    @property
    def payload(self) -> memoryview:
        """The JSON text (UTF-8), a view into :attr:`frame`."""
        return memoryview(self.frame)[self.payload_offset :]

    def data(self) -> dict[str, Any]:
        """The message decoded into a fresh dict."""
        return orjson.loads(self.payload)

    def __repr__(self) -> str:
        return f"Message(person_id={self.person_id!r}, seq={self.seq}, {len(self.frame)} bytes)"


# ----- history ---------------------------------------------------------------------------------
#: Bytes one buffered message costs beyond its frame (measured with tracemalloc: the entry
#: tuple, its seq and t objects, the bytes object's header, the deque slots; ~155 to 170).
#: A message accounts ``len(frame) + ENTRY_OVERHEAD_BYTES`` against the hub's budget.
ENTRY_OVERHEAD_BYTES = 180
#: Default budget of all persons' histories together, bytes.
DEFAULT_HISTORY_BYTES = 512 * 2**20


class History:
    """Bounded history of one person's messages, oldest first.

    Keeps the messages of the last ``history_s`` seconds of simulation time, and at most
    ``max_messages`` of them (the :class:`Hub` may drop more of the oldest to stay within its
    byte budget). Entries are stored as plain tuples of ints, floats and bytes,
    which the garbage collector stops tracking: a long history (10 min of 1,000 persons at
    2 Hz is 1.2 million messages) does not lengthen full collections, which pause the loop.
    """

    __slots__ = ("_entries", "_person_id", "_tokens", "history_s", "max_messages")

    def __init__(self, history_s: float, max_messages: int) -> None:
        self.history_s = history_s
        self.max_messages = max_messages
        self._person_id = ""
        # (seq, t, frame, payload offset)
        self._entries: collections.deque[tuple[int, float, bytes, int]] = collections.deque()
        # This history's entries in the hub's global age order (see Hub._trim).
        self._tokens = 0

    def append(self, message: Message) -> int:
        """Add ``message`` (newer than every buffered one) and forget what is too old.

        Returns the accounted bytes of the messages forgotten (see
        :data:`ENTRY_OVERHEAD_BYTES`).
        """
        self._person_id = message.person_id
        entries = self._entries
        freed = 0
        if len(entries) >= self.max_messages:
            freed += len(entries.popleft()[2]) + ENTRY_OVERHEAD_BYTES
        entries.append((message.seq, message.t, message.frame, message.payload_offset))
        horizon = message.t - self.history_s
        while entries[0][1] < horizon:
            freed += len(entries.popleft()[2]) + ENTRY_OVERHEAD_BYTES
        return freed

    @property
    def nbytes(self) -> int:
        """Accounted size of the buffered messages, bytes (O(n): for occasional use)."""
        return sum(len(entry[2]) for entry in self._entries) + ENTRY_OVERHEAD_BYTES * len(self)

    def clear(self) -> None:
        """Forget every message."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _message(self, entry: tuple[int, float, bytes, int]) -> Message:
        return Message.from_frame(self._person_id, *entry)

    @property
    def oldest_seq(self) -> int | None:
        """seq of the oldest buffered message."""
        return self._entries[0][0] if self._entries else None

    @property
    def oldest_t(self) -> float | None:
        """Simulation time (s) of the oldest buffered message."""
        return self._entries[0][1] if self._entries else None

    @property
    def latest_seq(self) -> int | None:
        """seq of the newest buffered message."""
        return self._entries[-1][0] if self._entries else None

    @property
    def latest_t(self) -> float | None:
        """Simulation time (s) of the newest buffered message."""
        return self._entries[-1][1] if self._entries else None

    @property
    def latest(self) -> Message | None:
        """The newest message."""
        return self._message(self._entries[-1]) if self._entries else None

    def count_after(self, since: int) -> int:
        """How many buffered messages have ``seq > since``."""
        return len(self._entries) - bisect.bisect_right(self._entries, since, key=_seq)

    def after(self, since: int | None, limit: int | None = None) -> list[Message]:
        """Messages with ``seq > since``, oldest first, at most ``limit`` of them.

        ``since=None`` gives the newest ``limit`` messages (all if ``limit`` is ``None``).
        """
        entries = self._entries
        if since is None:
            start = 0 if limit is None else max(0, len(entries) - limit)
        else:
            start = bisect.bisect_right(entries, since, key=_seq)
        stop = len(entries) if limit is None else min(len(entries), start + limit)
        return [self._message(entry) for entry in itertools.islice(entries, start, stop)]


_seq = operator.itemgetter(0)


# ----- subscribers -----------------------------------------------------------------------------
class Subscriber(abc.ABC):
    """Receives the messages of one person from the :class:`Hub`.

    Subclasses implement :meth:`deliver`, which must never block or await: take the message into
    a bounded buffer and return ``True``, or return ``False`` when that buffer is full. On
    ``False`` the hub unsubscribes it, counts it and calls :meth:`close`.

    Parameters
    ----------
    person_id
        Whose messages to receive.
    """

    def __init__(self, person_id: str) -> None:
        self.person_id = person_id
        self.close_code: int | None = None
        self.close_reason = ""
        self._closed: asyncio.Event | None = None

    @abc.abstractmethod
    def deliver(self, message: Message) -> bool:
        """Take ``message`` without blocking; ``False`` if this subscriber cannot keep up."""

    def replay(self, messages: Sequence[Message]) -> None:
        """Take the replayed ``messages`` (a burst, allowed beyond the usual bound)."""
        for message in messages:
            self.deliver(message)

    @property
    def closed(self) -> bool:
        """Whether the hub has closed this subscription."""
        return self.close_code is not None

    def close(self, code: int, reason: str) -> None:
        """Called by the hub when the subscription ends (overflow, person removed, shutdown)."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            if self._closed is not None:
                self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until the hub closes this subscription."""
        if self.close_code is not None:
            return
        if self._closed is None:
            self._closed = asyncio.Event()
        await self._closed.wait()


class QueueSubscriber(Subscriber):
    """An in-process subscriber with a bounded queue; iterate it to receive messages.

    Parameters
    ----------
    person_id
        Whose messages to receive.
    maxsize
        Most messages held; when full, the subscriber is dropped (``overflow="disconnect"``) or
        the oldest message is discarded and counted in :attr:`dropped`
        (``overflow="drop_oldest"``, for live plots that only need the latest).
    """

    def __init__(self, person_id: str, maxsize: int = 256, overflow: str = "disconnect") -> None:
        if overflow not in ("disconnect", "drop_oldest"):
            raise ValueError(f"overflow must be 'disconnect' or 'drop_oldest', got {overflow!r}")
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize!r}")
        super().__init__(person_id)
        self.maxsize = maxsize
        self.overflow = overflow
        self.dropped = 0
        self._limit = maxsize
        self._queue: collections.deque[Message] = collections.deque()
        self._ready: asyncio.Event | None = None

    def deliver(self, message: Message) -> bool:
        queue = self._queue
        if len(queue) >= self._limit:
            if self.overflow == "disconnect":
                return False
            queue.popleft()
            self.dropped += 1
        elif self._limit > self.maxsize and len(queue) < self.maxsize:
            self._limit = self.maxsize  # the replay burst has drained
        queue.append(message)
        if self._ready is not None:
            self._ready.set()
        return True

    def replay(self, messages: Sequence[Message]) -> None:
        # The burst may exceed maxsize; the bound returns once the queue has drained below it.
        self._queue.extend(messages)
        self._limit = max(self.maxsize, len(self._queue)) + self.maxsize
        if self._ready is not None:
            self._ready.set()

    def close(self, code: int, reason: str) -> None:
        super().close(code, reason)
        if self._ready is not None:
            self._ready.set()

    def qsize(self) -> int:
        """Messages waiting."""
        return len(self._queue)

    def get_nowait(self) -> Message | None:
        """The next message, or ``None`` if none is waiting."""
        return self._queue.popleft() if self._queue else None

    async def get(self) -> Message:
        """The next message; raises :class:`SubscriptionClosedError` once closed and drained."""
        while not self._queue:
            if self.closed:
                raise SubscriptionClosedError(self.close_code or CLOSE_NORMAL, self.close_reason)
            if self._ready is None:
                self._ready = asyncio.Event()
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.get()
            except SubscriptionClosedError:
                return


class SubscriptionClosedError(Exception):
    """Raised by :meth:`QueueSubscriber.get` once the hub has closed the subscription."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"subscription closed ({code}): {reason}")
        self.code = code
        self.reason = reason


# ----- backends --------------------------------------------------------------------------------
class Backend(abc.ABC):
    """Carries published messages to the hub's local fan-out (possibly via other servers).

    The hub calls :meth:`bind` once with its delivery callback; :meth:`publish` must not block.
    """

    def bind(self, deliver: Callable[[Sequence[Message]], None]) -> None:
        """Set the callback that fans a batch of messages out locally."""
        self._deliver = deliver

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect (nothing to do for local delivery)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Disconnect (nothing to do for local delivery)."""

    @abc.abstractmethod
    def publish(self, messages: Sequence[Message]) -> None:
        """Send ``messages`` to every hub of the deployment (this one included)."""


class LocalBackend(Backend):
    """Single-process delivery: publishing fans out immediately, synchronously."""

    def publish(self, messages: Sequence[Message]) -> None:
        self._deliver(messages)


# ----- the hub ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class HubStats:
    """Counters of a :class:`Hub` since creation."""

    messages_published: int
    messages_sent: int
    messages_dropped: int
    clients_dropped: int
    subscribers: int
    #: Accounted size of every person's history, bytes.
    history_bytes: int
    #: The budget of ``history_bytes`` (``None``: unlimited).
    history_budget_bytes: int | None
    #: Messages dropped from the history (oldest first) to stay within the budget.
    history_evicted: int
    #: Simulation time (s) the history spans now, oldest message of anyone to the newest.
    history_window_s: float


@dataclass(frozen=True)
class ReplayInfo:
    """What :meth:`Hub.subscribe` replayed."""

    replayed: int
    missed: int
    latest_seq: int | None


def resume_after(
    since: int | None, client_epoch: str | None, epoch: str
) -> tuple[int | None, bool]:
    """Where a resuming reader continues: ``(since, restarted)``.

    ``client_epoch`` is the epoch the reader's ``since`` belongs to (``None``: not given, the
    reader trusts ``since``). When it differs from ``epoch`` the server was restarted and the
    reader's ``seq`` means nothing here: it continues after seq 0 (the oldest buffered message
    of this epoch) and is told so, instead of having two runs spliced at ``since``.
    """
    if client_epoch is None or client_epoch == epoch:
        return since, False
    return 0, True


class Hub:
    """Fan-out, history and accounting of the message stream.

    Must be used from one event loop (the runner's); nothing here awaits.

    Parameters
    ----------
    backend
        Message transport between publishers and the local fan-out; :class:`LocalBackend` if
        ``None``.
    history_s
        Seconds of simulation history kept per person (default 10 minutes).
    max_history
        Hard cap on buffered messages per person (default: 10 minutes at 50 Hz).
    history_bytes
        Budget of all persons' histories together, bytes (default 512 MiB; ``None``:
        unlimited). Each message counts its frame plus :data:`ENTRY_OVERHEAD_BYTES`. When a
        publish exceeds it, the oldest messages of all persons go first (each person keeps
        at least its newest), so the history spans less than ``history_s`` rather than
        growing: 1,000 persons at 50 Hz (~500 bytes a message, 25 MB/s) keep ~20 s.
        ``?since=`` replays then report the messages no longer buffered as ``missed``.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        history_s: float = 600.0,
        max_history: int = 30_000,
        history_bytes: int | None = DEFAULT_HISTORY_BYTES,
    ) -> None:
        if history_s <= 0 or max_history < 1:
            raise ValueError(
                f"history_s must be > 0 and max_history >= 1, got {history_s!r}, {max_history!r}"
            )
        if history_bytes is not None and (
            isinstance(history_bytes, bool)
            or not isinstance(history_bytes, int)
            or history_bytes < 1
        ):
            raise ValueError(
                f"history_bytes must be an integer >= 1 or None, got {history_bytes!r}"
            )
        self.backend = backend if backend is not None else LocalBackend()
        self.backend.bind(self._fan_out)
        self.history_s = float(history_s)
        self.max_history = int(max_history)
        self.history_budget_bytes = history_bytes
        self._histories: dict[str, History] = {}
        # Every buffered message's history, in publish order (oldest first): the global age
        # order the budget trims in. Entries of messages already gone (too old, person
        # removed) are skipped when they reach the front (see _trim).
        self._age_order: collections.deque[History] = collections.deque()
        self._history_bytes = 0
        self._latest_t = 0.0
        self.history_evicted = 0
        self._subscribers: dict[str, dict[int, Subscriber]] = {}
        self._count = 0
        self.messages_published = 0
        self.messages_sent = 0
        self.messages_dropped = 0
        self.clients_dropped = 0

    # ----- publishing --------------------------------------------------------------------------
    def publish(self, samples: Iterable[Mapping[str, Any]]) -> list[Message]:
        """Encode ``samples`` (heartbeat dicts) once each and deliver them to every subscriber."""
        messages = [Message.encode(sample) for sample in samples]
        if messages:
            self.backend.publish(messages)
        return messages

    def _fan_out(self, messages: Sequence[Message]) -> None:
        histories = self._histories
        age_order = self._age_order
        grown = 0
        for message in messages:
            person = message.person_id
            history = histories.get(person)
            if history is None:
                history = histories[person] = History(self.history_s, self.max_history)
            grown += len(message.frame) + ENTRY_OVERHEAD_BYTES - history.append(message)
            history._tokens += 1
            age_order.append(history)
            self.messages_published += 1
            subscribers = self._subscribers.get(person)
            if subscribers:
                self._deliver(message, subscribers)
        self._history_bytes += grown
        if messages:
            self._latest_t = messages[-1].t
        self._trim()

    def _trim(self) -> None:
        """Drop the globally oldest messages until the histories fit the budget.

        Each message left one token (its history) in ``_age_order``; the front token stands
        for the oldest message of all (see :meth:`_oldest_history`). It goes while over
        budget, except a person's newest message, which stays (its token moves to the back).
        Amortised O(1) per published message.
        """
        budget = self.history_budget_bytes
        if budget is not None and self._history_bytes > budget:
            order = self._age_order
            used = self._history_bytes
            evicted = kept_newest = 0
            while order and used > budget and kept_newest <= len(order):
                history = order.popleft()
                entries = history._entries
                if history._tokens > len(entries):  # a stale token: its message is gone
                    history._tokens -= 1
                elif len(entries) > 1:
                    history._tokens -= 1
                    used -= len(entries.popleft()[2]) + ENTRY_OVERHEAD_BYTES
                    evicted += 1
                else:
                    order.append(history)
                    kept_newest += 1
            self._history_bytes = used
            self.history_evicted += evicted
        self._oldest_history()  # sheds the stale tokens at the front

    def _oldest_history(self) -> History | None:
        """The history holding the oldest buffered message of all, at the front of the age
        order, after discarding the stale tokens before it.

        Messages leave a history oldest first (too old, over its count cap, person removed),
        so a history with more tokens than messages owns stale tokens, and its oldest token
        is one of them.
        """
        order = self._age_order
        while order:
            history = order[0]
            if history._tokens <= len(history._entries):
                return history
            order.popleft()  # its message is gone already
            history._tokens -= 1
        return None

    def _deliver(self, message: Message, subscribers: dict[int, Subscriber]) -> None:
        # The hot loop: one call per subscriber and message; nothing here may block or await.
        overflowed: list[Subscriber] = []
        sent = 0
        for subscriber in list(subscribers.values()):
            try:
                ok = subscriber.deliver(message)
            except (OSError, RuntimeError) as exc:
                logger.warning("dropping subscriber %r: delivery failed: %s", subscriber, exc)
                ok = False
            if ok:
                sent += 1
            else:
                overflowed.append(subscriber)
        self.messages_sent += sent
        for subscriber in overflowed:
            self.messages_dropped += 1
            self.clients_dropped += 1
            logger.info(
                "disconnecting slow subscriber %r of person %s", subscriber, message.person_id
            )
            self._remove(subscriber, CLOSE_POLICY_VIOLATION, "too slow: send buffer overflow")

    # ----- subscribing -------------------------------------------------------------------------
    def subscribe(self, subscriber: Subscriber, since: int | None = None) -> ReplayInfo:
        """Register ``subscriber``; first replay the buffered messages after ``since``.

        Replay and registration happen in one synchronous step, so the subscriber receives every
        message after ``since`` (within the buffer) exactly once, in order.
        """
        person = subscriber.person_id
        history = self._histories.get(person)
        info = self.replay_info(person, since)
        if info.replayed and history is not None:
            subscriber.replay(history.after(since))
            self.messages_sent += info.replayed
        self._count += 1
        self._subscribers.setdefault(person, {})[id(subscriber)] = subscriber
        return info

    def replay_info(self, person_id: str, since: int | None) -> ReplayInfo:
        """What :meth:`subscribe` with ``since`` would replay right now."""
        history = self._histories.get(person_id)
        if history is None:
            return ReplayInfo(0, 0, None)
        latest_seq = history.latest_seq
        if since is None:
            return ReplayInfo(0, 0, latest_seq)
        oldest = history.oldest_seq
        missed = oldest - 1 - since if oldest is not None and since < oldest - 1 else 0
        return ReplayInfo(history.count_after(since), missed, latest_seq)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop delivering to ``subscriber`` (no-op if not subscribed)."""
        subscribers = self._subscribers.get(subscriber.person_id)
        if subscribers is not None and subscribers.pop(id(subscriber), None) is not None:
            self._count -= 1

    def _remove(self, subscriber: Subscriber, code: int, reason: str) -> None:
        self.unsubscribe(subscriber)
        subscriber.close(code, reason)

    def stream(
        self,
        person_id: str,
        *,
        since: int | None = None,
        maxsize: int = 256,
        overflow: str = "disconnect",
    ) -> QueueSubscriber:
        """Subscribe an in-process consumer; iterate the result (``async for message in ...``).

        Call :meth:`unsubscribe` with it when done.
        """
        subscriber = QueueSubscriber(person_id, maxsize=maxsize, overflow=overflow)
        self.subscribe(subscriber, since=since)
        return subscriber

    def drop_person(self, person_id: str) -> None:
        """Forget ``person_id``'s history and close its subscribers (the person was removed)."""
        history = self._histories.pop(person_id, None)
        if history is not None:
            self._history_bytes -= history.nbytes
            history.clear()  # its tokens in the age order are now stale
        for subscriber in list(self._subscribers.pop(person_id, {}).values()):
            self._count -= 1
            subscriber.close(CLOSE_NORMAL, f"person {person_id} was removed")

    def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        """Close every subscription (server shutdown)."""
        for person in list(self._subscribers):
            for subscriber in list(self._subscribers.pop(person).values()):
                subscriber.close(code, reason)
        self._count = 0

    # ----- reading -----------------------------------------------------------------------------
    def history(self, person_id: str) -> History | None:
        """The buffered history of ``person_id`` (``None`` before its first message)."""
        return self._histories.get(person_id)

    def latest(self, person_id: str) -> Message | None:
        """The newest message of ``person_id``."""
        history = self._histories.get(person_id)
        return history.latest if history is not None else None

    def subscriber_count(self, person_id: str | None = None) -> int:
        """Subscribers of ``person_id``, or of everyone."""
        if person_id is None:
            return self._count
        return len(self._subscribers.get(person_id, ()))

    @property
    def history_bytes(self) -> int:
        """Accounted size of every person's history now, bytes."""
        return self._history_bytes

    def history_window_s(self) -> float:
        """Simulation time (s) the history spans: the oldest buffered message of anyone to
        the newest published one."""
        oldest = self._oldest_history()
        oldest_t = oldest.oldest_t if oldest is not None else None
        return max(0.0, self._latest_t - oldest_t) if oldest_t is not None else 0.0

    def stats(self) -> HubStats:
        """A snapshot of the counters."""
        return HubStats(
            self.messages_published,
            self.messages_sent,
            self.messages_dropped,
            self.clients_dropped,
            self._count,
            self._history_bytes,
            self.history_budget_bytes,
            self.history_evicted,
            self.history_window_s(),
        )
