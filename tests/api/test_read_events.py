"""GET /events, GET /events/{id} and GET /event-types: shapes, filters,
pagination and the params echo."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

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


def _create(api: Api, event_type: str, sent: dict[str, Any], **fields: Any) -> str:
    return assert_raw_event(assert_ok(api.create(event_type, sent, **fields), 201))


def _flag(company_id: str | None, user_id: str | None, flag_id: str | None) -> dict[str, Any]:
    return body("flag_check", company_id=company_id, user_id=user_id, flag_id=flag_id)


def _ids(api: Api, query: Any) -> list[str]:
    data = assert_ok(api.get("/events", params=query))
    return [e["id"] for e in data]


@pytest.fixture
def mixed(api: Api) -> dict[str, str]:
    """Seven events of every type, one clock second apart."""
    made: dict[str, str] = {}
    plan: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("identify", "identify", body("identify"), {}),
        ("track-a", "track", track("api-call"), {"idempotency_key": "k-a"}),
        ("flag-1", "flag_check", _flag("comp_1", "user_1", "flag_1"), {}),
        ("track-b", "track", track("query_run"), {"idempotency_key": "k-b"}),
        ("flag-2", "flag_check", _flag("comp_2", "user_1", "flag_2"), {}),
        ("inference", "inference", body("inference"), {}),
        ("flag-3", "flag_check", _flag("comp_1", None, "flag_2"), {}),
    ]
    for name, event_type, sent, fields in plan:
        made[name] = _create(api, event_type, sent, **fields)
        api.clock.advance(timedelta(seconds=1))
    return made


# -- GET /events --------------------------------------------------------------


def test_newest_first(api: Api, mixed: dict[str, str]) -> None:
    listed = assert_ok(api.get("/events"), 200, params={"limit": 100, "offset": 0})
    assert [e["id"] for e in listed] == list(reversed(mixed.values()))
    times = [e["captured_at"] for e in listed]
    assert times == sorted(times, reverse=True)


def test_filter_company_id(api: Api, mixed: dict[str, str]) -> None:
    assert _ids(api, {"company_id": "comp_1"}) == [mixed["flag-3"], mixed["flag-1"]]
    assert _ids(api, {"company_id": "comp_2"}) == [mixed["flag-2"]]
    assert _ids(api, {"company_id": "comp_404"}) == []


def test_filter_user_id(api: Api, mixed: dict[str, str]) -> None:
    assert _ids(api, {"user_id": "user_1"}) == [mixed["flag-2"], mixed["flag-1"]]


def test_filter_flag_id(api: Api, mixed: dict[str, str]) -> None:
    assert _ids(api, {"flag_id": "flag_2"}) == [mixed["flag-3"], mixed["flag-2"]]
    assert _ids(api, {"flag_id": "flag_1"}) == [mixed["flag-1"]]


def test_filter_event_subtype(api: Api, mixed: dict[str, str]) -> None:
    assert _ids(api, {"event_subtype": "api-call"}) == [mixed["track-a"]]
    assert _ids(api, {"event_subtype": "query_run"}) == [mixed["track-b"]]
    assert _ids(api, {"event_subtype": "api"}) == []  # exact, not a substring


def test_filter_event_types_repeated(api: Api, mixed: dict[str, str]) -> None:
    response = api.client.get(
        "/events?event_types=track&event_types=identify", headers=api.headers(api.secret)
    )
    data = assert_ok(
        response, 200, params={"event_types": ["track", "identify"], "limit": 100, "offset": 0}
    )
    assert [e["id"] for e in data] == [mixed["track-b"], mixed["track-a"], mixed["identify"]]
    assert _ids(api, [("event_types", "flag_check")]) == [
        mixed["flag-3"],
        mixed["flag-2"],
        mixed["flag-1"],
    ]
    assert _ids(api, [("event_types", "inference")]) == [mixed["inference"]]


def test_filter_event_types_bracket_form(api: Api, mixed: dict[str, str]) -> None:
    assert _ids(api, [("event_types[]", "identify"), ("event_types[]", "inference")]) == [
        mixed["inference"],
        mixed["identify"],
    ]


def test_filter_event_types_unknown_400(api: Api, mixed: dict[str, str]) -> None:
    assert_error(api.get("/events", params={"event_types": "bogus"}), 400, contains="event_types")


def test_filter_idempotency_key(api: Api, mixed: dict[str, str]) -> None:
    assert _ids(api, {"idempotency_key": "k-a"}) == [mixed["track-a"]]
    assert _ids(api, {"idempotency_key": "k-b"}) == [mixed["track-b"]]
    assert _ids(api, {"idempotency_key": "k-none"}) == []


def test_filters_combine(api: Api, mixed: dict[str, str]) -> None:
    query = {"company_id": "comp_1", "flag_id": "flag_2"}
    assert _ids(api, query) == [mixed["flag-3"]]
    query = [("user_id", "user_1"), ("event_types", "flag_check"), ("company_id", "comp_2")]
    assert _ids(api, query) == [mixed["flag-2"]]
    assert _ids(api, [("event_types", "track"), ("company_id", "comp_1")]) == []


def test_params_echoed(api: Api, mixed: dict[str, str]) -> None:
    query = (
        "company_id=comp_1&event_subtype=api-call&event_types=track&event_types=identify"
        "&flag_id=flag_1&idempotency_key=k&user_id=user_1&limit=10&offset=20"
    )
    response = api.client.get(f"/events?{query}", headers=api.headers(api.secret))
    assert (
        assert_ok(
            response,
            200,
            params={
                "company_id": "comp_1",
                "user_id": "user_1",
                "flag_id": "flag_1",
                "event_subtype": "api-call",
                "event_types": ["track", "identify"],
                "idempotency_key": "k",
                "limit": 10,
                "offset": 20,
            },
        )
        == []
    )


def test_limit_default_100_max_250(api: Api) -> None:
    batch = [{"event_type": "track", "body": track(quantity=i + 1)} for i in range(260)]
    assert_ok(api.post("/event-batch", {"events": batch}), 201)

    default = assert_ok(api.get("/events"), 200, params={"limit": 100, "offset": 0})
    assert len(default) == 100
    assert [e["quantity"] for e in default] == list(range(260, 160, -1))

    most = assert_ok(
        api.get("/events", params={"limit": 250}), 200, params={"limit": 250, "offset": 0}
    )
    assert len(most) == 250

    assert_error(api.get("/events", params={"limit": 251}), 400, contains="limit")
    assert_error(api.get("/events", params={"limit": -1}), 400, contains="limit")
    assert_error(api.get("/events", params={"limit": "ten"}), 400, contains="limit")
    assert assert_ok(api.get("/events", params={"limit": 0})) == []


def test_offset(api: Api) -> None:
    batch = [{"event_type": "track", "body": track(quantity=i + 1)} for i in range(12)]
    assert_ok(api.post("/event-batch", {"events": batch}), 201)
    page = assert_ok(
        api.get("/events", params={"limit": 5, "offset": 5}), 200, params={"limit": 5, "offset": 5}
    )
    assert [e["quantity"] for e in page] == [7, 6, 5, 4, 3]
    tail = assert_ok(api.get("/events", params={"limit": 5, "offset": 10}))
    assert [e["quantity"] for e in tail] == [2, 1]
    assert assert_ok(api.get("/events", params={"offset": 12})) == []
    assert_error(api.get("/events", params={"offset": -1}), 400, contains="offset")
    # pages are disjoint and cover everything
    seen = [
        e["id"]
        for off in (0, 5, 10)
        for e in assert_ok(api.get("/events", params={"limit": 5, "offset": off}))
    ]
    assert len(seen) == len(set(seen)) == 12


def test_overlong_filter_400(api: Api) -> None:
    assert_error(
        api.get("/events", params={"idempotency_key": "k" * 256}), 400, contains="idempotency_key"
    )
    assert_error(
        api.get("/events", params={"event_subtype": "s" * 256}), 400, contains="event_subtype"
    )


# -- GET /events/{id} -----------------------------------------------------------


@pytest.mark.parametrize("event_type", ["identify", "track", "flag_check", "inference"])
def test_event_detail_has_every_sdk_field(api: Api, event_type: str) -> None:
    sent = body(event_type)
    event_id = _create(api, event_type, sent)
    detail = assert_ok(api.get(f"/events/{event_id}"), 200, params={})
    for field in SDK_REQUIRED:
        assert field in detail, field
    assert EVENT_ID.match(detail["id"])
    assert detail["id"] == event_id
    assert detail["type"] == event_type
    assert detail["status"] == "pending"
    assert detail["body"] == sent
    assert isinstance(detail["body_preview"], str) and detail["body_preview"]
    assert detail["captured_at"] == NOW_TEXT
    assert detail["captured_at"].endswith("Z")
    assert type(detail["quantity"]) is int
    assert detail["feature_ids"] == []
    assert detail["features"] == []
    assert detail["loaded_at"] == NOW_TEXT
    assert detail["environment_id"] == api.environment_id
    assert "error_message" not in detail or detail["error_message"] is None
    for field in ("sent_at", "loaded_at", "enriched_at", "updated_at", "processed_at"):
        if detail.get(field) is not None:
            assert TIMESTAMP_Z.match(detail[field]), (field, detail[field])
    # the list shows the same record
    assert api.list_events() == [detail]


def test_event_detail_track_fields(api: Api) -> None:
    event_id = _create(api, "track", track("query_run", quantity=7), idempotency_key="abc")
    detail = assert_ok(api.get(f"/events/{event_id}"))
    assert detail["subtype"] == "query_run"
    assert detail["quantity"] == 7
    assert detail["idempotency_key"] == "abc"


def test_event_detail_flag_check_ids(api: Api) -> None:
    event_id = _create(api, "flag_check", _flag("comp_9", "user_9", "flag_9"))
    detail = assert_ok(api.get(f"/events/{event_id}"))
    assert detail["company_id"] == "comp_9"
    assert detail["user_id"] == "user_9"
    assert detail["quantity"] == 1


def test_body_preview_of_a_long_body_is_a_string(api: Api) -> None:
    sent = track(traits={"pad": "p" * 5000})
    event_id = _create(api, "track", sent)
    detail = assert_ok(api.get(f"/events/{event_id}"))
    assert detail["body"] == sent
    assert isinstance(detail["body_preview"], str)
    assert 0 < len(detail["body_preview"]) < 5000


def test_loaded_at_follows_the_clock(api: Api) -> None:
    api.clock.advance(timedelta(minutes=3))
    event_id = _create(
        api, "track", track(), sent_at="2026-03-14T00:00:00Z", trusted_client_clock=True
    )
    detail = assert_ok(api.get(f"/events/{event_id}"))
    assert detail["captured_at"] == "2026-03-14T00:00:00.000000Z"
    assert detail["loaded_at"] == "2026-03-15T12:03:00.000000Z"


# -- GET /event-types ---------------------------------------------------------


@pytest.fixture
def subtypes(api: Api) -> None:
    plan = [("api-call", 3), ("api_upload", 2), ("query_run", 1), ("100%-done", 1)]
    for name, count in plan:
        for _ in range(count):
            _create(api, "track", track(name))
            api.clock.advance(timedelta(minutes=1))
    _create(api, "identify", body("identify"))  # no subtype: not a row


def test_event_types_rows(api: Api, subtypes: None) -> None:
    rows = assert_ok(api.get("/event-types"), 200, params={"limit": 100, "offset": 0})
    by_subtype = {r["event_subtype"]: r for r in rows}
    assert set(by_subtype) == {"api-call", "api_upload", "query_run", "100%-done"}
    assert len(rows) == 4
    assert {k: r["event_count"] for k, r in by_subtype.items()} == {
        "api-call": 3,
        "api_upload": 2,
        "query_run": 1,
        "100%-done": 1,
    }
    for row in rows:
        assert set(row) >= {
            "event_subtype",
            "event_count",
            "company_count",
            "user_count",
            "environment_id",
            "last_seen_at",
        }
        assert row["environment_id"] == api.environment_id
        assert type(row["company_count"]) is int and row["company_count"] >= 0
        assert type(row["user_count"]) is int and row["user_count"] >= 0
        assert TIMESTAMP_Z.match(row["last_seen_at"])
    # the latest captured_at of each subtype (events one minute apart from 12:00)
    assert by_subtype["api-call"]["last_seen_at"] == "2026-03-15T12:02:00.000000Z"
    assert by_subtype["api_upload"]["last_seen_at"] == "2026-03-15T12:04:00.000000Z"
    assert by_subtype["query_run"]["last_seen_at"] == "2026-03-15T12:05:00.000000Z"
    assert by_subtype["100%-done"]["last_seen_at"] == "2026-03-15T12:06:00.000000Z"


def test_event_types_q_substring(api: Api, subtypes: None) -> None:
    rows = assert_ok(
        api.get("/event-types", params={"q": "api"}),
        200,
        params={"q": "api", "limit": 100, "offset": 0},
    )
    assert sorted(r["event_subtype"] for r in rows) == ["api-call", "api_upload"]
    rows = assert_ok(api.get("/event-types", params={"q": "run"}))
    assert [r["event_subtype"] for r in rows] == ["query_run"]
    # LIKE wildcards are literal characters
    rows = assert_ok(api.get("/event-types", params={"q": "_"}))
    assert sorted(r["event_subtype"] for r in rows) == ["api_upload", "query_run"]
    rows = assert_ok(api.get("/event-types", params={"q": "%"}))
    assert [r["event_subtype"] for r in rows] == ["100%-done"]
    assert assert_ok(api.get("/event-types", params={"q": "zzz"})) == []


def test_event_types_subtypes_repeated(api: Api, subtypes: None) -> None:
    response = api.client.get(
        "/event-types?q=api&event_subtypes=api-call&event_subtypes=query_run&limit=5&offset=0",
        headers=api.headers(api.secret),
    )
    rows = assert_ok(
        response,
        200,
        params={"q": "api", "event_subtypes": ["api-call", "query_run"], "limit": 5, "offset": 0},
    )
    assert [r["event_subtype"] for r in rows] == ["api-call"]
    rows = assert_ok(
        api.get(
            "/event-types", params=[("event_subtypes", "api-call"), ("event_subtypes", "query_run")]
        )
    )
    assert sorted(r["event_subtype"] for r in rows) == ["api-call", "query_run"]
    rows = assert_ok(api.get("/event-types", params={"event_subtypes": "api"}))
    assert rows == []  # exact match, not a substring


def test_event_types_limit_offset(api: Api, subtypes: None) -> None:
    everything = [r["event_subtype"] for r in assert_ok(api.get("/event-types"))]
    page = assert_ok(
        api.get("/event-types", params={"limit": 2, "offset": 1}),
        200,
        params={"limit": 2, "offset": 1},
    )
    assert [r["event_subtype"] for r in page] == everything[1:3]
    assert_error(api.get("/event-types", params={"limit": 251}), 400, contains="limit")
    assert_error(api.get("/event-types", params={"q": "q" * 513}), 400, contains="q")


def test_event_types_empty(api: Api) -> None:
    assert assert_ok(api.get("/event-types"), 200, params={"limit": 100, "offset": 0}) == []
