"""The PostgreSQL backend: the shared SQL storage on psycopg 3.

- Ingestion: each API process group-commits on ``WRITERS`` connections of
  its own (one queue); events go in with ``COPY``, then one statement claims
  their idempotency keys (``INSERT … ON CONFLICT … RETURNING`` on the key
  table) and deletes the events that lost, so the database decides: two
  writers or processes racing on one key store one event.
- Processing: a connection of its own; batches are claimed with
  ``FOR UPDATE SKIP LOCKED`` so any number of workers take disjoint batches;
  counters are pre-aggregated per batch and every write goes in a fixed order
  (no deadlocks between workers); a batch that meets another transaction's
  change is read and processed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg

from tally import ids
from tally.batch import PendingEvent
from tally.clock import Clock
from tally.effects.triggers import EffectRules
from tally.ingest.rules import IDEMPOTENCY_WINDOW_US, is_duplicate
from tally.model import (
    FAILING,
    KEY_CHECKED,
    NOT_STORED,
    PENDING,
    REFUSED,
    IngestResult,
    NewEvent,
)
from tally.storage.base_batch import Processing
from tally.storage.postgres.adapter import PgConnection
from tally.storage.postgres.batch import SetBasedUnitOfWork, record_summaries
from tally.storage.postgres.rows import values_json
from tally.storage.postgres.schema import migrate
from tally.storage.postgres.stats import CHECK_EVERY_SECONDS, analyze_stale, settings_warnings
from tally.storage.postgres.vacuum import vacuum_lagging
from tally.storage.sql import summaries as sql_summaries
from tally.storage.sql.batch import ConcurrentChange
from tally.storage.sql.event_rows import Ident, event_row, stored_keys
from tally.storage.sql.storage import PRUNE_CHUNK, SqlStorage

EVENT_COLUMNS = (
    "id, environment_id, type, subtype, status, body, quantity, idempotency_key, sent_at, "
    "captured_at, loaded_at, updated_at, trusted_client_clock, backfill, error_message, "
    "api_key_id, remote_ip, user_agent, company_id, user_id, flag_id, enriched_at, feature_ids"
)
_EXPIRED = f"idempotency_keys.received_at <= excluded.received_at - {IDEMPOTENCY_WINDOW_US}"
# One statement, the last before COMMIT, claims a group commit's keys for the
# events already copied in, names the event each key keeps, and deletes the
# copied events that lost. A new key, or one whose holder is older than the
# window, takes the new event; any other conflict keeps its row as it is (the
# no-op update locks it and makes RETURNING show it: under READ COMMITTED
# the latest committed version, even when another transaction committed it
# after this statement began). Claiming last holds the key locks only until
# the COMMIT right after, so that a concurrent writer that meets one of them
# waits for that COMMIT, not for a whole COPY too. The keys arrive as one JSON
# text, [[env, type, key, event_id, captured_at, received_at], …], far
# cheaper for the client than arrays; ORDER BY gives every transaction the
# same lock order.
_CLAIM_KEYS = (
    "WITH w AS MATERIALIZED (SELECT j->>0 AS e, j->>1 AS t, j->>2 AS k, j->>3 AS id, "
    "(j->>4)::bigint AS c, (j->>5)::bigint AS r FROM json_array_elements(?::json) AS j), "
    "claimed AS (INSERT INTO idempotency_keys (environment_id, event_type, key, event_id, "
    "captured_at, received_at) SELECT e, t, k, id, c, r FROM w ORDER BY e, t, k "
    "ON CONFLICT (environment_id, event_type, key) DO UPDATE SET "
    f"event_id = CASE WHEN {_EXPIRED} THEN excluded.event_id "
    "ELSE idempotency_keys.event_id END, "
    f"captured_at = CASE WHEN {_EXPIRED} THEN excluded.captured_at "
    "ELSE idempotency_keys.captured_at END, "
    f"received_at = CASE WHEN {_EXPIRED} THEN excluded.received_at "
    "ELSE idempotency_keys.received_at END "
    "RETURNING environment_id, event_type, key, event_id, captured_at), "
    "lost AS (DELETE FROM events USING w, claimed WHERE claimed.environment_id = w.e "
    "AND claimed.event_type = w.t AND claimed.key = w.k AND claimed.event_id <> w.id "
    "AND events.id = w.id) "
    "SELECT environment_id, event_type, key, event_id, captured_at FROM claimed"
)

Planned = IngestResult | tuple[str, int, Ident | None]  # decided, or (event, captured_at, key)
_RULED = (REFUSED, FAILING)
# Group-committing connections per API process: while one waits for its
# COPY and COMMIT, the next stores what queued up meanwhile.
WRITERS = 2
_KEY_ENCODER = msgspec.json.Encoder()
log = logging.getLogger(__name__)


def insert_events(
    conn: PgConnection, batches: list[Sequence[NewEvent]], loaded_at: int
) -> list[list[IngestResult]]:
    """Store the batches' events in the caller's transaction. Every event
    without a key, and the first event of each key in the batches, is copied
    in; then the database decides each key (``_CLAIM_KEYS``), atomically across
    processes, and the copied events that lost are deleted again.

    An event a rule refused (``refused``/``failing``) is looked up first: a
    held key makes it a duplicate; otherwise a ``refused`` one stores nothing
    of its batch and a ``failing`` one is stored as ``failed``, claiming nothing."""
    ruled = {
        (ev.environment_id, ev.type, ev.idempotency_key)
        for events in batches
        for ev in events
        if ev.status in _RULED and ev.idempotency_key is not None
    }
    held = stored_keys(conn, ruled) if ruled else {}  # only when a rule refused one
    first: dict[Ident, tuple[str, int]] = {}  # ident → (its first event, captured_at)
    claims: list[tuple[str, str, str, str, int, int]] = []
    rows: list[tuple[Any, ...]] = []
    plan: list[list[Planned]] = []
    new_id = ids.new_id
    for events in batches:
        planned: list[Planned] = []
        first_row, first_claim = len(rows), len(claims)
        refused = False
        for ev in events:
            event_id = new_id("evt")
            ident = None
            if ev.idempotency_key is not None and ev.status in KEY_CHECKED:
                ident = (ev.environment_id, ev.type, ev.idempotency_key)
                if ident in first:  # a duplicate inside the batches: never stored
                    planned.append((event_id, ev.captured_at, ident))
                    continue
                if ev.status != PENDING:
                    prior = held.get(ident)
                    if prior is not None and is_duplicate(prior[2], ev.received_at):
                        planned.append(IngestResult(prior[0], prior[1], True))
                        continue
                    ident = None  # not held: ruled on, holding nothing
                    if ev.status == REFUSED:
                        refused = True
                        planned.append(NOT_STORED)
                        continue
                else:
                    first[ident] = (event_id, ev.captured_at)
                    claims.append((*ident, event_id, ev.captured_at, ev.received_at))
            rows.append(event_row(event_id, ev, loaded_at))
            planned.append((event_id, ev.captured_at, ident))
        if refused:  # nothing of this batch is stored, no key of it claimed
            mine = {claim[:3]: claim[3] for claim in claims[first_claim:]}
            plan.append([_unstored(entry, mine) for entry in planned])
            for ident in mine:
                del first[ident]
            del rows[first_row:], claims[first_claim:]
            continue
        plan.append(planned)

    if rows:
        with conn.copy(f"COPY events ({EVENT_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        record_summaries(conn, sql_summaries.stored_rows(rows))
    kept: dict[Ident, IngestResult] = {}  # ident → the event the key names
    if claims:
        encoded = _KEY_ENCODER.encode(claims).decode()
        for env, kind, key, event_id, captured_at in conn.execute(
            _CLAIM_KEYS, (encoded,)
        ).fetchall():
            ident = (env, kind, key)
            kept[ident] = IngestResult(event_id, captured_at, event_id != first[ident][0])

    out: list[list[IngestResult]] = []
    for planned in plan:
        results = []
        for entry in planned:
            if isinstance(entry, IngestResult):
                results.append(entry)
                continue
            event_id, captured_at, ident = entry
            if ident is None:
                results.append(IngestResult(event_id, captured_at, False))
                continue
            winner = kept[ident]
            if winner.event_id == event_id:
                results.append(winner)
            else:
                results.append(IngestResult(winner.event_id, winner.captured_at, True))
        out.append(results)
    return out


def _unstored(entry: Planned, mine: dict[Ident, str]) -> Planned:
    """An event's result in a batch that a refused event refused (``mine``:
    the keys its events would have claimed): still a duplicate when it was
    one (the route raises the first refusal that is not), else not stored."""
    if isinstance(entry, IngestResult):
        return entry if entry.duplicate else NOT_STORED
    event_id, _, ident = entry
    if ident is None or mine.get(ident) == event_id:
        return NOT_STORED
    if ident in mine:
        return IngestResult(mine[ident], 0, True)  # of this batch's own event
    return entry  # held by an event of an earlier batch: resolved with it


class PgUnitOfWork(SetBasedUnitOfWork):
    claim_suffix = " FOR UPDATE SKIP LOCKED"
    max_attempts = 20

    def claim_pending(self, limit: int) -> list[PendingEvent]:
        # Before ANALYZE the planner guesses the pending rows are few, takes
        # them all by bitmap and sorts them to return the oldest ``limit``
        # (0.5 s at 200K pending). The pending index is in claim order: walk
        # it (tests/contract/test_pg_plans.py checks the plan). A failed claim
        # rolls the transaction back, and the setting with it.
        self.conn.execute("SET LOCAL enable_sort = off")
        events = super().claim_pending(limit)
        self.conn.execute("SET LOCAL enable_sort = on")
        return events

    def key_lookup(
        self, key_table: str, env: str, key: str, values: list[str]
    ) -> list[tuple[str, str]]:
        # One probe of the key index per value, whatever the planner knows.
        # With a list (``value IN (…)`` or ``= ANY(…)``) a plan made without
        # statistics, or a generic plan of a prepared statement, reads every
        # key of the environment and filters them (10 ms became 300 ms); the
        # LIMIT keeps the lateral subquery from being flattened into a join.
        # Never prepared: a batch runs it once per 500 values, so psycopg
        # would prepare it (its 5th run) inside the first batch of a fresh
        # database, while the key table is still empty, and the generic plan
        # made then (a scan of the whole table per value) would stay as the
        # table grows: batches of 10,000 new users took 1.6, 7 and 10 s, the
        # look-up 30 of 50 s; planned each run, it probes the index (2 ms).
        rows = self.conn.execute(
            "SELECT v.value, k.entity_id FROM jsonb_array_elements_text(?::jsonb) AS v(value) "
            f"CROSS JOIN LATERAL (SELECT entity_id FROM {key_table} k "
            "WHERE k.environment_id = ? AND k.key = ? AND k.value = v.value LIMIT 1) k",
            (values_json(values), env, key),
            prepare=False,
        ).fetchall()
        return [(value, entity_id) for value, entity_id in rows]

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
    prune_setup = ("SET LOCAL enable_seqscan = off",)  # sql/retention.py says why
    reader_name = "tally-pg-read"
    unit_of_work = PgUnitOfWork  # admin upserts merge and retry as the worker does

    def __init__(
        self,
        url: str,
        *,
        commit_max_events: int = 5000,
        clock: Clock | None = None,
        readers: int = 4,
        effects: EffectRules | None = None,
        writers: int = WRITERS,
        processing: Processing | None = None,
    ) -> None:
        self.url = url
        super().__init__(
            commit_max_events=commit_max_events,
            clock=clock,
            readers=readers,
            separate_processor=True,
            effects=effects,
            writers=writers,
            processing=processing,
        )
        self._last_stats_check = -CHECK_EVERY_SECONDS

    async def start(self) -> None:
        await super().start()
        await self._maintain_statistics(at_start=True)

    async def process_pending(self, limit: int) -> int:
        claimed = await super().process_pending(limit)
        await self._maintain_statistics()
        return claimed

    async def _maintain_statistics(self, *, at_start: bool = False) -> None:
        """Analyze stale tables at start and every ``CHECK_EVERY_SECONDS`` of
        processing (``tally.storage.postgres.stats`` says why); at start,
        warn about server settings that leave them unmanaged."""
        now = time.monotonic()
        if not at_start and now - self._last_stats_check < CHECK_EVERY_SECONDS:
            return
        self._last_stats_check = now
        if at_start:
            for warning in await self._processor.call(settings_warnings):
                log.warning("%s See docs/deployment.md, 'PostgreSQL settings'.", warning)
        analyzed = await self._processor.call(analyze_stale)
        if analyzed:
            log.info("analyzed %s: their statistics were out of date", ", ".join(analyzed))

    async def vacuum_dead_rows(self) -> list[str]:
        return await asyncio.to_thread(vacuum_lagging, self.url)

    def _connect(self) -> PgConnection:
        return PgConnection.connect(self.url)

    def _connect_reader(self) -> PgConnection:
        # No JIT for the API's reads: each is short, and compiling one costs
        # more than running it. The planner compiles any statement whose
        # estimate passes jit_above_cost, and some estimates are far above
        # the truth: the counters of a page of 100 companies (entity_rows.
        # counters_of: a recursive walk the planner guesses at 10x) ran in
        # 3 ms and compiled for 35 ms.
        conn = PgConnection.connect(self.url)
        conn.execute("SET jit = off")
        return conn

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
