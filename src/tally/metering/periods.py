"""Usage periods, all in UTC (pure).

Counters are kept per period *kind* and period *start*:

| kind       | starts                                                        |
|------------|---------------------------------------------------------------|
| all_time   | the epoch (one period forever)                                |
| day        | midnight UTC                                                  |
| week       | Sunday midnight UTC                                           |
| month      | the 1st, midnight UTC                                         |
| billing    | the company's billing anchor day and time each month, the day |
|            | capped at the month's last day (an anchor on the 31st starts  |
|            | February's period on the 28th or 29th)                        |
"""

from __future__ import annotations

import calendar
import functools
from datetime import UTC, datetime, timedelta

from tally.clock import from_micros, to_micros

ALL_TIME = "all_time"
DAY = "day"
WEEK = "week"
MONTH = "month"
BILLING = "billing"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None:
        raise ValueError("naive datetime in metering: times must be timezone-aware UTC")


def day_start(at: datetime) -> datetime:
    _require_aware(at)
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC)


def week_start(at: datetime) -> datetime:
    start = day_start(at)
    return start - timedelta(days=(start.weekday() + 1) % 7)  # Monday=0 … Sunday=6


def month_start(at: datetime) -> datetime:
    _require_aware(at)
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def _add_months(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def _anchor_in(year: int, month: int, anchor: datetime) -> datetime:
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return datetime(
        year, month, day, anchor.hour, anchor.minute, anchor.second, anchor.microsecond, tzinfo=UTC
    )


def billing_start(at: datetime, anchor: datetime) -> datetime:
    _require_aware(at)
    _require_aware(anchor)
    at, anchor = at.astimezone(UTC), anchor.astimezone(UTC)
    candidate = _anchor_in(at.year, at.month, anchor)
    if candidate > at:
        year, month = _add_months(at.year, at.month, -1)
        candidate = _anchor_in(year, month, anchor)
    return candidate


def billing_end(start: datetime, anchor: datetime) -> datetime:
    _require_aware(start)
    _require_aware(anchor)
    year, month = _add_months(start.year, start.month, 1)
    return _anchor_in(year, month, anchor.astimezone(UTC))


def period_start(kind: str, at: datetime, anchor: datetime | None = None) -> datetime:
    if kind == ALL_TIME:
        return EPOCH
    if kind == DAY:
        return day_start(at)
    if kind == WEEK:
        return week_start(at)
    if kind == MONTH:
        return month_start(at)
    if kind == BILLING:
        if anchor is None:
            return month_start(at)
        return billing_start(at, anchor)
    raise ValueError(f"unknown period kind {kind!r}")


def period_end(kind: str, start: datetime, anchor: datetime | None = None) -> datetime | None:
    """When the period that began at ``start`` ends (``None`` for all time)."""
    _require_aware(start)
    if anchor is not None:
        _require_aware(anchor)
    if kind == ALL_TIME:
        return None
    if kind == DAY:
        return start + timedelta(days=1)
    if kind == WEEK:
        return start + timedelta(days=7)
    if kind == MONTH or (kind == BILLING and anchor is None):
        year, month = _add_months(start.year, start.month, 1)
        return datetime(year, month, 1, tzinfo=UTC)
    if kind == BILLING:
        assert anchor is not None
        return billing_end(start, anchor)
    raise ValueError(f"unknown period kind {kind!r}")


def periods_containing(at: datetime, anchor: datetime | None) -> list[tuple[str, datetime]]:
    """Every (kind, start) whose counter an event at ``at`` moves. Without a
    billing anchor the billing cycle is the calendar month, so no separate
    billing counter is kept."""
    periods = [
        (ALL_TIME, EPOCH),
        (DAY, day_start(at)),
        (WEEK, week_start(at)),
        (MONTH, month_start(at)),
    ]
    if anchor is not None:
        periods.append((BILLING, billing_start(at, anchor)))
    return periods


DAY_US = 86_400_000_000


@functools.lru_cache(maxsize=4096)
def _calendar_starts(day_index: int) -> tuple[tuple[str, int], ...]:
    """(kind, start µs) of all_time, day, week and month for a day since the epoch."""
    day = day_index * DAY_US
    week = (day_index - (day_index + 4) % 7) * DAY_US  # 1970-01-01 was a Thursday
    month = to_micros(month_start(from_micros(day)))
    return ((ALL_TIME, 0), (DAY, day), (WEEK, week), (MONTH, month))


def period_starts_us(at_us: int, anchor_us: int | None) -> tuple[tuple[str, int], ...]:
    """``periods_containing`` on µs timestamps, cached per day: the hot path of
    the worker. Equal to ``periods_containing`` (a property test checks)."""
    starts = _calendar_starts(at_us // DAY_US)
    if anchor_us is None:
        return starts
    billing = billing_start(from_micros(at_us), from_micros(anchor_us))
    return (*starts, (BILLING, to_micros(billing)))


def counter_kind(metric_period: str, month_reset: str, has_anchor: bool) -> str:
    """Which counter answers an allocation's ``metric_period``/``month_reset``."""
    if metric_period == "all_time":
        return ALL_TIME
    if metric_period == "current_day":
        return DAY
    if metric_period == "current_week":
        return WEEK
    if metric_period == "current_month":
        return BILLING if month_reset == "billing_cycle" and has_anchor else MONTH
    raise ValueError(f"unknown metric period {metric_period!r}")
