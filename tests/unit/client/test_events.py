"""``tally.client.events``: an import line or CSV row → a create-event body."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tally.client.events import CsvRows, EventMaker, EventOptions, derived_key, parse_map
from tally.errors import Invalid, TallyError
from tally.ingest import rules
from tests.support.clock import NOW

FILE_ID = "f" * 64


def maker(**options: bool) -> EventMaker:
    return EventMaker(FILE_ID, EventOptions(**options), lambda: NOW)


def made(line: dict[str, Any] | bytes, number: int = 7, **options: bool) -> dict[str, Any]:
    raw = line if isinstance(line, bytes) else json.dumps(line).encode()
    out: dict[str, Any] = json.loads(maker(**options).from_json(number, raw))
    return out


def refusal(line: dict[str, Any] | bytes, **options: bool) -> str:
    raw = line if isinstance(line, bytes) else json.dumps(line).encode()
    with pytest.raises(TallyError) as err:
        maker(**options).from_json(1, raw)
    return err.value.message


TRACK = {"event_type": "track", "body": {"event": "api-call", "company": {"id": "acme"}}}


def test_derived_key_is_the_file_and_the_line() -> None:
    assert derived_key(FILE_ID, 12) == derived_key(FILE_ID, 12)
    assert derived_key(FILE_ID, 12) != derived_key(FILE_ID, 13)
    assert derived_key(FILE_ID, 12) != derived_key("e" * 64, 12)
    assert len(derived_key(FILE_ID, 10**12)) <= rules.MAX_IDEMPOTENCY_KEY_LENGTH


def test_a_line_without_a_key_gets_the_derived_one() -> None:
    event = made(TRACK, number=41)
    assert event["idempotency_key"] == derived_key(FILE_ID, 41)
    assert event["event_type"] == "track"
    assert event["body"] == TRACK["body"]


def test_a_line_keeps_its_own_key() -> None:
    assert made({**TRACK, "idempotency_key": "mine-1"})["idempotency_key"] == "mine-1"


def test_flags_are_set_on_every_event_and_sent_at_is_kept() -> None:
    line = {**TRACK, "sent_at": "2026-01-02T03:04:05Z"}
    event = made(line, backfill=True)
    assert event["backfill"] is True
    assert event["sent_at"] == "2026-01-02T03:04:05Z"
    assert made(line, trusted_clock=True)["trusted_client_clock"] is True
    plain = made(line)
    assert not plain.get("backfill") and not plain.get("trusted_client_clock")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"not json", "event is not valid JSON"),
        (b"[1, 2]", "event is invalid"),
        ({"body": {"event": "x"}}, "event_type is required"),
        ({"event_type": "click", "body": {}}, "event_type must be one of"),
        ({"event_type": "track"}, "body is required for track events"),
        ({"event_type": "track", "body": {"quantity": 1}}, "body is invalid"),
        ({**TRACK, "body": {"event": "x", "quantity": 0}}, "quantity must be a non-zero integer"),
        ({**TRACK, "idempotency_key": "k" * 256}, "idempotency_key must be at most 255"),
    ],
)
def test_a_bad_line_is_refused_in_the_servers_words(line: Any, expected: str) -> None:
    assert expected in refusal(line)


def test_with_a_clock_flag_sent_at_is_required_and_must_parse() -> None:
    assert refusal(TRACK, backfill=True) == rules.MSG_NEEDS_SENT_AT
    assert "not an ISO-8601 timestamp" in refusal({**TRACK, "sent_at": "yesterday"}, backfill=True)
    # without a flag the server ignores a bad sent_at; so does the import
    assert made({**TRACK, "sent_at": "yesterday"})["sent_at"] == "yesterday"


def test_the_clock_window_is_the_servers_except_in_a_dry_run() -> None:
    old = {**TRACK, "sent_at": (NOW - timedelta(days=366)).isoformat()}
    assert made(old, backfill=True)["backfill"] is True  # the server rules on it
    assert refusal(old, backfill=True, dry_run=True) == rules.MSG_PAST_BACKFILL
    future = {**TRACK, "sent_at": (NOW + timedelta(minutes=6)).isoformat()}
    assert refusal(future, trusted_clock=True, dry_run=True) == rules.MSG_FUTURE


def test_a_dry_run_checks_the_body_size_and_a_publishable_key_rights() -> None:
    big = {"event_type": "track", "body": {"event": "x", "traits": {"pad": "x" * 40_000}}}
    assert made(big)["body"]["event"] == "x"
    assert "more than the limit" in refusal(big, dry_run=True)
    negative = {**TRACK, "body": {"event": "x", "quantity": -2}}
    assert made(negative)["body"]["quantity"] == -2
    assert "secret API key" in refusal(negative, publishable=True)


# -- CSV --------------------------------------------------------------------
HEADER = ["ts", "name", "org", "uid", "units", "plan", "note"]
MAP = [
    "sent_at=ts",
    "event=name",
    "company.id=org",
    "user.id=uid",
    "quantity=units",
    "traits.plan=plan",
]


def row(*cells: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(CsvRows(parse_map(MAP), HEADER).to_json(list(cells)))
    return out


def test_a_row_becomes_a_track_event_and_unmapped_columns_are_ignored() -> None:
    event = row("2026-05-01T10:00:00Z", "api-call", "acme", "u1", "3", "pro", "ignored")
    assert event == {
        "event_type": "track",
        "sent_at": "2026-05-01T10:00:00Z",
        "body": {
            "event": "api-call",
            "quantity": 3,
            "company": {"id": "acme"},
            "user": {"id": "u1"},
            "traits": {"plan": "pro"},
        },
    }


def test_empty_cells_are_absent() -> None:
    event = row("", "api-call", "acme", "", "", "", "")
    assert event == {
        "event_type": "track",
        "body": {"event": "api-call", "company": {"id": "acme"}},
    }


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["t", "", "acme", "u", "1", "p", "n"], "the event name (column 'name') is empty"),
        (["t", "e", "acme", "u", "1.5", "p", "n"], "quantity (column 'units') must be an integer"),
        (["t", "e", "acme", "u", "1_000", "p", "n"], "must be an integer, not '1_000'"),
        (["t", "e", "acme"], "the row has 3 cells, the header 7"),
    ],
)
def test_a_bad_row_is_refused(cells: list[str], expected: str) -> None:
    with pytest.raises(Invalid) as err:
        CsvRows(parse_map(MAP), HEADER).to_json(cells)
    assert expected in err.value.message


def test_a_mapped_column_must_be_in_the_header() -> None:
    with pytest.raises(Invalid) as err:
        CsvRows(parse_map(["event=kind"]), HEADER)
    assert "no column 'kind'" in err.value.message


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["sent_at=ts"], "--map event=COLUMN is required"),
        (["event"], "--map takes FIELD=COLUMN"),
        (["event=a", "event=b"], "names 'event' twice"),
        (["event=a", "colour=b"], "is not one of"),
        (["event=a", "company.traits.plan=p"], "carries traits of its own"),
    ],
)
def test_a_bad_map_is_refused(items: list[str], expected: str) -> None:
    with pytest.raises(Invalid) as err:
        parse_map(items)
    assert expected in err.value.message


def test_the_map_as_recorded() -> None:
    assert parse_map(MAP).as_dict() == {
        "company.id": "org",
        "event": "name",
        "quantity": "units",
        "sent_at": "ts",
        "traits.plan": "plan",
        "user.id": "uid",
    }
