"""Durations and start times as people write them (heartsim.times)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from heartsim.times import format_duration, iso_utc, parse_duration_s, parse_start_time_s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90), ("90s", 90), ("90sec", 90), ("30m", 1800), ("30min", 1800), ("1.5h", 5400),
        ("2d", 172800), ("1h30m", 5400), ("2d12h", 216000), ("1h 30m 15s", 5415), (" 2D ", 172800),
        (".5h", 1800), ("-5m", -300), ("0", 0), (42, 42), (2.5, 2.5),
    ],
)  # fmt: skip
def test_durations(text, seconds):
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["soon", "", "m", "1.2.3h", "30m1h", "1h1h", "5ms", "1h-5m", "1x", "9" * 100, None, True],
)
def test_bad_durations_say_what_is_accepted(text):
    with pytest.raises(
        ValueError, match=r"must (look like|be a number of seconds or text like) 90"
    ):
        parse_duration_s(text)


def test_format_duration_writes_what_parse_reads():
    for seconds in (0.5, 1, 59, 90, 1800, 5400, 86400, 216_000, 2_592_000, 3723.25):
        assert parse_duration_s(format_duration(seconds)) == pytest.approx(seconds)
    assert format_duration(5400) == "1h30m" and format_duration(86400) == "1d"


def test_start_times():
    utc = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    for value in (
        utc,
        utc.astimezone(timezone(timedelta(hours=2))),
        "2024-05-01T08:00:00Z",
        "2024-05-01T10:00+02:00",
        utc.timestamp(),
    ):
        assert parse_start_time_s(value) == utc.timestamp()
    assert iso_utc(utc.timestamp() + 0.5) == "2024-05-01T08:00:00.500000Z"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2024-05-01T08:00", "no UTC offset"),
        (datetime(2024, 5, 1), "no UTC offset"),
        ("tomorrow", "ISO 8601"),
        (-1.0, "between 1970"),
        (float("nan"), "between 1970"),
        (True, "epoch seconds"),
    ],
)
def test_bad_start_times_say_why(value, reason):
    with pytest.raises(ValueError, match=reason):
        parse_start_time_s(value)
