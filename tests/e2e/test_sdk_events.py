"""The official Python SDK (schematichq 1.4.6) against a real tally server.

Both ``base_url`` and ``event_capture_url`` point at the server, so buffered
``identify()``/``track()`` go to ``POST /batch`` and ``client.events.*`` to the
REST paths. Every response is parsed by the SDK's own models; the assertions
check the values those models carry.

The SDK's REST client makes its own ``httpx.Client`` when none is given and
never closes it, which surfaces as an unclosed-socket ``ResourceWarning`` (an
error under ``filterwarnings=error``). Each client here is therefore given an
``httpx.Client`` that the fixture (tests/e2e/conftest.py) closes; no warning
filter is needed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from schematic import (
    BadRequestError,
    CreateEventRequestBody,
    EventBodyFlagCheck,
    EventBodyIdentify,
    EventBodyIdentifyCompany,
    EventBodyInference,
    EventBodyTrack,
    EventDetailResponseData,
    EventSummaryResponseData,
    ForbiddenError,
    NotFoundError,
    RawEventResponseData,
    Schematic,
    UnauthorizedError,
)
from schematic.client import IdentifyOptions, TrackOptions

from tests.e2e.conftest import ClientFactory
from tests.support.server import Server

pytestmark = pytest.mark.slow

USER_AGENT = "schematichq/1.4.6"
# A valid event is stored `pending`; the worker inside `tally serve` may have
# processed it by the time it is read back.
STORED = ("pending", "processed")

MSG_NEEDS_SECRET = "trusted_client_clock and backfill require a secret API key"
MSG_NEEDS_SENT_AT = "sent_at is required when trusted_client_clock or backfill is true"
MSG_FUTURE = "sent_at cannot be more than 5 minutes in the future"
MSG_PAST_TRUSTED = (
    "sent_at cannot be more than 34 days in the past for trusted_client_clock; "
    "for older events use backfill (analytics-only, no billing side effects)"
)
MSG_PAST_BACKFILL = "sent_at cannot be more than 365 days in the past"


# -- helpers -----------------------------------------------------------------
def now() -> datetime:
    return datetime.now(UTC)


def without_nones(value: Any) -> Any:
    """``value`` with every null-valued object member removed (a stored body
    may keep the SDK's explicit nulls)."""
    if isinstance(value, dict):
        return {k: without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nones(v) for v in value]
    return value


def assert_sentence(message: object) -> None:
    """An error message a person can read: one short line of text."""
    assert isinstance(message, str), message
    assert 0 < len(message) <= 300, message
    assert "\n" not in message and "Traceback" not in message, message
    assert message[0].isalnum(), message


def assert_utc(at: datetime | None) -> None:
    assert at is not None
    assert at.utcoffset() == timedelta(0), at


def assert_received_now(at: datetime, before: datetime, after: datetime) -> None:
    """``at`` is a receipt time taken between ``before`` and ``after`` (same host)."""
    assert_utc(at)
    assert before - timedelta(seconds=1) <= at <= after + timedelta(seconds=1), (before, at, after)


def assert_raw_event(raw: RawEventResponseData, before: datetime, after: datetime) -> str:
    assert isinstance(raw, RawEventResponseData)
    assert raw.event_id is not None and raw.event_id.startswith("evt_"), raw
    assert raw.remote_ip == "127.0.0.1"
    assert raw.user_agent == USER_AGENT
    assert_utc(raw.captured_at)
    assert before - timedelta(seconds=1) <= raw.captured_at <= after + timedelta(seconds=1)
    return raw.event_id


def assert_stored(event: EventDetailResponseData, *, status: tuple[str, ...] = STORED) -> None:
    """Fields every stored event has, in the SDK's model."""
    assert isinstance(event, EventDetailResponseData)
    assert event.id.startswith("evt_")
    assert event.status in status, (event.status, event.error_message)
    assert isinstance(event.body, dict)
    assert isinstance(event.body_preview, str)
    assert isinstance(event.quantity, int)
    assert isinstance(event.feature_ids, list) and isinstance(event.features, list)
    assert event.environment_id is not None and event.environment_id.startswith("env_")
    assert_utc(event.captured_at)
    assert_utc(event.loaded_at)
    if event.status != "failed":
        assert event.error_message is None, event.error_message


def list_all(client: Schematic, **filters: Any) -> list[EventDetailResponseData]:
    response = client.events.list_events(limit=250, **filters)
    return list(response.data)


def ids(events: list[EventDetailResponseData]) -> set[str]:
    return {e.id for e in events}


def wait_until_processed(client: Schematic, timeout: float = 20.0) -> list[EventDetailResponseData]:
    """Every event of the environment, once the worker has left none pending."""
    deadline = time.monotonic() + timeout
    while True:
        events = list_all(client)
        pending = [e.id for e in events if e.status == "pending"]
        if not pending:
            return events
        assert time.monotonic() < deadline, f"events still pending after {timeout}s: {pending}"
        time.sleep(0.1)


# -- buffered identify()/track() → POST /batch ---------------------------------
def test_buffered_identify_and_track_are_stored(server: Server, sdk: Schematic) -> None:
    before = now()
    trusted_at = before - timedelta(days=2, minutes=3)
    naive_at = (before - timedelta(days=1)).replace(tzinfo=None)  # the SDK sends it without a zone
    offset_at = (before - timedelta(hours=5)).astimezone(timezone(timedelta(hours=2)))
    backfill_at = before - timedelta(days=100)
    both_at = before - timedelta(days=300)
    ignored_at = before - timedelta(days=3)

    sdk.identify(
        {"email": "wile@example.com", "user_id": "u1"},
        company=EventBodyIdentifyCompany(
            keys={"id": "acme"}, name="Acme Inc", traits={"city": "Atlanta"}
        ),
        name="Wile E.",
        traits={"login_count": 24, "is_staff": False},
        options=IdentifyOptions(idempotency_key="identify-1"),
    )
    sdk.identify({"user_id": "u2"})
    sdk.track(
        "api-call", company={"id": "acme"}, user={"user_id": "u1"}, traits={"x": 1}, quantity=5
    )
    sdk.track("api-call", company={"id": "acme"})  # quantity defaults to 1
    sdk.track(
        "api-call",
        company={"id": "acme"},
        quantity=7,
        options=TrackOptions(
            idempotency_key="trusted-1", sent_at=trusted_at, trusted_client_clock=True
        ),
    )
    # Same key and type in the same batch: dropped.
    sdk.track(
        "api-call",
        company={"id": "acme"},
        quantity=8,
        options=TrackOptions(
            idempotency_key="trusted-1", sent_at=trusted_at, trusted_client_clock=True
        ),
    )
    # Same key, other type: kept (keys are scoped per event type).
    sdk.identify({"user_id": "u3"}, options=IdentifyOptions(idempotency_key="trusted-1"))
    sdk.track(
        "naive-clock",
        quantity=2,
        options=TrackOptions(
            idempotency_key="naive-1", sent_at=naive_at, trusted_client_clock=True
        ),
    )
    sdk.track(
        "offset-clock",
        quantity=3,
        options=TrackOptions(sent_at=offset_at, trusted_client_clock=True),
    )
    sdk.track(
        "backfilled",
        company={"id": "acme"},
        quantity=100,
        options=TrackOptions(idempotency_key="backfill-1", sent_at=backfill_at, backfill=True),
    )
    sdk.track(
        "backfilled",
        quantity=200,
        options=TrackOptions(sent_at=both_at, trusted_client_clock=True, backfill=True),
    )
    # sent_at without a clock flag is not the effective time.
    sdk.track("untrusted-clock", quantity=4, options=TrackOptions(sent_at=ignored_at))
    sdk.event_buffer.flush()  # the buffer's own flush(): send now, keep the client open

    # A second flush: the key is remembered across requests.
    sdk.track(
        "api-call",
        company={"id": "acme"},
        quantity=9,
        options=TrackOptions(
            idempotency_key="trusted-1", sent_at=trusted_at, trusted_client_clock=True
        ),
    )
    sdk.shutdown()
    after = now()

    events = list_all(sdk)
    for event in events:
        assert_stored(event)
    assert len(events) == 11, [(e.type, e.subtype, e.quantity, e.idempotency_key) for e in events]

    def one(kind: str, **match: Any) -> EventDetailResponseData:
        found = [
            e
            for e in events
            if e.type == kind and all(getattr(e, k) == v for k, v in match.items())
        ]
        assert len(found) == 1, (kind, match, found)
        return found[0]

    identify = one("identify", idempotency_key="identify-1")
    assert identify.subtype is None
    assert identify.quantity == 1
    assert without_nones(identify.body) == {
        "keys": {"email": "wile@example.com", "user_id": "u1"},
        "name": "Wile E.",
        "traits": {"login_count": 24, "is_staff": False},
        "company": {"keys": {"id": "acme"}, "name": "Acme Inc", "traits": {"city": "Atlanta"}},
    }
    assert_received_now(identify.captured_at, before, after)

    keys_only = [e for e in events if e.type == "identify" and e.idempotency_key is None]
    assert len(keys_only) == 1
    assert without_nones(keys_only[0].body) == {"keys": {"user_id": "u2"}}

    five = one("track", quantity=5)
    assert five.subtype == "api-call"
    assert five.idempotency_key is None and five.sent_at is None
    assert without_nones(five.body) == {
        "event": "api-call",
        "company": {"id": "acme"},
        "user": {"user_id": "u1"},
        "traits": {"x": 1},
        "quantity": 5,
    }
    assert_received_now(five.captured_at, before, after)

    default_quantity = one("track", subtype="api-call", quantity=1)
    assert without_nones(default_quantity.body) == {"event": "api-call", "company": {"id": "acme"}}

    trusted = one("track", idempotency_key="trusted-1")
    assert trusted.quantity == 7, "the first event with a key is kept; later ones are dropped"
    assert trusted.subtype == "api-call"
    assert trusted.sent_at == trusted_at
    assert trusted.captured_at == trusted_at
    assert not [e for e in events if e.quantity in (8, 9)]
    assert one("identify", idempotency_key="trusted-1").body["keys"] == {"user_id": "u3"}

    naive = one("track", subtype="naive-clock")
    assert naive.captured_at == naive_at.replace(tzinfo=UTC), "a naive sent_at is UTC"
    assert naive.quantity == 2

    offset = one("track", subtype="offset-clock")
    assert offset.captured_at == offset_at
    assert_utc(offset.captured_at)

    backfill = one("track", subtype="backfilled", quantity=100)
    assert backfill.captured_at == backfill_at
    assert backfill.idempotency_key == "backfill-1"
    both = one("track", subtype="backfilled", quantity=200)
    assert both.captured_at == both_at

    untrusted = one("track", subtype="untrusted-clock")
    assert_received_now(untrusted.captured_at, before, after)
    assert untrusted.captured_at != ignored_at

    # The same events through GET /events/{id}.
    for event in events:
        got = sdk.events.get_event(event.id).data
        assert_stored(got)
        assert (got.id, got.type, got.subtype, got.quantity, got.body, got.captured_at) == (
            event.id,
            event.type,
            event.subtype,
            event.quantity,
            event.body,
            event.captured_at,
        )

    # On the wire, every timestamp tally writes carries an explicit Z.
    raw = httpx.get(
        f"{server.base_url}/events",
        headers={"X-Schematic-Api-Key": server.secret_key},
        timeout=10.0,
    )
    assert raw.status_code == 200
    assert set(raw.json()) == {"data", "params"}
    for item in raw.json()["data"]:
        for name in (
            "captured_at",
            "sent_at",
            "loaded_at",
            "enriched_at",
            "updated_at",
            "processed_at",
        ):
            if item.get(name) is not None:
                assert item[name].endswith("Z"), (name, item[name])


def test_buffered_batch_keeps_bad_events_as_failed(
    server: Server, sdk: Schematic, make_client: ClientFactory
) -> None:
    publishable = make_client(server.publishable_key)
    publishable.track("page-view", company={"id": "acme"}, quantity=2)
    publishable.track("refund", company={"id": "acme"}, quantity=-5)  # needs a secret key
    publishable.track(
        "late",
        quantity=1,
        options=TrackOptions(sent_at=now() - timedelta(hours=1), trusted_client_clock=True),
    )
    publishable.identify({"user_id": "pk-user"})
    publishable.shutdown()

    events = list_all(sdk)
    assert len(events) == 4, [(e.subtype, e.status, e.error_message) for e in events]
    by_subtype = {e.subtype: e for e in events if e.type == "track"}
    for name in ("page-view", "refund", "late"):
        assert name in by_subtype, by_subtype
    for good in (by_subtype["page-view"], next(e for e in events if e.type == "identify")):
        assert_stored(good)
        assert good.status != "failed"
    assert by_subtype["page-view"].quantity == 2

    refund = by_subtype["refund"]
    assert_stored(refund, status=("failed",))
    assert_sentence(refund.error_message)
    assert "secret" in (refund.error_message or "")

    late = by_subtype["late"]
    assert_stored(late, status=("failed",))
    assert late.error_message == MSG_NEEDS_SECRET

    # Malformed events next to a good one, sent the way the capture format allows.
    body = {
        "events": [
            {
                "api_key": "whatever",
                "type": "track",
                "body": {"event": "ok-neighbour", "quantity": 3},
            },
            {"api_key": server.secret_key, "type": "track", "body": {"quantity": 3}},
            {"api_key": server.secret_key, "body": {"event": "no-type"}},
            {"api_key": server.secret_key, "type": "bogus", "body": {"event": "bad-type"}},
            {"api_key": server.secret_key, "type": "identify", "body": {"name": "no keys"}},
            {
                "api_key": server.secret_key,
                "type": "track",
                "body": {"event": "zero", "quantity": 0},
            },
            {"api_key": server.secret_key, "event_type": "track", "body": {"event": "alias"}},
        ]
    }
    response = httpx.post(
        f"{server.base_url}/batch",
        json=body,
        headers={"X-Schematic-Api-Key": server.secret_key},
        timeout=10.0,
    )
    assert response.is_success, response.text
    response.json()  # a JSON body, as the Node SDK expects

    fresh = [e for e in list_all(sdk) if e.id not in ids(events)]
    assert len(fresh) == 7, [(e.type, e.subtype, e.status) for e in fresh]
    kept = [e for e in fresh if e.status != "failed"]
    assert sorted(e.subtype or "" for e in kept) == ["alias", "ok-neighbour"]
    for event in kept:
        assert_stored(event)
        assert event.type == "track"
    neighbour = next(e for e in kept if e.subtype == "ok-neighbour")
    assert neighbour.quantity == 3
    failed = [e for e in fresh if e.status == "failed"]
    assert len(failed) == 5
    for event in failed:
        assert_stored(event, status=("failed",))
        assert_sentence(event.error_message)

    # A read-only key's buffered events are accepted but stored as failed.
    read_only = make_client(server.read_only_key)
    read_only.track("read-only-track")
    read_only.shutdown()
    ro = list_all(sdk, event_subtype="read-only-track")
    assert len(ro) == 1
    assert_stored(ro[0], status=("failed",))
    assert_sentence(ro[0].error_message)

    # More than 100 events in one request: refused whole, nothing stored.
    count = len(list_all(sdk))
    too_many = {
        "events": [{"api_key": server.secret_key, "type": "track", "body": {"event": "big"}}] * 101
    }
    response = httpx.post(
        f"{server.base_url}/batch",
        json=too_many,
        headers={"X-Schematic-Api-Key": server.secret_key},
        timeout=10.0,
    )
    assert response.status_code == 400
    assert response.json() == {"error": "batch too large", "max_size": 100}
    assert len(list_all(sdk)) == count

    # A capture request with a bad key is refused as a whole.
    response = httpx.post(
        f"{server.base_url}/batch",
        json={"events": [{"api_key": "sch_dev_nope", "type": "track", "body": {"event": "x"}}]},
        headers={"X-Schematic-Api-Key": "sch_dev_nope"},
        timeout=10.0,
    )
    assert response.status_code == 401
    assert_sentence(response.json()["error"])
    assert len(list_all(sdk)) == count


# -- REST: create_event, create_event_batch, get_event --------------------------
def test_create_event_every_body_type(sdk: Schematic) -> None:
    before = now()
    track_body = EventBodyTrack(
        event="api-call",
        company={"id": "acme"},
        user={"email": "wile@example.com"},
        traits={"plan": "pro"},
        quantity=3,
    )
    first = sdk.events.create_event(event_type="track", body=track_body, idempotency_key="rest-1")
    identify = sdk.events.create_event(
        event_type="identify",
        body=EventBodyIdentify(
            keys={"email": "wile@example.com"},
            name="Wile E.",
            traits={"age": 40},
            company=EventBodyIdentifyCompany(keys={"id": "acme"}, name="Acme Inc"),
        ),
    )
    flag_check = sdk.events.create_event(
        event_type="flag_check",
        body=EventBodyFlagCheck(
            flag_key="my-flag",
            reason="matched rule",
            value=True,
            company_id="comp_abc",
            user_id="user_abc",
            flag_id="flag_abc",
            rule_id="rule_abc",
            req_company={"id": "acme"},
        ),
    )
    inference = sdk.events.create_event(
        event_type="inference",
        body=EventBodyInference(
            company={"id": "acme"},
            input_tokens=1200,
            output_tokens=300,
            provider="anthropic",
            response_model="claude-x",
            cost="0.0123",
        ),
    )
    after = now()
    created = {}
    for name, response in (
        ("track", first),
        ("identify", identify),
        ("flag_check", flag_check),
        ("inference", inference),
    ):
        assert response.params == {}
        created[name] = assert_raw_event(response.data, before, after)
    assert len(set(created.values())) == 4
    wait_until_processed(sdk)  # read back what the worker has finished with

    track = sdk.events.get_event(created["track"]).data
    assert_stored(track)
    assert (track.type, track.subtype, track.quantity, track.idempotency_key) == (
        "track",
        "api-call",
        3,
        "rest-1",
    )
    assert without_nones(track.body) == {
        "event": "api-call",
        "company": {"id": "acme"},
        "user": {"email": "wile@example.com"},
        "traits": {"plan": "pro"},
        "quantity": 3,
    }
    assert track.captured_at == first.data.captured_at
    assert_received_now(track.captured_at, before, after)

    ident = sdk.events.get_event(created["identify"]).data
    assert_stored(ident)
    assert (ident.type, ident.subtype, ident.quantity) == ("identify", None, 1)
    assert without_nones(ident.body) == {
        "keys": {"email": "wile@example.com"},
        "name": "Wile E.",
        "traits": {"age": 40},
        "company": {"keys": {"id": "acme"}, "name": "Acme Inc"},
    }

    check = sdk.events.get_event(created["flag_check"]).data
    assert_stored(check)
    assert check.type == "flag_check"
    assert (check.company_id, check.user_id) == ("comp_abc", "user_abc")
    assert without_nones(check.body) == {
        "flag_key": "my-flag",
        "reason": "matched rule",
        "value": True,
        "company_id": "comp_abc",
        "user_id": "user_abc",
        "flag_id": "flag_abc",
        "rule_id": "rule_abc",
        "req_company": {"id": "acme"},
    }

    infer = sdk.events.get_event(created["inference"]).data
    assert_stored(infer)
    assert infer.type == "inference"
    assert without_nones(infer.body) == {
        "company": {"id": "acme"},
        "input_tokens": 1200,
        "output_tokens": 300,
        "provider": "anthropic",
        "response_model": "claude-x",
        "cost": "0.0123",
    }

    # A duplicate key answers with the event that was kept, and changes nothing.
    again = sdk.events.create_event(
        event_type="track",
        body=EventBodyTrack(event="api-call", company={"id": "acme"}, quantity=4),
        idempotency_key="rest-1",
    )
    assert again.data.event_id == created["track"]
    assert again.data.captured_at == first.data.captured_at
    # ...and says so in a field the SDK's model keeps as an extra (issue 9 item 18)
    assert again.data.model_extra == {"duplicate": True}
    assert first.data.model_extra == {}
    same_key = sdk.events.list_events(idempotency_key="rest-1").data
    assert [e.id for e in same_key] == [created["track"]]
    assert same_key[0].quantity == 3
    assert len(list_all(sdk)) == 4

    # Trusted clock and backfill: captured_at is the client's sent_at.
    trusted_at = now() - timedelta(days=33)
    trusted = sdk.events.create_event(
        event_type="track",
        body=EventBodyTrack(event="late", quantity=2),
        sent_at=trusted_at,
        trusted_client_clock=True,
    )
    assert trusted.data.captured_at == trusted_at
    stored = sdk.events.get_event(trusted.data.event_id or "").data
    assert stored.captured_at == trusted_at and stored.sent_at == trusted_at

    backfill_at = now() - timedelta(days=364)
    backfill = sdk.events.create_event(
        event_type="track",
        body=EventBodyTrack(event="import", quantity=50),
        sent_at=backfill_at,
        backfill=True,
        idempotency_key="import-1",
    )
    assert backfill.data.captured_at == backfill_at
    assert sdk.events.get_event(backfill.data.event_id or "").data.captured_at == backfill_at

    future_ok = now() + timedelta(minutes=4)
    ahead = sdk.events.create_event(
        event_type="identify",
        body=EventBodyIdentify(keys={"email": "ahead@example.com"}),
        sent_at=future_ok,
        trusted_client_clock=True,
    )
    assert ahead.data.captured_at == future_ok

    # sent_at without a clock flag does not move captured_at.
    old = now() - timedelta(days=2)
    plain_before = now()
    plain = sdk.events.create_event(
        event_type="track", body=EventBodyTrack(event="plain"), sent_at=old
    )
    assert_received_now(plain.data.captured_at, plain_before, now())
    assert sdk.events.get_event(plain.data.event_id or "").data.quantity == 1


def test_create_event_batch(sdk: Schematic) -> None:
    before = now()
    seed = sdk.events.create_event(
        event_type="track", body=EventBodyTrack(event="seed"), idempotency_key="batch-dup"
    )
    events = [
        CreateEventRequestBody(
            event_type="track",
            body=EventBodyTrack(event="api-call", company={"id": "acme"}, quantity=11),
            idempotency_key="batch-1",
        ),
        CreateEventRequestBody(
            event_type="identify", body=EventBodyIdentify(keys={"user_id": "b1"})
        ),
        CreateEventRequestBody(
            event_type="flag_check",
            body=EventBodyFlagCheck(flag_key="f", reason="default", value=False, flag_id="flag_b"),
        ),
        CreateEventRequestBody(
            event_type="inference",
            body=EventBodyInference(
                company={"id": "acme"},
                input_tokens=1,
                output_tokens=2,
                provider="openai",
                response_model="gpt-x",
            ),
        ),
        # Already stored under this key: answered with the stored event.
        CreateEventRequestBody(
            event_type="track",
            body=EventBodyTrack(event="seed", quantity=99),
            idempotency_key="batch-dup",
        ),
        # Twice in one batch: the second is the first.
        CreateEventRequestBody(
            event_type="track",
            body=EventBodyTrack(event="twice", quantity=5),
            idempotency_key="batch-2",
        ),
        CreateEventRequestBody(
            event_type="track",
            body=EventBodyTrack(event="twice", quantity=6),
            idempotency_key="batch-2",
        ),
        CreateEventRequestBody(
            event_type="track",
            body=EventBodyTrack(event="trusted-in-batch"),
            sent_at=before - timedelta(days=1),
            trusted_client_clock=True,
        ),
    ]
    response = sdk.events.create_event_batch(events=events)
    after = now()
    assert response.params == {}
    results = response.data.events
    assert len(results) == len(events)
    returned = [assert_raw_event(r, before - timedelta(days=1), after) for r in results]
    assert returned[4] == seed.data.event_id
    assert results[4].captured_at == seed.data.captured_at
    assert returned[6] == returned[5]
    duplicates = [(r.model_extra or {}).get("duplicate", False) for r in results]
    assert duplicates == [False, False, False, False, True, False, True, False]
    assert results[7].captured_at == before - timedelta(days=1)
    assert len(set(returned)) == 7

    expected = [
        ("track", "api-call", 11),
        ("identify", None, 1),
        ("flag_check", None, 1),
        ("inference", None, 1),
        ("track", "seed", 1),
        ("track", "twice", 5),
        ("track", "twice", 5),
        ("track", "trusted-in-batch", 1),
    ]
    for event_id, (kind, subtype, quantity) in zip(returned, expected, strict=True):
        got = sdk.events.get_event(event_id).data
        assert_stored(got)
        assert (got.type, got.subtype, got.quantity) == (kind, subtype, quantity), event_id
    assert len(list_all(sdk)) == 7  # seed + 6 new

    # One bad event refuses the whole batch; nothing of it is stored.
    with pytest.raises(BadRequestError) as refused:
        sdk.events.create_event_batch(
            events=[
                CreateEventRequestBody(event_type="track", body=EventBodyTrack(event="ok")),
                CreateEventRequestBody(
                    event_type="track",
                    body=EventBodyTrack(event="bad"),
                    trusted_client_clock=True,
                ),
            ]
        )
    assert refused.value.status_code == 400
    assert_sentence(refused.value.body.error)
    assert MSG_NEEDS_SENT_AT in refused.value.body.error
    assert len(list_all(sdk)) == 7
    assert list_all(sdk, event_subtype="ok") == []


# -- REST: list_events filters and get_event_summaries ---------------------------
def test_list_events_filters(sdk: Schematic) -> None:
    def flag_check(company: str, user: str, flag: str) -> CreateEventRequestBody:
        return CreateEventRequestBody(
            event_type="flag_check",
            body=EventBodyFlagCheck(
                flag_key=f"key-{flag}",
                reason="r",
                value=True,
                company_id=company,
                user_id=user,
                flag_id=flag,
            ),
        )

    batch = [
        flag_check("comp_A", "user_A", "flag_X"),  # 0
        flag_check("comp_A", "user_B", "flag_Y"),  # 1
        flag_check("comp_B", "user_A", "flag_X"),  # 2
        CreateEventRequestBody(  # 3
            event_type="track",
            body=EventBodyTrack(event="api-call", quantity=2),
            idempotency_key="lk-1",
        ),
        CreateEventRequestBody(event_type="track", body=EventBodyTrack(event="upload")),  # 4
        CreateEventRequestBody(event_type="track", body=EventBodyTrack(event="api-call")),  # 5
        CreateEventRequestBody(  # 6
            event_type="identify",
            body=EventBodyIdentify(keys={"user_id": "lu"}),
            idempotency_key="lk-1",
        ),
        CreateEventRequestBody(  # 7
            event_type="inference",
            body=EventBodyInference(
                company={"id": "acme"},
                input_tokens=5,
                output_tokens=6,
                provider="p",
                response_model="m",
            ),
        ),
    ]
    created = [r.event_id for r in sdk.events.create_event_batch(events=batch).data.events]
    assert all(created) and len(set(created)) == 8
    # Filter what the worker has finished with (it must keep what the body said).
    wait_until_processed(sdk)

    def pick(*indexes: int) -> set[str]:
        return {created[i] or "" for i in indexes}

    everything = sdk.events.list_events()
    assert [e.id for e in everything.data] == list(reversed(created)), "newest first"
    assert (everything.params.limit, everything.params.offset) == (100, 0)

    response = sdk.events.list_events(company_id="comp_A")
    assert ids(response.data) == pick(0, 1)
    assert response.params.company_id == "comp_A"
    for event in response.data:
        assert_stored(event)
        assert event.company_id == "comp_A"

    response = sdk.events.list_events(user_id="user_A")
    assert ids(response.data) == pick(0, 2)
    assert response.params.user_id == "user_A"

    response = sdk.events.list_events(flag_id="flag_X")
    assert ids(response.data) == pick(0, 2)
    assert response.params.flag_id == "flag_X"
    assert all(e.body["flag_id"] == "flag_X" for e in response.data)

    assert ids(sdk.events.list_events(company_id="comp_A", flag_id="flag_X").data) == pick(0)
    assert ids(sdk.events.list_events(company_id="comp_A", user_id="user_B").data) == pick(1)
    assert sdk.events.list_events(company_id="comp_B", flag_id="flag_Y").data == []

    response = sdk.events.list_events(event_subtype="api-call")
    assert ids(response.data) == pick(3, 5)
    assert response.params.event_subtype == "api-call"
    assert all(e.subtype == "api-call" for e in response.data)

    response = sdk.events.list_events(event_types=["track", "identify"])
    assert ids(response.data) == pick(3, 4, 5, 6)
    assert sorted(response.params.event_types or []) == ["identify", "track"]
    assert ids(sdk.events.list_events(event_types=["flag_check"]).data) == pick(0, 1, 2)
    assert ids(sdk.events.list_events(event_types="inference").data) == pick(7)
    assert ids(
        sdk.events.list_events(event_types=["inference", "flag_check", "track"]).data
    ) == pick(0, 1, 2, 3, 4, 5, 7)

    response = sdk.events.list_events(idempotency_key="lk-1")
    assert ids(response.data) == pick(3, 6)
    assert response.params.idempotency_key == "lk-1"
    assert ids(
        sdk.events.list_events(idempotency_key="lk-1", event_types=["identify"]).data
    ) == pick(6)
    assert sdk.events.list_events(idempotency_key="nope").data == []
    assert ids(
        sdk.events.list_events(event_subtype="api-call", event_types=["track"], limit=1).data
    ) == pick(5)

    # Pages, newest first.
    newest_first = list(reversed(created))
    pages = []
    for offset in (0, 3, 6, 9):
        page = sdk.events.list_events(limit=3, offset=offset)
        assert (page.params.limit, page.params.offset) == (3, offset)
        pages.append([e.id for e in page.data])
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:8], []]
    assert [
        e.id for e in sdk.events.list_events(event_types=["flag_check"], limit=2, offset=1).data
    ] == [created[1], created[0]]

    with pytest.raises(BadRequestError) as too_many:
        sdk.events.list_events(limit=251)
    assert_sentence(too_many.value.body.error)
    with pytest.raises(BadRequestError) as bad_type:
        sdk.events.list_events(event_types=["bogus"])
    assert_sentence(bad_type.value.body.error)


def test_event_summaries(sdk: Schematic) -> None:
    base = now()
    yesterday = base - timedelta(days=1)
    two_days = base - timedelta(days=2)
    track = "track"
    batch = [
        CreateEventRequestBody(
            event_type=track,
            body=EventBodyTrack(event="api-call", company={"id": "c1"}, user={"id": "u1"}),
        ),
        CreateEventRequestBody(
            event_type=track,
            body=EventBodyTrack(
                event="api-call", company={"id": "c2"}, user={"id": "u1"}, quantity=5
            ),
        ),
        CreateEventRequestBody(
            event_type=track,
            body=EventBodyTrack(event="api-call", company={"id": "c1"}),
            sent_at=yesterday,
            trusted_client_clock=True,
        ),
        CreateEventRequestBody(
            event_type=track, body=EventBodyTrack(event="api-upload", company={"id": "c1"})
        ),
        CreateEventRequestBody(
            event_type=track, body=EventBodyTrack(event="api-upload", company={"id": "c1"})
        ),
        CreateEventRequestBody(
            event_type=track,
            body=EventBodyTrack(event="login", user={"id": "u2"}),
            sent_at=two_days,
            trusted_client_clock=True,
        ),
        CreateEventRequestBody(event_type="identify", body=EventBodyIdentify(keys={"id": "u3"})),
    ]
    sdk.events.create_event_batch(events=batch)
    events = wait_until_processed(sdk)
    environment_id = events[0].environment_id
    latest = {}
    for event in events:
        if event.subtype is not None:
            latest[event.subtype] = max(
                latest.get(event.subtype, event.captured_at), event.captured_at
            )

    response = sdk.events.get_event_summaries()
    rows = {row.event_subtype: row for row in response.data}
    assert sorted(rows) == ["api-call", "api-upload", "login"]
    for row in response.data:
        assert isinstance(row, EventSummaryResponseData)
        assert row.environment_id == environment_id
        assert row.last_seen_at == latest[row.event_subtype]
        assert_utc(row.last_seen_at)
    assert rows["login"].last_seen_at == two_days
    expected_counts = {  # (events, companies, users)
        "api-call": (3, 2, 1),
        "api-upload": (2, 1, 0),
        "login": (1, 0, 1),
    }
    got = {k: (r.event_count, r.company_count, r.user_count) for k, r in rows.items()}
    assert got == expected_counts

    response = sdk.events.get_event_summaries(q="api")
    assert sorted(r.event_subtype for r in response.data) == ["api-call", "api-upload"]
    assert response.params.q == "api"

    response = sdk.events.get_event_summaries(event_subtypes=["login", "api-call"])
    assert sorted(r.event_subtype for r in response.data) == ["api-call", "login"]
    assert sorted(response.params.event_subtypes or []) == ["api-call", "login"]
    assert [
        r.event_subtype for r in sdk.events.get_event_summaries(event_subtypes="login").data
    ] == ["login"]

    response = sdk.events.get_event_summaries(q="api", event_subtypes=["login", "api-upload"])
    assert [(r.event_subtype, r.event_count) for r in response.data] == [("api-upload", 2)]

    assert sorted(r.event_subtype for r in sdk.events.get_event_summaries(q="-").data) == [
        "api-call",
        "api-upload",
    ]
    assert sdk.events.get_event_summaries(q="%").data == [], "q is a plain substring, not a pattern"
    assert sdk.events.get_event_summaries(q="nothing-like-this").data == []
    assert len(sdk.events.get_event_summaries(limit=2).data) == 2
    assert len(sdk.events.get_event_summaries(limit=2, offset=2).data) == 1


# -- errors ------------------------------------------------------------------------
def test_errors_map_to_the_sdk_exceptions(
    server: Server, sdk: Schematic, make_client: ClientFactory
) -> None:
    stored = sdk.events.create_event(
        event_type="track", body=EventBodyTrack(event="mine")
    ).data.event_id
    assert stored is not None

    with pytest.raises(NotFoundError) as missing:
        sdk.events.get_event("evt_01aaaaaaaaaaaaaaaaaaaaaaaa")
    assert missing.value.status_code == 404
    assert_sentence(missing.value.body.error)

    # Another environment cannot see this one's events, and keys are scoped to it.
    staging = make_client(server.create_key("staging"))
    with pytest.raises(NotFoundError):
        staging.events.get_event(stored)
    assert staging.events.list_events().data == []
    assert staging.events.get_event_summaries().data == []
    first = sdk.events.create_event(
        event_type="track", body=EventBodyTrack(event="scoped"), idempotency_key="scope-1"
    ).data.event_id
    other = staging.events.create_event(
        event_type="track", body=EventBodyTrack(event="scoped"), idempotency_key="scope-1"
    ).data.event_id
    assert first != other
    assert [e.id for e in staging.events.list_events().data] == [other]
    assert (
        staging.events.get_event(other or "").data.environment_id
        != sdk.events.get_event(first or "").data.environment_id
    )

    publishable = make_client(server.publishable_key)
    for call in (
        lambda: publishable.events.list_events(),
        lambda: publishable.events.get_event(stored),
        lambda: publishable.events.get_event_summaries(),
    ):
        with pytest.raises(ForbiddenError) as forbidden:
            call()
        assert forbidden.value.status_code == 403
        assert_sentence(forbidden.value.body.error)
    # … but it may write.
    written = publishable.events.create_event(
        event_type="track", body=EventBodyTrack(event="from-browser")
    )
    assert written.data.event_id is not None

    read_only = make_client(server.read_only_key)
    assert stored in ids(read_only.events.list_events().data)
    for call in (
        lambda: read_only.events.create_event(event_type="track", body=EventBodyTrack(event="ro")),
        lambda: read_only.events.create_event_batch(
            events=[CreateEventRequestBody(event_type="track", body=EventBodyTrack(event="ro"))]
        ),
    ):
        with pytest.raises(ForbiddenError) as forbidden:
            call()
        assert_sentence(forbidden.value.body.error)

    bad_key = make_client("sch_dev_not_a_real_key")
    for call in (
        lambda: bad_key.events.list_events(),
        lambda: bad_key.events.get_event(stored),
        lambda: bad_key.events.get_event_summaries(),
        lambda: bad_key.events.create_event(event_type="track", body=EventBodyTrack(event="x")),
        lambda: bad_key.events.create_event_batch(
            events=[CreateEventRequestBody(event_type="track", body=EventBodyTrack(event="x"))]
        ),
    ):
        with pytest.raises(UnauthorizedError) as unauthorized:
            call()
        assert unauthorized.value.status_code == 401
        assert_sentence(unauthorized.value.body.error)

    count = len(list_all(sdk))
    track = EventBodyTrack(event="refused")
    refusals: list[tuple[Schematic, dict[str, Any], str | None]] = [
        (
            sdk,
            {"event_type": "track", "body": track, "trusted_client_clock": True},
            MSG_NEEDS_SENT_AT,
        ),
        (sdk, {"event_type": "track", "body": track, "backfill": True}, MSG_NEEDS_SENT_AT),
        (
            sdk,
            {
                "event_type": "track",
                "body": track,
                "trusted_client_clock": True,
                "sent_at": now() + timedelta(minutes=10),
            },
            MSG_FUTURE,
        ),
        (
            sdk,
            {
                "event_type": "track",
                "body": track,
                "backfill": True,
                "sent_at": now() + timedelta(minutes=10),
            },
            MSG_FUTURE,
        ),
        (
            sdk,
            {
                "event_type": "track",
                "body": track,
                "trusted_client_clock": True,
                "sent_at": now() - timedelta(days=35),
            },
            MSG_PAST_TRUSTED,
        ),
        (
            sdk,
            {
                "event_type": "track",
                "body": track,
                "backfill": True,
                "sent_at": now() - timedelta(days=366),
            },
            MSG_PAST_BACKFILL,
        ),
        (
            publishable,
            {
                "event_type": "track",
                "body": track,
                "trusted_client_clock": True,
                "sent_at": now() - timedelta(hours=1),
            },
            MSG_NEEDS_SECRET,
        ),
        (
            publishable,
            {
                "event_type": "track",
                "body": track,
                "backfill": True,
                "sent_at": now() - timedelta(hours=1),
            },
            MSG_NEEDS_SECRET,
        ),
        (
            publishable,
            {"event_type": "track", "body": EventBodyTrack(event="refund", quantity=-3)},
            None,
        ),
        (sdk, {"event_type": "track", "body": EventBodyTrack(event="zero", quantity=0)}, None),
        (sdk, {"event_type": "track", "body": track, "idempotency_key": "k" * 256}, None),
        (sdk, {"event_type": "track", "body": {"quantity": 3}}, None),
        (sdk, {"event_type": "track"}, None),
        (sdk, {"event_type": "identify", "body": {"name": "no keys"}}, None),
        (sdk, {"event_type": "flag_check", "body": {"reason": "r", "value": True}}, None),
        (
            sdk,
            {"event_type": "inference", "body": {"company": {"id": "a"}, "input_tokens": 1}},
            None,
        ),
        (sdk, {"event_type": "bogus", "body": {"event": "x"}}, None),
    ]
    for client, kwargs, message in refusals:
        with pytest.raises(BadRequestError) as refused:
            client.events.create_event(**kwargs)
        assert refused.value.status_code == 400, kwargs
        assert_sentence(refused.value.body.error)
        if message is not None:
            assert refused.value.body.error == message, kwargs
    assert len(list_all(sdk)) == count, "a refused event was stored"

    # A negative quantity with a secret key is a usage correction.
    correction = sdk.events.create_event(
        event_type="track", body=EventBodyTrack(event="refund", quantity=-3)
    )
    assert sdk.events.get_event(correction.data.event_id or "").data.quantity == -3
