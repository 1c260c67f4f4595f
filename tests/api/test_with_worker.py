"""The read API after the in-process worker has processed the events: what
ingestion stored (flag_check ids, failed events, idempotency) must survive
processing, and processed events keep the SDK's shape."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tally.clock import FrozenClock
from tests.api.conftest import Api, open_api
from tests.api.helpers import TIMESTAMP_Z, assert_ok, assert_raw_event, body, track

SDK_REQUIRED = (
    "id",
    "type",
    "status",
    "body",
    "body_preview",
    "captured_at",
    "quantity",
    "feature_ids",
    "features",
)


@pytest.fixture
def live(tmp_path: Path, clock: FrozenClock) -> Iterator[Api]:
    with open_api(tmp_path, clock, worker=True) as running:
        yield running


def _wait(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _settled(api: Api) -> list[dict[str, Any]]:
    """Every event once none is pending any more."""
    _wait(
        lambda: all(e["status"] != "pending" for e in api.list_events(limit=250)),
        "the worker to process every event",
    )
    return api.list_events(limit=250)


def _create(api: Api, event_type: str, sent: dict[str, Any], **fields: Any) -> str:
    return assert_raw_event(assert_ok(api.create(event_type, sent, **fields), 201))


def test_flag_check_ids_survive_processing(live: Api) -> None:
    event_id = _create(
        live,
        "flag_check",
        body("flag_check", company_id="comp_7", user_id="user_7", flag_id="flag_7"),
    )
    (event,) = _settled(live)
    assert event["id"] == event_id
    assert event["status"] == "processed"
    assert event.get("company_id") == "comp_7"
    assert event.get("user_id") == "user_7"
    for query in ({"company_id": "comp_7"}, {"user_id": "user_7"}, {"flag_id": "flag_7"}):
        assert [e["id"] for e in live.list_events(**query)] == [event_id], query


def test_processed_events_keep_the_sdk_shape(live: Api) -> None:
    ids = [
        _create(live, "identify", body("identify")),
        _create(live, "track", track()),
        _create(live, "inference", body("inference")),
    ]
    events = _settled(live)
    assert sorted(e["id"] for e in events) == sorted(ids)
    for event in events:
        for field in SDK_REQUIRED:
            assert field in event, field
        assert event["status"] == "processed", event
        assert isinstance(event["body"], dict)
        assert type(event["quantity"]) is int
        for field in ("captured_at", "loaded_at", "enriched_at", "updated_at", "processed_at"):
            if event.get(field) is not None:
                assert TIMESTAMP_Z.match(event[field]), (field, event[field])
        for preview in event["features"]:
            assert set(preview) >= {"id", "name"}


def test_track_is_tied_to_company_and_user(live: Api) -> None:
    first = _create(live, "track", track("api-call"))
    second = _create(live, "track", track("api-call", quantity=2))
    events = {e["id"]: e for e in _settled(live)}
    company_id = events[first]["company_id"]
    user_id = events[first]["user_id"]
    assert company_id.startswith("comp_") and user_id.startswith("user_")
    assert events[second]["company_id"] == company_id
    assert [e["id"] for e in live.list_events(company_id=company_id)] == [second, first]
    assert [e["id"] for e in live.list_events(user_id=user_id)] == [second, first]
    (row,) = assert_ok(live.get("/event-types"))
    assert (row["event_subtype"], row["event_count"], row["company_count"], row["user_count"]) == (
        "api-call",
        2,
        1,
        1,
    )


def test_failed_capture_event_stays_failed(live: Api) -> None:
    events = [{"type": "track", "body": {"quantity": 1}}, {"type": "track", "body": track()}]
    results = assert_ok(live.post("/batch", {"events": events}), 200)["events"]
    assert [r["status"] for r in results] == ["failed", "pending"]
    stored = {e["id"]: e for e in _settled(live)}
    failed = stored[results[0]["event_id"]]
    assert failed["status"] == "failed"
    assert failed["error_message"] == results[0]["error_message"]
    assert stored[results[1]["event_id"]]["status"] == "processed"


def test_duplicate_of_a_processed_event_is_still_dropped(live: Api) -> None:
    kept = _create(live, "track", track(), idempotency_key="k")
    _settled(live)
    assert _create(live, "track", track(), idempotency_key="k") == kept
    assert [e["id"] for e in live.list_events(idempotency_key="k")] == [kept]
