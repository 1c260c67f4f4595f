"""SPEC §3 rules 1 and 2 through POST /events, with the FrozenClock standing at
2026-03-15T12:00:00Z: who may set the clock, the window edges, and the
validation messages word for word."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.api.conftest import NOW_TEXT, Api
from tests.api.helpers import TIMESTAMP_Z, assert_error, assert_ok, assert_raw_event, body, track

# SPEC §3, word for word.
MSG_NEEDS_SECRET = "trusted_client_clock and backfill require a secret API key"
MSG_NEEDS_SENT_AT = "sent_at is required when trusted_client_clock or backfill is true"
MSG_FUTURE = "sent_at cannot be more than 5 minutes in the future"
MSG_PAST_TRUSTED = (
    "sent_at cannot be more than 34 days in the past for trusted_client_clock; "
    "for older events use backfill (analytics-only, no billing side effects)"
)
MSG_PAST_BACKFILL = "sent_at cannot be more than 365 days in the past"

# The clock stands at 2026-03-15T12:00:00Z.
PLUS_5_MIN = "2026-03-15T12:05:00Z"
PLUS_5_MIN_1_S = "2026-03-15T12:05:01Z"
PLUS_5_MIN_1_US = "2026-03-15T12:05:00.000001Z"
MINUS_34_D = "2026-02-09T12:00:00Z"
MINUS_34_D_1_S = "2026-02-09T11:59:59Z"
MINUS_365_D = "2025-03-15T12:00:00Z"
MINUS_365_D_1_S = "2025-03-15T11:59:59Z"


def _send(api: Api, *, key: str | None = "", event_type: str = "track", **fields: Any) -> Any:
    sent = track() if event_type == "track" else body(event_type)
    return api.create(event_type, sent, key=key, **fields)


def _accepted(api: Api, response: Any, captured_at: str) -> dict[str, Any]:
    event_id = assert_raw_event(assert_ok(response, 201, params={}), captured_at=captured_at)
    detail: dict[str, Any] = assert_ok(api.get(f"/events/{event_id}"))
    assert detail["captured_at"] == captured_at
    assert detail["status"] == "pending"
    return detail


def _refused(api: Api, response: Any, message: str) -> None:
    assert_error(response, 400, message)
    assert api.list_events() == []


# -- normal events: receipt time ----------------------------------------------


def test_captured_at_is_receipt_time_without_flags(api: Api) -> None:
    detail = _accepted(api, _send(api, sent_at="2026-01-01T00:00:00Z"), NOW_TEXT)
    # sent_at is kept for the record but does not move captured_at
    assert detail["sent_at"] == "2026-01-01T00:00:00.000000Z"


def test_flags_false_are_receipt_time(api: Api) -> None:
    response = _send(api, sent_at=MINUS_34_D, trusted_client_clock=False, backfill=False)
    _accepted(api, response, NOW_TEXT)


def test_unparsable_sent_at_without_flags_is_ignored(api: Api) -> None:
    _accepted(api, _send(api, sent_at="yesterday-ish"), NOW_TEXT)


def test_clock_follows_the_frozen_clock(api: Api) -> None:
    api.clock.advance(timedelta(hours=1, microseconds=250))
    _accepted(api, _send(api), "2026-03-15T13:00:00.000250Z")


# -- the five messages --------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        {"trusted_client_clock": True},
        {"backfill": True},
        {"trusted_client_clock": True, "backfill": True},
    ],
    ids=["trusted", "backfill", "both"],
)
def test_publishable_key_cannot_set_clock(api: Api, flags: dict[str, bool]) -> None:
    _refused(api, _send(api, key=api.publishable, sent_at=MINUS_34_D, **flags), MSG_NEEDS_SECRET)


@pytest.mark.parametrize(
    "flags",
    [
        {"trusted_client_clock": True},
        {"backfill": True},
        {"trusted_client_clock": True, "backfill": True},
    ],
    ids=["trusted", "backfill", "both"],
)
def test_sent_at_required_with_a_clock_flag(api: Api, flags: dict[str, bool]) -> None:
    _refused(api, _send(api, **flags), MSG_NEEDS_SENT_AT)
    _refused(api, _send(api, sent_at=None, **flags), MSG_NEEDS_SENT_AT)


def test_more_than_5_minutes_ahead(api: Api) -> None:
    _refused(api, _send(api, sent_at=PLUS_5_MIN_1_S, trusted_client_clock=True), MSG_FUTURE)
    _refused(api, _send(api, sent_at=PLUS_5_MIN_1_S, backfill=True), MSG_FUTURE)
    _refused(api, _send(api, sent_at=PLUS_5_MIN_1_US, trusted_client_clock=True), MSG_FUTURE)
    _refused(api, _send(api, sent_at="2027-01-01T00:00:00Z", backfill=True), MSG_FUTURE)


def test_more_than_34_days_back_with_trusted_clock(api: Api) -> None:
    _refused(api, _send(api, sent_at=MINUS_34_D_1_S, trusted_client_clock=True), MSG_PAST_TRUSTED)


def test_more_than_365_days_back_with_backfill(api: Api) -> None:
    _refused(api, _send(api, sent_at=MINUS_365_D_1_S, backfill=True), MSG_PAST_BACKFILL)
    _refused(
        api,
        _send(api, sent_at=MINUS_365_D_1_S, backfill=True, trusted_client_clock=True),
        MSG_PAST_BACKFILL,
    )


def test_secret_key_message_wins_over_missing_sent_at(api: Api) -> None:
    _refused(api, _send(api, key=api.publishable, trusted_client_clock=True), MSG_NEEDS_SECRET)


# -- the edges ----------------------------------------------------------------


def test_exactly_5_minutes_ahead_accepted(api: Api) -> None:
    detail = _accepted(
        api,
        _send(api, sent_at=PLUS_5_MIN, trusted_client_clock=True),
        "2026-03-15T12:05:00.000000Z",
    )
    assert detail["sent_at"] == "2026-03-15T12:05:00.000000Z"


def test_exactly_5_minutes_ahead_accepted_with_backfill(api: Api) -> None:
    _accepted(api, _send(api, sent_at=PLUS_5_MIN, backfill=True), "2026-03-15T12:05:00.000000Z")


def test_exactly_34_days_back_with_trusted_clock_accepted(api: Api) -> None:
    response = _send(api, sent_at=MINUS_34_D, trusted_client_clock=True)
    detail = _accepted(api, response, "2026-02-09T12:00:00.000000Z")
    assert detail["captured_at"] == detail["sent_at"]


def test_exactly_365_days_back_with_backfill_accepted(api: Api) -> None:
    response = _send(api, sent_at=MINUS_365_D, backfill=True, trusted_client_clock=True)
    detail = _accepted(api, response, "2025-03-15T12:00:00.000000Z")
    assert detail["captured_at"] == detail["sent_at"]


def test_backfill_alone_accepted(api: Api) -> None:
    """The playbook sends ``backfill`` without ``trusted_client_clock``."""
    _accepted(api, _send(api, sent_at=MINUS_365_D, backfill=True), "2025-03-15T12:00:00.000000Z")
    _accepted(api, _send(api, sent_at=MINUS_34_D_1_S, backfill=True), "2026-02-09T11:59:59.000000Z")


def test_backfill_with_trusted_false_still_uses_sent_at(api: Api) -> None:
    response = _send(api, sent_at=MINUS_34_D_1_S, backfill=True, trusted_client_clock=False)
    _accepted(api, response, "2026-02-09T11:59:59.000000Z")


@pytest.mark.parametrize("event_type", ["identify", "flag_check", "inference"])
def test_clock_rules_apply_to_every_event_type(api: Api, event_type: str) -> None:
    response = _send(api, event_type=event_type, sent_at=MINUS_34_D_1_S, trusted_client_clock=True)
    _refused(api, response, MSG_PAST_TRUSTED)
    response = _send(api, event_type=event_type, sent_at=MINUS_34_D, trusted_client_clock=True)
    _accepted(api, response, "2026-02-09T12:00:00.000000Z")


# -- sent_at formats ----------------------------------------------------------


@pytest.mark.parametrize(
    ("sent_at", "captured_at"),
    [
        ("2026-03-10T08:30:00Z", "2026-03-10T08:30:00.000000Z"),
        ("2026-03-10T08:30:00.123456Z", "2026-03-10T08:30:00.123456Z"),
        ("2026-03-10T08:30:00.5Z", "2026-03-10T08:30:00.500000Z"),
        ("2026-03-10T08:30:00+00:00", "2026-03-10T08:30:00.000000Z"),
        ("2026-03-10T10:30:00+02:00", "2026-03-10T08:30:00.000000Z"),
        ("2026-03-10T03:30:00-05:00", "2026-03-10T08:30:00.000000Z"),
        ("2026-03-10T08:30:00", "2026-03-10T08:30:00.000000Z"),
        ("2026-03-10T08:30:00.123456", "2026-03-10T08:30:00.123456Z"),
    ],
    ids=["Z", "Z-micros", "Z-fraction", "+00:00", "+02:00", "-05:00", "naive", "naive-micros"],
)
def test_sent_at_formats(api: Api, sent_at: str, captured_at: str) -> None:
    detail = _accepted(api, _send(api, sent_at=sent_at, trusted_client_clock=True), captured_at)
    assert detail["sent_at"] == captured_at


def test_offset_is_applied_before_the_window_check(api: Api) -> None:
    # 12:04:00+00:00 is fine, but 12:04:00-01:00 is 13:04Z: over an hour ahead
    _accepted(
        api,
        _send(api, sent_at="2026-03-15T12:04:00+00:00", trusted_client_clock=True),
        "2026-03-15T12:04:00.000000Z",
    )
    response = _send(api, sent_at="2026-03-15T12:04:00-01:00", trusted_client_clock=True)
    assert_error(response, 400, MSG_FUTURE)
    assert len(api.list_events()) == 1


@pytest.mark.parametrize("sent_at", ["not a time", "", "2026-13-01T00:00:00Z", "1767225600"])
def test_unparsable_sent_at_with_a_clock_flag_400(api: Api, sent_at: str) -> None:
    message = assert_error(_send(api, sent_at=sent_at, trusted_client_clock=True), 400)
    assert "sent_at" in message
    assert api.list_events() == []


# -- extreme sent_at values ---------------------------------------------------
# A timestamp at the edge of what Python's datetime holds must get a final
# answer (201, or 400 with a sentence), never a 500 that the SDK retries.

EXTREME_SENT_AT = [
    "0001-01-01T00:00:00+14:00",  # before year 1 once moved to UTC
    "9999-12-31T23:59:59-14:00",  # after year 9999 once moved to UTC
]


@pytest.mark.parametrize("sent_at", EXTREME_SENT_AT)
@pytest.mark.parametrize(
    "flags",
    [{}, {"trusted_client_clock": True}, {"backfill": True}],
    ids=["no-flag", "trusted", "backfill"],
)
def test_sent_at_out_of_datetime_range_is_not_a_500(
    api: Api, sent_at: str, flags: dict[str, bool]
) -> None:
    response = _send(api, sent_at=sent_at, **flags)
    if flags:
        message = assert_error(response, 400)
        assert "sent_at" in message
        assert api.list_events() == []
    else:  # ignored without a clock flag, like any unusable sent_at
        _accepted(api, response, NOW_TEXT)


@pytest.mark.parametrize("sent_at", EXTREME_SENT_AT)
def test_sent_at_out_of_range_in_batches_is_not_a_500(api: Api, sent_at: str) -> None:
    event = {"event_type": "track", "body": track(), "sent_at": sent_at, "backfill": True}
    assert_error(api.post("/event-batch", {"events": [event]}), 400, contains="sent_at")
    capture = {"type": "track", "body": track(), "sent_at": sent_at, "backfill": True}
    response = api.post("/batch", {"events": [capture, {"type": "track", "body": track()}]})
    results = assert_ok(response, 200)["events"]
    assert [r["status"] for r in results] == ["failed", "pending"]
    assert "sent_at" in results[0]["error_message"]


@pytest.mark.parametrize("sent_at", ["0001-01-01T00:00:00Z", "0999-12-31T00:00:00Z"])
def test_ancient_sent_at_reads_back_as_rfc3339(api: Api, sent_at: str) -> None:
    """An ignored but stored ``sent_at`` must still read back as a valid
    timestamp: the SDK fails to parse the whole list otherwise."""
    response = _send(api, sent_at=sent_at)
    if response.status_code == 400:
        assert_error(response, 400, contains="sent_at")
        return
    event_id = assert_raw_event(assert_ok(response, 201))
    for detail in (assert_ok(api.get(f"/events/{event_id}")), api.list_events()[0]):
        for field in ("captured_at", "sent_at", "loaded_at", "updated_at"):
            if detail.get(field) is not None:
                assert TIMESTAMP_Z.match(detail[field]), (field, detail[field])
        if detail.get("sent_at") is not None:
            assert detail["sent_at"] == sent_at.replace("Z", ".000000Z")
