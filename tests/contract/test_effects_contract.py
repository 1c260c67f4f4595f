"""Side effects through the storage interface, on every backend: the
outbox and meter records written by processing, limit notices once per
(company, feature, period), nothing for backfill, leased claims, attempt
outcomes, auto-disable, and the webhook endpoints and delivery log.

Processing writes meter records whatever the settings: the delivery loop
sends them once a billing sink is configured.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tally.clock import FrozenClock, to_micros
from tally.effects.endpoints import WebhookChanges, WebhookFilter
from tally.effects.records import AttemptResult, ClaimedDelivery, WebhookEventFilter
from tally.effects.triggers import EffectRules
from tally.metering.catalog import UsageFilter
from tally.model import NewEvent
from tally.pipeline.processing import PIPELINE
from tally.storage.base import Storage
from tests.support.drain import drain

from .conftest import START, Backend
from .records import LEASE, LIMITS, SECOND, T0, World, fan_out, track, world


async def log(s: Storage, w: World) -> list[dict[str, object]]:
    """The webhook deliveries queued so far (fanned out first), oldest first,
    as (action, envelope)."""
    events = await s.list_webhook_events(w.env, WebhookEventFilter(limit=250))
    return [json.loads(e.payload) for e in reversed(events)]


# -- limit notices ------------------------------------------------------------------------
def test_limit_notices_fire_once_per_period(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s)
        for _ in range(5):  # 15 events of 1 in batches of 3: usage 3, 6, …, 15
            await s.ingest([track(w) for _ in range(3)])
            await s.process_pending(3)
        await fan_out(s, backend)
        sent = await log(s, w)
        assert [(e["action"], e["body"]["usage"]) for e in sent] == [  # type: ignore[index]
            ("entitlement.limit.warning", 8),
            ("entitlement.limit.reached", 10),
        ]
        reached = sent[1]
        assert reached["company_id"] == w.company and reached["feature_id"] == w.feature
        body = reached["body"]
        assert body["allocation"] == 10 and body["threshold"] == 10  # type: ignore[index]
        assert body["period_start"] == "2026-03-01T00:00:00.000000Z"  # type: ignore[index]
        assert body["metricResetAt"] == "2026-04-01T00:00:00.000000Z"  # type: ignore[index]
        assert body["company"]["name"] == "Acme"  # type: ignore[index]
        assert body["feature"]["event_subtype"] == "api-call"  # type: ignore[index]
        assert body["entitlement"]["value_numeric"] == 10  # type: ignore[index]

        # more usage past the limit fires nothing; a new period fires again
        await s.ingest([track(w, 50)])
        await drain(s)
        await fan_out(s, backend)
        assert len(await log(s, w)) == 2
        april = to_micros(datetime(2026, 4, 2, tzinfo=UTC))
        backend.clock.set(datetime(2026, 4, 2, 0, 1, tzinfo=UTC))
        await s.ingest([track(w, 9, at=april), track(w, 1, at=april)])
        await drain(s)
        await fan_out(s, backend)
        sent = await log(s, w)
        assert [(e["action"], e["body"]["period_start"][:10]) for e in sent[2:]] == [  # type: ignore[index]
            ("entitlement.limit.warning", "2026-04-01"),
            ("entitlement.limit.reached", "2026-04-01"),
        ]

    backend.run(scenario)


def test_a_backfill_over_the_limit_fires_nothing(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s, types=(*LIMITS, "company.created", "user.created", "user.updated"))
        earlier = T0 - 40 * 86_400 * SECOND  # last month: past the trusted window
        events = [track(w, 6, at=earlier, backfill=True) for _ in range(4)]
        events += [track(w, 6, at=T0 - SECOND, backfill=True) for _ in range(4)]
        events += [track(w, 1, at=T0 - SECOND, backfill=True, company="newco")]
        await s.ingest(events)
        await drain(s)
        await fan_out(s, backend)
        assert await log(s, w) == []
        counts = await s.delivery_counts()
        assert counts == {("outbox", "pending"): 0}  # no webhook, no meter record
        usage = await s.feature_usage(w.env, w.company, UsageFilter(), T0)
        assert usage[0].usage == 24  # the counters moved all the same

    backend.run(scenario)


def test_a_limit_a_backfill_passed_fires_with_the_next_event(backend: Backend) -> None:
    """A backfill does not silence a limit: the first non-backfill event
    (normal or trusted-clock) that finds a threshold passed in its period,
    not fired there yet, fires it; later ones fire nothing more."""

    async def scenario(s: Storage) -> None:
        w = await world(s)
        await s.ingest([track(w, 12, at=T0 - SECOND, backfill=True)])  # March: 12 of 10
        await drain(s)
        await fan_out(s, backend)
        assert await log(s, w) == []
        (normal,) = await s.ingest([track(w, 1)])
        await drain(s)
        await s.ingest([track(w, 1)])
        await drain(s)
        await fan_out(s, backend)
        sent = [(e["action"], e["body"]["usage"], e["body"]["event_id"]) for e in await log(s, w)]  # type: ignore[index]
        assert sent == [
            ("entitlement.limit.warning", 13, normal.event_id),
            ("entitlement.limit.reached", 13, normal.event_id),
        ]

        # a trusted-clock event in a past period the backfill filled
        february = to_micros(datetime(2026, 2, 20, 9, tzinfo=UTC))
        await s.ingest([track(w, 30, at=february, backfill=True)])
        await drain(s)
        (late,) = await s.ingest([track(w, 1, at=february + SECOND)])
        await drain(s)
        await fan_out(s, backend)
        sent = [
            (e["action"], e["body"]["period_start"][:7], e["body"]["event_id"])  # type: ignore[index]
            for e in (await log(s, w))[2:]
        ]
        assert sent == [
            ("entitlement.limit.warning", "2026-02", late.event_id),
            ("entitlement.limit.reached", "2026-02", late.event_id),
        ]

    backend.run(scenario)


def test_a_warning_a_backfill_skipped_fires_with_the_limit(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s)
        await s.ingest([track(w, 9, at=T0 - SECOND, backfill=True)])  # past the 80% warning
        await drain(s)
        await s.ingest([track(w, 1)])  # reaches the limit
        await drain(s)
        await fan_out(s, backend)
        sent = [(e["action"], e["body"]["usage"]) for e in await log(s, w)]  # type: ignore[index]
        assert sent == [("entitlement.limit.warning", 10), ("entitlement.limit.reached", 10)]

    backend.run(scenario)


def test_a_correction_never_fires_a_limit_twice(backend: Backend) -> None:
    """Usage 10 of 10, a correction of -5, then +10: the counter passes the
    thresholds again, but each fired once in the period, for good."""

    async def scenario(s: Storage) -> None:
        w = await world(s)
        for quantity in (10, -5, 10, -10, 1, 4):
            await s.ingest([track(w, quantity)])
            await drain(s)
        await fan_out(s, backend)
        sent = [(e["action"], e["body"]["usage"]) for e in await log(s, w)]  # type: ignore[index]
        assert sent == [("entitlement.limit.warning", 10), ("entitlement.limit.reached", 10)]
        usage = await s.feature_usage(w.env, w.company, UsageFilter(), T0)
        assert usage[0].usage == 10

    backend.run(scenario)


def test_the_database_holds_one_firing_per_company_feature_period_and_threshold(
    backend: Backend,
) -> None:
    """The guard itself: the unique key of ``limit_triggers``. Processing's
    own insert wins once; a second row for the same firing is refused."""
    from tally.storage.sql.effects import _TRIGGER_INSERT

    def firing(action: str, start: int = T0, company: str = "comp_1") -> tuple[object, ...]:
        return ("env_1", company, "feat_1", "month", start, action, "evt_1", 10, T0)

    def insert(*rows: tuple[object, ...]) -> Callable[[Any], list[int]]:
        return lambda conn: [conn.execute(_TRIGGER_INSERT, row).rowcount for row in rows]

    def plain(row: tuple[object, ...]) -> Callable[[Any], None]:
        statement = _TRIGGER_INSERT.partition(" ON CONFLICT")[0]
        return lambda conn: conn.execute(statement, row)

    async def scenario(s: Storage) -> None:
        call = s._delivery_call  # type: ignore[attr-defined]
        reached = firing("entitlement.limit.reached")
        assert await call(insert(reached, reached)) == [1, 0]
        assert await call(insert(reached)) == [0]
        others = (
            firing("entitlement.limit.warning"),
            firing("entitlement.limit.reached", start=T0 + 1),
            firing("entitlement.limit.reached", company="comp_2"),
        )
        assert await call(insert(*others)) == [1, 1, 1]
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            await call(plain(reached))
        rows = await call(
            lambda conn: conn.execute("SELECT COUNT(*) FROM limit_triggers").fetchone()
        )
        assert int(rows[0]) == 4

    backend.run(scenario)


def test_a_late_event_fires_for_its_own_period_not_the_current_one(
    backend: Backend,
) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s)
        await s.ingest([track(w, 9)])  # March: 9 of 10, warned
        await drain(s)
        february = to_micros(datetime(2026, 2, 20, 9, tzinfo=UTC))
        await s.ingest([track(w, 12, at=february)])  # a late event for February
        await drain(s)
        await fan_out(s, backend)
        sent = [(e["action"], e["body"]["period_start"][:7]) for e in await log(s, w)]  # type: ignore[index]
        assert sent == [
            ("entitlement.limit.warning", "2026-03"),
            ("entitlement.limit.warning", "2026-02"),
            ("entitlement.limit.reached", "2026-02"),
        ]
        late = (await log(s, w))[-1]["body"]
        assert late["occurred_at"] == "2026-02-20T09:00:00.000000Z"  # type: ignore[index]
        assert late["metricResetAt"] == "2026-03-01T00:00:00.000000Z"  # type: ignore[index]

    backend.run(scenario)


def test_an_endpoint_scoped_to_features_hears_only_them(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s)
        other = await s.create_webhook(
            w.env,
            WebhookChanges(
                name="other feature",
                url="http://127.0.0.1:9/other",
                request_types=LIMITS,
                feature_ids=("feat_other",),
            ),
        )
        inactive = await s.create_webhook(
            w.env,
            WebhookChanges(
                name="off", url="http://127.0.0.1:9/off", request_types=LIMITS, status="inactive"
            ),
        )
        await s.ingest([track(w, 10)])
        await drain(s)
        await fan_out(s, backend)
        targets = {e.webhook_id for e in await s.list_webhook_events(w.env, WebhookEventFilter())}
        assert targets == {w.hook.id}
        assert other.id not in targets and inactive.id not in targets

    backend.run(scenario)


# -- identity notices ---------------------------------------------------------------------
def test_identify_notices_carry_the_object(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s, types=("user.created", "user.updated", "company.updated"))
        body = {
            "keys": {"id": "u7", "email": "u7@example.com"},
            "name": "Wile",
            "traits": {"plan": "pro"},
            "company": {"keys": {"id": "acme"}, "traits": {"seats": 3}},
        }
        identify = NewEvent(
            environment_id=w.env,
            type="identify",
            status="pending",
            body=json.dumps(body),
            quantity=1,
            captured_at=T0,
            received_at=T0,
        )
        await s.ingest([identify])
        await drain(s)
        await fan_out(s, backend)
        sent = {e["action"]: e for e in await log(s, w)}
        assert set(sent) == {"user.created", "company.updated"}
        user = sent["user.created"]["body"]
        assert user["keys"] == {"id": "u7", "email": "u7@example.com"}  # type: ignore[index]
        assert user["name"] == "Wile" and user["traits"] == {"plan": "pro"}  # type: ignore[index]
        assert user["company_ids"] == [w.company]  # type: ignore[index]
        company = sent["company.updated"]
        assert company["object_type"] == "company" and company["company_id"] == w.company
        assert company["body"]["traits"] == {"seats": 3}  # type: ignore[index]
        assert company["body"]["keys"] == {"id": "acme", "stripe_customer_id": "cus_42"}  # type: ignore[index]

    backend.run(scenario)


# -- billing meter records ----------------------------------------------------------------
def test_one_meter_record_per_billed_event(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s)
        late = T0 - 3 * 86_400 * SECOND
        results = await s.ingest(
            [track(w, 3), track(w, -2), track(w, 4, at=late), track(w, 5, subtype="unbilled")]
        )
        await drain(s)
        now = to_micros(backend.clock.now())
        assert await s.claim_deliveries(now, 10, LEASE, billing=False) == []
        claimed = await s.claim_deliveries(now, 10, LEASE, billing=True)
        bodies = {c.ref: msgspec.json.decode(c.payload) for c in claimed}
        assert {c.kind for c in claimed} == {"billing"}
        ids = [r.event_id for r in results]
        assert bodies == {
            ids[0]: {
                "event_name": "api-call",
                "identifier": ids[0],
                "timestamp": T0 // SECOND,
                "payload": {"stripe_customer_id": "cus_42", "value": "3"},
            },
            ids[1]: {
                "event_name": "api-call",
                "identifier": ids[1],
                "timestamp": T0 // SECOND,
                "payload": {"stripe_customer_id": "cus_42", "value": "-2"},
                "type": "adjustment",
            },
            ids[2]: {
                "event_name": "api-call",
                "identifier": ids[2],
                "timestamp": late // SECOND,  # at the logical time
                "payload": {"stripe_customer_id": "cus_42", "value": "4"},
            },
        }
        kinds = {c.ref: c.request_type for c in claimed}
        assert kinds[ids[1]] == "billing.meter_event_adjustment"
        assert {c.id for c in claimed} == {"mtr_" + i.partition("_")[2] for i in ids[:3]}

    backend.run(scenario)


def test_meter_records_wait_in_the_outbox_for_a_billing_sink(backend: Backend) -> None:
    """Processing writes meter records whatever the settings say: a loop
    without a sink leaves them pending (and finds no work in them), one with
    a sink claims them, the oldest first."""

    async def scenario(s: Storage) -> None:
        w = await world(s, types=("user.created",))
        results = await s.ingest([track(w, 3), track(w, -1)])
        await drain(s)
        now = to_micros(backend.clock.now())
        assert await s.claim_deliveries(now, 10, LEASE, billing=False) != []  # user.created
        assert await s.claim_deliveries(now, 10, LEASE, billing=False) == []
        counts = await s.delivery_counts()
        assert counts[("billing", "pending")] == 2
        claimed = await s.claim_deliveries(now, 10, LEASE, billing=True)
        assert [(c.kind, c.ref) for c in claimed] == [
            ("billing", r.event_id) for r in sorted(results, key=lambda r: r.event_id)
        ]
        payload = msgspec.json.decode(claimed[0].payload)
        assert payload["payload"] == {"stripe_customer_id": "cus_42", "value": "3"}

    backend.run(scenario)


# -- claims and outcomes ------------------------------------------------------------------
async def identified(s: Storage, n: int) -> World:
    """A world with ``n`` user.created notices in the outbox, from one
    processing batch (one outbox row), not yet fanned out."""
    w = await world(s, types=("user.created",))
    events = [
        NewEvent(
            environment_id=w.env,
            type="identify",
            status="pending",
            body=json.dumps({"keys": {"id": f"u{i}"}}),
            quantity=1,
            captured_at=T0,
            received_at=T0,
        )
        for i in range(n)
    ]
    await s.ingest(events)
    assert await s.process_pending(n) == n
    return w


async def queued(s: Storage, backend: Backend, n: int) -> World:
    """A world with ``n`` webhook deliveries pending (one user.created each)."""
    w = await identified(s, n)
    await fan_out(s, backend)
    return w


def result(
    item: ClaimedDelivery, at: int, *, ok: bool, retry_at: int | None = None, code: int = 200
) -> AttemptResult:
    return AttemptResult(
        item.id, item.attempt, ok, code, None if ok else "boom", at, at + 1000, retry_at
    )


def test_claims_are_leases_that_never_overlap(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await queued(s, backend, 6)
        now = to_micros(backend.clock.now())
        first = await s.claim_deliveries(now, 4, LEASE, billing=False)
        second = await s.claim_deliveries(now, 4, LEASE, billing=False)
        assert len(first) == 4 and len(second) == 2
        assert not {c.id for c in first} & {c.id for c in second}
        assert all(c.attempt == 1 and c.url == w.hook.url for c in first + second)
        assert await s.claim_deliveries(now + LEASE - 1, 10, LEASE, billing=False) == []

        # the loop holding ``first`` died: its leases run out and they are claimed again
        later = now + LEASE
        again = await s.claim_deliveries(later, 10, LEASE, billing=False)
        assert sorted(c.id for c in again) == sorted(c.id for c in first + second)
        assert {c.attempt for c in again} == {2}
        # the dead loop's late answer settles nothing: its attempt was superseded
        await s.record_attempts([result(first[0], now, ok=True)], later)
        await s.record_attempts([result(c, later, ok=True) for c in again], later + 5)
        event = await s.get_webhook_event(w.env, first[0].id)
        assert event is not None and event.status == "success" and event.attempt_count == 2
        assert [(a.number, a.outcome) for a in event.attempts] == [
            (1, "superseded"),
            (2, "success"),
        ]
        for c in again:
            logged = await s.get_webhook_event(w.env, c.id)
            assert logged is not None
            assert [a.outcome for a in logged.attempts].count("success") == 1

    backend.run(scenario)


def test_failed_attempts_wait_for_their_retry_then_fail_for_good(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await queued(s, backend, 1)
        now = to_micros(backend.clock.now())
        (item,) = await s.claim_deliveries(now, 10, LEASE, billing=False)
        await s.record_attempts(
            [result(item, now, ok=False, retry_at=now + 60 * SECOND, code=503)], now
        )
        pending = await s.get_webhook_event(w.env, item.id)
        assert pending is not None and pending.status == "pending"
        assert pending.response_code == 503 and pending.next_attempt_at == now + 60 * SECOND
        assert await s.claim_deliveries(now + 59 * SECOND, 10, LEASE, billing=False) == []
        (retry,) = await s.claim_deliveries(now + 60 * SECOND, 10, LEASE, billing=False)
        assert retry.id == item.id and retry.attempt == 2 and retry.payload == item.payload
        await s.record_attempts([result(retry, now, ok=False, code=500)], now + 61 * SECOND)
        done = await s.get_webhook_event(w.env, item.id)
        assert done is not None and done.status == "failure" and done.attempt_count == 2
        assert [a.outcome for a in done.attempts] == ["failure", "failure"]
        assert await s.claim_deliveries(now + 10**12, 10, LEASE, billing=False) == []

    backend.run(scenario)


@pytest.mark.parametrize(
    ("deliveries", "successes", "disabled"), [(25, 2, True), (25, 3, False), (24, 0, False)]
)
def test_an_endpoint_failing_90_percent_of_25_deliveries_is_switched_off(
    backend: Backend, deliveries: int, successes: int, disabled: bool
) -> None:
    async def scenario(s: Storage) -> None:
        w = await queued(s, backend, deliveries)
        now = to_micros(backend.clock.now())
        claimed = await s.claim_deliveries(now, 100, LEASE, billing=False)
        outcomes = [
            result(c, now, ok=i < successes, code=200 if i < successes else 500)
            for i, c in enumerate(claimed)
        ]
        switched = await s.record_attempts(outcomes, now)
        hook = await s.get_webhook(w.env, w.hook.id)
        assert hook is not None
        assert (hook.status == "inactive") is disabled
        assert switched == ([w.hook.id] if disabled else [])
        if disabled:
            assert hook.status_reason is not None and "23 of its last 25" in hook.status_reason
            # switched on again, it starts a fresh window
            backend.clock.advance(timedelta(seconds=1))
            again = await s.update_webhook(w.env, w.hook.id, WebhookChanges(status="active"))
            assert again is not None and again.status == "active" and again.status_reason is None
            assert again.enabled_at > hook.enabled_at

    backend.run(scenario)


def test_deliveries_of_an_inactive_endpoint_wait(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await queued(s, backend, 2)
        await s.update_webhook(w.env, w.hook.id, WebhookChanges(status="inactive"))
        now = to_micros(backend.clock.now())
        assert await s.claim_deliveries(now, 10, LEASE, billing=False) == []
        await s.update_webhook(w.env, w.hook.id, WebhookChanges(status="active"))
        assert len(await s.claim_deliveries(now, 10, LEASE, billing=False)) == 2

    backend.run(scenario)


# -- endpoints and the log -----------------------------------------------------------------
def test_webhook_endpoints_crud(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env, _ = await s.ensure_environment("development", "development")
        other, _ = await s.ensure_environment("staging", "staging")
        a = await s.create_webhook(
            env.id,
            WebhookChanges(name="Alpha", url="https://alpha.example.com/h", request_types=LIMITS),
        )
        backend.clock.advance(timedelta(seconds=1))
        b = await s.create_webhook(
            env.id,
            WebhookChanges(
                name="Beta",
                url="https://beta.example.com/h",
                request_types=("company.created",),
                feature_ids=("feat_1",),
                credit_ids=("cred_1",),
            ),
        )
        assert a.id.startswith("wh_") and a.secret.startswith("whsec_") and a.secret != b.secret
        assert a.status == "active" and a.created_at == T0
        assert await s.get_webhook(env.id, a.id) == a
        assert await s.get_webhook(other.id, a.id) is None
        assert [h.id for h in await s.list_webhooks(env.id, WebhookFilter())] == [b.id, a.id]
        assert [h.id for h in await s.list_webhooks(env.id, WebhookFilter(q="ALPHA"))] == [a.id]
        assert [h.id for h in await s.list_webhooks(env.id, WebhookFilter(q="beta.example"))] == [
            b.id
        ]
        assert await s.count_webhooks(env.id, WebhookFilter()) == 2
        assert await s.list_webhooks(other.id, WebhookFilter()) == []

        updated = await s.update_webhook(
            env.id, b.id, WebhookChanges(name="Beta 2", feature_ids=())
        )
        assert updated is not None
        assert (updated.name, updated.url, updated.feature_ids, updated.credit_ids) == (
            "Beta 2",
            b.url,
            (),
            ("cred_1",),
        )
        assert updated.secret == b.secret
        assert await s.update_webhook(other.id, b.id, WebhookChanges(name="x")) is None

        assert await s.delete_webhook(env.id, a.id) is True
        assert await s.delete_webhook(env.id, a.id) is False
        assert await s.get_webhook(env.id, a.id) is None

    backend.run(scenario)


def test_deleting_an_endpoint_fails_its_pending_deliveries(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await queued(s, backend, 3)
        assert await s.delete_webhook(w.env, w.hook.id)
        events = await s.list_webhook_events(w.env, WebhookEventFilter())
        assert len(events) == 3
        assert {(e.status, e.last_error, e.webhook) for e in events} == {
            ("failure", "the webhook endpoint was deleted", None)
        }

    backend.run(scenario)


def test_the_delivery_log_filters_and_counts(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await queued(s, backend, 3)
        second = await s.create_webhook(
            w.env,
            WebhookChanges(
                name="second", url="http://127.0.0.1:9/b", request_types=("user.created",)
            ),
        )
        await s.ingest(
            [
                NewEvent(
                    environment_id=w.env,
                    type="identify",
                    status="pending",
                    body=json.dumps({"keys": {"id": "late"}}),
                    quantity=1,
                    captured_at=T0,
                    received_at=T0,
                )
            ]
        )
        await drain(s)
        await fan_out(s, backend)
        everything = await s.list_webhook_events(w.env, WebhookEventFilter())
        assert len(everything) == 5
        assert everything == sorted(everything, key=lambda e: e.id, reverse=True)
        mine = WebhookEventFilter(webhook_id=second.id)
        assert [e.webhook_id for e in await s.list_webhook_events(w.env, mine)] == [second.id]
        assert await s.count_webhook_events(w.env, WebhookEventFilter(q="user.")) == 5
        assert await s.count_webhook_events(w.env, WebhookEventFilter(q="company")) == 0
        pick = WebhookEventFilter(ids=(everything[0].id, everything[2].id))
        assert {e.id for e in await s.list_webhook_events(w.env, pick)} == {
            everything[0].id,
            everything[2].id,
        }
        page = await s.list_webhook_events(w.env, WebhookEventFilter(limit=2, offset=1))
        assert [e.id for e in page] == [e.id for e in everything[1:3]]
        first = everything[0]
        assert first.status == "pending" and first.attempt_count == 0
        assert first.webhook is not None and first.webhook.id == first.webhook_id
        assert await s.list_webhook_events("env_other", WebhookEventFilter()) == []

    backend.run(scenario)


# -- several workers and loops (PostgreSQL) --------------------------------------------------
def test_concurrent_workers_fire_a_limit_once(postgres_url: str) -> None:
    from tally.storage.postgres.storage import PostgresStorage

    clock = FrozenClock(START)

    async def main() -> None:
        stores = [
            PostgresStorage(postgres_url, clock=clock, effects=EffectRules(), processing=PIPELINE)
            for _ in range(3)
        ]
        for s in stores:
            await s.start()
        try:
            w = await world(stores[0], allocation=100)
            await stores[0].ingest([track(w) for _ in range(300)])

            async def drain(s: Storage) -> None:
                while await s.process_pending(7):
                    await asyncio.sleep(0)

            await asyncio.gather(*(drain(s) for s in stores))
            now = to_micros(clock.now())
            await stores[0].claim_deliveries(now, 0, LEASE, billing=False)  # fan out
            claims = await asyncio.gather(
                *(s.claim_deliveries(now, 1, LEASE, billing=False) for s in stores)
            )
            events = await stores[0].list_webhook_events(w.env, WebhookEventFilter())
            assert sorted(e.request_type for e in events) == list(reversed(LIMITS))
            claimed = [c.id for batch in claims for c in batch]
            assert len(claimed) == len(set(claimed)) == 2  # three loops, two deliveries
            usage = await stores[0].feature_usage(w.env, w.company, UsageFilter(), T0)
            assert usage[0].usage == 300
        finally:
            for s in stores:
                await s.close()

    asyncio.run(main())


def test_a_large_batch_is_expanded_over_several_claims_once(backend: Backend) -> None:
    from tally.storage.sql.fanout import EXPAND_NOTICES

    async def scenario(s: Storage) -> None:
        total = EXPAND_NOTICES + 50
        w = await identified(s, total)
        now = to_micros(backend.clock.now())
        first = await s.claim_deliveries(now, 1000, LEASE, billing=False)
        assert len(first) == EXPAND_NOTICES  # a bounded slice per claim
        assert (await s.delivery_counts())[("outbox", "pending")] == 1
        second = await s.claim_deliveries(now, 1000, LEASE, billing=False)
        assert len(second) == 50
        assert (await s.delivery_counts())[("outbox", "pending")] == 0
        assert await s.claim_deliveries(now, 1000, LEASE, billing=False) == []
        events = await s.list_webhook_events(w.env, WebhookEventFilter(limit=250))
        bodies = [json.loads(e.payload)["body"]["keys"]["id"] for e in events]
        assert len(events) == total == len(set(bodies))  # each notice once

    backend.run(scenario)


def test_the_warning_share_is_a_setting(tmp_path: Path) -> None:
    from tally.storage.sqlite.storage import SqliteStorage

    clock = FrozenClock(START)

    async def main() -> None:
        s = SqliteStorage(
            str(tmp_path / "w.db"), clock=clock, effects=EffectRules(50), processing=PIPELINE
        )
        await s.start()
        try:
            w = await world(s)
            for _ in range(4):
                await s.ingest([track(w)])
                await drain(s)
            await s.claim_deliveries(T0, 0, LEASE, billing=False)
            assert await log(s, w) == []
            await s.ingest([track(w)])  # 5 of 10: half
            await drain(s)
            await s.claim_deliveries(T0, 0, LEASE, billing=False)
            sent = await log(s, w)
            assert [(e["action"], e["body"]["usage"]) for e in sent] == [  # type: ignore[index]
                ("entitlement.limit.warning", 5)
            ]
            assert sent[0]["body"]["warning_percent"] == 50  # type: ignore[index]
        finally:
            await s.close()

    asyncio.run(main())
