"""POST /event-batch: at most 1000 events, all stored or none."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import NOW_TEXT, Api
from tests.api.helpers import assert_error, assert_ok, assert_raw_event, body, track


def _events(n: int, event: str = "api-call") -> list[dict[str, Any]]:
    return [{"event_type": "track", "body": track(event, quantity=i + 1)} for i in range(n)]


def test_1000_events_accepted_in_order(api: Api) -> None:
    events = _events(1000)
    data = assert_ok(api.post("/event-batch", {"events": events}), 201, params={})
    ids = [assert_raw_event(item, captured_at=NOW_TEXT) for item in data["events"]]
    assert len(ids) == 1000
    assert len(set(ids)) == 1000
    stored = api.list_events(limit=250)
    # newest first: the last event of the batch comes first
    assert [e["id"] for e in stored] == ids[::-1][:250]
    assert [e["quantity"] for e in stored] == list(range(1000, 750, -1))


def test_1001_events_400_nothing_stored(api: Api) -> None:
    response = api.post("/event-batch", {"events": _events(1001)})
    message = assert_error(response, 400)
    assert "1000" in message
    assert api.list_events() == []


def test_one_bad_event_400_nothing_of_the_batch_stored(api: Api) -> None:
    events = [
        {"event_type": "track", "body": track("good-1")},
        {"event_type": "track", "body": {"quantity": 2}},  # no `event`
        {"event_type": "track", "body": track("good-2")},
    ]
    message = assert_error(api.post("/event-batch", {"events": events}), 400)
    assert "events[1]" in message
    assert "`event`" in message
    assert api.list_events() == []
    assert assert_ok(api.get("/event-types")) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"event_type": "nope", "body": {"event": "a"}},
        {"event_type": "track"},
        {"body": {"event": "a"}},
        {"event_type": "track", "body": {"event": "a", "quantity": 0}},
        {"event_type": "identify", "body": {"name": "no keys"}},
        "not an object",
        None,
        [1, 2],
    ],
    ids=[
        "unknown-type",
        "no-body",
        "no-type",
        "quantity-0",
        "identify-no-keys",
        "string",
        "null",
        "array",
    ],
)
def test_any_bad_event_refuses_the_whole_batch(api: Api, bad: Any) -> None:
    events = [*_events(3), bad, *_events(3, "later")]
    message = assert_error(api.post("/event-batch", {"events": events}), 400)
    assert "events[3]" in message
    assert api.list_events() == []


def test_clock_rule_message_inside_batch(api: Api) -> None:
    events = [
        {"event_type": "track", "body": track()},
        {
            "event_type": "track",
            "body": track(),
            "sent_at": "2026-03-15T12:05:01Z",
            "trusted_client_clock": True,
        },
    ]
    message = assert_error(api.post("/event-batch", {"events": events}), 400)
    assert message.endswith("sent_at cannot be more than 5 minutes in the future")
    assert "events[1]" in message
    assert api.list_events() == []


def test_negative_quantity_publishable_refuses_batch(api: Api) -> None:
    events = [
        {"event_type": "track", "body": track()},
        {"event_type": "track", "body": track(quantity=-1)},
    ]
    assert_error(
        api.post("/event-batch", {"events": events}, key=api.publishable), 400, contains="secret"
    )
    assert api.list_events() == []


def test_oversized_event_refuses_batch_413(api: Api) -> None:
    big = track(traits={"pad": "x" * (33 * 1024)})
    events = [{"event_type": "track", "body": track()}, {"event_type": "track", "body": big}]
    message = assert_error(api.post("/event-batch", {"events": events}), 413)
    assert "events[1]" in message
    assert api.list_events() == []


def test_request_over_4_mib_413(api: Api) -> None:
    # 150 events of ~30 KiB each: every event fits, the request does not
    events = [
        {"event_type": "track", "body": track(traits={"pad": "x" * 30_000})} for _ in range(150)
    ]
    response = api.post("/event-batch", {"events": events})
    assert_error(response, 413, contains="4 MiB")
    assert api.list_events() == []


@pytest.mark.parametrize(
    "raw",
    [
        b"{bad",
        b"[]",
        b"{}",
        b'{"events": null}',
        b'{"events": {"event_type": "track"}}',
        b'{"events": "x"}',
        b'{"event": []}',
    ],
    ids=[
        "malformed",
        "array",
        "no-events",
        "null-events",
        "object-events",
        "string-events",
        "misspelled",
    ],
)
def test_malformed_batch_400(api: Api, raw: bytes) -> None:
    assert_error(api.post("/event-batch", content=raw, key=api.secret), 400)
    assert api.list_events() == []


def test_empty_body_400(api: Api) -> None:
    assert_error(api.post("/event-batch", content=b"", key=api.secret), 400, contains="empty")


def test_mixed_types_with_clock_flags(api: Api) -> None:
    events = [
        {"event_type": "identify", "body": body("identify")},
        {
            "event_type": "track",
            "body": track(),
            "sent_at": "2026-02-09T12:00:00Z",
            "trusted_client_clock": True,
        },
        {
            "event_type": "track",
            "body": track(),
            "sent_at": "2025-06-01T00:00:00",
            "backfill": True,
        },
    ]
    data = assert_ok(api.post("/event-batch", {"events": events}), 201)
    assert [item["captured_at"] for item in data["events"]] == [
        NOW_TEXT,
        "2026-02-09T12:00:00.000000Z",
        "2025-06-01T00:00:00.000000Z",
    ]
    assert len(api.list_events()) == 3
