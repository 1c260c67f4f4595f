"""``tally.ingest.parse``: request bytes → ``NewEvent`` records, every rule applied."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tally.clock import to_micros
from tally.errors import Forbidden, Invalid, TooLarge
from tally.ingest.parse import (
    BatchTooLarge,
    Context,
    parse_capture_batch,
    parse_create_event,
    parse_event_batch,
)
from tally.model import ApiKey, NewEvent

RECEIVED = datetime(2026, 3, 15, 12, 0, 0, tzinfo=UTC)
RECEIVED_US = to_micros(RECEIVED)
ENV = "env_01test"

SECRET = ApiKey(
    id="key_secret",
    environment_id=ENV,
    kind="secret",
    read_only=False,
    prefix="sch_dev_abcdef",
    created_at=0,
)
PUBLISHABLE = ApiKey(
    id="key_pub",
    environment_id=ENV,
    kind="publishable",
    read_only=False,
    prefix="api_abcdefghij",
    created_at=0,
)
READ_ONLY = ApiKey(
    id="key_ro",
    environment_id=ENV,
    kind="secret",
    read_only=True,
    prefix="sch_dev_readon",
    created_at=0,
)

TYPES_TEXT = "flag_check, identify, inference, track"
SPEC_NEEDS_SECRET = "trusted_client_clock and backfill require a secret API key"
SPEC_NEEDS_SENT_AT = "sent_at is required when trusted_client_clock or backfill is true"

IDENTIFY = {
    "keys": {"email": "ann@acme.test"},
    "name": "Ann",
    "traits": {"plan": "pro"},
    "company": {"keys": {"domain": "acme.test"}, "name": "Acme", "traits": {"seats": 4}},
}
TRACK = {"event": "query_run", "company": {"id": "c1"}, "user": {"id": "u1"}, "quantity": 3}
FLAG_CHECK = {
    "flag_key": "new-ui",
    "reason": "rule match",
    "value": True,
    "flag_id": "flag_123",
    "company_id": "comp_123",
    "user_id": "user_123",
}
INFERENCE = {
    "company": {"id": "c1"},
    "input_tokens": 120,
    "output_tokens": 80,
    "provider": "openai",
    "response_model": "gpt-4o",
}
BODIES = {"identify": IDENTIFY, "track": TRACK, "flag_check": FLAG_CHECK, "inference": INFERENCE}


def ctx(key: ApiKey = SECRET, **kwargs: Any) -> Context:
    return Context(
        key=key,
        received_at=RECEIVED,
        remote_ip="203.0.113.7",
        user_agent="test-agent/1.0",
        **kwargs,
    )


def enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def create(obj: Any, key: ApiKey = SECRET, **kwargs: Any) -> NewEvent:
    return parse_create_event(enc(obj), ctx(key, **kwargs))


def refused(obj: Any, key: ApiKey = SECRET, exc: type[Exception] = Invalid) -> str:
    data = obj if isinstance(obj, bytes) else enc(obj)
    with pytest.raises(exc) as info:
        parse_create_event(data, ctx(key))
    return info.value.message  # type: ignore[attr-defined]


def body_of_size(size: int) -> dict[str, Any]:
    """A valid track body whose compact JSON is exactly ``size`` bytes."""
    base = {"event": "big", "traits": {"pad": ""}}
    overhead = len(json.dumps(base, separators=(",", ":")))
    body = {"event": "big", "traits": {"pad": "x" * (size - overhead)}}
    assert len(json.dumps(body, separators=(",", ":"))) == size
    return body


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# -- POST /events: the record it builds --------------------------------------------


def test_track_event_record() -> None:
    ev = create({"event_type": "track", "body": TRACK, "idempotency_key": "abc"})
    assert ev.environment_id == ENV
    assert ev.type == "track"
    assert ev.status == "pending"
    assert json.loads(ev.body) == TRACK
    assert ev.subtype == "query_run"
    assert ev.quantity == 3
    assert ev.captured_at == RECEIVED_US
    assert ev.received_at == RECEIVED_US
    assert ev.idempotency_key == "abc"
    assert ev.sent_at is None
    assert ev.trusted_client_clock is False
    assert ev.backfill is False
    assert ev.error_message is None
    assert ev.api_key_id == "key_secret"
    assert ev.remote_ip == "203.0.113.7"
    assert ev.user_agent == "test-agent/1.0"
    assert (ev.company_id, ev.user_id, ev.flag_id) == (None, None, None)


def test_body_is_stored_as_received_byte_for_byte() -> None:
    data = b'{"event_type": "track", "body": {"event" :  "x",  "traits": {"b": 1, "a": 2}}}'
    ev = parse_create_event(data, ctx())
    assert ev.body == '{"event" :  "x",  "traits": {"b": 1, "a": 2}}'


def test_track_quantity_defaults_to_one() -> None:
    ev = create({"event_type": "track", "body": {"event": "x"}})
    assert ev.quantity == 1


def test_identify_event_record() -> None:
    ev = create({"event_type": "identify", "body": IDENTIFY})
    assert ev.type == "identify"
    assert ev.status == "pending"
    assert ev.subtype is None
    assert ev.quantity == 1
    assert json.loads(ev.body) == IDENTIFY


def test_flag_check_fills_flag_company_and_user_ids() -> None:
    ev = create({"event_type": "flag_check", "body": FLAG_CHECK})
    assert ev.type == "flag_check"
    assert ev.flag_id == "flag_123"
    assert ev.company_id == "comp_123"
    assert ev.user_id == "user_123"
    assert ev.subtype is None
    assert ev.quantity == 1


def test_flag_check_without_optional_ids_leaves_them_empty() -> None:
    body = {"flag_key": "k", "reason": "default", "value": False}
    ev = create({"event_type": "flag_check", "body": body})
    assert (ev.flag_id, ev.company_id, ev.user_id) == (None, None, None)


def test_inference_event_is_stored_as_received() -> None:
    ev = create({"event_type": "inference", "body": INFERENCE})
    assert ev.type == "inference"
    assert ev.status == "pending"
    assert json.loads(ev.body) == INFERENCE


def test_unknown_fields_are_tolerated() -> None:
    ev = create({"event_type": "track", "body": {"event": "x", "extra": [1]}, "whatever": 1})
    assert ev.subtype == "x"


# -- explicit nulls -----------------------------------------------------------------


def test_explicit_nulls_are_treated_as_absent() -> None:
    ev = create(
        {
            "event_type": "track",
            "body": {
                "event": "x",
                "company": None,
                "user": None,
                "traits": None,
                "quantity": None,
                "lease_id": None,
            },
            "sent_at": None,
            "idempotency_key": None,
            "trusted_client_clock": None,
            "backfill": None,
        }
    )
    assert ev.quantity == 1
    assert ev.idempotency_key is None
    assert ev.sent_at is None
    assert ev.trusted_client_clock is False
    assert ev.backfill is False
    assert ev.captured_at == RECEIVED_US


def test_explicit_nulls_in_identify_and_flag_check_bodies() -> None:
    ident = create(
        {
            "event_type": "identify",
            "body": {"keys": {"id": "u"}, "name": None, "traits": None, "company": None},
        }
    )
    assert ident.status == "pending"
    flag = create(
        {
            "event_type": "flag_check",
            "body": {
                **FLAG_CHECK,
                "flag_id": None,
                "company_id": None,
                "user_id": None,
                "error": None,
            },
        }
    )
    assert (flag.flag_id, flag.company_id, flag.user_id) == (None, None, None)


# -- sent_at forms -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-14T10:00:00Z", datetime(2026, 3, 14, 10, 0, tzinfo=UTC)),
        ("2026-03-14T12:00:00+02:00", datetime(2026, 3, 14, 10, 0, tzinfo=UTC)),
        ("2026-03-14T10:00:00-05:30", datetime(2026, 3, 14, 15, 30, tzinfo=UTC)),
        ("2026-03-14T10:00:00", datetime(2026, 3, 14, 10, 0, tzinfo=UTC)),
        ("2026-03-14T10:00:00.123456Z", datetime(2026, 3, 14, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-03-14T10:00:00.5", datetime(2026, 3, 14, 10, 0, 0, 500000, tzinfo=UTC)),
        ("20260314T100000Z", datetime(2026, 3, 14, 10, 0, tzinfo=UTC)),
    ],
)
def test_trusted_sent_at_forms(text: str, expected: datetime) -> None:
    ev = create(
        {
            "event_type": "track",
            "body": {"event": "x"},
            "sent_at": text,
            "trusted_client_clock": True,
        }
    )
    assert ev.sent_at == to_micros(expected)
    assert ev.captured_at == to_micros(expected)
    assert ev.received_at == RECEIVED_US
    assert ev.trusted_client_clock is True
    assert ev.backfill is False


def test_backfill_takes_sent_at_and_sets_both_flags() -> None:
    sent = RECEIVED - timedelta(days=200)
    ev = create(
        {
            "event_type": "track",
            "body": {"event": "x"},
            "sent_at": sent.isoformat(),
            "backfill": True,
        }
    )
    assert ev.captured_at == to_micros(sent)
    assert ev.trusted_client_clock is True
    assert ev.backfill is True


def test_sent_at_without_a_clock_flag_does_not_move_captured_at() -> None:
    ev = create({"event_type": "track", "body": {"event": "x"}, "sent_at": "2026-03-01T00:00:00Z"})
    assert ev.captured_at == RECEIVED_US
    assert ev.sent_at == to_micros(datetime(2026, 3, 1, tzinfo=UTC))
    assert ev.trusted_client_clock is False


def test_sent_at_without_a_clock_flag_may_be_anything() -> None:
    """Far in the future or the past, even unparseable: without a flag it is ignored."""
    for text in ("2099-01-01T00:00:00Z", "1999-01-01T00:00:00Z"):
        ev = create({"event_type": "track", "body": {"event": "x"}, "sent_at": text}, PUBLISHABLE)
        assert ev.captured_at == RECEIVED_US
    ev = create({"event_type": "track", "body": {"event": "x"}, "sent_at": "yesterday"})
    assert ev.status == "pending"
    assert ev.captured_at == RECEIVED_US
    assert ev.sent_at is None


def test_out_of_range_sent_at_without_a_clock_flag_is_ignored() -> None:
    """``0001-01-01T00:00:00+01:00`` is ISO-8601 but before year 1 in UTC; without a
    clock flag sent_at is ignored, so the event must be accepted."""
    ev = create(
        {"event_type": "track", "body": {"event": "x"}, "sent_at": "0001-01-01T00:00:00+01:00"}
    )
    assert ev.status == "pending"
    assert ev.captured_at == RECEIVED_US
    assert ev.sent_at is None


def test_out_of_range_sent_at_with_a_clock_flag_is_invalid() -> None:
    message = refused(
        {
            "event_type": "track",
            "body": {"event": "x"},
            "sent_at": "9999-12-31T23:59:59-01:00",
            "trusted_client_clock": True,
        }
    )
    assert message.startswith("sent_at ")


def test_unparseable_sent_at_with_a_clock_flag_is_refused() -> None:
    message = refused(
        {
            "event_type": "track",
            "body": {"event": "x"},
            "sent_at": "yesterday",
            "trusted_client_clock": True,
        }
    )
    assert "sent_at" in message
    assert "ISO-8601" in message


def test_clock_flag_from_a_publishable_key_is_refused_with_the_spec_message() -> None:
    for flag in ("trusted_client_clock", "backfill"):
        message = refused(
            {
                "event_type": "track",
                "body": {"event": "x"},
                "sent_at": "2026-03-15T11:00:00Z",
                flag: True,
            },
            PUBLISHABLE,
        )
        assert message == SPEC_NEEDS_SECRET


def test_clock_flag_without_sent_at_is_refused_with_the_spec_message() -> None:
    message = refused({"event_type": "track", "body": {"event": "x"}, "trusted_client_clock": True})
    assert message == SPEC_NEEDS_SENT_AT


def test_clock_flag_false_is_a_normal_event() -> None:
    ev = create(
        {
            "event_type": "track",
            "body": {"event": "x"},
            "sent_at": "2020-01-01T00:00:00Z",
            "trusted_client_clock": False,
            "backfill": False,
        },
        PUBLISHABLE,
    )
    assert ev.captured_at == RECEIVED_US
    assert ev.trusted_client_clock is False


# -- event type and body -------------------------------------------------------------


def test_unknown_event_type_is_refused() -> None:
    message = refused({"event_type": "page", "body": {"event": "x"}})
    assert message == f"event_type must be one of {TYPES_TEXT}, not 'page'"


def test_missing_event_type_is_refused() -> None:
    message = refused({"body": {"event": "x"}})
    assert message == f"event_type is required (one of {TYPES_TEXT})"


@pytest.mark.parametrize("event_type", ["track", "identify", "flag_check", "inference"])
def test_missing_body_is_refused(event_type: str) -> None:
    assert refused({"event_type": event_type}) == f"body is required for {event_type} events"
    assert (
        refused({"event_type": event_type, "body": None})
        == f"body is required for {event_type} events"
    )


@pytest.mark.parametrize(
    ("event_type", "missing"),
    [
        ("identify", "keys"),
        ("track", "event"),
        ("flag_check", "flag_key"),
        ("flag_check", "reason"),
        ("flag_check", "value"),
        ("inference", "company"),
        ("inference", "input_tokens"),
        ("inference", "output_tokens"),
        ("inference", "provider"),
        ("inference", "response_model"),
    ],
)
def test_missing_required_body_field_is_refused(event_type: str, missing: str) -> None:
    body = {k: v for k, v in BODIES[event_type].items() if k != missing}
    message = refused({"event_type": event_type, "body": body})
    assert message.startswith("body is invalid")
    assert f"missing required field `{missing}`" in message


def test_identify_company_without_keys_is_refused() -> None:
    body = {"keys": {"id": "u"}, "company": {"name": "Acme"}}
    message = refused({"event_type": "identify", "body": body})
    assert "missing required field `keys`" in message
    assert "body.company" in message


@pytest.mark.parametrize(
    ("envelope", "where"),
    [
        ({"event_type": "track", "body": {"event": "x", "quantity": "3"}}, "body.quantity"),
        ({"event_type": "track", "body": {"event": "x", "quantity": 1.5}}, "body.quantity"),
        ({"event_type": "track", "body": {"event": 5}}, "body.event"),
        ({"event_type": "track", "body": {"event": "x", "company": {"id": 5}}}, "body.company"),
        ({"event_type": "track", "body": {"event": "x", "traits": [1]}}, "body.traits"),
        ({"event_type": "identify", "body": {"keys": ["a"]}}, "body.keys"),
        ({"event_type": "flag_check", "body": {**FLAG_CHECK, "value": "true"}}, "body.value"),
        (
            {"event_type": "inference", "body": {**INFERENCE, "input_tokens": "9"}},
            "body.input_tokens",
        ),
        ({"event_type": "track", "body": {"event": "x"}, "sent_at": 5}, "request body.sent_at"),
        (
            {"event_type": "track", "body": {"event": "x"}, "idempotency_key": 5},
            "request body.idempotency_key",
        ),
        (
            {"event_type": "track", "body": {"event": "x"}, "trusted_client_clock": "yes"},
            "request body.trusted_client_clock",
        ),
        ({"event_type": 7, "body": {"event": "x"}}, "request body.event_type"),
    ],
)
def test_wrong_types_are_refused_naming_the_field(envelope: dict[str, Any], where: str) -> None:
    message = refused(envelope)
    assert "is invalid" in message
    assert f"`{where}" in message


@pytest.mark.parametrize("body", [[], "text", 5, True])
def test_body_that_is_not_an_object_is_refused(body: Any) -> None:
    message = refused({"event_type": "track", "body": body})
    assert message.startswith("body is invalid: Expected `object`")


def test_request_that_is_not_json_is_refused() -> None:
    assert refused(b"{not json").startswith("request body is not valid JSON")
    assert refused(b"").startswith("request body is not valid JSON")


def test_request_that_is_not_an_object_is_refused() -> None:
    assert refused(b"[]").startswith("request body is invalid: Expected `object`")


# -- quantity and idempotency key through the parser ----------------------------------


def test_zero_quantity_is_refused() -> None:
    assert "non-zero" in refused({"event_type": "track", "body": {"event": "x", "quantity": 0}})


def test_negative_quantity_needs_a_secret_key() -> None:
    body = {"event": "x", "quantity": -4}
    assert "secret API key" in refused({"event_type": "track", "body": body}, PUBLISHABLE)
    assert create({"event_type": "track", "body": body}).quantity == -4


def test_int64_quantity_bounds() -> None:
    top = create(
        {"event_type": "track", "body": {"event": "x", "quantity": 2**63 - 1}}, PUBLISHABLE
    )
    assert top.quantity == 2**63 - 1
    bottom = create({"event_type": "track", "body": {"event": "x", "quantity": -(2**63)}})
    assert bottom.quantity == -(2**63)
    for value in (2**63, -(2**63) - 1):
        message = refused({"event_type": "track", "body": {"event": "x", "quantity": value}})
        assert "body.quantity" in message


def test_idempotency_key_length_limits() -> None:
    ok = create({"event_type": "track", "body": {"event": "x"}, "idempotency_key": "k" * 255})
    assert ok.idempotency_key == "k" * 255
    message = refused({"event_type": "track", "body": {"event": "x"}, "idempotency_key": "k" * 256})
    assert "255" in message
    assert "empty" in refused(
        {"event_type": "track", "body": {"event": "x"}, "idempotency_key": ""}
    )


# -- keys ------------------------------------------------------------------------------


def test_read_only_key_cannot_write() -> None:
    message = refused({"event_type": "track", "body": {"event": "x"}}, READ_ONLY, Forbidden)
    assert message == "read-only API keys cannot write events"


def test_publishable_key_may_send_normal_events() -> None:
    ev = create({"event_type": "track", "body": TRACK}, PUBLISHABLE)
    assert ev.api_key_id == "key_pub"
    assert ev.status == "pending"


# -- body size ---------------------------------------------------------------------------


def test_body_of_exactly_32_kib_is_accepted() -> None:
    body = body_of_size(32 * 1024)
    data = b'{"event_type":"track","body":' + compact(body) + b"}"
    ev = parse_create_event(data, ctx())
    assert len(ev.body.encode()) == 32 * 1024


def test_body_over_32_kib_is_too_large() -> None:
    body = body_of_size(32 * 1024 + 1)
    data = b'{"event_type":"track","body":' + compact(body) + b"}"
    with pytest.raises(TooLarge) as info:
        parse_create_event(data, ctx())
    assert "32769" in info.value.message
    assert "32 KiB" in info.value.message


def test_body_size_counts_utf8_bytes() -> None:
    # 'é' is two bytes: 16,380 of them plus the JSON around is over 32 KiB in bytes
    # while being well under 32 Ki characters.
    body = {"event": "x", "traits": {"name": "é" * 16_380}}
    data = json.dumps({"event_type": "track", "body": body}, ensure_ascii=False).encode()
    with pytest.raises(TooLarge):
        parse_create_event(data, ctx())


def test_body_limit_comes_from_the_context() -> None:
    data = b'{"event_type":"track","body":' + compact(body_of_size(200)) + b"}"
    assert parse_create_event(data, ctx(max_event_body_bytes=200)).subtype == "big"
    with pytest.raises(TooLarge) as info:
        parse_create_event(data, ctx(max_event_body_bytes=199))
    assert "199 bytes" in info.value.message


# -- POST /event-batch ------------------------------------------------------------------


def test_event_batch_returns_one_event_per_input_in_order() -> None:
    events = [
        {"event_type": "identify", "body": IDENTIFY},
        {"event_type": "track", "body": {"event": "first"}},
        {"event_type": "flag_check", "body": FLAG_CHECK},
        {"event_type": "track", "body": {"event": "second"}, "idempotency_key": "k2"},
        {"event_type": "inference", "body": INFERENCE},
    ]
    out = parse_event_batch(enc({"events": events}), ctx())
    assert [e.type for e in out] == ["identify", "track", "flag_check", "track", "inference"]
    assert [e.subtype for e in out] == [None, "first", None, "second", None]
    assert out[3].idempotency_key == "k2"
    assert all(e.status == "pending" for e in out)
    assert all(e.captured_at == RECEIVED_US for e in out)


def test_empty_event_batch_is_empty() -> None:
    assert parse_event_batch(b'{"events": []}', ctx()) == []


def test_event_batch_of_1000_is_accepted() -> None:
    events = [{"event_type": "track", "body": {"event": f"e{i}"}} for i in range(1000)]
    out = parse_event_batch(enc({"events": events}), ctx())
    assert len(out) == 1000
    assert out[999].subtype == "e999"


def test_event_batch_over_1000_is_refused() -> None:
    events = [{"event_type": "track", "body": {"event": "x"}}] * 1001
    with pytest.raises(Invalid) as info:
        parse_event_batch(enc({"events": events}), ctx())
    assert "1000" in info.value.message
    assert "1001" in info.value.message


@pytest.mark.parametrize(
    ("bad", "exc", "cause"),
    [
        ({"event_type": "page", "body": {"event": "x"}}, Invalid, "event_type must be one of"),
        ({"event_type": "track", "body": {}}, Invalid, "missing required field `event`"),
        ({"event_type": "track", "body": {"event": "x", "quantity": 0}}, Invalid, "non-zero"),
        (5, Invalid, "Expected `object`"),
        ({"event_type": "track", "body": body_of_size(32 * 1024 + 1)}, TooLarge, "32 KiB"),
        (
            {"event_type": "track", "body": {"event": "x"}, "trusted_client_clock": True},
            Invalid,
            SPEC_NEEDS_SENT_AT,
        ),
    ],
)
def test_one_bad_event_refuses_the_whole_batch_naming_its_index(
    bad: Any, exc: type[Exception], cause: str
) -> None:
    good = {"event_type": "track", "body": {"event": "ok"}}
    events = [good, good, good, bad, good]
    with pytest.raises(exc) as info:
        parse_event_batch(enc({"events": events}), ctx())
    message = info.value.message  # type: ignore[attr-defined]
    assert message.startswith("events[3] ")
    assert "nothing in this batch was stored" in message
    assert cause in message


def test_event_batch_names_the_first_bad_index() -> None:
    bad = {"event_type": "track"}
    events = [{"event_type": "track", "body": {"event": "ok"}}, bad, bad]
    with pytest.raises(Invalid, match=r"^events\[1\] "):
        parse_event_batch(enc({"events": events}), ctx())


def test_event_batch_from_a_read_only_key_is_forbidden() -> None:
    events = [{"event_type": "track", "body": {"event": "ok"}}]
    with pytest.raises(Forbidden, match=r"^events\[0\] "):
        parse_event_batch(enc({"events": events}), ctx(READ_ONLY))


@pytest.mark.parametrize("data", [b"{}", b'{"events": 5}', b'{"events": null}', b"[]", b"nope"])
def test_malformed_event_batch_is_refused(data: bytes) -> None:
    with pytest.raises(Invalid, match=r"^request body "):
        parse_event_batch(data, ctx())


# -- POST /batch (capture) ------------------------------------------------------------------


def capture(**fields: Any) -> dict[str, Any]:
    """One event the way the SDK's buffer sends it."""
    return {"api_key": "api_abcdefghijklmnop", **fields}


def test_capture_batch_builds_pending_events() -> None:
    events = [
        capture(type="identify", body=IDENTIFY),
        capture(type="track", body=TRACK, idempotency_key="k1"),
    ]
    out = parse_capture_batch(enc({"events": events}), ctx())
    assert [(e.type, e.status) for e in out] == [("identify", "pending"), ("track", "pending")]
    assert out[1].subtype == "query_run"
    assert out[1].quantity == 3
    assert out[1].idempotency_key == "k1"
    assert all(e.error_message is None for e in out)
    assert all(e.api_key_id == "key_secret" for e in out)


def test_capture_accepts_event_type_for_type() -> None:
    out = parse_capture_batch(
        enc({"events": [{"event_type": "track", "body": {"event": "legacy"}}]}), ctx()
    )
    assert out[0].status == "pending"
    assert out[0].type == "track"
    assert out[0].subtype == "legacy"


def test_capture_sent_at_without_a_clock_flag_is_ignored() -> None:
    events = [capture(type="track", body={"event": "x"}, sent_at="2026-03-15T11:58:00.123456Z")]
    out = parse_capture_batch(enc({"events": events}), ctx(PUBLISHABLE))
    assert out[0].status == "pending"
    assert out[0].captured_at == RECEIVED_US


def test_capture_trusted_clock_with_a_secret_key_uses_sent_at() -> None:
    events = [
        capture(
            type="track",
            body={"event": "x"},
            sent_at="2026-03-15T11:00:00Z",
            trusted_client_clock=True,
        )
    ]
    out = parse_capture_batch(enc({"events": events}), ctx())
    assert out[0].captured_at == to_micros(datetime(2026, 3, 15, 11, 0, tzinfo=UTC))


def test_capture_batch_of_100_is_accepted() -> None:
    events = [capture(type="track", body={"event": "x"})] * 100
    assert len(parse_capture_batch(enc({"events": events}), ctx())) == 100


def test_capture_batch_of_101_is_too_large() -> None:
    events = [capture(type="track", body={"event": "x"})] * 101
    with pytest.raises(BatchTooLarge) as info:
        parse_capture_batch(enc({"events": events}), ctx())
    assert info.value.max_size == 100
    assert info.value.message == "batch too large"
    assert isinstance(info.value, Invalid)


def test_bad_capture_events_fail_while_their_neighbours_stay_pending() -> None:
    oversized = body_of_size(32 * 1024 + 10)
    events = [
        capture(type="track", body={"event": "first"}),
        5,
        capture(type="page", body={"event": "x"}),
        capture(type="track", body=oversized, idempotency_key="big-1"),
        capture(type="track", body={}),
        capture(body={"event": "no-type"}),
        capture(type="track", body={"event": "x"}, trusted_client_clock=True),
        capture(type="track", body={"event": "last"}),
    ]
    out = parse_capture_batch(enc({"events": events}), ctx())
    assert [e.status for e in out] == [
        "pending",
        "failed",
        "failed",
        "failing",  # failed unless its key is held: storage decides
        "failed",
        "failed",
        "failed",
        "pending",
    ]
    assert out[0].subtype == "first"
    assert out[7].subtype == "last"
    assert out[0].error_message is None
    assert out[7].error_message is None

    not_object, bad_type, too_big, missing_event, no_type, no_sent_at = out[1:7]
    assert not_object.type == "unknown"
    assert not_object.body == "{}"
    assert "Expected `object`" in (not_object.error_message or "")

    assert bad_type.type == "page"
    assert bad_type.error_message == f"type must be one of {TYPES_TEXT}, not 'page'"

    assert too_big.type == "track"
    assert too_big.body == "{}"
    assert too_big.idempotency_key == "big-1"
    assert "32 KiB" in (too_big.error_message or "")

    assert missing_event.type == "track"
    assert "missing required field `event`" in (missing_event.error_message or "")

    assert no_type.error_message == f"type is required (one of {TYPES_TEXT})"
    assert no_sent_at.error_message == SPEC_NEEDS_SENT_AT

    for ev in out[1:7]:
        assert ev.environment_id == ENV
        assert ev.captured_at == RECEIVED_US
        assert ev.received_at == RECEIVED_US
        assert ev.quantity == 1
        assert ev.api_key_id == "key_secret"
        assert json.loads(ev.body) is not None  # always a JSON object text


def test_failed_capture_event_keeps_a_small_body_and_its_subtype() -> None:
    events = [capture(type="track", body={"event": "x", "quantity": 0})]
    (ev,) = parse_capture_batch(enc({"events": events}), ctx())
    assert ev.status == "failed"
    assert json.loads(ev.body) == {"event": "x", "quantity": 0}
    assert ev.subtype == "x"
    assert ev.error_message == "quantity must be a non-zero integer"


def test_failed_capture_event_drops_an_overlong_idempotency_key() -> None:
    events = [capture(type="track", body={"event": "x"}, idempotency_key="k" * 256)]
    (ev,) = parse_capture_batch(enc({"events": events}), ctx())
    assert ev.status == "failed"
    assert ev.idempotency_key is None
    assert "255" in (ev.error_message or "")


def test_capture_from_a_read_only_key_stores_failed_events() -> None:
    events = [capture(type="track", body={"event": "x"}), capture(type="identify", body=IDENTIFY)]
    out = parse_capture_batch(enc({"events": events}), ctx(READ_ONLY))
    assert [e.status for e in out] == ["failed", "failed"]
    assert all(e.error_message == "read-only API keys cannot write events" for e in out)


def test_capture_clock_flag_from_a_publishable_key_fails_with_the_spec_message() -> None:
    events = [
        capture(type="track", body={"event": "x"}, sent_at="2026-03-15T11:00:00Z", backfill=True),
        capture(type="track", body={"event": "y"}),
    ]
    out = parse_capture_batch(enc({"events": events}), ctx(PUBLISHABLE))
    assert out[0].status == "failed"
    assert out[0].error_message == SPEC_NEEDS_SECRET
    assert out[0].captured_at == RECEIVED_US
    assert out[1].status == "pending"


def test_capture_event_with_out_of_range_sent_at_does_not_break_the_batch() -> None:
    events = [
        capture(type="track", body={"event": "a"}, sent_at="0001-01-01T00:00:00+01:00"),
        capture(
            type="track",
            body={"event": "b"},
            sent_at="0001-01-01T00:00:00+01:00",
            trusted_client_clock=True,
        ),
        capture(type="track", body={"event": "c"}),
    ]
    out = parse_capture_batch(enc({"events": events}), ctx())
    assert [e.status for e in out] == ["pending", "failed", "pending"]
    assert out[0].captured_at == RECEIVED_US
    assert (out[1].error_message or "").startswith("sent_at ")


# -- deeply nested JSON -------------------------------------------------------------------

DEPTH = 2_000  # 4 KB of brackets: far under every size limit


def nested_body() -> bytes:
    return b'{"event":"x","traits":{"a":' + b"[" * DEPTH + b"]" * DEPTH + b"}}"


def test_deeply_nested_body_is_invalid_not_a_crash() -> None:
    """msgspec raises ``RecursionError`` (not a ``DecodeError``) past ~1000 levels;
    the parser must turn that into ``Invalid`` (400), not let it escape (500)."""
    data = b'{"event_type":"track","body":' + nested_body() + b"}"
    with pytest.raises(Invalid):
        parse_create_event(data, ctx())


def test_deeply_nested_event_in_an_event_batch_is_invalid_not_a_crash() -> None:
    data = (
        b'{"events":[{"event_type":"track","body":{"event":"ok"}},{"event_type":"track","body":'
        + nested_body()
        + b"}]}"
    )
    with pytest.raises(Invalid):
        parse_event_batch(data, ctx())


def test_deeply_nested_capture_event_is_refused_cleanly() -> None:
    """Either the event alone is stored as failed (its neighbour pending), or the
    request as a whole is refused as invalid; never a ``RecursionError``."""
    data = (
        b'{"events":[{"type":"track","body":' + nested_body() + b"},"
        b'{"type":"track","body":{"event":"ok"}}]}'
    )
    try:
        out = parse_capture_batch(data, ctx())
    except Invalid:
        return
    assert [e.status for e in out] == ["failed", "pending"]


@pytest.mark.parametrize("data", [b"{}", b'{"events": {}}', b"[]", b"{oops"])
def test_malformed_capture_batch_is_refused_as_a_whole(data: bytes) -> None:
    with pytest.raises(Invalid, match=r"^request body "):
        parse_capture_batch(data, ctx())


@pytest.mark.parametrize("flag", ["trusted_client_clock", "backfill"])
@pytest.mark.parametrize("sent_at", ["not a time", "", "2026-13-45T00:00:00Z"])
def test_publishable_clock_flag_gets_the_secret_key_message_first(flag: str, sent_at: str) -> None:
    """Who may set the clock is ruled before what the clock says (issue 9 item 9)."""
    sent = {"event_type": "track", "body": TRACK, "sent_at": sent_at, flag: True}
    assert refused(sent, PUBLISHABLE) == SPEC_NEEDS_SECRET
    (failed,) = parse_capture_batch(
        enc({"events": [{**sent, "type": "track", "event_type": None}]}), ctx(PUBLISHABLE)
    )
    assert failed.error_message == SPEC_NEEDS_SECRET
    # a secret key gets the sent_at message
    assert "sent_at" in refused(sent, SECRET)


def test_a_keyed_refusal_is_left_to_storage() -> None:
    """A refused event with a valid type and key is ruled on only if its key
    is free: REST gets the event (``refused``) and the error; /batch a
    ``failing`` event; without a key, or with an invalid one, nothing changes."""
    from tally.ingest.parse import rule_create_event, rule_event_batch

    stale = {
        "event_type": "track",
        "body": TRACK,
        "sent_at": "2026-01-01T00:00:00Z",
        "trusted_client_clock": True,
    }
    event, error = rule_create_event(enc({**stale, "idempotency_key": "k"}), ctx())
    assert (event.status, event.idempotency_key, event.type) == ("refused", "k", "track")
    assert isinstance(error, Invalid) and event.error_message == error.message
    assert "34 days" in error.message
    with pytest.raises(Invalid, match="34 days"):
        rule_create_event(enc(stale), ctx())
    with pytest.raises(Invalid, match="idempotency_key"):
        rule_create_event(enc({**stale, "idempotency_key": ""}), ctx())
    events, refusals = rule_event_batch(
        enc(
            {"events": [{**stale, "trusted_client_clock": None}, {**stale, "idempotency_key": "b"}]}
        ),
        ctx(),
    )
    assert [e.status for e in events] == ["pending", "refused"]
    assert list(refusals) == [1]
    capture = {**stale, "type": "track", "event_type": None, "idempotency_key": "c"}
    (failing,) = parse_capture_batch(enc({"events": [capture]}), ctx())
    assert (failing.status, failing.idempotency_key) == ("failing", "c")


# -- sizes are measured on the bytes received ----------------------------------------------


def pretty_body(compact_size: int, pretty_size: int) -> bytes:
    """A track body whose compact JSON is ``compact_size`` bytes, sent with
    whitespace that brings it to ``pretty_size`` bytes."""
    compact = json.dumps(body_of_size(compact_size), separators=(",", ":")).encode()
    padded = compact.replace(b'{"event"', b"{" + b" " * (pretty_size - compact_size) + b'"event"')
    assert len(padded) == pretty_size
    assert json.loads(padded) == json.loads(compact)
    return padded


def test_a_capture_event_over_the_limit_as_received_is_stored_without_body_or_subtype() -> None:
    """66 KB received, 30 KB once compacted: refused for its size, and stored
    without its body and subtype (its compact form must not sneak in)."""
    body = pretty_body(30_000, 66_000)
    data = (
        b'{"events":[{"type":"track","idempotency_key":"big-2","body":'
        + body
        + b'},{"type":"track","body":{"event":"ok"}}]}'
    )
    too_big, ok = parse_capture_batch(data, ctx())
    assert too_big.status == "failing"  # stored failed, unless its key is held (a retry)
    assert "66000 bytes" in (too_big.error_message or "")
    assert too_big.body == "{}"
    assert too_big.subtype is None
    assert too_big.idempotency_key == "big-2"
    assert ok.status == "pending"


def test_a_rest_event_is_measured_on_the_bytes_received() -> None:
    data = b'{"event_type":"track","body":' + pretty_body(30_000, 33_000) + b"}"
    with pytest.raises(TooLarge, match="33000 bytes"):
        parse_create_event(data, ctx())


# -- the nesting limit (32 levels) ---------------------------------------------------------


def nested_traits(levels: int) -> bytes:
    """An identify body that nests ``levels`` levels in all (the body itself
    is the first, its traits the second)."""
    inner = b"[" * (levels - 2) + b"]" * (levels - 2)
    return b'{"keys":{"id":"u1"},"traits":{"deep":' + inner + b"}}"


def test_a_body_of_32_levels_is_accepted() -> None:
    event = parse_create_event(
        b'{"event_type":"identify","body":' + nested_traits(32) + b"}", ctx()
    )
    assert event.status == "pending"


@pytest.mark.parametrize("levels", [33, 900])
def test_a_body_deeper_than_32_levels_is_refused_on_rest(levels: int) -> None:
    data = b'{"event_type":"identify","body":' + nested_traits(levels) + b"}"
    with pytest.raises(Invalid, match="more than 32 levels deep"):
        parse_create_event(data, ctx())
    batch = b'{"events":[{"event_type":"identify","body":' + nested_traits(levels) + b"}]}"
    with pytest.raises(Invalid, match=r"events\[0\].*more than 32 levels deep"):
        parse_event_batch(batch, ctx())


@pytest.mark.parametrize("levels", [33, 900])
def test_a_capture_event_deeper_than_32_levels_fails_alone(levels: int) -> None:
    data = (
        b'{"events":[{"type":"track","body":{"event":"ok"}},'
        b'{"type":"identify","idempotency_key":"deep-1","body":'
        + nested_traits(levels)
        + b'},{"type":"track","body":{"event":"also-ok"}}]}'
    )
    first, deep, last = parse_capture_batch(data, ctx(PUBLISHABLE))
    assert (first.status, last.status) == ("pending", "pending")
    assert deep.status == "failing"  # stored failed, unless its key is held (a retry)
    assert deep.type == "identify"
    assert "more than 32 levels deep" in (deep.error_message or "")
    assert deep.body == "{}"  # nothing that deep is ever stored
    assert deep.idempotency_key == "deep-1"
