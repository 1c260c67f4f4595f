"""Properties of the pure processing rules over random batches (hypothesis):
a few companies and users whose keys overlap, so that some events name two
records or change a key's value and fail.

- the usage counters are the recount of the processed track events, per
  period holding each event's time;
- a failed event leaves nothing behind: the batch without it makes exactly
  the same changes;
- every event ends processed or failed, a failed one with its reason."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tally.batch import Changes, PendingEvent, Snapshot
from tally.metering.periods import period_starts_us
from tests.support.batch import ENV, pending, run_batch, stored
from tests.support.clock import NOW_US

DAY_US = 86_400_000_000
KEYS = st.dictionaries(st.sampled_from(("id", "domain")), st.sampled_from("abc"), min_size=1)


@st.composite
def events(draw: st.DrawFn, n: int) -> PendingEvent:
    at = NOW_US - draw(st.integers(0, 40)) * DAY_US // 4
    backfill = draw(st.booleans())
    if draw(st.booleans()):
        body: dict[str, Any] = {"keys": draw(KEYS)}
        if draw(st.booleans()):
            body["company"] = {"keys": draw(KEYS), "traits": {"n": n}}
        return pending(n, "identify", body, at=at, backfill=backfill)
    body = {
        "event": draw(st.sampled_from(("api-call", "query"))),
        "quantity": draw(st.sampled_from((1, 2, 5, -3))),
        "company": draw(KEYS),
    }
    if draw(st.booleans()):
        body["user"] = draw(KEYS)
    return pending(n, "track", body, at=at, backfill=backfill)


@st.composite
def batches(draw: st.DrawFn) -> list[PendingEvent]:
    size = draw(st.integers(1, 12))
    return [draw(events(n)) for n in range(size)]


def snapshot() -> Snapshot:
    snap = Snapshot()
    stored(snap, "company", "comp_a", {"id": "a", "domain": "a"}, anchor=NOW_US - 50 * DAY_US)
    stored(snap, "company", "comp_b", {"id": "b"})
    stored(snap, "user", "user_a", {"id": "a"})
    stored(snap, "user", "user_c", {"domain": "c"})
    snap.features[(ENV, "api-call")] = ["feat_1"]
    return snap


def anchor_of(snap: Snapshot, company_id: str) -> int | None:
    """The stored company's billing anchor (a company the batch made has none)."""
    found = snap.entities.get(company_id)
    return found.billing_anchor if found is not None else None


@settings(max_examples=150, deadline=None)
@given(batch=batches())
def test_counters_are_the_recount_of_processed_track_events(batch: list[PendingEvent]) -> None:
    snap = snapshot()
    changes = run_batch(batch, snap)
    assert [o.event_id for o in changes.outcomes] == [e.id for e in batch]
    expected: dict[tuple[str, str, str, str, int], list[int]] = defaultdict(lambda: [0, 0])
    for event, outcome in zip(batch, changes.outcomes, strict=True):
        assert outcome.status in ("processed", "failed")
        assert (outcome.status == "failed") == (outcome.error_message is not None)
        if outcome.status != "processed" or event.type != "track":
            continue
        assert outcome.company_id is not None  # every random track names a company
        anchor = anchor_of(snap, outcome.company_id)
        for kind, start in period_starts_us(event.captured_at, anchor):
            total = expected[(ENV, outcome.company_id, str(event.subtype), kind, start)]
            total[0] += event.quantity
            total[1] += 1
    assert changes.counters == {key: (q, c) for key, (q, c) in expected.items()}


def comparable(changes: Changes) -> tuple[Any, ...]:
    return (
        changes.entities,
        changes.memberships,
        changes.counters,
        changes.meter_records,
        changes.watches,
        changes.notices,
    )


@settings(max_examples=150, deadline=None)
@given(batch=batches())
def test_a_failed_event_leaves_nothing_behind(batch: list[PendingEvent]) -> None:
    changes = run_batch(batch, snapshot())
    failed = {o.event_id for o in changes.outcomes if o.status == "failed"}
    kept = [e for e in batch if e.id not in failed]
    again = run_batch(kept, snapshot())
    assert all(o.status == "processed" for o in again.outcomes)
    assert comparable(again) == comparable(changes)
