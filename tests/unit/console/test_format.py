"""The console's pure formatting: numbers, delays, rates, daily series, charts."""

from __future__ import annotations

from markupsafe import Markup

from tally.console.format import DAY_US, bars, daily_series, duration, num, when
from tally.console.health_views import rate


def test_numbers_have_thousands_separators() -> None:
    assert num(1234567) == "1,234,567"
    assert num(0) == "0"
    assert num(1234.56) == "1,234.6"
    assert num(None) == "—"


def test_durations_read_well() -> None:
    assert duration(250) == "250 µs"
    assert duration(12_000) == "12 ms"
    assert duration(12_400_000) == "12.4 s"
    assert duration(185_000_000) == "3 min 5 s"
    assert duration(2 * 3600_000_000 + 240_000_000) == "2 h 4 min"
    assert duration(3 * 86_400_000_000 + 7200_000_000) == "3 d 2 h"
    assert duration(-2_000_000) == "-2.0 s"
    assert duration(None) == "—"


def test_rates_pick_their_unit() -> None:
    assert rate(7200, 3600) == "2/s"
    assert rate(36_000_000, 3600) == "10,000/s"
    assert rate(120, 3600) == "2/min"
    assert rate(5, 3600) == "5/h"


def test_times_are_utc_with_a_machine_readable_attribute() -> None:
    html = when(1_773_576_000_000_000)
    assert isinstance(html, Markup)
    assert html == (
        '<time datetime="2026-03-15T12:00:00.000000Z" title="2026-03-15 12:00:00 UTC">'
        "2026-03-15 12:00:00 UTC</time>"
    )


def test_daily_series_fills_missing_days() -> None:
    end = 100 * DAY_US
    series = daily_series({end: 5, end - 2 * DAY_US: 1, end - 40 * DAY_US: 9}, end, 3)
    assert series == [(end - 2 * DAY_US, 1), (end - DAY_US, 0), (end, 5)]


def test_bars_scale_to_the_tallest() -> None:
    drawn = bars([(0, 0), (DAY_US, 5), (2 * DAY_US, 10)], width=300, height=104)
    assert [b.height for b in drawn] == [0.0, 50.0, 100.0]
    assert [b.y for b in drawn] == [104.0, 54.0, 4.0]
    assert drawn[1].label == "1970-01-02: 5"
