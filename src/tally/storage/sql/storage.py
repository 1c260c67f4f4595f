"""What both SQL backends share: one writer thread with group commit (the
write path and every admin write), reader threads, and the events, keys and
environments SQL, written to run unchanged on SQLite and PostgreSQL (``?``
placeholders; ``tally.storage.postgres.adapter`` translates them)."""

from __future__ import annotations

import abc
import asyncio
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tally import ids
from tally.clock import Clock, SystemClock, to_micros
from tally.effects.triggers import EffectRules
from tally.gc_pause import gc_paused
from tally.ingest.rules import IDEMPOTENCY_WINDOW_US
from tally.model import (
    ApiKey,
    Environment,
    EventFilter,
    EventSummary,
    IngestResult,
    NewEvent,
    PendingBacklog,
    StoredEvent,
)
from tally.observe.metrics import metrics
from tally.storage.base_batch import Processing
from tally.storage.sql import backlog as sql_backlog
from tally.storage.sql import in_list
from tally.storage.sql import pages as sql_pages
from tally.storage.sql import summaries as sql_summaries
from tally.storage.sql.batch import SqlUnitOfWork, release_keys
from tally.storage.sql.catalog import SqlCatalog
from tally.storage.sql.console import SqlConsole
from tally.storage.sql.duplicates import record_duplicates
from tally.storage.sql.entities import SqlEntities
from tally.storage.sql.outbox import SqlOutbox
from tally.storage.sql.retention import SqlRetention
from tally.storage.sql.webhooks import SqlWebhooks
from tally.storage.sql.writer import DRIVER_ERRORS, WriterThread

T = TypeVar("T")
Conn = Any  # sqlite3.Connection or postgres.adapter.PgConnection: the same calls

_EVENT_COLUMNS = (
    "id, environment_id, type, status, body, quantity, captured_at, loaded_at, updated_at, "
    "subtype, idempotency_key, sent_at, trusted_client_clock, backfill, error_message, "
    "enriched_at, company_id, user_id, flag_id, feature_ids"
)
KEY_COLUMNS = (
    "k.id, k.environment_id, k.kind, k.read_only, k.prefix, k.created_at, k.revoked_at, e.name"
)
RARE_TYPES = "type <> 'track'"  # the condition of the partial index events_rare_type
PRUNE_EVERY_US = 10 * 1_000_000
PRUNE_CHUNK = 20_000


def _event_from_row(row: Sequence[Any]) -> StoredEvent:
    feature_ids = tuple(json.loads(row[19])) if row[19] else ()
    return StoredEvent(
        id=row[0],
        environment_id=row[1],
        type=row[2],
        status=row[3],
        body=row[4],
        quantity=row[5],
        captured_at=row[6],
        loaded_at=row[7],
        updated_at=row[8],
        subtype=row[9],
        idempotency_key=row[10],
        sent_at=row[11],
        trusted_client_clock=bool(row[12]),
        backfill=bool(row[13]),
        error_message=row[14],
        enriched_at=row[15],
        company_id=row[16],
        user_id=row[17],
        flag_id=row[18],
        feature_ids=feature_ids,
    )


def event_conditions(environment_id: str, where: EventFilter) -> tuple[list[str], list[Any]]:
    """The WHERE conditions (joined with AND) and parameters of ``where``."""
    clauses = ["environment_id = ?"]
    args: list[Any] = [environment_id]
    for column, value in (
        ("company_id", where.company_id),
        ("user_id", where.user_id),
        ("flag_id", where.flag_id),
        ("subtype", where.event_subtype),
        ("idempotency_key", where.idempotency_key),
        ("status", where.status),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    for op, value in ((">=", where.id_min), ("<", where.id_max), (">", where.newer_than)):
        if value is not None:
            clauses.append(f"id {op} ?")
            args.append(value)
    if where.event_types:
        clauses.append(f"type IN ({','.join('?' * len(where.event_types))})")
        args.extend(where.event_types)
        if "track" not in where.event_types:
            clauses.append(RARE_TYPES)  # the words of the events_rare_type index
    return clauses, args


def key_from_row(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        id=row[0],
        environment_id=row[1],
        kind=row[2],
        read_only=bool(row[3]),
        prefix=row[4],
        created_at=row[5],
        revoked_at=row[6],
        environment_name=row[7],
    )


class SqlStorage(
    SqlEntities, SqlCatalog, SqlWebhooks, SqlOutbox, SqlConsole, SqlRetention, abc.ABC
):
    """``Storage`` on a SQL database. A backend says how to connect, how to
    store a batch of events (``_insert_events``), how to forget old
    idempotency keys (``_prune``) and how to process a batch (``_process``).
    ``effects`` says what processing records for side effects (warning
    share, billing meter records); ``processing`` is the pipeline's
    processing (``tally.storage.base_batch``), which the worker's batches,
    processing as stored and the admin upserts run on this storage's
    transactions: the code that opens a storage hands it over."""

    begin = "BEGIN"
    claim_suffix = ""  # PostgreSQL: " FOR UPDATE SKIP LOCKED"
    reader_name = "tally-read"

    def __init__(
        self,
        *,
        commit_max_events: int = 5000,
        clock: Clock | None = None,
        readers: int = 2,
        separate_processor: bool = False,
        effects: EffectRules | None = None,
        writers: int = 1,
        processing: Processing | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self._effects = effects or EffectRules()
        self._processing = processing
        # ``writers`` group-committing connections share the write queue
        # (SQLite: one; PostgreSQL takes concurrent writers)
        self._writer = WriterThread(
            self._open_writer,
            self._ingest_batches,
            max_events=commit_max_events,
            begin=self.begin,
            threads=writers,
        )
        # PostgreSQL processes on a connection of its own, so that ingestion
        # never waits for a processing batch; SQLite has one writer for both.
        self._processor = (
            WriterThread(self._connect, _no_batches, begin=self.begin, name="tally-processor")
            if separate_processor
            else self._writer
        )
        # deliveries: on PostgreSQL a connection of their own (started on first
        # use), so that they never queue behind processing batches
        self._deliverer = (
            WriterThread(self._connect, _no_batches, begin=self.begin, name="tally-delivery")
            if separate_processor
            else self._writer
        )
        self._deliverer_started = not separate_processor
        self._deliverer_lock = threading.Lock()
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix=self.reader_name)
        self._local = threading.local()
        self._reader_conns: list[Conn] = []
        self._conns_lock = threading.Lock()
        self._last_prune = 0
        self._started = False
        self._pages = sql_pages.PageCursors()
        self._known_members = sql_summaries.KnownMembers()

    # -- what a backend provides -----------------------------------------------
    @abc.abstractmethod
    def _connect(self) -> Conn:
        """A new connection for writing (the writer and processor threads)."""

    @abc.abstractmethod
    def _connect_reader(self) -> Conn:
        """A new connection for a reader thread."""

    @abc.abstractmethod
    def _migrate(self, conn: Conn) -> None:
        """Bring the schema up to date."""

    @abc.abstractmethod
    def _insert_events(
        self, conn: Conn, batches: list[Sequence[NewEvent]], loaded_at: int
    ) -> list[list[IngestResult]]:
        """Store a group commit's events, dropping idempotent duplicates."""

    @abc.abstractmethod
    def _prune(self, conn: Conn, older_than_us: int) -> int:
        """Forget a chunk of idempotency keys older than the cutoff."""

    # -- lifecycle ----------------------------------------------------------
    def _open_writer(self) -> Conn:
        conn = self._connect()
        self._migrate(conn)
        return conn

    async def start(self) -> None:
        if self._started:
            return
        await asyncio.to_thread(self._writer.start)
        if self._processor is not self._writer:
            await asyncio.to_thread(self._processor.start)
        self._started = True

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        await asyncio.to_thread(self._writer.stop)
        if self._processor is not self._writer:
            await asyncio.to_thread(self._processor.stop)
        if self._deliverer is not self._writer and self._deliverer_started:
            await asyncio.to_thread(self._deliverer.stop)
        self._readers.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    @property
    def commits(self) -> int:
        return self._writer.commits

    # -- plumbing -----------------------------------------------------------
    def _reader(self) -> Conn:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect_reader()
            self._local.conn = conn
            with self._conns_lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[Conn], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, lambda: fn(self._reader()))
        except DRIVER_ERRORS:
            metrics().database_error("read")
            raise

    def _now(self) -> int:
        return to_micros(self._clock.now())

    @property
    def effects(self) -> EffectRules:
        return self._effects

    @property
    def processing(self) -> Processing:
        """The pipeline's processing this storage was handed."""
        if self._processing is None:
            raise RuntimeError(
                "this storage was opened without the pipeline's processing: pass "
                "processing= (the pipeline's PIPELINE) where it is opened"
            )
        return self._processing

    @property
    def single_writer(self) -> bool:
        return self._deliverer is self._writer

    async def has_pending_events(self) -> bool:
        def run(conn: Conn) -> bool:
            row = conn.execute("SELECT 1 FROM events WHERE status = 'pending' LIMIT 1").fetchone()
            return row is not None

        return await self._read(run)

    async def pending_backlog(self, cap: int | None = None) -> PendingBacklog:
        return await self._read(lambda conn: sql_backlog.pending_backlog(conn, cap))

    async def _delivery_call(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn(conn)`` in one transaction on the delivery connection."""
        if not self._deliverer_started:
            await asyncio.to_thread(self._start_deliverer)
        return await self._deliverer.call(fn)

    def _start_deliverer(self) -> None:
        with self._deliverer_lock:
            if not self._deliverer_started:
                self._deliverer.start()
                self._deliverer_started = True

    # -- environments and keys ---------------------------------------------
    async def ensure_environment(self, name: str, kind: str) -> tuple[Environment, bool]:
        def run(conn: Conn) -> tuple[Environment, bool]:
            row = conn.execute(
                "SELECT id, name, kind, created_at FROM environments WHERE name = ?", (name,)
            ).fetchone()
            if row is not None:
                return Environment(*row), False
            env = Environment(ids.new_id("env"), name, kind, self._now())
            created = conn.execute(
                "INSERT INTO environments (id, name, kind, created_at) VALUES (?,?,?,?) "
                "ON CONFLICT (name) DO NOTHING",
                (env.id, env.name, env.kind, env.created_at),
            ).rowcount
            if not created:  # another process created it meanwhile
                row = conn.execute(
                    "SELECT id, name, kind, created_at FROM environments WHERE name = ?", (name,)
                ).fetchone()
                return Environment(*row), False
            return env, True

        return await self._writer.call(run)

    async def list_environments(self) -> list[Environment]:
        def run(conn: Conn) -> list[Environment]:
            rows = conn.execute(
                "SELECT id, name, kind, created_at FROM environments ORDER BY created_at"
            ).fetchall()
            return [Environment(*row) for row in rows]

        return await self._read(run)

    async def create_api_key(
        self, environment_id: str, kind: str, read_only: bool, key_hash: str, prefix: str
    ) -> ApiKey:
        def run(conn: Conn) -> ApiKey:
            key_id = ids.new_id("key")
            conn.execute(
                "INSERT INTO api_keys (id, environment_id, key_hash, prefix, kind, read_only, "
                "created_at) VALUES (?,?,?,?,?,?,?)",
                (key_id, environment_id, key_hash, prefix, kind, int(read_only), self._now()),
            )
            row = conn.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys k JOIN environments e "
                "ON e.id = k.environment_id WHERE k.id = ?",
                (key_id,),
            ).fetchone()
            return key_from_row(row)

        return await self._writer.call(run)

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        def run(conn: Conn) -> ApiKey | None:
            row = conn.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys k JOIN environments e "
                "ON e.id = k.environment_id WHERE k.key_hash = ? AND k.revoked_at IS NULL",
                (key_hash,),
            ).fetchone()
            return key_from_row(row) if row else None

        return await self._read(run)

    async def list_api_keys(self, environment_name: str | None = None) -> list[ApiKey]:
        def run(conn: Conn) -> list[ApiKey]:
            sql = f"SELECT {KEY_COLUMNS} FROM api_keys k JOIN environments e ON e.id = k.environment_id"
            args: tuple[Any, ...] = ()
            if environment_name is not None:
                sql += " WHERE e.name = ?"
                args = (environment_name,)
            rows = conn.execute(sql + " ORDER BY k.created_at, k.id", args).fetchall()
            return [key_from_row(r) for r in rows]

        return await self._read(run)

    async def revoke_api_key(self, key_id_or_prefix: str) -> ApiKey | None:
        def run(conn: Conn) -> ApiKey | None:
            rows = conn.execute(
                "SELECT id FROM api_keys WHERE (id = ? OR prefix = ?) AND revoked_at IS NULL",
                (key_id_or_prefix, key_id_or_prefix),
            ).fetchall()
            if len(rows) != 1:
                return None
            conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ?", (self._now(), rows[0][0])
            )
            row = conn.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys k JOIN environments e "
                "ON e.id = k.environment_id WHERE k.id = ?",
                (rows[0][0],),
            ).fetchone()
            return key_from_row(row)

        return await self._writer.call(run)

    # -- events -------------------------------------------------------------
    async def ingest(self, events: Sequence[NewEvent]) -> list[IngestResult]:
        if not events:
            return []
        return await self._writer.submit_batch(events)

    def _ingest_batches(
        self, conn: Conn, batches: list[Sequence[NewEvent]]
    ) -> list[list[IngestResult]]:
        now = self._now()
        with gc_paused():
            results = self._insert_events(conn, batches, now)
        record_duplicates(conn, batches, results)  # the console's event page
        if now - self._last_prune >= PRUNE_EVERY_US:
            self._last_prune = now
            self._prune(conn, now - IDEMPOTENCY_WINDOW_US)
        return results

    async def prune_idempotency_keys(self, older_than_us: int) -> int:
        def run(conn: Conn) -> int:
            total = 0
            while True:
                removed = self._prune(conn, older_than_us)
                total += removed
                if removed < PRUNE_CHUNK:
                    return total

        return await self._writer.call(run)

    def process_as_stored(self, enabled: bool) -> None:
        """Whether to process events in the commit that stores them (only
        SQLite does: ``tally.storage.sqlite.stored_processing``)."""

    async def process_pending(self, limit: int) -> int:
        """Process up to ``limit`` pending events in one transaction on the
        writer thread; returns how many were claimed."""

        batches: list[SqlUnitOfWork] = []

        def run(conn: Conn) -> int:
            # the backend's transaction (``unit_of_work``), skipping known members
            batch = self.unit_of_work(conn, self.effects, self._known_members)
            batches.append(batch)
            return self.processing.process_pending(batch, limit, self._now())

        claimed = await self._processor.call(run)
        # committed: the members it recorded are stored (a retried call: the last)
        self._known_members.remember(batches[-1].settled_members)
        return claimed

    async def fail_next_pending(self, message: str) -> str | None:
        def run(conn: Conn) -> str | None:
            row = conn.execute(
                "UPDATE events SET status = 'failed', error_message = ?, updated_at = ? "
                f"WHERE id = (SELECT id FROM events WHERE status = 'pending' ORDER BY id LIMIT 1{self.claim_suffix}) "
                "RETURNING id, environment_id, type, idempotency_key, subtype, captured_at",
                (message, self._now()),
            ).fetchone()
            if row is None:
                return None
            failed = sql_summaries.Settled(
                row[0], row[1], row[2], row[4], row[5], sql_summaries.FAILED
            )
            sql_summaries.record(conn, sql_summaries.summarize([failed]))
            if row[3] is not None:  # a failed event lets its key go, as in processing
                release_keys(conn, [(row[1], row[2], row[3], row[0])])
            return str(row[0])

        return await self._processor.call(run)

    async def get_event(self, environment_id: str, event_id: str) -> StoredEvent | None:
        def run(conn: Conn) -> StoredEvent | None:
            row = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ? AND environment_id = ?",
                (event_id, environment_id),
            ).fetchone()
            return _event_from_row(row) if row else None

        return await self._read(run)

    async def list_events(self, environment_id: str, where: EventFilter) -> list[StoredEvent]:
        clauses, args = event_conditions(environment_id, where)
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} "
            "ORDER BY id DESC LIMIT ? OFFSET ?"
        )

        def run(conn: Conn) -> list[StoredEvent]:
            found = sql_pages.page_ids(conn, self._pages, environment_id, where, clauses, args)
            if found is None:  # a shallow page
                rows = conn.execute(sql, [*args, where.limit, where.offset]).fetchall()
                return [_event_from_row(r) for r in rows]
            return self._events_by_id(conn, found)

        return await self._read(run)

    @staticmethod
    def _events_by_id(conn: Conn, event_ids: list[str]) -> list[StoredEvent]:
        """The events of ``event_ids`` (at most a page), in that order."""
        if not event_ids:
            return []
        clause, values = in_list("id", event_ids)
        rows = conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE {clause}", values)
        by_id = {r[0]: _event_from_row(r) for r in rows.fetchall()}
        return [by_id[i] for i in event_ids if i in by_id]

    async def event_summaries(
        self,
        environment_id: str,
        q: str | None,
        subtypes: Sequence[str],
        limit: int,
        offset: int,
    ) -> list[EventSummary]:
        def run(conn: Conn) -> list[EventSummary]:
            found = sql_summaries.subtype_totals(conn, environment_id, q, subtypes, members=True)
            rows = [found[name] for name in sorted(found) if found[name].processed]
            return [
                EventSummary(r.subtype, r.processed, r.companies, r.users, r.last_processed_at)
                for r in rows[offset : offset + limit]
            ]

        return await self._read(run)


def _no_batches(conn: Conn, batches: list[Sequence[Any]]) -> list[Any]:
    raise RuntimeError("the processor thread takes calls only")
