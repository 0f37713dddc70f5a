"""Durations and start times as people write them, parsed in one place for Python and the CLI.

- :func:`parse_duration_s`: ``90``, ``"90s"``, ``"30m"``, ``"1.5h"``, ``"1h30m"``,
  ``"2d12h"`` -> seconds (used by :func:`heartsim.simulate` and ``heartsim simulate
  --duration``); :func:`format_duration` writes seconds back the same way.
- :func:`parse_start_time_s`: epoch seconds, an aware :class:`datetime.datetime` or an ISO 8601
  string with a UTC offset -> epoch seconds (the ``start_time`` of :class:`heartsim.Engine`
  and :func:`heartsim.simulate`, the wall-clock time that simulation time 0 maps to);
  :func:`iso_utc` writes epoch seconds as the messages' ``timestamp``.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import Final

import numpy as np

#: Seconds per duration unit (``m`` is minutes; there is no months unit).
UNIT_S: Final[dict[str, float]] = {
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
#: Latest start time (s since 1970): 9999-12-31T23:59:59Z, the end of ``datetime``'s range.
MAX_START_TIME_S: Final[float] = 253_402_300_799.0
DURATION_FORMS: Final[str] = "90, 90s, 30m, 1.5h, 1h30m or 2d12h"

_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
_PART = re.compile(rf"({_NUMBER})\s*({'|'.join(sorted(UNIT_S, key=len, reverse=True))})")
_DURATION = re.compile(rf"\s*([+-]?)\s*(?:({_NUMBER})|((?:(?:{_NUMBER})\s*[a-z]+\s*)+))\s*")


def parse_duration_s(value: str | float) -> float:
    """A duration in seconds: a number (seconds) or text like ``"1h30m"``.

    Text is one number (seconds) or parts ``<number><unit>`` with the units ``d``, ``h``,
    ``m``/``min``, ``s``/``sec`` from largest to smallest, each at most once, e.g. ``"90s"``,
    ``"1.5h"``, ``"1h30m"``, ``"2d12h"``, ``"1h 30m"`` (case and spaces do not matter). A
    leading ``-`` is kept, so that a range check can say what is wrong with ``"-5m"``.

    Raises
    ------
    ValueError
        For anything else; the message (``"must look like ..."``) lists the accepted forms,
        for the caller to prefix with the parameter's name.

    Examples
    --------
    >>> parse_duration_s("1h30m"), parse_duration_s("90"), parse_duration_s(2.5)
    (5400.0, 90.0, 2.5)
    """
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"must be a number of seconds or text like {DURATION_FORMS}")
    text = value.lower()
    match = _DURATION.fullmatch(text) if len(text) <= 64 else None
    if match is None:
        raise ValueError(f"must look like {DURATION_FORMS}")
    sign = -1.0 if match.group(1) == "-" else 1.0
    if match.group(2) is not None:
        return sign * float(match.group(2))
    parts = _PART.findall(match.group(3))
    units = [unit for _, unit in parts]
    scales = [UNIT_S[unit] for unit in units]
    rebuilt = "".join(number + unit for number, unit in parts)
    if rebuilt != re.sub(r"\s+", "", match.group(3)) or scales != sorted(set(scales))[::-1]:
        # An unknown unit, or units repeated or out of order ("30m1h"): surely a typo.
        raise ValueError(f"must look like {DURATION_FORMS} (units d, h, m, s, largest first)")
    return sign * sum(float(number) * UNIT_S[unit] for number, unit in parts)


def format_duration(duration_s: float) -> str:
    """Seconds as :func:`parse_duration_s` reads them: ``5400`` -> ``"1h30m"``.

    Examples
    --------
    >>> format_duration(5400), format_duration(90), format_duration(0.5), format_duration(86400)
    ('1h30m', '1m30s', '0.5s', '1d')
    """
    rest = float(duration_s)
    if not math.isfinite(rest) or rest <= 0:
        return f"{rest:g}s"
    parts = []
    for unit, scale in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        whole = math.floor(rest / scale + 1e-9)
        if whole:
            parts.append(f"{whole}{unit}")
            rest -= whole * scale
    if rest > 1e-6 or not parts:
        parts.append(f"{round(rest, 3):g}s")
    return "".join(parts)


def parse_start_time_s(value: float | datetime | str) -> float:
    """A start time as epoch seconds (UTC).

    Parameters
    ----------
    value
        Seconds since 1970-01-01T00:00:00Z, a timezone-aware :class:`datetime.datetime`
        (a :class:`pandas.Timestamp` too) or ISO 8601 text with a UTC offset, e.g.
        ``"2024-05-01T08:00:00Z"`` or ``"2024-05-01T10:00+02:00"``. A time without an offset
        is refused: it would mean a different instant on every machine.

    Raises
    ------
    ValueError
        For anything else, or a time before 1970 or after 9999.

    Examples
    --------
    >>> parse_start_time_s("2000-01-01T00:00:00Z"), parse_start_time_s(0)
    (946684800.0, 0.0)
    """
    what = "epoch seconds, a timezone-aware datetime or ISO 8601 text with a UTC offset"
    if isinstance(value, str):
        text = value.strip()
        try:
            # Python 3.10's fromisoformat does not read "Z".
            value = datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", text))
        except ValueError:
            raise ValueError(f"must be {what} (e.g. 2024-05-01T08:00:00Z)") from None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"must be {what}; this time has no UTC offset (add Z or +HH:MM)")
        seconds = value.timestamp()
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValueError(f"must be {what}")
    if not 0.0 <= seconds <= MAX_START_TIME_S:
        raise ValueError("must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z")
    return seconds


def start_time_or_now_s(value: float | datetime | str | None) -> float:
    """:func:`parse_start_time_s`, or the current time for ``None``."""
    return time.time() if value is None else parse_start_time_s(value)


def iso_utc(epoch_s: float) -> str:
    """``2026-01-09T12:00:00.500000Z`` for epoch seconds (the messages' ``timestamp`` format)."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")
