"""A batch processed on storage's transaction: decode the events, list what
they need, read it in bulk, apply the rules, write the changes — in a
savepoint, read and processed again while another transaction gets in the
way, and once more with the stored totals when a counter would pass 64 bits.

Storage provides the transaction (``tally.storage.base_batch``) and is handed
``PIPELINE`` by the code that opens it (the app, the CLI, the storage
process); storage never imports the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tally import ids
from tally.batch import Changes, Needs, Outcome, PendingEvent
from tally.gc_pause import gc_paused
from tally.observe.metrics import metrics
from tally.pipeline.rules import decode_bodies, needs_of, process_events, upsert_changes
from tally.storage.base_batch import BatchTransaction


def _record(events: list[PendingEvent], outcomes: list[Outcome], now: int) -> None:
    """The batch's metrics: events processed and failed, and each processed
    event's lag (``enriched_at`` is ``now``)."""
    loaded = {e.id: e.loaded_at for e in events}
    lags = [now - loaded[o.event_id] for o in outcomes if o.status == "processed"]
    metrics().processed(len(lags), len(outcomes) - len(lags), lags)


class Pipeline:
    """Processing (SPEC §4) on a ``BatchTransaction``: storage's ``Processing``."""

    def process_pending(self, tx: BatchTransaction, limit: int, now: int) -> int:
        """Claim up to ``limit`` pending events (oldest first), process and
        write them; the caller commits. Returns how many were claimed. The
        cyclic GC is held off for the batch (an ingest commit that processes
        as stored holds it off for the whole commit: ``SqlStorage``). The
        batch's objects are freed before it comes back on: the collection it
        then starts walks only what survived (walking the batch's events and
        changes took 5% of SQLite's processing)."""
        with gc_paused():
            return self._process_pending(tx, limit, now)

    def _process_pending(self, tx: BatchTransaction, limit: int, now: int) -> int:
        events = tx.claim_pending(limit)
        if not events:
            return 0
        changes = self.process(tx, events, now)
        tx.mark(changes, now)
        return len(events)

    def process(self, tx: BatchTransaction, events: list[PendingEvent], now: int) -> Changes:
        """Process ``events`` (oldest first) and write everything they change
        except their own rows: the caller marks them (``tx.mark``: stored rows;
        storing them as they are processed: ``tally.storage.sqlite.storage``)
        and frees what ``Changes.released`` lists, in the same transaction."""
        changes = self._process(tx, events, now)
        _record(events, changes.outcomes, now)
        return changes

    def _process(self, tx: BatchTransaction, events: list[PendingEvent], now: int) -> Changes:
        bodies = decode_bodies(events)
        needs = needs_of(events, bodies)
        for attempt in range(1, tx.max_attempts + 1):
            tx.savepoint("tally_batch")
            try:
                changes = self._attempt(tx, events, bodies, needs, now)
            except Exception as err:
                tx.rollback_to("tally_batch")
                if not tx.is_conflict(err) or attempt == tx.max_attempts:
                    raise
                metrics().database_retry("processing_conflict")
                continue
            tx.release("tally_batch")
            return changes
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _attempt(
        self,
        tx: BatchTransaction,
        events: list[PendingEvent],
        bodies: list[Any],
        needs: Needs,
        now: int,
    ) -> Changes:
        """Process and write the batch once; returns its changes."""
        snapshot = tx.load_snapshot(needs)
        changes = process_events(events, bodies, snapshot, ids.new_id, tx.rules)
        tx.savepoint("tally_apply")
        try:
            tx.apply_changes(changes, now)
        except Exception as err:
            if not tx.is_overflow(err):
                raise
            # a usage counter would pass 64 bits: read the stored totals and
            # run the batch again, failing the events that overflow
            tx.rollback_to("tally_apply")
            snapshot.counters = tx.read_counters(changes.counters)
            snapshot.counters_read = True
            changes = process_events(events, bodies, snapshot, ids.new_id, tx.rules)
            tx.apply_changes(changes, now)
        tx.release("tally_apply")
        tx.record_settled(events, changes.outcomes)
        return changes

    def upsert_entity(
        self,
        tx: BatchTransaction,
        kind: str,
        environment_id: str,
        keys: Mapping[str, str],
        name: str | None,
        traits: Mapping[str, Any] | None,
        now: int,
    ) -> str:
        """The identify upsert of one entity outside an event (the admin API):
        read, upsert and write it in the caller's transaction."""
        needs = Needs()
        needs.refs[kind] = {(environment_id, k, v) for k, v in keys.items()}
        entity_id, changes = upsert_changes(
            tx.load_snapshot(needs), ids.new_id, kind, environment_id, keys, name, traits
        )
        tx.apply(changes, now)
        return entity_id


PIPELINE = Pipeline()
