"""Batches for the pure processing rules (``tally.pipeline.rules``), built
in memory: pending events, a ``Snapshot`` of what storage would hold, and
``process_events`` run with predictable new ids (``comp_000``, ``user_001``…)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from tally.batch import Changes, PendingEvent, Snapshot, StoredEntity
from tally.effects.triggers import EffectRules
from tally.pipeline.rules import decode_bodies, process_events
from tests.support.clock import NOW_US

ENV = "env_1"


def pending(
    n: int,
    event_type: str,
    body: Mapping[str, Any],
    *,
    at: int = NOW_US,
    backfill: bool = False,
    **fields: Any,
) -> PendingEvent:
    """Event ``evt_{n:03d}`` of ``ENV`` as storage hands it to processing."""
    track = event_type == "track"
    quantity = int(body.get("quantity", 1)) if track else 1
    subtype = str(body["event"]) if track else None
    text = json.dumps(body)
    return PendingEvent(
        f"evt_{n:03d}", ENV, event_type, subtype, text, quantity, at, backfill, **fields
    )


def stored(
    snapshot: Snapshot,
    kind: str,
    entity_id: str,
    keys: Mapping[str, str],
    *,
    name: str | None = None,
    traits: Mapping[str, Any] | None = None,
    anchor: int | None = None,
) -> None:
    """Put a stored company or user and its keys in ``snapshot``."""
    text = json.dumps(dict(traits or {}))
    snapshot.entities[entity_id] = StoredEntity(kind, entity_id, ENV, name, text, anchor)
    for key, value in keys.items():
        snapshot.keys[(kind, ENV, key, value)] = entity_id


def run_batch(
    events: list[PendingEvent], snapshot: Snapshot, rules: EffectRules | None = None
) -> Changes:
    """``process_events`` on ``events``, new ids numbered from 000."""
    counter = itertools.count()

    def new_id(prefix: str) -> str:
        return f"{prefix}_{next(counter):03d}"

    return process_events(events, decode_bodies(events), snapshot, new_id, rules or EffectRules())
