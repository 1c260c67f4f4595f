"""The processing rules of SPEC §4 on batches built in memory (no storage):
``process_events`` on a ``Snapshot`` of what storage would hold.

identify and track semantics (resolve by any key, create, add keys, merge
traits, link), the usage counters of every period, key conflicts and the
failures that leave nothing behind, ``last_seen``, the counters allocations
watch and billing meter records. The same rules on a real database, against
a reference model, are ``tests/contract/test_pipeline_property.py``."""

from __future__ import annotations

from typing import Any

import pytest

from tally.batch import Changes, EntityState, PendingEvent, Snapshot
from tally.effects.triggers import Limit
from tally.metering import periods
from tally.pipeline.rules import decode_bodies, needs_of, upsert_changes
from tests.support.batch import ENV, pending, run_batch, stored
from tests.support.clock import NOW_US

HOUR_US = 3_600_000_000
INT64_MAX = 2**63 - 1


def identify(n: int, keys: dict[str, str], **body: Any) -> PendingEvent:
    return pending(n, "identify", {"keys": keys, **body})


def track(
    n: int,
    company: dict[str, str] | None = None,
    *,
    quantity: int = 1,
    user: dict[str, str] | None = None,
    subtype: str = "api-call",
    **kw: Any,
) -> PendingEvent:
    body: dict[str, Any] = {"event": subtype, "quantity": quantity}
    if company is not None:
        body["company"] = company
    if user is not None:
        body["user"] = user
    return pending(n, "track", body, **kw)


def acme(**kw: Any) -> Snapshot:
    """A stored company ``comp_1`` (keys id=acme, domain=acme.com) with an
    event feature on ``api-call``."""
    snap = Snapshot()
    stored(snap, "company", "comp_1", {"id": "acme", "domain": "acme.com"}, **kw)
    snap.features[(ENV, "api-call")] = ["feat_1"]
    return snap


def entity(changes: Changes, entity_id: str) -> EntityState:
    return next(e for e in changes.entities if e.id == entity_id)


def statuses(changes: Changes) -> list[tuple[str, str]]:
    return [(o.event_id, o.status) for o in changes.outcomes]


def error_of(changes: Changes, n: int = 0) -> str:
    message = changes.outcomes[n].error_message
    assert message is not None
    return message


# -- identify -------------------------------------------------------------------------
def test_identify_creates_the_user_and_company_and_links_them() -> None:
    event = identify(
        1,
        {"email": "a@x"},
        name="Ann",
        traits={"plan": "pro"},
        company={"keys": {"id": "acme"}, "name": "Acme", "traits": {"size": 3}},
    )
    changes = run_batch([event], Snapshot())
    (outcome,) = changes.outcomes
    assert (outcome.status, outcome.company_id, outcome.user_id) == (
        "processed",
        "comp_000",
        "user_001",
    )
    company, user = entity(changes, "comp_000"), entity(changes, "user_001")
    assert (company.new, company.name, company.traits, company.added_keys) == (
        True,
        "Acme",
        {"size": 3},
        {"id": "acme"},
    )
    assert (user.kind, user.name, user.trait_updates, user.added_keys) == (
        "user",
        "Ann",
        {"plan": "pro"},
        {"email": "a@x"},
    )
    assert changes.memberships == {(ENV, "comp_000", "user_001")}
    assert company.last_seen == user.last_seen == NOW_US


def test_identify_finds_an_entity_by_any_key_and_adds_the_key_names_it_lacks() -> None:
    snap = Snapshot()
    stored(snap, "user", "user_9", {"email": "a@x"}, name="Ann")
    changes = run_batch([identify(1, {"email": "a@x", "id": "u-1"})], snap)
    assert changes.outcomes[0].user_id == "user_9"
    user = entity(changes, "user_9")
    assert not user.new and user.added_keys == {"id": "u-1"}
    assert user.keys == {"email": "a@x", "id": "u-1"}
    assert user.name == "Ann" and not user.name_given  # not sent: kept


def test_an_entity_created_early_in_the_batch_is_found_by_a_later_event() -> None:
    events = [identify(1, {"email": "a@x"}), identify(2, {"email": "a@x", "id": "u-1"})]
    changes = run_batch(events, Snapshot())
    assert [o.user_id for o in changes.outcomes] == ["user_000", "user_000"]
    assert [e.id for e in changes.entities] == ["user_000"]
    assert entity(changes, "user_000").added_keys == {"email": "a@x", "id": "u-1"}


def test_traits_merge_top_level_keys_replace() -> None:
    snap = Snapshot()
    stored(snap, "user", "user_9", {"id": "u-1"}, traits={"a": 1, "b": {"x": 1}})
    changes = run_batch([identify(1, {"id": "u-1"}, traits={"b": {"y": 2}, "c": 3})], snap)
    user = entity(changes, "user_9")
    assert user.traits == {"a": 1, "b": {"y": 2}, "c": 3}
    assert user.trait_updates == {"b": {"y": 2}, "c": 3} and user.dirty


def test_an_identify_that_changes_nothing_changes_no_revision() -> None:
    snap = Snapshot()
    stored(snap, "user", "user_9", {"id": "u-1"}, name="Ann", traits={"a": 1})
    changes = run_batch([identify(1, {"id": "u-1"}, name="Ann", traits={"a": 1})], snap)
    assert entity(changes, "user_9").revision == 0


def test_the_entity_s_own_id_finds_it_and_is_not_a_key() -> None:
    snap = acme()
    snap.keys[("company", ENV, "id", "comp_1")] = "comp_1"  # how storage finds an own id
    event = identify(1, {"id": "u-1"}, company={"keys": {"id": "comp_1"}})
    changes = run_batch([event], snap)
    assert changes.outcomes[0].company_id == "comp_1"
    assert entity(changes, "comp_1").added_keys == {}


# -- key conflicts and failures ---------------------------------------------------------
def test_an_event_never_changes_a_key_s_value() -> None:
    changes = run_batch(
        [
            identify(1, {"id": "u-1"}, company={"keys": {"id": "acme", "domain": "acme.org"}}),
            track(2, {"id": "acme", "domain": "acme.org"}),
        ],
        acme(),
    )
    assert statuses(changes) == [("evt_001", "failed"), ("evt_002", "failed")]
    assert error_of(changes, 0) == (
        "the company comp_1 already has another value for the key 'domain'; an event never "
        "changes a key's value (a secret key can, with POST /companies)"
    )
    assert changes.entities == [] and changes.counters == {} and not changes.memberships


def test_keys_of_two_entities_fail_the_event_and_leave_nothing_behind() -> None:
    snap = Snapshot()
    stored(snap, "user", "user_8", {"id": "u-1"})
    stored(snap, "user", "user_9", {"email": "a@x"})
    events = [
        identify(1, {"id": "u-1", "email": "a@x"}, company={"keys": {"id": "new"}}),
        identify(2, {"id": "u-2"}),
    ]
    changes = run_batch(events, snap)
    assert statuses(changes) == [("evt_001", "failed"), ("evt_002", "processed")]
    assert "match 2 different user records (user_8, user_9)" in error_of(changes)
    # the company the failed event named was never made; the next event's ids are unused
    assert [(e.kind, e.id) for e in changes.entities] == [("user", "user_000")]
    assert not changes.memberships


def test_empty_keys_fail_the_event() -> None:
    changes = run_batch([identify(1, {})], Snapshot())
    assert error_of(changes) == "user keys are empty; send at least one key"


def test_only_a_secret_key_sets_a_company_s_billing_key() -> None:
    company = {"keys": {"id": "acme", "stripe_customer_id": "cus_1"}}
    refused = run_batch(
        [pending(1, "identify", {"keys": {"id": "u"}, "company": company}, secret=False)],
        Snapshot(),
    )
    assert "only a secret API key may set the billing key" in error_of(refused)
    allowed = run_batch(
        [pending(1, "identify", {"keys": {"id": "u"}, "company": company})], Snapshot()
    )
    assert entity(allowed, "comp_000").added_keys == {"id": "acme", "stripe_customer_id": "cus_1"}


def test_a_failed_event_lets_its_idempotency_key_go() -> None:
    keyed = pending(1, "identify", {"keys": {}}, idempotency_key="k-1")
    processed = pending(2, "identify", {"keys": {"id": "u"}}, idempotency_key="k-2")
    changes = run_batch([keyed, processed, identify(3, {})], Snapshot())
    assert statuses(changes)[1] == ("evt_002", "processed")
    # only the failed event's key goes (so that its corrected resend is stored)
    assert changes.released == [(ENV, "identify", "k-1", "evt_001")]


def test_an_unreadable_body_fails_and_a_stored_as_received_type_passes() -> None:
    events = [
        pending(1, "track", {"event": 3}),  # not a track body
        pending(2, "flag_check", {"anything": True}),
    ]
    changes = run_batch(events, Snapshot())
    assert statuses(changes) == [("evt_001", "failed"), ("evt_002", "processed")]
    assert error_of(changes).startswith("the stored track body cannot be read: ")
    assert changes.entities == [] and changes.counters == {}


# -- track ----------------------------------------------------------------------------
def test_track_counts_the_quantity_in_every_period_holding_its_time() -> None:
    changes = run_batch(
        [track(1, {"id": "acme"}, quantity=3), track(2, {"id": "acme"}, quantity=-1)], acme()
    )
    expected = {
        (ENV, "comp_1", "api-call", kind, start): (2, 2)
        for kind, start in periods.period_starts_us(NOW_US, None)
    }
    assert changes.counters == expected
    assert {k[3] for k in expected} == {periods.ALL_TIME, periods.DAY, periods.WEEK, periods.MONTH}
    assert [o.feature_ids for o in changes.outcomes] == [["feat_1"], ["feat_1"]]


def test_a_company_with_a_billing_anchor_also_counts_its_billing_period() -> None:
    anchor = NOW_US - 40 * 24 * HOUR_US
    changes = run_batch([track(1, {"id": "acme"})], acme(anchor=anchor))
    kinds = {key[3]: key[4] for key in changes.counters}
    assert kinds[periods.BILLING] == dict(periods.period_starts_us(NOW_US, anchor))[periods.BILLING]


def test_track_creates_what_it_names_but_adds_no_key_to_what_it_finds() -> None:
    changes = run_batch([track(1, {"id": "acme", "slug": "a"}, user={"id": "u-1"})], acme())
    company = entity(changes, "comp_1")
    assert company.added_keys == {} and company.keys == {"id": "acme", "domain": "acme.com"}
    user = entity(changes, "user_000")
    assert user.new and user.added_keys == {"id": "u-1"}
    assert changes.memberships == {(ENV, "comp_1", "user_000")}


def test_track_without_a_company_counts_nothing() -> None:
    changes = run_batch([track(1, user={"id": "u-1"})], acme())
    (outcome,) = changes.outcomes
    assert outcome.status == "processed" and outcome.company_id is None
    assert changes.counters == {} and changes.meter_records == [] and not changes.memberships


def test_a_counter_past_64_bits_fails_only_that_event() -> None:
    snap = acme()
    month = dict(periods.period_starts_us(NOW_US, None))[periods.MONTH]
    snap.counters[(ENV, "comp_1", "api-call", periods.MONTH, month)] = INT64_MAX - 5
    snap.counters_read = True  # as after a first attempt overflowed and read the totals
    events = [track(1, {"id": "acme"}, quantity=5), track(2, {"id": "acme"}, quantity=1)]
    changes = run_batch(events, snap)
    assert statuses(changes) == [("evt_001", "processed"), ("evt_002", "failed")]
    assert "past the 64-bit limit; send a correction first" in error_of(changes, 1)
    assert all(qty == 5 for qty, _ in changes.counters.values())


# -- last seen --------------------------------------------------------------------------
def test_last_seen_moves_forward_only_and_never_for_backfill() -> None:
    events = [
        track(1, {"id": "acme"}, at=NOW_US),
        track(2, {"id": "acme"}, at=NOW_US - HOUR_US),  # a late trusted event
        track(3, {"id": "acme"}, at=NOW_US + HOUR_US, backfill=True),
    ]
    changes = run_batch(events, acme())
    assert entity(changes, "comp_1").last_seen == NOW_US
    only_backfill = run_batch([track(1, {"id": "acme"}, backfill=True)], acme())
    assert only_backfill.entities == []  # nothing else changed either


# -- what allocations watch, and meter records ------------------------------------------
def limit(n: int, period: str) -> Limit:
    return Limit(f"cmov_{n}", "comp_1", f"feat_{n}", "api-call", 10, period, "first_of_month")


def test_each_watched_counter_gets_each_event_once() -> None:
    snap = acme()
    # two allocations on the month counter, one on the day counter
    snap.limits[("comp_1", "api-call")] = [
        limit(1, "current_month"),
        limit(2, "current_month"),
        limit(3, "current_day"),
    ]
    changes = run_batch(
        [track(1, {"id": "acme"}, quantity=4), track(2, {"id": "acme"}, subtype="other")], snap
    )
    starts = dict(periods.period_starts_us(NOW_US, None))
    assert sorted(changes.watches) == sorted(
        (ENV, "comp_1", "api-call", kind, starts[kind]) for kind in (periods.DAY, periods.MONTH)
    )
    for key, watch in changes.watches.items():
        assert [(c.event_id, c.quantity) for c in watch.contributions] == [("evt_001", 4)]
        assert len(watch.limits) == (2 if key[3] == periods.MONTH else 1)


def test_a_meter_record_bills_the_customer_key_the_batch_leaves_the_company_with() -> None:
    events = [
        track(1, {"id": "acme"}, quantity=2),
        pending(
            2,
            "identify",
            {
                "keys": {"id": "u"},
                "company": {"keys": {"id": "acme", "stripe_customer_id": "cus_7"}},
            },
        ),
        track(3, {"id": "acme"}, subtype="unbilled"),  # no feature counts it
        track(4, {"id": "acme"}, backfill=True),
    ]
    changes = run_batch(events, acme())
    assert [
        (r.event_id, r.company_id, r.customer_id, r.quantity) for r in changes.meter_records
    ] == [("evt_001", "comp_1", "cus_7", 2)]


# -- what a batch reads, and the admin upsert ---------------------------------------------
def test_needs_lists_every_key_and_subtype_the_batch_names() -> None:
    events = [
        identify(1, {"email": "a@x"}, company={"keys": {"id": "acme"}}),
        track(2, {"domain": "b.com"}, user={"id": "u-2"}, subtype="query"),
        pending(3, "flag_check", {"flag": "f"}),
        pending(4, "track", {"event": 3}),  # unreadable: reads nothing
    ]
    needs = needs_of(events, decode_bodies(events))
    assert needs.refs == {
        "company": {(ENV, "id", "acme"), (ENV, "domain", "b.com")},
        "user": {(ENV, "email", "a@x"), (ENV, "id", "u-2")},
    }
    assert needs.subtypes == {(ENV, "query")}


@pytest.mark.parametrize("replaced", [True, False])
def test_the_admin_upsert_replaces_a_key_s_value(replaced: bool) -> None:
    keys = {"id": "acme", "domain": "acme.org" if replaced else "acme.com"}
    entity_id, changes = upsert_changes(acme(), str, "company", ENV, keys, "Acme", None)
    assert entity_id == "comp_1"
    company = entity(changes, "comp_1")
    assert company.keys == keys and company.name == "Acme"
    assert company.added_keys == ({"domain": "acme.org"} if replaced else {})
