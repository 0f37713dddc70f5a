"""The hub: encode once, bounded history, replay then live, slow subscribers dropped."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import orjson
import pytest
from websockets.frames import Frame, Opcode

from heartsim import hub as hub_module
from heartsim.api.ws import FrameSink
from heartsim.hub import (
    Backend,
    History,
    Hub,
    Message,
    QueueSubscriber,
    SubscriptionClosedError,
    text_frame,
)


def sample(seq: int, person: str = "p0", t: float | None = None) -> dict[str, Any]:
    return {"type": "heartbeat", "seq": seq, "person_id": person,
            "t": seq * 0.5 if t is None else t, "bpm": 70, "rr_ms": [850.0]}  # fmt: skip


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 100_000])
def test_text_frame_is_what_websockets_would_send(size: int) -> None:
    payload = b"x" * size
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


def test_message_keeps_one_copy_and_decodes() -> None:
    message = Message.encode(sample(3))
    assert bytes(message.payload) == orjson.dumps(sample(3))
    assert message.frame.endswith(bytes(message.payload))
    assert message.data() == sample(3)
    assert (message.person_id, message.seq) == ("p0", 3)


def test_publish_encodes_each_sample_once_whatever_the_subscribers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = orjson.dumps
    monkeypatch.setattr(
        hub_module.orjson, "dumps", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    hub = Hub()
    subscribers = [hub.stream("p0") for _ in range(100)]
    hub.publish([sample(1), sample(2)])
    assert len(calls) == 2
    assert all(s.qsize() == 2 for s in subscribers)
    assert hub.stats().messages_sent == 200


def test_history_is_bounded_by_time_and_count() -> None:
    history = History(history_s=10.0, max_messages=1000)
    for seq in range(1, 101):
        history.append(Message.encode(sample(seq)))  # t = seq / 2
    assert history.oldest_seq == 80 and history.latest.seq == 100  # t >= 50 - 10
    capped = History(history_s=1e9, max_messages=5)
    for seq in range(1, 21):
        capped.append(Message.encode(sample(seq)))
    assert [m.seq for m in capped.after(None)] == [16, 17, 18, 19, 20]


def test_history_after_and_limit() -> None:
    history = History(history_s=1e9, max_messages=100)
    for seq in range(1, 11):
        history.append(Message.encode(sample(seq)))
    assert [m.seq for m in history.after(7)] == [8, 9, 10]
    assert [m.seq for m in history.after(2, limit=3)] == [3, 4, 5]
    assert [m.seq for m in history.after(None, limit=2)] == [9, 10]
    assert history.after(10) == [] and history.count_after(0) == 10


def test_subscribe_since_replays_then_goes_live_without_gap_or_duplicate() -> None:
    hub = Hub()
    hub.publish([sample(seq) for seq in range(1, 11)])
    subscriber = QueueSubscriber("p0", maxsize=4)
    info = hub.subscribe(subscriber, since=6)
    assert (info.replayed, info.missed, info.latest_seq) == (4, 0, 10)
    hub.publish([sample(11), sample(12)])
    seqs = []
    while (message := subscriber.get_nowait()) is not None:
        seqs.append(message.seq)
    assert seqs == [7, 8, 9, 10, 11, 12]
    assert not subscriber.closed  # the replay burst does not count as overflow


def test_replay_reports_what_fell_out_of_the_buffer() -> None:
    hub = Hub(max_history=5)
    hub.publish([sample(seq) for seq in range(1, 21)])
    info = hub.subscribe(QueueSubscriber("p0"), since=10)
    assert (info.replayed, info.missed) == (5, 5)


def test_a_full_subscriber_is_dropped_and_counted_and_others_continue() -> None:
    hub = Hub()
    slow = hub.stream("p0", maxsize=3)
    fast = hub.stream("p0", maxsize=100)
    for seq in range(1, 11):
        hub.publish([sample(seq)])
        fast.get_nowait()
    assert slow.closed and slow.close_code == 1008 and "too slow" in slow.close_reason
    stats = hub.stats()
    assert (stats.clients_dropped, stats.messages_dropped, stats.subscribers) == (1, 1, 1)
    assert not fast.closed


def test_drop_oldest_keeps_the_subscriber() -> None:
    hub = Hub()
    plot = hub.stream("p0", maxsize=2, overflow="drop_oldest")
    hub.publish([sample(seq) for seq in range(1, 6)])
    assert [plot.get_nowait().seq, plot.get_nowait().seq] == [4, 5]
    assert plot.dropped == 3 and not plot.closed and hub.clients_dropped == 0


async def test_stream_iteration_ends_when_the_person_is_removed() -> None:
    hub = Hub()
    subscriber = hub.stream("p1")

    async def consume() -> list[int]:
        return [message.seq async for message in subscriber]

    task = asyncio.create_task(consume())
    hub.publish([sample(1, "p1"), sample(1, "p0")])
    await asyncio.sleep(0)
    hub.drop_person("p1")
    assert await asyncio.wait_for(task, 1) == [1]
    assert subscriber.close_code == 1000 and hub.history("p1") is None
    with pytest.raises(SubscriptionClosedError):
        await subscriber.get()


def test_persons_are_separate_streams() -> None:
    hub = Hub()
    a, b = hub.stream("a"), hub.stream("b")
    hub.publish([sample(1, "a"), sample(1, "b"), sample(2, "a")])
    assert (a.qsize(), b.qsize()) == (2, 1)
    assert hub.latest("a").seq == 2 and hub.subscriber_count("a") == 1


class RecordingBackend(Backend):
    """A backend that, like a broker would, delivers later (here: on flush)."""

    def __init__(self) -> None:
        self.pending: list[Message] = []

    def publish(self, messages: list[Message]) -> None:
        self.pending.extend(messages)

    def flush(self) -> None:
        self._deliver(self.pending)
        self.pending = []


def test_publishing_goes_through_the_backend() -> None:
    backend = RecordingBackend()
    hub = Hub(backend)
    subscriber = hub.stream("p0")
    hub.publish([sample(1)])
    assert subscriber.qsize() == 0 and hub.latest("p0") is None
    backend.flush()
    assert subscriber.qsize() == 1 and hub.latest("p0").seq == 1


class FakeTransport:
    """Just enough of an asyncio transport for FrameSink."""

    def __init__(self) -> None:
        self.buffered = 0
        self.written: list[bytes] = []
        self.high = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def set_write_buffer_limits(self, high: int) -> None:
        self.high = high

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> None:
        return None


def test_frame_sink_writes_prebuilt_frames_until_its_buffer_bound() -> None:
    transport = FakeTransport()
    sink = FrameSink("p0", transport, limit_bytes=1000)  # type: ignore[arg-type]
    assert transport.high > 1000  # uvicorn's writable flag never blocks our close
    hub = Hub()
    hub.subscribe(sink)
    messages = hub.publish([sample(1)])
    assert transport.written == [messages[0].frame]
    while not sink.closed:
        hub.publish([sample(len(transport.written) + 1)])
    assert transport.buffered > 1000 and hub.clients_dropped == 1


def test_frame_sink_allows_a_replay_burst_then_returns_to_its_bound() -> None:
    hub = Hub()
    hub.publish([sample(seq) for seq in range(1, 51)])
    transport = FakeTransport()
    sink = FrameSink("p0", transport, limit_bytes=500)  # type: ignore[arg-type]
    hub.subscribe(sink, since=0)
    assert len(transport.written) == 50 and transport.buffered > 500
    hub.publish([sample(51)])
    assert not sink.closed and len(transport.written) == 51
    transport.buffered = 0  # the client caught up
    hub.publish([sample(52)])
    transport.buffered = 600
    hub.publish([sample(53)])
    assert sink.closed  # back to the normal bound


def test_history_entries_are_not_tracked_by_the_garbage_collector() -> None:
    # Full collections walk every tracked object and pause the loop: 10 min of 1,000 persons
    # must not add 1.2 million objects to walk.
    history = History(history_s=600.0, max_messages=1000)
    for seq in range(1, 101):
        history.append(Message.encode({"person_id": "p0", "seq": seq, "t": seq * 0.5}))
    gc.collect()
    assert not any(gc.is_tracked(entry) for entry in history._entries)
    latest = history.latest
    assert latest is not None and (latest.person_id, latest.seq, latest.t) == ("p0", 100, 50.0)
    assert (history.oldest_seq, history.latest_seq) == (1, 100)
    assert latest.data() == {"person_id": "p0", "seq": 100, "t": 50.0}
    assert [m.seq for m in history.after(97)] == [98, 99, 100]


# ----------------------------------------------------------------------------- byte budget


def tick(hub: Hub, persons: list[str], seq: int) -> None:
    """One tick: every person publishes message ``seq`` at t = seq / 2."""
    hub.publish([sample(seq, person) for person in persons])


def accounted(seq: int, person: str = "p0") -> int:
    """Bytes the hub accounts for message ``seq`` of ``person``."""
    return len(Message.encode(sample(seq, person)).frame) + hub_module.ENTRY_OVERHEAD_BYTES


def test_the_history_budget_drops_the_globally_oldest_messages_first() -> None:
    persons = ["p0", "p1", "p2"]
    budget = sum(accounted(seq, p) for p in persons for seq in range(91, 101))
    hub = Hub(history_bytes=budget)  # the last ten messages of everyone
    for seq in range(1, 101):
        tick(hub, persons, seq)
    stats = hub.stats()
    assert stats.history_bytes == budget and stats.history_budget_bytes == budget
    assert stats.history_evicted == 300 - 30
    for person in persons:  # the same newest ten of everyone: the oldest went first
        assert [m.seq for m in hub.history(person).after(None)] == list(range(91, 101))
    assert stats.history_window_s == pytest.approx(4.5)  # t = 45.5 to 50
    # The accounting is exact: what the histories hold, frame by frame.
    assert hub.history_bytes == sum(hub.history(p).nbytes for p in persons)


def test_replay_past_the_budget_reports_the_gap_truthfully() -> None:
    hub = Hub(history_bytes=sum(accounted(seq) for seq in range(43, 51)))
    for seq in range(1, 51):
        tick(hub, ["p0"], seq)
    subscriber = QueueSubscriber("p0", maxsize=100)
    info = hub.subscribe(subscriber, since=10)
    assert (info.replayed, info.missed, info.latest_seq) == (8, 32, 50)  # 11..42 are gone
    tick(hub, ["p0"], 51)
    seqs = []
    while (message := subscriber.get_nowait()) is not None:
        seqs.append(message.seq)
    assert seqs == list(range(43, 52))  # no duplicate, nothing after the gap missing


def test_the_budget_keeps_every_persons_newest_message() -> None:
    persons = [f"p{k}" for k in range(5)]
    hub = Hub(history_bytes=1)  # smaller than one message
    for seq in range(1, 21):
        tick(hub, persons, seq)
    assert all(hub.latest(p).seq == 20 and len(hub.history(p)) == 1 for p in persons)
    assert hub.stats().history_evicted == 5 * 19


def test_history_bytes_follow_time_horizon_count_cap_and_removed_persons() -> None:
    hub = Hub(history_s=5.0, max_history=8, history_bytes=None)
    for seq in range(1, 201):
        tick(hub, ["p0", "p1"], seq)
    assert len(hub.history("p0")) == 8  # the count cap (5 s at 2 Hz would be 11)
    assert hub.history_bytes == hub.history("p0").nbytes + hub.history("p1").nbytes
    assert hub.stats().history_evicted == 0  # no budget: nothing evicted by it
    hub.drop_person("p1")
    assert hub.history_bytes == hub.history("p0").nbytes
    for seq in range(201, 401):
        tick(hub, ["p0"], seq)
    # The age order only holds live messages (plus a few stale ones on their way out).
    assert len(hub._age_order) <= 8 + 1


@pytest.mark.parametrize("budget", [0, -5, 1.5, True])
def test_the_history_budget_is_validated(budget: Any) -> None:
    with pytest.raises(ValueError, match="history_bytes must be an integer >= 1 or None"):
        Hub(history_bytes=budget)
