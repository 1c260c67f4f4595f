"""Processing rules of SPEC §4, applied to one claimed batch in one
transaction (``UnitOfWork``): entity changes, counters, last_seen_at and
event status commit together, so processing an event twice is impossible."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tally.clock import from_micros, to_micros
from tally.ingest import wire
from tally.metering.periods import periods_containing
from tally.pipeline.identities import ProcessingFailed, merge_traits, pick_one
from tally.pipeline.unit import CounterKey, Outcome, PendingEvent, UnitOfWork

_IDENTIFY = msgspec.json.Decoder(wire.IdentifyBody)
_TRACK = msgspec.json.Decoder(wire.TrackBody)


@dataclass(slots=True)
class BatchState:
    now: int
    counters: dict[CounterKey, tuple[int, int]] = field(default_factory=dict)
    company_seen: dict[str, int] = field(default_factory=dict)
    user_seen: dict[str, int] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)


def process_batch(uow: UnitOfWork, limit: int, now: int) -> int:
    """Claim up to ``limit`` pending events (oldest first) and process them.
    Returns how many were claimed; the caller commits."""
    events = uow.claim_pending(limit)
    if not events:
        return 0
    state = BatchState(now=now)
    for event in events:
        uow.savepoint()
        local = BatchState(now=now)
        try:
            outcome = process_event(uow, event, local)
        except ProcessingFailed as err:
            uow.rollback_savepoint()
            uow.release_savepoint()
            state.outcomes.append(Outcome(event.id, "failed", error_message=str(err)))
            continue
        uow.release_savepoint()
        state.outcomes.append(outcome)
        _merge(state, local)
    uow.add_counters(state.counters)
    uow.bump_last_seen("company", state.company_seen, now)
    uow.bump_last_seen("user", state.user_seen, now)
    uow.finish(state.outcomes, now)
    return len(events)


def _merge(into: BatchState, part: BatchState) -> None:
    for key, (qty, count) in part.counters.items():
        old_qty, old_count = into.counters.get(key, (0, 0))
        into.counters[key] = (old_qty + qty, old_count + count)
    for target, source in (
        (into.company_seen, part.company_seen),
        (into.user_seen, part.user_seen),
    ):
        for entity, at in source.items():
            if at > target.get(entity, at - 1):
                target[entity] = at


def process_event(uow: UnitOfWork, event: PendingEvent, state: BatchState) -> Outcome:
    if event.type == "identify":
        return _identify(uow, event, state)
    if event.type == "track":
        return _track(uow, event, state)
    return Outcome(event.id, "processed")  # flag_check, inference: stored as received


def _decode(decoder: msgspec.json.Decoder[Any], event: PendingEvent) -> Any:
    try:
        return decoder.decode(event.body.encode())
    except msgspec.DecodeError as err:
        raise ProcessingFailed(f"the stored {event.type} body cannot be read: {err}") from None


def upsert_entity(
    uow: UnitOfWork,
    kind: str,
    environment_id: str,
    keys: Mapping[str, str],
    name: str | None,
    traits: Mapping[str, Any] | None,
    now: int,
) -> str:
    """Find the entity by any of its keys (creating it when none matches),
    add new keys, set the name when given and merge traits."""
    if not keys:
        raise ProcessingFailed(f"{kind} keys are empty; send at least one key")
    found = pick_one(kind, uow.find_entities(kind, environment_id, keys), keys)
    new_traits = msgspec.json.encode(dict(traits)).decode() if traits else "{}"
    if found is None:
        entity_id = uow.create_entity(kind, environment_id, name, new_traits, now)
    else:
        entity_id = found
        if name is not None or traits:
            old_name, old_traits = uow.load_entity(kind, entity_id)
            uow.update_entity(
                kind,
                entity_id,
                name if name is not None else old_name,
                merge_traits(old_traits, traits),
                now,
            )
    uow.set_keys(kind, environment_id, entity_id, keys, now)
    return entity_id


def _see(
    state: BatchState, event: PendingEvent, company_id: str | None, user_id: str | None
) -> None:
    if event.backfill:
        return  # backfills never move last_seen_at
    if company_id is not None:
        state.company_seen[company_id] = max(
            state.company_seen.get(company_id, 0), event.captured_at
        )
    if user_id is not None:
        state.user_seen[user_id] = max(state.user_seen.get(user_id, 0), event.captured_at)


def _identify(uow: UnitOfWork, event: PendingEvent, state: BatchState) -> Outcome:
    body: wire.IdentifyBody = _decode(_IDENTIFY, event)
    env = event.environment_id
    company_id = None
    if body.company is not None:
        company = body.company
        company_id = upsert_entity(
            uow, "company", env, company.keys, company.name, company.traits, state.now
        )
    user_id = upsert_entity(uow, "user", env, body.keys, body.name, body.traits, state.now)
    if company_id is not None:
        uow.ensure_membership(env, company_id, user_id, state.now)
    _see(state, event, company_id, user_id)
    return Outcome(event.id, "processed", company_id=company_id, user_id=user_id)


def _track(uow: UnitOfWork, event: PendingEvent, state: BatchState) -> Outcome:
    body: wire.TrackBody = _decode(_TRACK, event)
    env = event.environment_id
    company_id = user_id = None
    if body.company:
        company_id = upsert_entity(uow, "company", env, body.company, None, None, state.now)
    if body.user:
        user_id = upsert_entity(uow, "user", env, body.user, None, None, state.now)
    if company_id is not None and user_id is not None:
        uow.ensure_membership(env, company_id, user_id, state.now)
    subtype = body.event
    feature_ids = uow.event_features(env, subtype)
    if company_id is not None:
        anchor_us = uow.billing_anchor(company_id)
        anchor = from_micros(anchor_us) if anchor_us is not None else None
        for kind, start in periods_containing(from_micros(event.captured_at), anchor):
            key = (env, company_id, subtype, kind, to_micros(start))
            qty, count = state.counters.get(key, (0, 0))
            state.counters[key] = (qty + event.quantity, count + 1)
    _see(state, event, company_id, user_id)
    return Outcome(
        event.id, "processed", company_id=company_id, user_id=user_id, feature_ids=feature_ids
    )
