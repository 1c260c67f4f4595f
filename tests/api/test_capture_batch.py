"""POST /batch, the SDK's buffered capture call: at most 100 events; a bad event
is stored ``failed`` with its ``error_message`` and the batch still gets 2xx."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.conftest import NOW_TEXT, Api
from tests.api.helpers import EVENT_ID, assert_error, assert_ok, body, track

MSG_PAST_TRUSTED = (
    "sent_at cannot be more than 34 days in the past for trusted_client_clock; "
    "for older events use backfill (analytics-only, no billing side effects)"
)


def _capture(api: Api, events: list[Any], *, key: str | None = "") -> list[dict[str, Any]]:
    response = api.post("/batch", {"events": events}, key=key)
    assert 200 <= response.status_code < 300, response.text
    data = assert_ok(response, response.status_code, params={})
    assert list(data) == ["events"]
    results: list[dict[str, Any]] = data["events"]
    assert len(results) == len(events)
    for item in results:
        assert EVENT_ID.match(item["event_id"]), item
    return results


def _by_id(api: Api) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in api.list_events(limit=250)}


def test_sdk_batch_verbatim(api: Api) -> None:
    """The body the Python SDK 1.4.6 sends (WIRE-NOTES), dates moved into the window."""
    raw = (
        '{"events":['
        '{"api_key":"sch_dev_test123","body":{"company":{"keys":{"id":"acme"},"name":"Acme Inc",'
        '"traits":{"city":"Atlanta"}},"keys":{"email":"u@example.com","user_id":"u1"},'
        '"name":"Wile E.","traits":{"login_count":24,"is_staff":false}},"type":"identify"},'
        '{"api_key":"sch_dev_test123","body":{"company":{"id":"acme"},"event":"api-call",'
        '"quantity":5,"traits":{"x":1},"user":{"email":"u@example.com"}},"type":"track"},'
        '{"api_key":"sch_dev_test123","body":{"company":{"id":"acme"},"event":"api-call",'
        '"quantity":null,"traits":null,"user":null},"type":"track"},'
        '{"api_key":"sch_dev_test123","body":{"company":{"id":"acme"},"event":"api-call",'
        '"quantity":50,"traits":null,"user":null},"type":"track","idempotency_key":"idem-1",'
        '"sent_at":"2026-03-01T12:00:00Z","trusted_client_clock":true}]}'
    )
    response = api.post(
        "/batch", content=raw.encode(), key=api.secret, headers={"Content-Type": "application/json"}
    )
    data = assert_ok(response, 200, params={})
    assert [item["status"] for item in data["events"]] == ["pending"] * 4
    stored = _by_id(api)
    rows = [stored[item["event_id"]] for item in data["events"]]
    assert [r["type"] for r in rows] == ["identify", "track", "track", "track"]
    assert [r["quantity"] for r in rows] == [1, 5, 1, 50]
    assert [r["captured_at"] for r in rows] == [NOW_TEXT] * 3 + ["2026-03-01T12:00:00.000000Z"]
    assert rows[3]["idempotency_key"] == "idem-1"
    assert rows[0]["body"] == json.loads(raw)["events"][0]["body"]


def test_100_events_accepted(api: Api) -> None:
    events = [{"type": "track", "body": track(quantity=i + 1)} for i in range(100)]
    results = _capture(api, events)
    assert {r["status"] for r in results} == {"pending"}
    assert len(api.list_events(limit=250)) == 100


def test_101_events_400_batch_too_large(api: Api) -> None:
    events = [{"type": "track", "body": track()} for _ in range(101)]
    response = api.post("/batch", {"events": events})
    assert response.status_code == 400
    assert response.json() == {"error": "batch too large", "max_size": 100}
    assert api.list_events() == []


def test_bad_event_between_two_valid_ones(api: Api) -> None:
    events = [
        {"type": "track", "body": track("first")},
        {"type": "track", "body": {"quantity": 3, "company": {"id": "acme"}}},  # no `event`
        {"type": "identify", "body": body("identify")},
    ]
    results = _capture(api, events)
    assert [r["status"] for r in results] == ["pending", "failed", "pending"]
    assert "error_message" not in results[0]
    assert "error_message" not in results[2]
    assert "`event`" in results[1]["error_message"]

    listed = api.list_events()
    assert [e["id"] for e in listed] == [r["event_id"] for r in reversed(results)]
    stored = {e["id"]: e for e in listed}
    good_1, bad, good_2 = (stored[r["event_id"]] for r in results)
    assert good_1["status"] == "pending" and good_2["status"] == "pending"
    assert "error_message" not in good_1 and "error_message" not in good_2
    assert bad["status"] == "failed"
    assert bad["error_message"] == results[1]["error_message"]
    assert bad["type"] == "track"
    assert isinstance(bad["body"], dict)
    assert isinstance(bad["body_preview"], str)
    assert isinstance(bad["quantity"], int)
    detail = assert_ok(api.get(f"/events/{bad['id']}"))
    assert detail["status"] == "failed"
    assert detail["error_message"] == results[1]["error_message"]


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"type": "nope", "body": {"event": "a"}}, "type"),
        ({"body": {"event": "a"}}, "type"),
        ({"type": "track"}, "body"),
        ({"type": "track", "body": None}, "body"),
        ({"type": "track", "body": "api-call"}, "body"),
        ({"type": "track", "body": {"event": "a", "quantity": 0}}, "non-zero"),
        ({"type": "track", "body": {"event": "a", "quantity": "2"}}, "quantity"),
        ({"type": "identify", "body": {"name": "no keys"}}, "keys"),
        ({"type": "flag_check", "body": {"flag_key": "f"}}, "reason"),
        ({"type": "inference", "body": {"company": {"id": "acme"}}}, "input_tokens"),
        (
            {"type": "track", "body": {"event": "a"}, "idempotency_key": "k" * 256},
            "idempotency_key",
        ),
        ({"type": "track", "body": {"event": "a"}, "trusted_client_clock": True}, "sent_at"),
        ({"type": 5, "body": {"event": "a"}}, "type"),
        ("not an object", "event"),
        (None, "event"),
        ([1], "event"),
    ],
    ids=[
        "unknown-type",
        "no-type",
        "no-body",
        "null-body",
        "string-body",
        "quantity-0",
        "quantity-str",
        "identify-no-keys",
        "flag-no-reason",
        "inference-partial",
        "long-key",
        "no-sent-at",
        "int-type",
        "string",
        "null",
        "array",
    ],
)
def test_each_kind_of_bad_event_is_stored_failed(api: Api, bad: Any, needle: str) -> None:
    events = [
        {"type": "track", "body": track("before")},
        bad,
        {"type": "track", "body": track("after")},
    ]
    results = _capture(api, events)
    assert [r["status"] for r in results] == ["pending", "failed", "pending"]
    assert needle in results[1]["error_message"]
    stored = _by_id(api)
    assert len(stored) == 3
    failed = stored[results[1]["event_id"]]
    assert failed["status"] == "failed"
    assert failed["error_message"] == results[1]["error_message"]
    for field in (
        "id",
        "type",
        "body",
        "body_preview",
        "captured_at",
        "quantity",
        "feature_ids",
        "features",
    ):
        assert field in failed, field
    assert isinstance(failed["body"], dict)


def test_clock_rule_failures_carry_the_exact_message(api: Api) -> None:
    events = [
        {
            "type": "track",
            "body": track(),
            "sent_at": "2026-02-09T11:59:59Z",
            "trusted_client_clock": True,
        },
        {
            "type": "track",
            "body": track(),
            "sent_at": "2026-02-09T12:00:00Z",
            "trusted_client_clock": True,
        },
    ]
    results = _capture(api, events)
    assert results[0] == {
        "event_id": results[0]["event_id"],
        "status": "failed",
        "error_message": MSG_PAST_TRUSTED,
    }
    assert results[1]["status"] == "pending"
    stored = _by_id(api)
    assert stored[results[0]["event_id"]]["error_message"] == MSG_PAST_TRUSTED
    assert stored[results[1]["event_id"]]["captured_at"] == "2026-02-09T12:00:00.000000Z"


def test_publishable_clock_and_negative_quantity_fail(api: Api) -> None:
    events = [
        {"type": "track", "body": track(), "sent_at": "2026-03-15T11:00:00Z", "backfill": True},
        {"type": "track", "body": track(quantity=-2)},
        {"type": "track", "body": track(quantity=2)},
    ]
    results = _capture(api, events, key=api.publishable)
    assert [r["status"] for r in results] == ["failed", "failed", "pending"]
    assert (
        results[0]["error_message"] == "trusted_client_clock and backfill require a secret API key"
    )
    assert "secret" in results[1]["error_message"]


def test_event_type_alias_of_type(api: Api) -> None:
    results = _capture(
        api,
        [
            {"event_type": "track", "body": track("go-sdk")},
            {"event_type": "identify", "body": body("identify")},
        ],
    )
    assert [r["status"] for r in results] == ["pending", "pending"]
    stored = _by_id(api)
    assert [stored[r["event_id"]]["type"] for r in results] == ["track", "identify"]
    assert stored[results[0]["event_id"]]["subtype"] == "go-sdk"


def test_sent_at_without_flag_is_ignored(api: Api) -> None:
    results = _capture(
        api,
        [
            {"type": "track", "body": track(), "sent_at": "2026-01-01T00:00:00Z"},
            {"type": "track", "body": track(), "sent_at": "garbage"},
        ],
    )
    assert [r["status"] for r in results] == ["pending", "pending"]
    stored = _by_id(api)
    assert [stored[r["event_id"]]["captured_at"] for r in results] == [NOW_TEXT, NOW_TEXT]


def test_naive_sent_at_on_capture_is_utc(api: Api) -> None:
    results = _capture(
        api,
        [
            {
                "type": "track",
                "body": track(),
                "sent_at": "2026-03-15T11:00:00.123456",
                "trusted_client_clock": True,
            }
        ],
    )
    stored = _by_id(api)
    assert stored[results[0]["event_id"]]["captured_at"] == "2026-03-15T11:00:00.123456Z"


def test_oversized_event_is_failed_without_its_body(api: Api) -> None:
    big = track(traits={"pad": "x" * (33 * 1024)})
    results = _capture(
        api, [{"type": "track", "body": track("small")}, {"type": "track", "body": big}]
    )
    assert [r["status"] for r in results] == ["pending", "failed"]
    assert "32 KiB" in results[1]["error_message"]
    failed = _by_id(api)[results[1]["event_id"]]
    assert failed["status"] == "failed"
    assert failed["body"] == {}
    assert "x" * 100 not in failed["body_preview"]


def test_request_over_4_mib_413(api: Api) -> None:
    # 100 events of ~30 KB each: under 4 MiB, accepted
    events = [{"type": "track", "body": track(traits={"pad": "x" * 30_000})} for _ in range(100)]
    assert_ok(api.post("/batch", {"events": events}), 200)
    assert len(api.list_events(limit=250)) == 100
    # 100 events of ~43 KB each: over 4 MiB (each event is over 32 KiB too, but the
    # request as a whole is refused, and nothing of it is stored)
    huge = [{"type": "track", "body": track(traits={"pad": "y" * 43_000})} for _ in range(100)]
    assert_error(api.post("/batch", {"events": huge}), 413, contains="4 MiB")
    assert len(api.list_events(limit=250)) == 100


@pytest.mark.parametrize(
    "raw",
    [b"{bad", b"[]", b"{}", b'{"events": null}', b'{"events": "x"}', b"null"],
    ids=["malformed", "array", "no-events", "null-events", "string-events", "null"],
)
def test_malformed_batch_400(api: Api, raw: bytes) -> None:
    assert_error(api.post("/batch", content=raw, key=api.secret), 400)
    assert api.list_events() == []


def test_empty_body_400(api: Api) -> None:
    assert_error(api.post("/batch", content=b"", key=api.secret), 400, contains="empty")


def test_empty_events_list_2xx(api: Api) -> None:
    assert _capture(api, []) == []
