"""Processing rules of SPEC §4, applied to one claimed batch in one
transaction: entity changes, counters, last_seen_at and event status are
written together, so an event is never counted twice.

- identify: upsert the user and (when given) the company by any of their
  keys, set names, merge traits, link them.
- track: resolve or create company and user, attribute the event to every
  event feature of its subtype, add its quantity to the counters of every
  period containing its effective time.
- last_seen_at moves to the effective time, never backwards, never for
  backfill events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from tally.ingest import wire
from tally.metering.periods import period_starts_us
from tally.pipeline.identities import ProcessingFailed
from tally.pipeline.unit import Outcome, PendingEvent, UnitOfWork
from tally.pipeline.working_set import WorkingSet

_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "identify": msgspec.json.Decoder(wire.IdentifyBody),
    "track": msgspec.json.Decoder(wire.TrackBody),
}


def process_batch(uow: UnitOfWork, limit: int, now: int) -> int:
    """Claim up to ``limit`` pending events (oldest first), process them and
    write the result. Returns how many were claimed; the caller commits."""
    events = uow.claim_pending(limit)
    if not events:
        return 0
    ws = WorkingSet(uow)
    bodies = [_decode(event) for event in events]
    _prefetch(ws, events, bodies)
    outcomes = ws.changes.outcomes
    for event, body in zip(events, bodies, strict=True):
        if isinstance(body, ProcessingFailed):
            outcomes.append(Outcome(event.id, "failed", error_message=str(body)))
            continue
        try:
            outcomes.append(_process(ws, event, body))
        except ProcessingFailed as err:
            outcomes.append(Outcome(event.id, "failed", error_message=str(err)))
    uow.apply(ws.changes, now)
    return len(events)


def upsert_entity(
    uow: UnitOfWork,
    kind: str,
    environment_id: str,
    keys: Mapping[str, str],
    name: str | None,
    traits: Mapping[str, Any] | None,
    now: int,
) -> str:
    """The identify upsert for one entity outside an event (admin API): find by
    any key or create, add keys, set name, merge traits; written at once."""
    ws = WorkingSet(uow)
    entity = ws.upsert(ws.resolve(kind, environment_id, keys), environment_id, name, traits)
    uow.apply(ws.changes, now)
    return entity.id


def _decode(event: PendingEvent) -> Any:
    decoder = _DECODERS.get(event.type)
    if decoder is None:
        return None  # flag_check, inference: stored as received
    try:
        return decoder.decode(event.body.encode())
    except (msgspec.DecodeError, RecursionError) as err:
        return ProcessingFailed(f"the stored {event.type} body cannot be read: {err}")


def _prefetch(ws: WorkingSet, events: list[PendingEvent], bodies: list[Any]) -> None:
    companies: list[tuple[str, str, str]] = []
    users: list[tuple[str, str, str]] = []
    for event, body in zip(events, bodies, strict=True):
        env = event.environment_id
        if isinstance(body, wire.IdentifyBody):
            users.extend((env, k, v) for k, v in body.keys.items())
            if body.company is not None:
                companies.extend((env, k, v) for k, v in body.company.keys.items())
        elif isinstance(body, wire.TrackBody):
            if body.company:
                companies.extend((env, k, v) for k, v in body.company.items())
            if body.user:
                users.extend((env, k, v) for k, v in body.user.items())
    ws.prefetch("company", companies)
    ws.prefetch("user", users)


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
    company = None
    if company_res is not None and body.company is not None:
        company = ws.upsert(company_res, env, body.company.name, body.company.traits)
    user = ws.upsert(user_res, env, body.name, body.traits)
    if company is not None:
        ws.link(env, company, user)
    if not event.backfill:
        for entity in (company, user):
            if entity is not None:
                ws.see(entity, event.captured_at)
    return Outcome(
        event.id, "processed", company_id=company.id if company else None, user_id=user.id
    )


def _track(ws: WorkingSet, event: PendingEvent, body: wire.TrackBody) -> Outcome:
    env = event.environment_id
    company_res = ws.resolve("company", env, body.company) if body.company else None
    user_res = ws.resolve("user", env, body.user) if body.user else None
    company = ws.upsert(company_res, env) if company_res is not None else None
    user = ws.upsert(user_res, env) if user_res is not None else None
    if company is not None and user is not None:
        ws.link(env, company, user)
    subtype = body.event
    feature_ids = ws.uow.event_features(env, subtype)
    if company is not None:
        anchor_us = None if company.new else ws.uow.billing_anchor(company.id)
        counters = ws.changes.counters
        for kind, start in period_starts_us(event.captured_at, anchor_us):
            key = (env, company.id, subtype, kind, start)
            qty, count = counters.get(key, (0, 0))
            counters[key] = (qty + event.quantity, count + 1)
    if not event.backfill:
        for entity in (company, user):
            if entity is not None:
                ws.see(entity, event.captured_at)
    return Outcome(
        event.id,
        "processed",
        company_id=company.id if company else None,
        user_id=user.id if user else None,
        feature_ids=feature_ids,
    )
