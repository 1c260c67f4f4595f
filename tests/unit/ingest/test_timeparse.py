"""``tally.ingest.timeparse.parse_timestamp``: every form a client may send, as UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tally.errors import Invalid
from tally.ingest.timeparse import parse_timestamp

NOON = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T12:00:00Z", NOON),
        ("2026-01-01T12:00:00z", NOON),
        ("2026-01-01t12:00:00Z", NOON),
        ("2026-01-01 12:00:00Z", NOON),
        ("2026-01-01T12:00:00+00:00", NOON),
        ("2026-01-01T12:00:00-00:00", NOON),
        ("2026-01-01T14:00:00+02:00", NOON),
        ("2026-01-01T14:00:00+0200", NOON),
        ("2026-01-01T06:30:00-05:30", NOON),
        ("2026-01-02T01:00:00+13:00", NOON),
        ("2026-01-01T12:00:00", NOON),
        ("2026-01-01T12:00Z", NOON),
        ("20260101T120000Z", NOON),
        ("20260101T120000", NOON),
        ("20260101T140000+0200", NOON),
        ("  2026-01-01T12:00:00Z\n", NOON),
    ],
)
def test_forms_of_the_same_instant(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2026-01-01T12:00:00.5Z", 500_000),
        ("2026-01-01T12:00:00.123Z", 123_000),
        ("2026-01-01T12:00:00.123456Z", 123_456),
        ("2026-01-01T12:00:00.000001", 1),
        ("2026-01-01T14:00:00.250+02:00", 250_000),
    ],
)
def test_fractional_seconds(text: str, micros: int) -> None:
    assert parse_timestamp(text) == NOON.replace(microsecond=micros)


def test_result_is_aware_utc() -> None:
    for text in ("2026-01-01T12:00:00", "2026-01-01T14:00:00+02:00", "20260101T120000Z"):
        parsed = parse_timestamp(text)
        assert parsed.tzinfo is not None
        assert parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert parsed.tzinfo == UTC


def test_naive_time_is_utc_not_local_time() -> None:
    assert parse_timestamp("2026-07-01T00:00:00") == datetime(2026, 7, 1, tzinfo=UTC)


def test_offset_crossing_a_day_boundary() -> None:
    assert parse_timestamp("2026-01-01T00:30:00+01:00") == datetime(
        2025, 12, 31, 23, 30, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-01-01T25:00:00Z",
        "12:00",
        "1767268800",
    ],
)
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_timestamp(text)
    assert info.value.message.startswith("sent_at ")
    assert "ISO-8601" in info.value.message


def test_refusal_names_the_field() -> None:
    with pytest.raises(Invalid, match=r"^since is not an ISO-8601 timestamp: 'nope'$"):
        parse_timestamp("nope", field="since")


def test_refusal_quotes_at_most_64_characters() -> None:
    with pytest.raises(Invalid) as info:
        parse_timestamp("x" * 500)
    assert "x" * 64 in info.value.message
    assert "x" * 65 not in info.value.message


@pytest.mark.parametrize(
    "text",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:30:00+00:45"],
)
def test_offset_pushing_the_instant_out_of_range_is_refused(text: str) -> None:
    """Valid ISO-8601 whose UTC instant is outside what datetime can hold must be
    an ``Invalid`` (a 400), not an ``OverflowError`` escaping as a 500."""
    with pytest.raises(Invalid) as info:
        parse_timestamp(text)
    assert info.value.message.startswith("sent_at ")


def test_extreme_but_representable_instants_parse() -> None:
    assert parse_timestamp("0001-01-01T00:00:00Z") == datetime(1, 1, 1, tzinfo=UTC)
    assert parse_timestamp("9999-12-31T23:59:59Z") == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
