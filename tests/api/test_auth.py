"""SPEC §2: no/unknown/revoked key → 401; a key lacking the right → 403;
every environment sees only its own events."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.helpers import assert_error, assert_ok, assert_raw_event, body, track

# (method, path, JSON payload) of every route that needs a key.
KEYED: list[tuple[str, str, Any]] = [
    ("POST", "/events", {"event_type": "track", "body": {"event": "a"}}),
    ("POST", "/event-batch", {"events": [{"event_type": "track", "body": {"event": "a"}}]}),
    ("POST", "/batch", {"events": [{"type": "track", "body": {"event": "a"}}]}),
    ("GET", "/events", None),
    ("GET", "/events/evt_00000000000000000000000000", None),
    ("GET", "/event-types", None),
]
IDS = [f"{m} {p}" for m, p, _ in KEYED]


def _call(api: Api, method: str, path: str, payload: Any, key: str | None) -> Any:
    headers = api.headers(key)
    if method == "POST":
        return api.client.post(path, headers=headers, json=payload)
    return api.client.get(path, headers=headers)


@pytest.mark.parametrize(("method", "path", "payload"), KEYED, ids=IDS)
def test_no_key_401(api: Api, method: str, path: str, payload: Any) -> None:
    assert_error(_call(api, method, path, payload, None), 401, contains="X-Schematic-Api-Key")


@pytest.mark.parametrize(("method", "path", "payload"), KEYED, ids=IDS)
def test_empty_key_header_401(api: Api, method: str, path: str, payload: Any) -> None:
    assert_error(_call(api, method, path, payload, ""), 401)


@pytest.mark.parametrize(("method", "path", "payload"), KEYED, ids=IDS)
def test_unknown_key_401(api: Api, method: str, path: str, payload: Any) -> None:
    assert_error(_call(api, method, path, payload, "sch_dev_not-a-real-key"), 401)


@pytest.mark.parametrize(("method", "path", "payload"), KEYED, ids=IDS)
def test_revoked_key_401(api: Api, method: str, path: str, payload: Any) -> None:
    record, key = api.new_key("development")
    assert _call(api, "GET", "/events", None, key).status_code == 200
    revoked = api.revoke(record.id)
    assert revoked is not None and revoked.revoked_at is not None
    assert_error(_call(api, method, path, payload, key), 401)


def test_unauthorized_write_stores_nothing(api: Api) -> None:
    for method, path, payload in KEYED:
        if method == "POST":
            assert _call(api, method, path, payload, "sch_dev_nope").status_code == 401
    assert api.list_events() == []


@pytest.mark.parametrize(
    "path", ["/events", "/events/evt_00000000000000000000000000", "/event-types"]
)
def test_publishable_key_cannot_read_403(api: Api, path: str) -> None:
    assert_error(api.get(path, key=api.publishable), 403, contains="publishable")


def test_publishable_key_can_write(api: Api) -> None:
    event_id = assert_raw_event(assert_ok(api.create("track", track(), key=api.publishable), 201))
    data = assert_ok(
        api.post(
            "/event-batch",
            {"events": [{"event_type": "identify", "body": body("identify")}]},
            key=api.publishable,
        ),
        201,
    )
    assert len(data["events"]) == 1
    assert_ok(
        api.post("/batch", {"events": [{"type": "track", "body": track()}]}, key=api.publishable)
    )
    assert api.list_events()[-1]["id"] == event_id
    assert [e["status"] for e in api.list_events()] == ["pending"] * 3


def test_read_only_key_post_events_403(api: Api) -> None:
    assert_error(api.create("track", track(), key=api.read_only), 403, contains="read-only")
    assert api.list_events() == []


def test_read_only_key_post_event_batch_403(api: Api) -> None:
    payload = {"events": [{"event_type": "track", "body": track()}]}
    assert_error(api.post("/event-batch", payload, key=api.read_only), 403, contains="read-only")
    assert api.list_events() == []


def test_read_only_key_can_read(api: Api) -> None:
    event_id = assert_raw_event(assert_ok(api.create("track", track()), 201))
    assert [e["id"] for e in api.list_events(key=api.read_only)] == [event_id]
    assert assert_ok(api.get(f"/events/{event_id}", key=api.read_only))["id"] == event_id
    assert len(assert_ok(api.get("/event-types", key=api.read_only))) == 1


def test_read_only_key_capture_batch_200_events_failed(api: Api) -> None:
    payload = {
        "events": [
            {"api_key": api.read_only, "type": "track", "body": track()},
            {"api_key": api.read_only, "type": "identify", "body": body("identify")},
        ]
    }
    response = api.post("/batch", payload, key=api.read_only)
    assert response.status_code == 200, response.text
    data = assert_ok(response, 200)
    assert [item["status"] for item in data["events"]] == ["failed", "failed"]
    stored = api.list_events()
    assert len(stored) == 2
    by_id = {e["id"]: e for e in stored}
    for item in data["events"]:
        event = by_id[item["event_id"]]
        assert event["status"] == "failed"
        assert isinstance(event["error_message"], str)
        assert "read-only" in event["error_message"]
        assert item["error_message"] == event["error_message"]
    assert {e["type"] for e in stored} == {"track", "identify"}


def test_other_environment_cannot_see_events(api: Api) -> None:
    event_id = assert_raw_event(assert_ok(api.create("track", track()), 201))
    assert [e["id"] for e in api.list_events()] == [event_id]

    assert api.list_events(key=api.other_env) == []
    assert_error(api.get(f"/events/{event_id}", key=api.other_env), 404)
    assert assert_ok(api.get("/event-types", key=api.other_env)) == []
    assert api.list_events(key=api.other_env, idempotency_key="x") == []


def test_other_environment_sees_its_own_events(api: Api) -> None:
    mine = assert_raw_event(assert_ok(api.create("track", track("mine")), 201))
    theirs = assert_raw_event(
        assert_ok(api.create("track", track("theirs"), key=api.other_env), 201)
    )
    assert [e["id"] for e in api.list_events()] == [mine]
    assert [e["id"] for e in api.list_events(key=api.other_env)] == [theirs]
    detail = assert_ok(api.get(f"/events/{theirs}", key=api.other_env))
    assert detail["environment_id"] == api.other_environment_id
    assert_error(api.get(f"/events/{theirs}"), 404)
    rows = assert_ok(api.get("/event-types", key=api.other_env))
    assert [(r["event_subtype"], r["environment_id"]) for r in rows] == [
        ("theirs", api.other_environment_id)
    ]


def test_capture_batch_header_key_is_authoritative(api: Api) -> None:
    """The body's ``api_key`` is informative only: the events land in the
    header key's environment even when the body names another key."""
    payload = {"events": [{"api_key": api.other_env, "type": "track", "body": track("hdr")}]}
    data = assert_ok(api.post("/batch", payload), 200)
    assert data["events"][0]["status"] == "pending"
    assert [e["subtype"] for e in api.list_events()] == ["hdr"]
    assert api.list_events(key=api.other_env) == []
