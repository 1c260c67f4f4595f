"""The PostgreSQL backend: the shared SQL storage on psycopg 3.

- Ingestion: each API process group-commits on its own writer connection;
  idempotency is decided by the database (``INSERT … ON CONFLICT … WHERE
  expired … RETURNING`` on the key table), so two processes racing on one key
  store one event; events go in with ``COPY``.
- Processing: a connection of its own; batches are claimed with
  ``FOR UPDATE SKIP LOCKED`` so any number of workers take disjoint batches;
  counters are pre-aggregated per batch and every write goes in a fixed order
  (no deadlocks between workers); a batch that meets another transaction's
  change is read and processed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg

from tally import ids
from tally.clock import Clock
from tally.effects.triggers import EffectRules
from tally.ingest.rules import IDEMPOTENCY_WINDOW_US
from tally.model import IngestResult, NewEvent
from tally.pipeline.unit import EntityState
from tally.storage.pg_adapter import PgConnection
from tally.storage.postgres_schema import migrate
from tally.storage.sql_storage import PRUNE_CHUNK, SqlStorage
from tally.storage.sqlite import event_row
from tally.storage.sqlite_pipeline import ConcurrentChange, SqliteUnitOfWork

EVENT_COLUMNS = (
    "id, environment_id, type, subtype, status, body, quantity, idempotency_key, sent_at, "
    "captured_at, loaded_at, updated_at, trusted_client_clock, backfill, error_message, "
    "api_key_id, remote_ip, user_agent, company_id, user_id, flag_id"
)
_CLAIM_KEYS = (
    "INSERT INTO idempotency_keys (environment_id, event_type, key, event_id, captured_at, "
    "received_at) SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], "
    "?::bigint[], ?::bigint[]) "
    "ON CONFLICT (environment_id, event_type, key) DO UPDATE SET event_id = excluded.event_id, "
    "captured_at = excluded.captured_at, received_at = excluded.received_at "
    f"WHERE idempotency_keys.received_at <= excluded.received_at - {IDEMPOTENCY_WINDOW_US} "
    "RETURNING environment_id, event_type, key"
)
_KEPT = (
    "SELECT k.environment_id, k.event_type, k.key, k.event_id, k.captured_at "
    "FROM idempotency_keys k JOIN unnest(?::text[], ?::text[], ?::text[]) AS w(e, t, k2) "
    "ON k.environment_id = w.e AND k.event_type = w.t AND k.key = w.k2"
)

Ident = tuple[str, str, str]


def insert_events(
    conn: PgConnection, batches: list[Sequence[NewEvent]], loaded_at: int
) -> list[list[IngestResult]]:
    """Store the batches' events in the caller's transaction. The first event
    of each idempotency key in the batch asks the database for the key; the
    database answers atomically across processes."""
    first: dict[Ident, tuple[str, NewEvent]] = {}
    plan: list[list[tuple[str, NewEvent, Ident | None]]] = []
    for events in batches:
        planned = []
        for ev in events:
            ident = None
            if ev.idempotency_key is not None and ev.status == "pending":
                ident = (ev.environment_id, ev.type, ev.idempotency_key)
            event_id = ids.new_id("evt")
            if ident is not None and ident not in first:
                first[ident] = (event_id, ev)
            planned.append((event_id, ev, ident))
        plan.append(planned)

    kept: dict[Ident, IngestResult] = {}  # ident → the event the key names
    if first:
        order = sorted(first)  # one lock order for every process
        cols: list[list[Any]] = [[], [], [], [], [], []]
        for ident in order:
            event_id, ev = first[ident]
            for col, value in zip(
                cols, (*ident, event_id, ev.captured_at, ev.received_at), strict=True
            ):
                col.append(value)
        won = {tuple(r) for r in conn.execute(_CLAIM_KEYS, cols).fetchall()}
        lost = [ident for ident in order if ident not in won]
        for ident in won:
            event_id, ev = first[ident]  # type: ignore[index]
            kept[ident] = IngestResult(event_id, ev.captured_at, False)  # type: ignore[index]
        if lost:
            rows = conn.execute(
                _KEPT, ([i[0] for i in lost], [i[1] for i in lost], [i[2] for i in lost])
            ).fetchall()
            for env, kind, key, event_id, captured_at in rows:
                kept[(env, kind, key)] = IngestResult(event_id, captured_at, True)

    rows_out: list[tuple[Any, ...]] = []
    out: list[list[IngestResult]] = []
    for planned in plan:
        results = []
        for event_id, ev, ident in planned:
            if ident is None:
                rows_out.append(event_row(event_id, ev, loaded_at))
                results.append(IngestResult(event_id, ev.captured_at, False))
                continue
            winner = kept[ident]
            if winner.event_id == event_id and not winner.duplicate:
                rows_out.append(event_row(event_id, ev, loaded_at))
                results.append(winner)
            else:
                results.append(IngestResult(winner.event_id, winner.captured_at, True))
        out.append(results)
    if rows_out:
        with conn.raw.cursor().copy(f"COPY events ({EVENT_COLUMNS}) FROM STDIN") as copy:
            for row in rows_out:
                copy.write_row(row)
    return out


class PgUnitOfWork(SqliteUnitOfWork):
    claim_suffix = " FOR UPDATE SKIP LOCKED"
    max_attempts = 20
    # other workers may change the same entity: merge the batch's trait
    # changes into what is stored now, never overwrite it with an older view
    update_entity_sql = (
        "UPDATE {table} SET name = COALESCE(?, name), "
        "traits = (traits::jsonb || ?::jsonb)::text, updated_at = ? WHERE id = ?"
    )

    def dirty_row(self, entity: EntityState, traits: str, now: int) -> tuple[Any, ...]:
        updates = msgspec.json.encode(entity.trait_updates).decode()
        return (entity.name if entity.name_given else None, updates, now, entity.id)

    def is_overflow(self, err: BaseException) -> bool:
        return isinstance(err, OverflowError | psycopg.errors.NumericValueOutOfRange)

    def is_conflict(self, err: BaseException) -> bool:
        return isinstance(
            err,
            ConcurrentChange
            | psycopg.errors.UniqueViolation
            | psycopg.errors.DeadlockDetected
            | psycopg.errors.SerializationFailure,
        )


class PostgresStorage(SqlStorage):
    """``Storage`` on a PostgreSQL database shared by any number of processes."""

    claim_suffix = " FOR UPDATE SKIP LOCKED"
    # The delivery queue is inserted in bulk and read oldest first: before
    # autovacuum analyzes it, row estimates are far off and the planner would
    # bitmap-scan and sort every due row to return a few. An index-ordered
    # scan is always right for these small, ordered picks.
    pick_setup = ("SET LOCAL enable_bitmapscan = off",)
    pick_teardown = ("SET LOCAL enable_bitmapscan = on",)
    reader_name = "tally-pg-read"

    def __init__(
        self,
        url: str,
        *,
        commit_max_events: int = 5000,
        clock: Clock | None = None,
        readers: int = 4,
        effects: EffectRules | None = None,
    ) -> None:
        self.url = url
        super().__init__(
            commit_max_events=commit_max_events,
            clock=clock,
            readers=readers,
            separate_processor=True,
            effects=effects,
        )

    def _connect(self) -> PgConnection:
        return PgConnection.connect(self.url)

    def _connect_reader(self) -> PgConnection:
        return PgConnection.connect(self.url)

    def _migrate(self, conn: PgConnection) -> None:
        migrate(conn)

    def _insert_events(
        self, conn: PgConnection, batches: list[Sequence[NewEvent]], loaded_at: int
    ) -> list[list[IngestResult]]:
        return insert_events(conn, batches, loaded_at)

    def _prune(self, conn: PgConnection, older_than_us: int) -> int:
        cur = conn.execute(
            "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys "
            "WHERE received_at < ? ORDER BY received_at LIMIT ? FOR UPDATE SKIP LOCKED)",
            (older_than_us, PRUNE_CHUNK),
        )
        return int(cur.rowcount)

    def _process(self, conn: PgConnection, limit: int) -> int:
        return PgUnitOfWork(conn, self.effects).process_pending(limit, self._now())
