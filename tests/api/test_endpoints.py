"""Every route answers with its documented status and envelope."""

from __future__ import annotations

import json

from tests.api.conftest import NOW_TEXT, Api
from tests.api.helpers import (
    EVENT_ID,
    TIMESTAMP_Z,
    assert_error,
    assert_ok,
    assert_raw_event,
    body,
    track,
)

RAW_EVENT_FIELDS = {"captured_at", "remote_ip", "user_agent", "event_id", "remote_addr"}


def test_health_needs_no_key(api: Api) -> None:
    response = api.client.get("/health")
    data = assert_ok(response, 200, params={})
    assert data["status"] == "ok"
    assert data["pending"] == 0 and data["oldest_pending_age_seconds"] == 0.0


def test_openapi_is_json(api: Api) -> None:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    doc = json.loads(response.content)
    assert doc["openapi"].startswith("3.")
    for path in ("/events", "/events/{event_id}", "/event-batch", "/batch", "/event-types"):
        assert path in doc["paths"], path


def test_post_events_201_raw_event(api: Api) -> None:
    response = api.client.post(
        "/events",
        headers={"X-Schematic-Api-Key": api.secret, "User-Agent": "schematichq/1.4.6"},
        json={"event_type": "track", "body": track(), "idempotency_key": None, "sent_at": None},
    )
    data = assert_ok(response, 201, params={})
    assert set(data) <= RAW_EVENT_FIELDS, data
    event_id = assert_raw_event(data, captured_at=NOW_TEXT)
    assert data["remote_ip"] == "testclient"
    assert data["user_agent"] == "schematichq/1.4.6"

    detail = assert_ok(api.get(f"/events/{event_id}"), 200, params={})
    assert detail["id"] == event_id
    assert detail["type"] == "track"
    assert detail["subtype"] == "api-call"
    assert detail["quantity"] == 3
    assert detail["body"] == track()


def test_post_event_batch_201_one_result_per_event_in_order(api: Api) -> None:
    events = [
        {"event_type": "identify", "body": body("identify")},
        {"event_type": "track", "body": track("first")},
        {"event_type": "flag_check", "body": body("flag_check")},
        {"event_type": "inference", "body": body("inference")},
        {"event_type": "track", "body": track("second")},
    ]
    data = assert_ok(api.post("/event-batch", {"events": events}), 201, params={})
    assert list(data) == ["events"]
    assert len(data["events"]) == len(events)
    ids = [assert_raw_event(item, captured_at=NOW_TEXT) for item in data["events"]]
    assert len(set(ids)) == len(ids)
    for item in data["events"]:
        assert set(item) <= RAW_EVENT_FIELDS, item
    for event_id, sent in zip(ids, events, strict=True):
        detail = assert_ok(api.get(f"/events/{event_id}"), 200)
        assert detail["type"] == sent["event_type"]
        assert detail["body"] == sent["body"]


def test_post_event_batch_empty_list_is_201_with_events_key(api: Api) -> None:
    data = assert_ok(api.post("/event-batch", {"events": []}), 201, params={})
    assert data == {"events": []}


def test_post_capture_batch_2xx_small_json(api: Api) -> None:
    payload = {
        "events": [
            {"api_key": api.secret, "type": "identify", "body": body("identify")},
            {"api_key": api.secret, "type": "track", "body": track()},
        ]
    }
    response = api.post("/batch", payload)
    assert 200 <= response.status_code < 300
    data = assert_ok(response, response.status_code, params={})
    assert [item["status"] for item in data["events"]] == ["pending", "pending"]
    for item in data["events"]:
        assert EVENT_ID.match(item["event_id"]), item
    stored = api.list_events()
    assert [e["type"] for e in stored] == ["track", "identify"]


def test_get_events_200_list(api: Api) -> None:
    api.create("track", track())
    data = assert_ok(api.get("/events"), 200, params={"limit": 100, "offset": 0})
    assert isinstance(data, list)
    assert len(data) == 1
    assert data[0]["status"] == "pending"


def test_get_event_by_id_200_and_unknown_404(api: Api) -> None:
    event_id = assert_raw_event(assert_ok(api.create("identify", body("identify")), 201))
    detail = assert_ok(api.get(f"/events/{event_id}"), 200, params={})
    assert detail["id"] == event_id
    assert detail["type"] == "identify"
    assert TIMESTAMP_Z.match(detail["captured_at"])

    assert_error(api.get("/events/evt_00000000000000000000000000"), 404, contains="not found")
    assert_error(api.get("/events/nonsense"), 404)


def test_get_event_types_200(api: Api) -> None:
    api.create("track", track("query_run"))
    data = assert_ok(api.get("/event-types"), 200, params={"limit": 100, "offset": 0})
    assert [row["event_subtype"] for row in data] == ["query_run"]


def test_unknown_path_404_error_envelope(api: Api) -> None:
    assert_error(api.get("/nope"), 404)
    assert_error(api.post("/events/evt_x/extra", {"events": []}), 404)
    assert_error(api.get("/event-types/api-call"), 404)  # gone from the current API
    assert_error(api.client.get("/nope"), 404)  # no key at all: still a JSON 404


def test_wrong_method_405_error_envelope(api: Api) -> None:
    assert_error(api.client.put("/events", headers=api.headers(api.secret)), 405)
    assert_error(api.client.delete("/events/evt_x", headers=api.headers(api.secret)), 405)
    assert_error(api.get("/event-batch"), 405)
    assert_error(api.get("/batch"), 405)
    # there is no /events/batch: the path is /events/{event_id}, which is GET only
    assert_error(api.post("/events/batch", {"events": []}), 405)
    assert_error(api.post("/event-types", {}), 405)
    assert_error(api.client.post("/health"), 405)


def test_405_names_the_allowed_methods(api: Api) -> None:
    """RFC 9110 §15.5.6: a 405 response MUST carry an ``Allow`` header."""
    response = api.get("/batch")
    assert_error(response, 405)
    assert "POST" in response.headers.get("allow", ""), dict(response.headers)
    response = api.post("/event-types", {})
    assert_error(response, 405)
    assert "GET" in response.headers.get("allow", ""), dict(response.headers)
