"""Duplicates dropped against a stored event, counted per event (the
console's event page shows them). A retry is rare, so this costs nothing
unless a commit dropped one: then one small upsert per event it named.

The count lives in a table of its own (``event_duplicates``), keyed by the
stored event, rather than on the idempotency key's row: that row is
forgotten after the key's 24 hours and is taken over by the next event of
the key, while what happened to an event stays true."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tally.model import IngestResult, NewEvent

# the same SQL on SQLite and PostgreSQL
_RECORD = (
    "INSERT INTO event_duplicates (event_id, environment_id, duplicates, last_duplicate_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET "
    "duplicates = event_duplicates.duplicates + excluded.duplicates, "
    "last_duplicate_at = CASE WHEN excluded.last_duplicate_at > event_duplicates.last_duplicate_at "
    "THEN excluded.last_duplicate_at ELSE event_duplicates.last_duplicate_at END"
)


def dropped(
    batches: Sequence[Sequence[NewEvent]], results: Sequence[Sequence[IngestResult]]
) -> dict[str, tuple[str, int, int]]:
    """event id → (environment, duplicates dropped against it, the last one's
    ``received_at``), for the batches that were stored (a request refused as a
    whole dropped nothing: its client was told it failed)."""
    out: dict[str, tuple[str, int, int]] = {}
    for events, answers in zip(batches, results, strict=True):
        if not any(r.duplicate for r in answers) or not all(r.stored for r in answers):
            continue
        for ev, r in zip(events, answers, strict=True):
            if r.duplicate:
                _, count, last = out.get(r.event_id, ("", 0, 0))
                out[r.event_id] = (ev.environment_id, count + 1, max(last, ev.received_at))
    return out


def record_duplicates(
    conn: Any,
    batches: Sequence[Sequence[NewEvent]],
    results: Sequence[Sequence[IngestResult]],
) -> None:
    """Count the duplicates of a group commit against their events, in the
    commit's transaction (nothing is written when there were none)."""
    counts = dropped(batches, results)
    for event_id, (environment_id, count, last) in sorted(counts.items()):
        conn.execute(_RECORD, (event_id, environment_id, count, last))
