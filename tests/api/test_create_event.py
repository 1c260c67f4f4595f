"""POST /events: what it accepts, what it refuses (400/413), and that a refused
request stores nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.conftest import NOW_TEXT, Api
from tests.api.helpers import (
    BODIES,
    REQUIRED_FIELDS,
    assert_error,
    assert_ok,
    assert_raw_event,
    body,
    track,
)

MAX_EVENT_BODY = 32 * 1024
MAX_REQUEST = 4 * 1024 * 1024


def _stored_nothing(api: Api) -> None:
    assert api.list_events() == []


@pytest.mark.parametrize("event_type", sorted(BODIES))
def test_each_event_type_is_accepted_and_stored_as_received(api: Api, event_type: str) -> None:
    sent = body(event_type)
    event_id = assert_raw_event(assert_ok(api.create(event_type, sent), 201, params={}), NOW_TEXT)
    detail = assert_ok(api.get(f"/events/{event_id}"))
    assert detail["type"] == event_type
    assert detail["status"] == "pending"
    assert detail["body"] == sent


def test_sdk_explicit_nulls_are_absent(api: Api) -> None:
    """The SDK sends ``null`` for every unset optional field."""
    payload = {
        "event_type": "track",
        "body": {
            "event": "api-call",
            "company": {"id": "acme"},
            "quantity": None,
            "traits": None,
            "user": None,
        },
        "sent_at": None,
        "idempotency_key": None,
        "trusted_client_clock": None,
        "backfill": None,
    }
    event_id = assert_raw_event(assert_ok(api.post("/events", payload), 201), NOW_TEXT)
    detail = assert_ok(api.get(f"/events/{event_id}"))
    assert detail["quantity"] == 1
    assert detail["captured_at"] == NOW_TEXT
    identify = {"keys": {"id": "u2"}, "company": None, "name": None, "traits": None}
    assert_ok(api.create("identify", identify), 201)


def test_unknown_top_level_fields_are_tolerated(api: Api) -> None:
    payload = {"event_type": "track", "body": track(), "reservation_id": "r1", "extra": [1, 2]}
    assert_ok(api.post("/events", payload), 201)


# -- malformed requests -------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{bad", b'{"event_type": "track",', b"not json", b"\xff\xfe{}", b'{"event_type": "track"} x'],
    ids=["broken-object", "truncated", "text", "bad-utf8", "trailing-garbage"],
)
def test_malformed_json_400(api: Api, raw: bytes) -> None:
    response = api.post("/events", content=raw, key=api.secret)
    assert_error(response, 400)
    _stored_nothing(api)


@pytest.mark.parametrize(
    "raw", [b"[]", b'[{"event_type": "track"}]', b'"track"', b"42", b"null", b"true"]
)
def test_json_that_is_not_an_object_400(api: Api, raw: bytes) -> None:
    assert_error(api.post("/events", content=raw, key=api.secret), 400)
    _stored_nothing(api)


def test_empty_body_400(api: Api) -> None:
    message = assert_error(api.post("/events", content=b"", key=api.secret), 400)
    assert "empty" in message
    assert_error(api.client.post("/events", headers=api.headers(api.secret)), 400)
    _stored_nothing(api)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"event_type": 5, "body": {"event": "a"}}, "event_type"),
        ({"event_type": ["track"], "body": {"event": "a"}}, "event_type"),
        ({"event_type": "track", "body": {"event": "a"}, "idempotency_key": 7}, "idempotency_key"),
        ({"event_type": "track", "body": {"event": "a"}, "sent_at": 1767225600}, "sent_at"),
        (
            {"event_type": "track", "body": {"event": "a"}, "trusted_client_clock": "yes"},
            "trusted_client_clock",
        ),
        ({"event_type": "track", "body": {"event": "a"}, "backfill": 1}, "backfill"),
        ({"event_type": "track", "body": "api-call"}, "body"),
        ({"event_type": "track", "body": ["api-call"]}, "body"),
        ({"event_type": "track", "body": {"event": 5}}, "event"),
        ({"event_type": "track", "body": {"event": "a", "quantity": "5"}}, "quantity"),
        ({"event_type": "track", "body": {"event": "a", "quantity": 1.5}}, "quantity"),
        ({"event_type": "track", "body": {"event": "a", "company": {"id": 5}}}, "company"),
        ({"event_type": "track", "body": {"event": "a", "user": "u1"}}, "user"),
        ({"event_type": "track", "body": {"event": "a", "traits": [1]}}, "traits"),
        ({"event_type": "identify", "body": {"keys": "u1"}}, "keys"),
        (
            {"event_type": "identify", "body": {"keys": {"id": "u1"}, "company": {"name": "x"}}},
            "keys",
        ),
        ({"event_type": "flag_check", "body": {**body("flag_check"), "value": "yes"}}, "value"),
        (
            {"event_type": "inference", "body": {**body("inference"), "input_tokens": "100"}},
            "input_tokens",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_wrong_field_types_400(api: Api, payload: dict[str, Any], field: str) -> None:
    assert_error(api.post("/events", payload), 400, contains=field)
    _stored_nothing(api)


@pytest.mark.parametrize("event_type", ["nope", "Track", "", "event", "unknown"])
def test_unknown_event_type_400(api: Api, event_type: str) -> None:
    message = assert_error(api.create(event_type, {"event": "a"}), 400)
    assert "event_type" in message
    _stored_nothing(api)


def test_missing_event_type_400(api: Api) -> None:
    assert_error(api.post("/events", {"body": track()}), 400, contains="event_type")
    assert_error(
        api.post("/events", {"event_type": None, "body": track()}), 400, contains="event_type"
    )
    _stored_nothing(api)


@pytest.mark.parametrize("event_type", sorted(BODIES))
def test_missing_body_400(api: Api, event_type: str) -> None:
    assert_error(api.post("/events", {"event_type": event_type}), 400, contains="body")
    assert_error(
        api.post("/events", {"event_type": event_type, "body": None}), 400, contains="body"
    )
    _stored_nothing(api)


@pytest.mark.parametrize(
    ("event_type", "field"),
    [(t, f) for t, fields in sorted(REQUIRED_FIELDS.items()) for f in fields],
)
def test_missing_required_body_field_400(api: Api, event_type: str, field: str) -> None:
    sent = body(event_type)
    del sent[field]
    assert_error(api.create(event_type, sent), 400, contains=f"`{field}`")
    _stored_nothing(api)


@pytest.mark.parametrize(
    ("event_type", "field"),
    [(t, f) for t, fields in sorted(REQUIRED_FIELDS.items()) for f in fields],
)
def test_null_required_body_field_400(api: Api, event_type: str, field: str) -> None:
    assert_error(api.create(event_type, body(event_type, **{field: None})), 400, contains=field)
    _stored_nothing(api)


def test_identify_company_without_keys_400(api: Api) -> None:
    sent = body("identify", company={"name": "Acme"})
    assert_error(api.create("identify", sent), 400, contains="keys")
    _stored_nothing(api)


@pytest.mark.parametrize("event_type", ["identify", "track"])
def test_empty_body_object_400(api: Api, event_type: str) -> None:
    assert_error(api.create(event_type, {}), 400)
    _stored_nothing(api)


# -- sizes --------------------------------------------------------------------


def _track_of_size(size: int) -> bytes:
    """A track body whose JSON encoding (as sent) is exactly ``size`` bytes."""
    head = b'{"event":"big","traits":{"pad":"'
    tail = b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def _envelope(raw_body: bytes) -> bytes:
    return b'{"event_type":"track","body":' + raw_body + b"}"


def test_event_body_of_exactly_32_kib_accepted(api: Api) -> None:
    raw = _track_of_size(MAX_EVENT_BODY)
    assert len(raw) == MAX_EVENT_BODY
    response = api.post("/events", content=_envelope(raw), key=api.secret)
    event_id = assert_raw_event(assert_ok(response, 201))
    detail = assert_ok(api.get(f"/events/{event_id}"))
    assert detail["body"] == json.loads(raw)


def test_event_body_over_32_kib_413(api: Api) -> None:
    raw = _track_of_size(MAX_EVENT_BODY + 1)
    response = api.post("/events", content=_envelope(raw), key=api.secret)
    assert_error(response, 413, contains="32 KiB")
    _stored_nothing(api)


def test_request_over_4_mib_413(api: Api) -> None:
    raw = _envelope(_track_of_size(MAX_REQUEST))
    assert len(raw) > MAX_REQUEST
    assert_error(api.post("/events", content=raw, key=api.secret), 413, contains="4 MiB")
    _stored_nothing(api)


def test_request_over_4_mib_without_content_length_413(api: Api) -> None:
    raw = _envelope(_track_of_size(MAX_REQUEST))

    def chunks() -> Any:
        for start in range(0, len(raw), 64 * 1024):
            yield raw[start : start + 64 * 1024]

    response = api.post("/events", content=chunks(), key=api.secret)
    assert_error(response, 413, contains="4 MiB")
    _stored_nothing(api)


def test_bad_content_length_400(api: Api) -> None:
    headers = {**api.headers(api.secret), "Content-Length": "abc"}
    response = api.client.post("/events", headers=headers, content=b"{}")
    assert_error(response, 400, contains="Content-Length")


# -- quantity -----------------------------------------------------------------


def test_quantity_defaults_to_1(api: Api) -> None:
    sent = track()
    del sent["quantity"]
    event_id = assert_raw_event(assert_ok(api.create("track", sent), 201))
    assert assert_ok(api.get(f"/events/{event_id}"))["quantity"] == 1


def test_negative_quantity_with_secret_key_201(api: Api) -> None:
    event_id = assert_raw_event(assert_ok(api.create("track", track(quantity=-5)), 201))
    detail = assert_ok(api.get(f"/events/{event_id}"))
    assert detail["quantity"] == -5
    assert isinstance(detail["quantity"], int)


def test_negative_quantity_with_publishable_key_400(api: Api) -> None:
    response = api.create("track", track(quantity=-5), key=api.publishable)
    assert_error(response, 400, contains="secret")
    _stored_nothing(api)


def test_quantity_zero_400(api: Api) -> None:
    assert_error(api.create("track", track(quantity=0)), 400, contains="non-zero")
    assert_error(api.create("track", track(quantity=0), key=api.publishable), 400)
    _stored_nothing(api)


def test_quantity_is_64_bit(api: Api) -> None:
    big = 2**63 - 1
    event_id = assert_raw_event(assert_ok(api.create("track", track(quantity=big)), 201))
    assert assert_ok(api.get(f"/events/{event_id}"))["quantity"] == big
    small = -(2**63)
    event_id = assert_raw_event(assert_ok(api.create("track", track(quantity=small)), 201))
    assert assert_ok(api.get(f"/events/{event_id}"))["quantity"] == small
    assert_error(api.create("track", track(quantity=2**63)), 400, contains="quantity")
    assert_error(api.create("track", track(quantity=-(2**63) - 1)), 400, contains="quantity")
    assert len(api.list_events()) == 2


# -- idempotency key shape ----------------------------------------------------


def test_idempotency_key_of_255_chars_ok_256_refused(api: Api) -> None:
    assert_ok(api.create("track", track(), idempotency_key="k" * 255), 201)
    assert_error(
        api.create("track", track(), idempotency_key="k" * 256), 400, contains="idempotency_key"
    )
    assert len(api.list_events()) == 1
