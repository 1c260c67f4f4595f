"""Processing rules of SPEC §4 (pure).

A backend claims a batch, reads what ``needs_of`` lists into a ``Snapshot``,
calls ``process_events`` and writes the returned ``Changes`` in the same
transaction as the events' new status, so an event is never counted twice.

- identify: upsert the user and (when given) the company by any of their
  keys, set names, merge traits, link them.
- track: resolve or create company and user, attribute the event to every
  event feature of its subtype, add its quantity to the counters of every
  period containing its effective time.
- last_seen_at moves to the effective time, never backwards, never for
  backfill events.
- side effects (``tally.effects``): identity notices for subscribed
  actions, the counters that numeric allocations watch (whether a limit was
  crossed is decided when the counters are written: only then is the total
  known), and billing meter records, whether or not a billing sink is
  configured yet (they wait in the outbox for one); backfill events produce
  none of them (but see ``tally.effects.triggers`` for limits they pass).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from tally.batch import (
    Changes,
    EntityState,
    Needs,
    Outcome,
    PendingEvent,
    ProcessingFailed,
    Snapshot,
)
from tally.effects.billing import MeterRecord, customer_id
from tally.effects.triggers import Contribution, EffectRules, Notice, Watch
from tally.ingest import wire
from tally.metering.periods import counter_kind, period_starts_us
from tally.pipeline.working_set import ADD, CREATE, Resolution, WorkingSet

NO_EFFECTS = EffectRules()

_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "identify": msgspec.json.Decoder(wire.IdentifyBody),
    "track": msgspec.json.Decoder(wire.TrackBody),
}


def decode_bodies(events: Sequence[PendingEvent]) -> list[Any]:
    """Each event's typed body; ``None`` for types stored as received
    (flag_check, inference); a ``ProcessingFailed`` for an unreadable body."""
    return [_decode(event) for event in events]


def _decode(event: PendingEvent) -> Any:
    decoder = _DECODERS.get(event.type)
    if decoder is None:
        return None
    try:
        return decoder.decode(event.body.encode())
    except (msgspec.DecodeError, RecursionError) as err:
        return ProcessingFailed(f"the stored {event.type} body cannot be read: {err}")


def needs_of(events: Sequence[PendingEvent], bodies: Sequence[Any]) -> Needs:
    needs = Needs()
    companies, users = needs.refs["company"], needs.refs["user"]
    for event, body in zip(events, bodies, strict=True):
        env = event.environment_id
        if isinstance(body, wire.IdentifyBody):
            users.update((env, k, v) for k, v in body.keys.items())
            if body.company is not None:
                companies.update((env, k, v) for k, v in body.company.keys.items())
        elif isinstance(body, wire.TrackBody):
            if body.company:
                companies.update((env, k, v) for k, v in body.company.items())
            if body.user:
                users.update((env, k, v) for k, v in body.user.items())
            needs.subtypes.add((env, body.event))
    return needs


def process_events(
    events: Sequence[PendingEvent],
    bodies: Sequence[Any],
    snapshot: Snapshot,
    new_id: Callable[[str], str],
    rules: EffectRules = NO_EFFECTS,
) -> Changes:
    """Apply the rules to a batch, oldest first; a failing event becomes
    ``failed`` and leaves nothing else behind."""
    ws = WorkingSet(snapshot, new_id)
    outcomes = ws.changes.outcomes
    billed: list[tuple[PendingEvent, str, str]] = []  # event, company id, subtype
    for event, body in zip(events, bodies, strict=True):
        if isinstance(body, ProcessingFailed):
            _fail(ws.changes, event, body)
            continue
        try:
            outcome = _process(ws, event, body)
        except ProcessingFailed as err:
            _fail(ws.changes, event, err)
            continue
        outcomes.append(outcome)
        if (
            isinstance(body, wire.TrackBody)
            and not event.backfill
            and outcome.company_id is not None
            and outcome.feature_ids
        ):
            billed.append((event, outcome.company_id, body.event))
    for event, company_id, subtype in billed:
        # the customer id as the batch leaves the company (a key it added counts)
        keys = ws.entity(company_id).keys
        ws.changes.meter_records.append(
            MeterRecord(
                event.environment_id,
                event.id,
                company_id,
                subtype,
                event.captured_at,
                customer_id(company_id, keys),
                event.quantity,
            )
        )
    return ws.changes


def _fail(changes: Changes, event: PendingEvent, err: ProcessingFailed) -> None:
    """The event fails and lets its idempotency key go (in the transaction
    that marks it failed), so that the corrected resend is stored."""
    changes.outcomes.append(Outcome(event.id, "failed", error_message=str(err)))
    if event.idempotency_key is not None:
        changes.released.append((event.environment_id, event.type, event.idempotency_key, event.id))


def upsert_changes(
    snapshot: Snapshot,
    new_id: Callable[[str], str],
    kind: str,
    environment_id: str,
    keys: Mapping[str, str],
    name: str | None,
    traits: Mapping[str, Any] | None,
) -> tuple[str, Changes]:
    """The identify upsert of one entity outside an event (admin API):
    returns its id and the changes to write."""
    ws = WorkingSet(snapshot, new_id)
    entity = ws.upsert(ws.resolve(kind, environment_id, keys), environment_id, name, traits)
    return entity.id, ws.changes


def _process(ws: WorkingSet, event: PendingEvent, body: Any) -> Outcome:
    if isinstance(body, wire.IdentifyBody):
        return _identify(ws, event, body)
    if isinstance(body, wire.TrackBody):
        return _track(ws, event, body)
    return Outcome(event.id, "processed")


def _identify(ws: WorkingSet, event: PendingEvent, body: wire.IdentifyBody) -> Outcome:
    env = event.environment_id
    # resolve everything first: a failure must leave the working set untouched
    company_res = ws.resolve("company", env, body.company.keys) if body.company else None
    user_res = ws.resolve("user", env, body.keys)
    for res in (company_res, user_res):
        if res is not None:
            ws.check_keys(res, adds=True, secret=event.secret)
    company = None
    revisions = _revisions(company_res, user_res)
    if company_res is not None and body.company is not None:
        company = ws.upsert(company_res, env, body.company.name, body.company.traits, keys=ADD)
    user = ws.upsert(user_res, env, body.name, body.traits, keys=ADD)
    if company is not None:
        ws.link(env, company, user)
    if not event.backfill:
        for entity in (company, user):
            if entity is not None:
                ws.see(entity, event.captured_at)
        _notify(ws, event, ((company_res, company), (user_res, user)), revisions, updates=True)
    return Outcome(
        event.id, "processed", company_id=company.id if company else None, user_id=user.id
    )


def _track(ws: WorkingSet, event: PendingEvent, body: wire.TrackBody) -> Outcome:
    env = event.environment_id
    company_res = ws.resolve("company", env, body.company) if body.company else None
    user_res = ws.resolve("user", env, body.user) if body.user else None
    for res in (company_res, user_res):
        if res is not None:  # a track event adds keys only to what it creates
            ws.check_keys(res, adds=False, secret=event.secret)
    if company_res is not None and company_res.entity is not None and ws.snapshot.counters_read:
        _check_counters(
            ws, event, company_res.entity.id, company_res.entity.billing_anchor, body.event
        )
    revisions = _revisions(company_res, user_res)
    company = ws.upsert(company_res, env, keys=CREATE) if company_res is not None else None
    user = ws.upsert(user_res, env, keys=CREATE) if user_res is not None else None
    if company is not None and user is not None:
        ws.link(env, company, user)
    subtype = body.event
    if company is not None:
        _count(ws, event, company.id, company.billing_anchor, subtype)
    if not event.backfill:
        for entity in (company, user):
            if entity is not None:
                ws.see(entity, event.captured_at)
        _notify(ws, event, ((company_res, company), (user_res, user)), revisions, updates=False)
    return Outcome(
        event.id,
        "processed",
        company_id=company.id if company else None,
        user_id=user.id if user else None,
        feature_ids=ws.features(env, subtype),
    )


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _check_counters(
    ws: WorkingSet, event: PendingEvent, company_id: str, anchor: int | None, subtype: str
) -> None:
    """Fail an event that would take a usage counter past 64 bits. Checked
    only once the stored totals are known: a first attempt at the batch writes
    without checking, and only one that overflowed reads them and runs again."""
    counters, stored = ws.changes.counters, ws.snapshot.counters
    for kind, start in period_starts_us(event.captured_at, anchor):
        key = (event.environment_id, company_id, subtype, kind, start)
        total = stored.get(key, 0) + counters.get(key, (0, 0))[0] + event.quantity
        if not INT64_MIN <= total <= INT64_MAX:
            raise ProcessingFailed(
                f"quantity {event.quantity} would take the {kind} usage counter of "
                f"{subtype!r} for {company_id} past the 64-bit limit; send a correction first"
            )


def _count(
    ws: WorkingSet, event: PendingEvent, company_id: str, anchor: int | None, subtype: str
) -> None:
    counters = ws.changes.counters
    starts = period_starts_us(event.captured_at, anchor)
    for kind, start in starts:
        key = (event.environment_id, company_id, subtype, kind, start)
        qty, count = counters.get(key, (0, 0))
        counters[key] = (qty + event.quantity, count + 1)
    limits = ws.snapshot.limits.get((company_id, subtype))
    if limits:
        _watch(ws, event, company_id, anchor, subtype, dict(starts), limits)


def _watch(
    ws: WorkingSet,
    event: PendingEvent,
    company_id: str,
    anchor: int | None,
    subtype: str,
    starts: dict[str, int],
    limits: list[Any],
) -> None:
    """Note the event's part of each counter an allocation watches (the
    counter of the allocation's period that holds the event's effective time)."""
    watches = ws.changes.watches
    contribution = Contribution(event.id, event.quantity, event.captured_at, event.backfill)
    touched: set[tuple[str, str, str, str, int]] = set()
    for limit in limits:
        kind = counter_kind(limit.metric_period, limit.month_reset or "", anchor is not None)
        key = (event.environment_id, company_id, subtype, kind, starts[kind])
        watch = watches.get(key)
        if watch is None:
            watch = watches[key] = Watch(anchor)
        if limit not in watch.limits:
            watch.limits.append(limit)
        if key not in touched:
            touched.add(key)
            watch.contributions.append(contribution)


def _revisions(*resolutions: Resolution | None) -> list[int | None]:
    """Each resolved entity's revision before the event changes it (``None``:
    the event creates it)."""
    return [
        None if res is None or res.entity is None else res.entity.revision for res in resolutions
    ]


def _notify(
    ws: WorkingSet,
    event: PendingEvent,
    pairs: Sequence[tuple[Resolution | None, EntityState | None]],
    revisions: list[int | None],
    *,
    updates: bool,
) -> None:
    """``….created`` for what the event created; ``….updated`` (identify only)
    for what it changed; only for actions some endpoint subscribes to."""
    subscribed = ws.snapshot.subscribed
    if not subscribed:
        return
    env = event.environment_id
    for (res, entity), before in zip(pairs, revisions, strict=True):
        if res is None or entity is None:
            continue
        if before is None:
            action = f"{entity.kind}.created"
        elif updates and entity.revision != before:
            action = f"{entity.kind}.updated"
        else:
            continue
        if (env, action) not in subscribed:
            continue
        ws.changes.notices.append(
            Notice(
                env,
                action,
                entity.kind,
                entity.id,
                company_id=entity.id if entity.kind == "company" else None,
                event_id=event.id,
            )
        )
