"""The one fixed moment the in-process tests run at, and its text and µs forms.

Tests that start real server processes use the real time instead (their
server reads the system clock)."""

from __future__ import annotations

from datetime import UTC, datetime

from tally.clock import FrozenClock, to_micros

NOW = datetime(2026, 3, 15, 12, 0, 0, tzinfo=UTC)
NOW_TEXT = "2026-03-15T12:00:00.000000Z"  # NOW as the API writes a time
NOW_US = to_micros(NOW)


def frozen_clock() -> FrozenClock:
    """A clock stopped at NOW (a test moves it with ``advance``/``set``)."""
    return FrozenClock(NOW)
