"""``tally.metering.periods``: period arithmetic at every boundary (SPEC §4).

Days are UTC days, weeks start on Sunday 00:00 UTC, months on the 1st, and a
billing cycle starts each month on the company's anchor day and time, the day
capped at the month's last day.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tally.clock import to_micros
from tally.metering import periods
from tally.metering.periods import (
    ALL_TIME,
    BILLING,
    DAY,
    EPOCH,
    MONTH,
    WEEK,
    billing_end,
    billing_start,
    counter_kind,
    day_start,
    month_start,
    period_end,
    period_start,
    period_starts_us,
    periods_containing,
    week_start,
)

US = timedelta(microseconds=1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# -- days ---------------------------------------------------------------------

DAY_CASES = [
    # (instant, start of its UTC day)
    (utc(2028, 2, 26, 23, 59, 59, 999999), utc(2028, 2, 26)),
    (utc(2028, 2, 27, 0, 0, 0), utc(2028, 2, 27)),
    (utc(2028, 2, 27, 0, 0, 0, 1), utc(2028, 2, 27)),
    (utc(2028, 2, 28, 23, 59, 59, 999999), utc(2028, 2, 28)),
    (utc(2028, 2, 29, 0, 0), utc(2028, 2, 29)),
    (utc(2028, 2, 29, 23, 59, 59, 999999), utc(2028, 2, 29)),
    (utc(2028, 3, 1, 0, 0), utc(2028, 3, 1)),
    (utc(2027, 12, 31, 23, 59, 59, 999999), utc(2027, 12, 31)),
    (utc(2028, 1, 1, 0, 0), utc(2028, 1, 1)),
    (utc(2026, 6, 15, 12, 34, 56, 789), utc(2026, 6, 15)),
]


@pytest.mark.parametrize(("at", "start"), DAY_CASES)
def test_day_start(at: datetime, start: datetime) -> None:
    assert day_start(at) == start
    assert period_start(DAY, at) == start
    assert period_end(DAY, start) == start + timedelta(days=1)
    assert start <= at < period_end(DAY, start)  # type: ignore[operator]


def test_midnight_splits_days() -> None:
    last = utc(2026, 3, 14, 23, 59, 59, 999999)
    first = last + US
    assert first == utc(2026, 3, 15)
    assert day_start(last) == utc(2026, 3, 14)
    assert day_start(first) == utc(2026, 3, 15)
    assert period_end(DAY, day_start(last)) == day_start(first)


def test_day_of_a_non_utc_instant_is_its_utc_day() -> None:
    # 01:30 on Mar 15 at +02:00 is 23:30 on Mar 14 UTC
    at = datetime(2026, 3, 15, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert day_start(at) == utc(2026, 3, 14)
    assert day_start(at).utcoffset() == timedelta(0)
    # 22:30 on Mar 14 at -05:00 is 03:30 on Mar 15 UTC
    west = datetime(2026, 3, 14, 22, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert day_start(west) == utc(2026, 3, 15)


# -- weeks (start Sunday 00:00 UTC) ----------------------------------------------

WEEK_CASES = [
    # Saturday 2028-02-26 is the last day of the week that began Sunday 2028-02-20
    (utc(2028, 2, 26, 23, 59, 59), utc(2028, 2, 20)),
    (utc(2028, 2, 26, 23, 59, 59, 999999), utc(2028, 2, 20)),
    (utc(2028, 2, 27, 0, 0), utc(2028, 2, 27)),  # Sunday starts a new week
    (utc(2028, 2, 27, 0, 0, 0, 1), utc(2028, 2, 27)),
    (utc(2028, 2, 28, 9, 0), utc(2028, 2, 27)),  # Monday
    (utc(2028, 2, 29, 12, 0), utc(2028, 2, 27)),  # Tuesday, leap day
    (utc(2028, 3, 1, 0, 0), utc(2028, 2, 27)),  # Wednesday, across a month end
    (utc(2028, 3, 4, 23, 59, 59, 999999), utc(2028, 2, 27)),  # Saturday
    (utc(2028, 3, 5, 0, 0), utc(2028, 3, 5)),  # Sunday
    # across a year end: Friday 2027-12-31 and Saturday 2028-01-01 are in the
    # week that began Sunday 2027-12-26
    (utc(2027, 12, 31, 23, 59, 59, 999999), utc(2027, 12, 26)),
    (utc(2028, 1, 1, 23, 59, 59, 999999), utc(2027, 12, 26)),
    (utc(2028, 1, 2, 0, 0), utc(2028, 1, 2)),
    # Sunday 2028-12-31 starts a week that ends in 2029
    (utc(2028, 12, 31, 0, 0), utc(2028, 12, 31)),
    (utc(2029, 1, 6, 23, 59, 59, 999999), utc(2028, 12, 31)),
    (utc(2029, 1, 7, 0, 0), utc(2029, 1, 7)),
]


@pytest.mark.parametrize(("at", "start"), WEEK_CASES)
def test_week_start(at: datetime, start: datetime) -> None:
    assert start.weekday() == 6  # every week starts on a Sunday
    assert week_start(at) == start
    assert period_start(WEEK, at) == start
    end = period_end(WEEK, start)
    assert end == start + timedelta(days=7)
    assert start <= at < end  # type: ignore[operator]


def test_saturday_to_sunday_splits_weeks() -> None:
    saturday_last = utc(2026, 2, 28, 23, 59, 59, 999999)
    sunday_first = saturday_last + US
    assert saturday_last.strftime("%A") == "Saturday"
    assert week_start(saturday_last) == utc(2026, 2, 22)
    assert week_start(sunday_first) == utc(2026, 3, 1)
    assert period_end(WEEK, week_start(saturday_last)) == week_start(sunday_first)


def test_every_day_of_a_week_maps_to_its_sunday() -> None:
    sunday = utc(2026, 3, 15)
    for offset in range(7):
        for at in (sunday + timedelta(days=offset), sunday + timedelta(days=offset + 1) - US):
            assert week_start(at) == sunday, at
    assert week_start(sunday - US) == sunday - timedelta(days=7)
    assert week_start(sunday + timedelta(days=7)) == sunday + timedelta(days=7)


def test_week_of_a_non_utc_instant_is_its_utc_week() -> None:
    # Sunday 01:00 at +02:00 is still Saturday 23:00 UTC
    at = datetime(2026, 3, 15, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert week_start(at) == utc(2026, 3, 8)


# -- calendar months ---------------------------------------------------------------

MONTH_CASES = [
    # (last instant of a month, its start, the next month's start)
    (utc(2026, 1, 31, 23, 59, 59, 999999), utc(2026, 1, 1), utc(2026, 2, 1)),  # 31 days
    (utc(2026, 2, 28, 23, 59, 59, 999999), utc(2026, 2, 1), utc(2026, 3, 1)),  # 28 days
    (utc(2028, 2, 29, 23, 59, 59, 999999), utc(2028, 2, 1), utc(2028, 3, 1)),  # 29 (leap)
    (utc(2026, 4, 30, 23, 59, 59, 999999), utc(2026, 4, 1), utc(2026, 5, 1)),  # 30 days
    (utc(2026, 6, 30, 23, 59, 59, 999999), utc(2026, 6, 1), utc(2026, 7, 1)),  # 30 days
    (utc(2026, 7, 31, 23, 59, 59, 999999), utc(2026, 7, 1), utc(2026, 8, 1)),  # 31 days
    (utc(2026, 12, 31, 23, 59, 59, 999999), utc(2026, 12, 1), utc(2027, 1, 1)),  # year end
    (utc(2100, 2, 28, 23, 59, 59, 999999), utc(2100, 2, 1), utc(2100, 3, 1)),  # not leap
]


@pytest.mark.parametrize(("last", "start", "next_start"), MONTH_CASES)
def test_month_boundaries(last: datetime, start: datetime, next_start: datetime) -> None:
    first_of_next = last + US
    assert first_of_next == next_start
    assert month_start(last) == start
    assert month_start(start) == start
    assert month_start(first_of_next) == next_start
    assert period_start(MONTH, last) == start
    assert period_end(MONTH, start) == next_start
    # without an anchor the billing cycle is the calendar month
    assert period_start(BILLING, last) == start
    assert period_start(BILLING, first_of_next) == next_start
    assert period_end(BILLING, start) == next_start


def test_leap_day_belongs_to_february() -> None:
    assert month_start(utc(2028, 2, 29, 12)) == utc(2028, 2, 1)
    assert month_start(utc(2028, 3, 1)) == utc(2028, 3, 1)
    assert period_end(MONTH, utc(2028, 2, 1)) - utc(2028, 2, 1) == timedelta(days=29)  # type: ignore[operator]
    assert period_end(MONTH, utc(2027, 2, 1)) - utc(2027, 2, 1) == timedelta(days=28)  # type: ignore[operator]


def test_period_end_for_each_kind() -> None:
    assert period_end(ALL_TIME, EPOCH) is None
    assert period_end(DAY, utc(2028, 2, 28)) == utc(2028, 2, 29)
    assert period_end(DAY, utc(2028, 2, 29)) == utc(2028, 3, 1)
    assert period_end(DAY, utc(2027, 12, 31)) == utc(2028, 1, 1)
    assert period_end(WEEK, utc(2027, 12, 26)) == utc(2028, 1, 2)
    assert period_end(WEEK, utc(2028, 2, 27)) == utc(2028, 3, 5)
    assert period_end(MONTH, utc(2028, 2, 1)) == utc(2028, 3, 1)
    assert period_end(MONTH, utc(2027, 12, 1)) == utc(2028, 1, 1)
    assert period_end(BILLING, utc(2027, 12, 1)) == utc(2028, 1, 1)
    anchor = utc(2027, 1, 31, 10, 30)
    assert period_end(BILLING, utc(2028, 1, 31, 10, 30), anchor) == utc(2028, 2, 29, 10, 30)
    assert period_end(BILLING, utc(2028, 2, 29, 10, 30), anchor) == utc(2028, 3, 31, 10, 30)
    assert period_end(BILLING, utc(2028, 12, 31, 10, 30), anchor) == utc(2029, 1, 31, 10, 30)


def test_all_time_is_one_period_from_the_epoch() -> None:
    assert utc(1970, 1, 1) == EPOCH
    for at in (utc(1970, 1, 1), utc(2026, 3, 15, 12), utc(2999, 12, 31, 23, 59, 59, 999999)):
        assert period_start(ALL_TIME, at) == EPOCH
        assert period_start(ALL_TIME, at, utc(2026, 1, 31)) == EPOCH


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown period kind"):
        period_start("year", utc(2026, 1, 1))
    with pytest.raises(ValueError, match="unknown period kind"):
        period_end("year", utc(2026, 1, 1))


# -- billing cycles -------------------------------------------------------------------

ANCHOR_31 = utc(2027, 1, 31)  # midnight on the 31st

# Consecutive cycle starts of a company anchored on the 31st at midnight
CYCLES_31 = [
    utc(2027, 12, 31),
    utc(2028, 1, 31),
    utc(2028, 2, 29),  # leap year: capped at the 29th
    utc(2028, 3, 31),
    utc(2028, 4, 30),  # 30-day month: capped at the 30th
    utc(2028, 5, 31),
    utc(2028, 6, 30),
    utc(2028, 7, 31),
    utc(2028, 8, 31),
    utc(2028, 9, 30),
    utc(2028, 10, 31),
    utc(2028, 11, 30),
    utc(2028, 12, 31),
    utc(2029, 1, 31),
    utc(2029, 2, 28),  # not a leap year: capped at the 28th
    utc(2029, 3, 31),
]


@pytest.mark.parametrize("index", range(len(CYCLES_31) - 1))
def test_billing_anchor_on_the_31st(index: int) -> None:
    start, next_start = CYCLES_31[index], CYCLES_31[index + 1]
    assert billing_start(start, ANCHOR_31) == start
    assert billing_start(next_start - US, ANCHOR_31) == start
    assert billing_start(next_start, ANCHOR_31) == next_start
    assert billing_end(start, ANCHOR_31) == next_start
    assert period_start(BILLING, start + timedelta(hours=1), ANCHOR_31) == start
    assert period_end(BILLING, start, ANCHOR_31) == next_start


BILLING_31_CASES = [
    # (instant, cycle start) for an anchor on the 31st at midnight
    (utc(2026, 1, 31), utc(2026, 1, 31)),
    (utc(2026, 1, 30, 23, 59, 59, 999999), utc(2025, 12, 31)),
    (utc(2026, 2, 27, 23, 59, 59, 999999), utc(2026, 1, 31)),
    (utc(2026, 2, 28), utc(2026, 2, 28)),  # Feb 28 in a common year
    (utc(2026, 3, 1), utc(2026, 2, 28)),
    (utc(2026, 3, 30, 23, 59, 59, 999999), utc(2026, 2, 28)),
    (utc(2026, 3, 31), utc(2026, 3, 31)),
    (utc(2026, 4, 29, 23, 59, 59, 999999), utc(2026, 3, 31)),
    (utc(2026, 4, 30), utc(2026, 4, 30)),
    (utc(2026, 5, 1), utc(2026, 4, 30)),
    (utc(2028, 2, 28, 23, 59, 59, 999999), utc(2028, 1, 31)),  # leap year …
    (utc(2028, 2, 29), utc(2028, 2, 29)),  # … starts on the 29th
    (utc(2028, 3, 1), utc(2028, 2, 29)),
    (utc(2026, 12, 31), utc(2026, 12, 31)),  # year end
    (utc(2027, 1, 1), utc(2026, 12, 31)),
    (utc(2027, 1, 30, 23, 59, 59, 999999), utc(2026, 12, 31)),
]


@pytest.mark.parametrize(("at", "start"), BILLING_31_CASES)
def test_billing_start_on_the_31st(at: datetime, start: datetime) -> None:
    assert billing_start(at, ANCHOR_31) == start
    assert period_start(BILLING, at, ANCHOR_31) == start
    end = period_end(BILLING, start, ANCHOR_31)
    assert end is not None
    assert start <= at < end


ANCHOR_TIMED = utc(2026, 1, 15, 10, 30)  # the 15th at 10:30 UTC

BILLING_TIMED_CASES = [
    (utc(2026, 3, 15, 10, 29, 59, 999999), utc(2026, 2, 15, 10, 30)),  # one µs before
    (utc(2026, 3, 15, 10, 30), utc(2026, 3, 15, 10, 30)),  # the anchor instant
    (utc(2026, 3, 15, 10, 30, 0, 1), utc(2026, 3, 15, 10, 30)),
    (utc(2026, 3, 15, 0, 0), utc(2026, 2, 15, 10, 30)),  # the anchor day, before the time
    (utc(2026, 3, 14, 23, 59, 59, 999999), utc(2026, 2, 15, 10, 30)),
    (utc(2026, 4, 1), utc(2026, 3, 15, 10, 30)),
    (utc(2026, 1, 15, 10, 29, 59, 999999), utc(2025, 12, 15, 10, 30)),  # across a year
    (utc(2025, 12, 31, 23, 59, 59, 999999), utc(2025, 12, 15, 10, 30)),
]


@pytest.mark.parametrize(("at", "start"), BILLING_TIMED_CASES)
def test_billing_anchor_with_a_time_of_day(at: datetime, start: datetime) -> None:
    assert billing_start(at, ANCHOR_TIMED) == start
    end = period_end(BILLING, start, ANCHOR_TIMED)
    assert end is not None
    assert end.day == 15 and (end.hour, end.minute) == (10, 30)
    assert start <= at < end


def test_billing_anchor_on_the_31st_with_a_time_of_day() -> None:
    anchor = utc(2026, 1, 31, 18, 45, 30, 250000)
    feb = utc(2028, 2, 29, 18, 45, 30, 250000)
    assert billing_start(feb - US, anchor) == utc(2028, 1, 31, 18, 45, 30, 250000)
    assert billing_start(feb, anchor) == feb
    assert billing_start(utc(2028, 2, 29, 23, 59, 59, 999999), anchor) == feb
    assert billing_start(utc(2028, 3, 31, 18, 45, 30, 249999), anchor) == feb
    assert billing_start(utc(2028, 3, 31, 18, 45, 30, 250000), anchor) == utc(
        2028, 3, 31, 18, 45, 30, 250000
    )
    assert billing_end(feb, anchor) == utc(2028, 3, 31, 18, 45, 30, 250000)


def test_billing_anchor_on_the_1st_is_the_calendar_month() -> None:
    anchor = utc(2025, 7, 1)
    for last, start, next_start in MONTH_CASES:
        assert billing_start(last, anchor) == start
        assert billing_start(last + US, anchor) == next_start
        assert billing_end(start, anchor) == next_start


def test_billing_anchor_in_another_zone_is_read_as_its_utc_instant() -> None:
    # 2026-01-31 23:00 at -03:00 is Feb 1 02:00 UTC: the anchor day is the 1st
    anchor = datetime(2026, 1, 31, 23, 0, tzinfo=timezone(timedelta(hours=-3)))
    assert billing_start(utc(2026, 3, 1, 2, 0), anchor) == utc(2026, 3, 1, 2, 0)
    assert billing_start(utc(2026, 3, 1, 1, 59, 59, 999999), anchor) == utc(2026, 2, 1, 2, 0)


def test_billing_cycles_tile_time_without_gaps() -> None:
    """Walking from one cycle's end to the next covers every instant once."""
    for anchor in (ANCHOR_31, ANCHOR_TIMED, utc(2026, 1, 29, 23, 59, 59, 999999), utc(2026, 1, 30)):
        start = billing_start(utc(2027, 11, 20), anchor)
        for _ in range(30):
            end = billing_end(start, anchor)
            assert end > start
            assert timedelta(days=27) < end - start < timedelta(days=32)
            assert billing_start(end - US, anchor) == start
            assert billing_start(end, anchor) == end
            start = end


# -- periods_containing -----------------------------------------------------------------


def test_periods_containing_without_anchor() -> None:
    at = utc(2028, 2, 26, 23, 59, 59, 999999)  # a Saturday
    assert periods_containing(at, None) == [
        (ALL_TIME, EPOCH),
        (DAY, utc(2028, 2, 26)),
        (WEEK, utc(2028, 2, 20)),
        (MONTH, utc(2028, 2, 1)),
    ]
    nxt = at + US  # Sunday 00:00
    assert periods_containing(nxt, None) == [
        (ALL_TIME, EPOCH),
        (DAY, utc(2028, 2, 27)),
        (WEEK, utc(2028, 2, 27)),
        (MONTH, utc(2028, 2, 1)),
    ]


def test_periods_containing_with_anchor() -> None:
    at = utc(2028, 2, 29, 0, 0)  # leap day, a Tuesday
    assert periods_containing(at, ANCHOR_31) == [
        (ALL_TIME, EPOCH),
        (DAY, utc(2028, 2, 29)),
        (WEEK, utc(2028, 2, 27)),
        (MONTH, utc(2028, 2, 1)),
        (BILLING, utc(2028, 2, 29)),
    ]
    before = at - US
    assert periods_containing(before, ANCHOR_31) == [
        (ALL_TIME, EPOCH),
        (DAY, utc(2028, 2, 28)),
        (WEEK, utc(2028, 2, 27)),
        (MONTH, utc(2028, 2, 1)),
        (BILLING, utc(2028, 1, 31)),
    ]


def test_periods_containing_year_end() -> None:
    at = utc(2027, 12, 31, 23, 59, 59, 999999)
    assert periods_containing(at, ANCHOR_TIMED) == [
        (ALL_TIME, EPOCH),
        (DAY, utc(2027, 12, 31)),
        (WEEK, utc(2027, 12, 26)),
        (MONTH, utc(2027, 12, 1)),
        (BILLING, utc(2027, 12, 15, 10, 30)),
    ]
    assert periods_containing(at + US, ANCHOR_TIMED) == [
        (ALL_TIME, EPOCH),
        (DAY, utc(2028, 1, 1)),
        (WEEK, utc(2027, 12, 26)),  # the week runs on into the new year
        (MONTH, utc(2028, 1, 1)),
        (BILLING, utc(2027, 12, 15, 10, 30)),
    ]


def test_periods_containing_agrees_with_period_start_and_end() -> None:
    at = utc(2026, 5, 31, 23, 59, 59, 999999)
    for anchor in (None, ANCHOR_31, ANCHOR_TIMED):
        for kind, start in periods_containing(at, anchor):
            assert start.tzinfo is not None and start.utcoffset() == timedelta(0)
            assert period_start(kind, at, anchor) == start
            end = period_end(kind, start, anchor)
            assert start <= at
            assert end is None or at < end


def test_period_starts_are_utc_aware() -> None:
    at = datetime(2026, 5, 31, 20, 0, tzinfo=timezone(timedelta(hours=-7)))  # Jun 1 03:00 UTC
    got = dict(periods_containing(at, ANCHOR_31))
    assert got == {
        ALL_TIME: EPOCH,
        DAY: utc(2026, 6, 1),
        WEEK: utc(2026, 5, 31),
        MONTH: utc(2026, 6, 1),
        BILLING: utc(2026, 5, 31),
    }
    assert all(v.tzinfo is not None and v.utcoffset() == timedelta(0) for v in got.values())


@pytest.mark.parametrize("anchor", [None, ANCHOR_31, ANCHOR_TIMED], ids=["none", "31st", "timed"])
def test_period_starts_us_equals_periods_containing(anchor: datetime | None) -> None:
    """The worker's µs fast path agrees with the datetime arithmetic at every
    boundary instant of this file (and one µs either side)."""
    instants = [case[0] for case in DAY_CASES + WEEK_CASES + BILLING_31_CASES + BILLING_TIMED_CASES]
    instants += [case[0] for case in MONTH_CASES] + CYCLES_31
    instants += [utc(1969, 12, 31, 23, 59, 59, 999999), utc(1970, 1, 1), utc(1968, 2, 29, 12)]
    anchor_us = to_micros(anchor) if anchor is not None else None
    for base in instants:
        for at in (base - US, base, base + US):
            expected = tuple(
                (kind, to_micros(start)) for kind, start in periods_containing(at, anchor)
            )
            assert tuple(period_starts_us(to_micros(at), anchor_us)) == expected, at


# -- counter_kind ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric_period", "month_reset", "has_anchor", "kind"),
    [
        ("all_time", "first_of_month", False, ALL_TIME),
        ("all_time", "billing_cycle", True, ALL_TIME),
        ("current_day", "first_of_month", False, DAY),
        ("current_day", "billing_cycle", True, DAY),
        ("current_week", "first_of_month", False, WEEK),
        ("current_week", "billing_cycle", True, WEEK),
        ("current_month", "first_of_month", False, MONTH),
        ("current_month", "first_of_month", True, MONTH),
        ("current_month", "billing_cycle", True, BILLING),
        ("current_month", "billing_cycle", False, MONTH),  # no anchor: calendar month
    ],
)
def test_counter_kind(metric_period: str, month_reset: str, has_anchor: bool, kind: str) -> None:
    assert counter_kind(metric_period, month_reset, has_anchor) == kind


def test_counter_kind_refuses_an_unknown_metric_period() -> None:
    with pytest.raises(ValueError, match="unknown metric period"):
        counter_kind("current_year", "first_of_month", False)


def test_counter_kind_billing_counter_exists_only_with_an_anchor() -> None:
    """The kind counter_kind picks must be one periods_containing moves."""
    at = utc(2026, 3, 15, 12)
    for anchor in (None, ANCHOR_31):
        moved = {kind for kind, _ in periods_containing(at, anchor)}
        for metric in ("all_time", "current_day", "current_week", "current_month"):
            for reset in ("first_of_month", "billing_cycle"):
                assert counter_kind(metric, reset, anchor is not None) in moved


# -- naive datetimes -------------------------------------------------------------------------

NAIVE = datetime(2026, 3, 15, 12, 0)  # noqa: DTZ001 - deliberately naive


@pytest.mark.parametrize(
    "call",
    [
        lambda: periods.day_start(NAIVE),
        lambda: periods.week_start(NAIVE),
        lambda: periods.month_start(NAIVE),
        lambda: periods.billing_start(NAIVE, ANCHOR_31),
        lambda: periods.billing_start(utc(2026, 3, 15), NAIVE),
        lambda: periods.period_start(DAY, NAIVE),
        lambda: periods.period_start(WEEK, NAIVE),
        lambda: periods.period_start(MONTH, NAIVE),
        lambda: periods.period_start(BILLING, NAIVE),
        lambda: periods.period_start(BILLING, NAIVE, ANCHOR_31),
        lambda: periods.periods_containing(NAIVE, None),
        lambda: periods.periods_containing(NAIVE, ANCHOR_31),
        lambda: periods.periods_containing(utc(2026, 3, 15), NAIVE),
    ],
    ids=[
        "day_start",
        "week_start",
        "month_start",
        "billing_start-at",
        "billing_start-anchor",
        "period_start-day",
        "period_start-week",
        "period_start-month",
        "period_start-billing",
        "period_start-billing-anchored",
        "periods_containing",
        "periods_containing-anchored",
        "periods_containing-naive-anchor",
    ],
)
def test_naive_datetime_raises(call: object) -> None:
    with pytest.raises(ValueError, match="naive"):
        call()  # type: ignore[operator]


@pytest.mark.parametrize(
    "call",
    [
        lambda: periods.period_end(DAY, NAIVE),
        lambda: periods.period_end(WEEK, NAIVE),
        lambda: periods.period_end(MONTH, NAIVE),
        lambda: periods.period_end(BILLING, NAIVE),
        lambda: periods.period_end(BILLING, NAIVE, ANCHOR_31),
        lambda: periods.period_end(BILLING, utc(2026, 2, 28), NAIVE),
        lambda: periods.billing_end(utc(2026, 2, 28), NAIVE),
    ],
    ids=[
        "period_end-day",
        "period_end-week",
        "period_end-month",
        "period_end-billing",
        "period_end-billing-naive-start",
        "period_end-billing-naive-anchor",
        "billing_end-naive-anchor",
    ],
)
def test_naive_datetime_raises_in_period_end(call: object) -> None:
    """``period_end``/``billing_end`` must refuse naive times too: otherwise a
    naive anchor is silently read in the machine's local time zone
    (``anchor.astimezone(UTC)``) and a naive start yields a naive end."""
    with pytest.raises(ValueError, match="naive"):
        call()  # type: ignore[operator]
