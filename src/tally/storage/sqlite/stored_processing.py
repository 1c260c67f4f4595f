"""Processing events in the transaction that stores them (SQLite, worker on).

With the worker on, the usual path writes every event twice: stored as
``pending``, then claimed, read back and rewritten as ``processed`` by a later
transaction on the same single writer. On SQLite that second write was most of
what the worker cost (the wide row and its indexes rewritten, the pending index
churned, the rows read back), and ingest and processing took turns on the one
write lock. Here a group commit's pending events go through the same rules
(the pipeline's ``Processing.process``, which storage is handed) *before*
their rows are written, and each row is written once, already ``processed``
(or ``failed``), with ``enriched_at`` = ``loaded_at``: no lag, one write, one
transaction.

The pending path stays for everything else:

- while older events are pending (a backlog left by a stopped worker, a
  restart, or a batch that failed here), new events wait behind them: events
  are processed oldest first, so an identify is never overtaken by a track
  that needs it;
- a batch whose processing raises (a bug, a value no counter can hold) is
  rolled back to before processing and stored as ``pending``; the worker then
  retries it one event at a time and sets aside only the event that fails;
- a group commit of more than ``MAX_EVENTS`` pending events is stored as
  ``pending`` for the worker: such a group means ingest is busy (a group
  holds what the clients sent while the previous commit ran), and processing
  costs less per event in larger batches than a commit holds (each batch
  writes every counter, entity and index page it touches once, however many
  of its events touch it; on SQLite 171 µs of CPU per event in batches of
  1,000, 108 µs in 5,000, 93 µs in 20,000). Under load the worker then
  takes the backlog in batches that grow with it (the pipeline's ``worker``:
  it lets a batch gather for ``TALLY_WORKER_LINGER_MS``), and once ingest is
  light again, processing as stored resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec

from tally.batch import PendingEvent
from tally.effects.triggers import EffectRules
from tally.model import PENDING
from tally.storage.base_batch import Processing
from tally.storage.sql import placeholders
from tally.storage.sql.batch import SqlUnitOfWork

log = logging.getLogger(__name__)

# a larger group commit is left to the worker (see above)
MAX_EVENTS = 500

# positions in a row of ``tally.storage.sql.event_rows.INSERT_EVENT_HEAD``
_ID, _ENV, _TYPE, _SUBTYPE, _STATUS, _BODY, _QUANTITY, _KEY = range(8)
_CAPTURED, _LOADED, _UPDATED, _BACKFILL, _ERROR, _API_KEY = 9, 10, 11, 13, 14, 15
_COMPANY, _USER, _ENRICHED, _FEATURES = 18, 19, 21, 22
_ENCODER = msgspec.json.Encoder()

Released = tuple[str, str, str, str]  # env, event type, key, event id


class StoredProcessing:
    """Called by the SQLite ingest with the rows it is about to write;
    processes their pending events and rewrites the rows in place."""

    def __init__(
        self,
        rules: Callable[[], EffectRules],
        processing: Processing,
        max_events: int = MAX_EVENTS,
    ) -> None:
        self._rules = rules
        self._processing = processing
        self._max_events = max_events
        self._kinds: dict[str, str] = {}  # api key id → kind (never changes)

    def __call__(self, conn: Any, rows: list[tuple[Any, ...]], now: int) -> list[Released]:
        """Process the pending rows of ``rows`` in the caller's transaction;
        returns the idempotency keys their failed events let go (to free once
        the keys are written)."""
        pending = [i for i, row in enumerate(rows) if row[_STATUS] == PENDING]
        if not pending or len(pending) > self._max_events or _older_pending(conn):
            return []
        events = self._events(conn, [rows[i] for i in pending])
        conn.execute("SAVEPOINT tally_stored")
        try:
            changes = self._processing.process(SqlUnitOfWork(conn, self._rules()), events, now)
        except Exception:
            conn.execute("ROLLBACK TO SAVEPOINT tally_stored")
            conn.execute("RELEASE SAVEPOINT tally_stored")
            log.exception(
                "processing %d events as they were stored failed; they wait as pending "
                "for the worker, which retries them one at a time",
                len(events),
            )
            return []
        conn.execute("RELEASE SAVEPOINT tally_stored")
        log.debug("processed %d events as they were stored", len(events))
        outcomes = {o.event_id: o for o in changes.outcomes}
        for i in pending:
            row = list(rows[i])
            o = outcomes[row[_ID]]
            row[_STATUS] = o.status
            row[_ERROR] = o.error_message
            row[_UPDATED] = now
            if o.status == "processed":
                row[_ENRICHED] = now
                row[_COMPANY] = o.company_id or row[_COMPANY]
                row[_USER] = o.user_id or row[_USER]
                if o.feature_ids:
                    row[_FEATURES] = _ENCODER.encode(o.feature_ids).decode()
            rows[i] = tuple(row)
        return changes.released

    def _events(self, conn: Any, rows: list[tuple[Any, ...]]) -> list[PendingEvent]:
        unknown = {r[_API_KEY] for r in rows if r[_API_KEY] is not None} - self._kinds.keys()
        if unknown:
            for key_id, kind in conn.execute(
                f"SELECT id, kind FROM api_keys WHERE id IN ({placeholders(len(unknown))})",
                sorted(unknown),
            ).fetchall():
                self._kinds[key_id] = kind
        kinds = self._kinds
        return [
            PendingEvent(
                r[_ID],
                r[_ENV],
                r[_TYPE],
                r[_SUBTYPE],
                r[_BODY],
                r[_QUANTITY],
                r[_CAPTURED],
                bool(r[_BACKFILL]),
                r[_KEY],
                kinds.get(r[_API_KEY]) != "publishable",
                r[_LOADED],
            )
            for r in rows
        ]


def _older_pending(conn: Any) -> bool:
    """Whether an event stored earlier still waits (the new ones queue behind it)."""
    return (
        conn.execute("SELECT 1 FROM events WHERE status = 'pending' LIMIT 1").fetchone() is not None
    )
