"""Retries through the HTTP API (issue 9, items 2, 9 and 18): a retry whose
idempotency key is held is answered as the duplicate it is before any other
rule, on every write route, and says so (``"duplicate": true``); a refused
event whose key is free is refused as before and stores nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.api.conftest import Api
from tests.api.helpers import assert_error, assert_ok, assert_raw_event, track

MSG_NEEDS_SECRET = "trusted_client_clock and backfill require a secret API key"
MSG_PAST_TRUSTED = (
    "sent_at cannot be more than 34 days in the past for trusted_client_clock; "
    "for older events use backfill (analytics-only, no billing side effects)"
)
# the clock stands at 2026-03-15T12:00:00Z: 34 days minus 2 seconds before it
EDGE = "2026-02-09T12:00:02Z"
EDGE_CAPTURED = "2026-02-09T12:00:02.000000Z"


def _edge_event(**fields: Any) -> dict[str, Any]:
    return {
        "event_type": "track",
        "body": track(quantity=7),
        "sent_at": EDGE,
        "trusted_client_clock": True,
        "idempotency_key": "order-42",
        **fields,
    }


def _accept_at_the_edge(api: Api) -> str:
    """The first send, accepted; then 3 seconds pass: its sent_at is now
    more than 34 days old, so the same bytes would be refused if ruled on."""
    first = assert_ok(api.post("/events", _edge_event()), 201, params={})
    assert "duplicate" not in first
    kept = assert_raw_event(first, captured_at=EDGE_CAPTURED)
    api.clock.advance(timedelta(seconds=3))
    return kept


def test_rest_retry_past_the_clock_window_is_a_duplicate(api: Api) -> None:
    kept = _accept_at_the_edge(api)
    again = assert_ok(api.post("/events", _edge_event()), 201, params={})
    assert assert_raw_event(again, captured_at=EDGE_CAPTURED) == kept
    assert again["duplicate"] is True
    assert [e["id"] for e in api.list_events()] == [kept]
    # a new key is ruled on: the same bytes are refused now
    fresh = api.post("/events", _edge_event(idempotency_key="order-43"))
    assert_error(fresh, 400, MSG_PAST_TRUSTED)
    assert [e["id"] for e in api.list_events()] == [kept]


def test_event_batch_retry_past_the_clock_window_is_a_duplicate(api: Api) -> None:
    kept = _accept_at_the_edge(api)
    other = {"event_type": "track", "body": track("other"), "idempotency_key": "order-44"}
    data = assert_ok(api.post("/event-batch", {"events": [_edge_event(), other]}), 201)
    first, second = data["events"]
    assert (first["event_id"], first["duplicate"]) == (kept, True)
    assert "duplicate" not in second
    assert sorted(e["id"] for e in api.list_events()) == sorted([kept, second["event_id"]])


def test_event_batch_with_a_refused_event_whose_key_is_free_stores_nothing(api: Api) -> None:
    kept = _accept_at_the_edge(api)
    valid = {"event_type": "track", "body": track("other"), "idempotency_key": "fresh"}
    stale = _edge_event(idempotency_key="order-43")
    response = api.post("/event-batch", {"events": [_edge_event(), valid, stale]})
    assert_error(
        response,
        400,
        f"events[2] was refused, so nothing in this batch was stored: {MSG_PAST_TRUSTED}",
    )
    assert [e["id"] for e in api.list_events()] == [kept]
    # the valid event's key was not claimed
    assert "duplicate" not in assert_ok(api.post("/events", valid), 201)


def test_capture_retry_past_the_clock_window_is_a_duplicate(api: Api) -> None:
    kept = _accept_at_the_edge(api)
    retry = {**_edge_event(), "type": "track"}
    del retry["event_type"]
    response = api.post("/batch", {"events": [retry]})
    assert response.status_code == 200, response.text
    (result,) = assert_ok(response, 200)["events"]
    assert result == {"event_id": kept, "status": "duplicate", "duplicate": True}
    assert [e["id"] for e in api.list_events()] == [kept]  # no new failed event
    # with a free key, the same event is stored failed, holding nothing
    retry["idempotency_key"] = "order-43"
    (failed,) = assert_ok(api.post("/batch", {"events": [retry]}), 200)["events"]
    assert (failed["status"], failed["error_message"]) == ("failed", MSG_PAST_TRUSTED)
    assert "duplicate" not in failed
    detail = assert_ok(api.get(f"/events/{failed['event_id']}"))
    assert (detail["status"], detail["idempotency_key"]) == ("failed", "order-43")


def test_a_held_key_wins_over_any_rule(api: Api) -> None:
    """A publishable key's retry of the secret key's event (a key the
    publishable key may not use: trusted clock, negative quantity) is still
    the duplicate; a guessed key shows as such to the one who guessed."""
    kept = _accept_at_the_edge(api)
    for fields in ({}, {"body": track(quantity=-5), "trusted_client_clock": None}):
        response = api.post("/events", _edge_event(**fields), key=api.publishable)
        data = assert_ok(response, 201)
        assert (data["event_id"], data["duplicate"]) == (kept, True)
    assert len(api.list_events()) == 1


def test_publishable_clock_flag_message_comes_before_sent_at_parsing(api: Api) -> None:
    for flag in ("trusted_client_clock", "backfill"):
        sent = {"event_type": "track", "body": track(), "sent_at": "not a time", flag: True}
        assert_error(api.post("/events", sent, key=api.publishable), 400, MSG_NEEDS_SECRET)
        capture = {"type": "track", "body": track(), "sent_at": "yesterday", flag: True}
        (result,) = assert_ok(api.post("/batch", {"events": [capture]}, key=api.publishable))[
            "events"
        ]
        assert result["error_message"] == MSG_NEEDS_SECRET
