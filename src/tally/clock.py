"""Time: one place that says what "now" is, always timezone-aware UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock for tests: stands still until moved."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware datetime")
        self._at = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._at

    def advance(self, delta: timedelta) -> None:
        self._at += delta

    def set(self, at: datetime) -> None:
        self._at = at.astimezone(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(at: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float)."""
    if at.tzinfo is None:
        raise ValueError("naive datetime: tally only handles timezone-aware UTC times")
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


# the last second formatted and its text, as one tuple (threads swap it whole)
_last_second: tuple[int, str] = (-(2**62), "")


def format_micros(micros: int) -> str:
    """RFC 3339 text with an explicit ``Z``, microsecond precision."""
    global _last_second
    seconds, fraction = divmod(micros, 1_000_000)
    last = _last_second
    if last[0] != seconds:  # most calls format the same second as the one before
        t = time.gmtime(seconds)
        last = (
            seconds,
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
            f"{t.tm_sec:02d}.",
        )
        _last_second = last
    return f"{last[1]}{fraction:06d}Z"


def format_time(at: datetime) -> str:
    return format_micros(to_micros(at))
