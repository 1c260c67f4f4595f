"""The pure trigger rules of tally.effects.triggers and what
``process_events`` records for side effects (no storage): limit crossings
(once per batch, attributed to the first non-backfill event that finds a
threshold passed, never to a backfill),
identity notices, and billing meter records."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.batch import PendingEvent, Snapshot, StoredEntity
from tally.clock import to_micros
from tally.effects.billing import MeterRecord, record_body
from tally.effects.triggers import (
    LIMIT_REACHED,
    LIMIT_WARNING,
    Contribution,
    EffectRules,
    Limit,
    Watch,
    limit_crossings,
    thresholds,
    warning_threshold,
)
from tally.metering import periods
from tests.support.batch import run_batch as run
from tests.support.clock import NOW_US as NOW

ENV = "env_1"
LAST_MONTH = to_micros(datetime(2026, 2, 20, 9, 0, tzinfo=UTC))
MARCH = to_micros(datetime(2026, 3, 1, tzinfo=UTC))
FEBRUARY = to_micros(datetime(2026, 2, 1, tzinfo=UTC))


def limit(value: int = 10, period: str = "current_month", feature: str = "feat_1") -> Limit:
    return Limit("cmov_1", "comp_1", feature, "api-call", value, period, "first_of_month")


def contribution(n: int, quantity: int, *, backfill: bool = False) -> Contribution:
    return Contribution(f"evt_{n}", quantity, NOW, backfill)


def watch(*quantities: int, limits: list[Limit] | None = None, backfill: bool = False) -> Watch:
    return Watch(
        None,
        limits or [limit()],
        [contribution(i, q, backfill=backfill) for i, q in enumerate(quantities)],
    )


# -- thresholds ------------------------------------------------------------------
def test_thresholds_default_to_80_percent_then_the_allocation() -> None:
    assert thresholds(10, 80) == [(LIMIT_WARNING, 8), (LIMIT_REACHED, 10)]
    assert thresholds(1000, 80) == [(LIMIT_WARNING, 800), (LIMIT_REACHED, 1000)]


def test_the_warning_threshold_is_exact_not_floating_point() -> None:
    # 0.7 * 10 is 7.000000000000001 in floats: ceil would say 8
    assert warning_threshold(10, 70) == 7
    assert warning_threshold(3, 80) == 3  # 2.4 → the first whole usage at or past it
    assert warning_threshold(1, 80) == 1
    assert warning_threshold(7, 87.5) == 7  # 6.125
    assert warning_threshold(8, 87.5) == 7


def test_an_allocation_of_zero_fires_nothing() -> None:
    assert thresholds(0, 80) == []
    assert limit_crossings(0, watch(5, limits=[limit(0)]), 80) == []


@pytest.mark.parametrize("percent", [0, 100, -1, 150, float("nan")])
def test_the_warning_share_must_be_a_share(percent: float) -> None:
    with pytest.raises(ValueError):
        EffectRules(warning_percent=percent)


# -- crossings -------------------------------------------------------------------
def test_warning_and_reached_fire_at_the_event_that_crosses() -> None:
    # running usage 3, 7, 9, 14: evt_2 crosses 8 (80%), evt_3 crosses 10
    found = limit_crossings(0, watch(3, 4, 2, 5), 80)
    assert [(c.action, c.event.event_id, c.usage, c.threshold) for c in found] == [
        (LIMIT_WARNING, "evt_2", 9, 8),
        (LIMIT_REACHED, "evt_3", 14, 10),
    ]


def test_one_event_can_cross_both() -> None:
    found = limit_crossings(5, watch(20), 80)
    assert [(c.action, c.usage) for c in found] == [(LIMIT_WARNING, 25), (LIMIT_REACHED, 25)]


def test_a_threshold_found_passed_is_named_at_the_first_event() -> None:
    # the counter stood past both before the batch (a backfill, a lowered
    # allocation): the rule names them, and the database row says whether they
    # fired already in the period
    found = limit_crossings(10, watch(1, 1, 1), 80)
    assert [(c.action, c.event.event_id, c.usage) for c in found] == [
        (LIMIT_WARNING, "evt_0", 11),
        (LIMIT_REACHED, "evt_0", 11),
    ]
    assert [c.action for c in limit_crossings(8, watch(1, 1, 1), 80)] == [
        LIMIT_WARNING,
        LIMIT_REACHED,
    ]
    assert limit_crossings(5, watch(1, 1), 80) == []


def test_reached_fires_once_not_once_per_event_past_the_limit() -> None:
    found = limit_crossings(0, watch(*([1] * 50)), 80)
    assert [c.action for c in found] == [LIMIT_WARNING, LIMIT_REACHED]


def test_a_correction_and_a_new_crossing_in_one_batch_fire_once() -> None:
    found = limit_crossings(0, watch(10, -5, 10), 80)
    assert [(c.action, c.event.event_id) for c in found] == [
        (LIMIT_WARNING, "evt_0"),
        (LIMIT_REACHED, "evt_0"),
    ]


def test_a_correction_below_a_threshold_finds_nothing() -> None:
    assert limit_crossings(12, watch(-5), 80) == []
    assert [c.action for c in limit_crossings(12, watch(-3), 80)] == [LIMIT_WARNING]


def test_backfill_events_move_the_counter_but_fire_nothing_themselves() -> None:
    assert limit_crossings(0, watch(20, backfill=True), 80) == []
    mixed = Watch(
        None,
        [limit()],
        [contribution(0, 9, backfill=True), contribution(1, 1), contribution(2, 1)],
    )
    # the backfill took usage past the warning silently: the next event finds
    # it passed and fires it, with the limit it crosses itself
    assert [(c.action, c.event.event_id) for c in limit_crossings(0, mixed, 80)] == [
        (LIMIT_WARNING, "evt_1"),
        (LIMIT_REACHED, "evt_1"),
    ]
    past = Watch(None, [limit()], [contribution(0, 12, backfill=True), contribution(1, -1)])
    assert [(c.action, c.usage) for c in limit_crossings(0, past, 80)] == [
        (LIMIT_WARNING, 11),
        (LIMIT_REACHED, 11),
    ]


def test_each_limit_on_a_counter_fires_on_its_own() -> None:
    two = [limit(10, feature="feat_a"), limit(100, feature="feat_b")]
    found = limit_crossings(0, watch(10, 90, limits=two), 80)
    assert [(c.limit.feature_id, c.action) for c in found] == [
        ("feat_a", LIMIT_WARNING),
        ("feat_a", LIMIT_REACHED),
        ("feat_b", LIMIT_WARNING),
        ("feat_b", LIMIT_REACHED),
    ]


@given(
    before=st.integers(-50, 50),
    quantities=st.lists(st.integers(-20, 20).filter(bool), max_size=30),
    allocation=st.integers(1, 60),
    percent=st.sampled_from([1, 50, 80, 99.5]),
)
def test_crossings_agree_with_a_running_total(
    before: int, quantities: list[int], allocation: int, percent: float
) -> None:
    """A threshold is named iff the counter stands at or past it right after
    some event of the batch; it is named at the first such event, once."""
    crossings = limit_crossings(before, watch(*quantities, limits=[limit(allocation)]), percent)
    found = {c.action: c for c in crossings}
    assert len(found) == len(crossings)
    totals = list(itertools.accumulate(quantities, initial=before))
    for action, mark in thresholds(allocation, percent):
        first = next((i for i in range(1, len(totals)) if mark <= totals[i]), None)
        if first is None:
            assert action not in found
        else:
            assert found[action].event.event_id == f"evt_{first - 1}"
            assert found[action].usage == totals[first]


# -- what processing records ----------------------------------------------------------
def event(
    n: int,
    body: dict[str, object],
    *,
    kind: str = "track",
    at: int = NOW,
    backfill: bool = False,
) -> PendingEvent:
    quantity = int(body.get("quantity", 1)) if kind == "track" else 1  # type: ignore[call-overload]
    subtype = str(body["event"]) if kind == "track" else None
    return PendingEvent(
        f"evt_{n:03d}", ENV, kind, subtype, json.dumps(body), quantity, at, backfill
    )


def track(n: int, quantity: int = 1, **kw: object) -> PendingEvent:
    body = {
        "event": "api-call",
        "company": {"id": "acme"},
        "user": {"id": "u1"},
        "quantity": quantity,
    }
    return event(n, body, **kw)  # type: ignore[arg-type]


def snapshot(*, limits: bool = True, subscribed: tuple[str, ...] = ()) -> Snapshot:
    snap = Snapshot()
    snap.keys[("company", ENV, "id", "acme")] = "comp_1"
    snap.entities["comp_1"] = StoredEntity("company", "comp_1", ENV, "Acme", "{}")
    snap.features[(ENV, "api-call")] = ["feat_1"]
    if limits:
        snap.limits[("comp_1", "api-call")] = [limit()]
    snap.subscribed = {(ENV, action) for action in subscribed}
    return snap


def test_without_allocations_or_endpoints_only_meter_records_are_recorded() -> None:
    changes = run([track(1), track(2, 5)], snapshot(limits=False))
    assert changes.watches == {} and changes.notices == []
    # whether a billing sink is configured is no concern of processing
    assert [(r.event_id, r.quantity) for r in changes.meter_records] == [
        ("evt_001", 1),
        ("evt_002", 5),
    ]


def test_a_watched_counter_lists_the_events_in_order() -> None:
    changes = run([track(1, 3), track(2, 4)], snapshot())
    key = (ENV, "comp_1", "api-call", periods.MONTH, MARCH)
    assert list(changes.watches) == [key]
    assert [c.event_id for c in changes.watches[key].contributions] == ["evt_001", "evt_002"]


def test_a_late_trusted_event_is_watched_in_its_own_period() -> None:
    changes = run([track(1, 3, at=LAST_MONTH), track(2, 4)], snapshot())
    keys = sorted(changes.watches)
    assert keys == [
        (ENV, "comp_1", "api-call", periods.MONTH, FEBRUARY),
        (ENV, "comp_1", "api-call", periods.MONTH, MARCH),
    ]
    assert [c.event_id for c in changes.watches[keys[0]].contributions] == ["evt_001"]


def test_each_allocation_period_watches_its_own_counter() -> None:
    snap = snapshot()
    snap.limits[("comp_1", "api-call")] = [
        limit(period="current_day"),
        limit(period="all_time", feature="feat_2"),
    ]
    changes = run([track(1)], snap)
    assert sorted(k[3] for k in changes.watches) == [periods.ALL_TIME, periods.DAY]


def test_meter_records_only_for_billed_non_backfill_events() -> None:
    rules = EffectRules()
    events = [
        track(1, 3),
        track(2, -2),
        track(3, 7, backfill=True),
        event(4, {"event": "unbilled", "company": {"id": "acme"}}),  # no feature
        event(5, {"event": "api-call", "user": {"id": "u1"}}),  # no company
    ]
    changes = run(events, snapshot(), rules)
    records = changes.meter_records
    assert [(r.event_id, r.quantity, r.is_adjustment) for r in records] == [
        ("evt_001", 3, False),
        ("evt_002", -2, True),
    ]
    assert all(r.customer_id == "comp_1" and r.event_name == "api-call" for r in records)


def test_the_customer_is_the_stripe_customer_id_key_when_the_company_has_one() -> None:
    snap = snapshot()
    snap.keys[("company", ENV, "stripe_customer_id", "cus_42")] = "comp_1"
    changes = run([track(1)], snap, EffectRules())
    assert changes.meter_records[0].customer_id == "cus_42"


def test_the_meter_record_body_is_the_issue_s_shape() -> None:
    record = MeterRecord(ENV, "evt_9", "comp_1", "api-call", NOW + 999_999, "cus_42", 3)
    assert msgspec.json.decode(record_body(record)) == {
        "event_name": "api-call",
        "identifier": "evt_9",
        "timestamp": NOW // 1_000_000,
        "payload": {"stripe_customer_id": "cus_42", "value": "3"},
    }
    adjustment = MeterRecord(ENV, "evt_8", "comp_1", "api-call", NOW, "cus_42", -3)
    body = msgspec.json.decode(record_body(adjustment))
    assert body["type"] == "adjustment" and body["payload"]["value"] == "-3"


ALL = ("company.created", "company.updated", "user.created", "user.updated")


def identify(
    n: int, *, name: str | None = None, traits: dict[str, object] | None = None, **kw: object
) -> PendingEvent:
    body: dict[str, object] = {"keys": {"id": "u1"}, "company": {"keys": {"id": "acme"}}}
    if name is not None:
        body["name"] = name
    if traits is not None:
        body["traits"] = traits
    return event(n, body, kind="identify", **kw)  # type: ignore[arg-type]


def test_identify_notifies_what_it_creates_and_what_it_changes() -> None:
    events = [
        identify(1),
        identify(2),
        identify(3, name="Wile"),
        identify(4, name="Wile"),
        identify(5, traits={"a": 1}),
        identify(6, traits={"a": 1}),
    ]
    changes = run(events, snapshot(subscribed=ALL))
    assert [(n.action, n.event_id) for n in changes.notices] == [
        ("user.created", "evt_001"),
        ("user.updated", "evt_003"),
        ("user.updated", "evt_005"),
    ]


def test_identify_notifies_a_new_company_and_its_changes() -> None:
    snap = snapshot(subscribed=ALL)
    snap.keys.clear()
    snap.entities.clear()
    body = {"keys": {"id": "u1"}, "company": {"keys": {"id": "new"}, "name": "New Co"}}
    changes = run([event(1, body, kind="identify")], snap)
    assert sorted(n.action for n in changes.notices) == ["company.created", "user.created"]
    company = next(n for n in changes.notices if n.object_type == "company")
    assert company.company_id == company.object_id


def test_notices_only_for_subscribed_actions_and_never_for_backfill() -> None:
    only_updates = snapshot(subscribed=("user.updated",))
    changes = run([identify(1), identify(2, name="A")], only_updates)
    assert [n.action for n in changes.notices] == ["user.updated"]
    changes = run(
        [identify(1, backfill=True), identify(2, name="A", backfill=True)], snapshot(subscribed=ALL)
    )
    assert changes.notices == []


def test_a_track_event_notifies_what_it_creates_but_no_updates() -> None:
    changes = run([track(1), track(2)], snapshot(subscribed=ALL))
    assert [(n.action, n.event_id) for n in changes.notices] == [("user.created", "evt_001")]


def test_a_failed_event_notifies_nothing() -> None:
    snap = snapshot(subscribed=ALL)
    snap.keys[("user", ENV, "email", "x@y")] = "user_9"
    snap.entities["user_9"] = StoredEntity("user", "user_9", ENV, None, "{}")
    snap.keys[("user", ENV, "id", "u1")] = "user_8"
    snap.entities["user_8"] = StoredEntity("user", "user_8", ENV, None, "{}")
    body = {"keys": {"id": "u1", "email": "x@y"}, "name": "two users"}
    changes = run([event(1, body, kind="identify")], snap)
    assert changes.outcomes[0].status == "failed"
    assert changes.notices == []
