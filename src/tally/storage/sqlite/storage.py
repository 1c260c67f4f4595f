"""The SQLite backend: one file in WAL mode, migrations on start, a single
writer thread with group commit (ingestion, processing and admin writes
share it: SQLite has one writer) and a small pool of reader threads."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Any

from tally import ids
from tally.clock import Clock
from tally.effects.triggers import EffectRules
from tally.ingest.rules import is_duplicate
from tally.model import (
    KEY_CHECKED,
    NOT_STORED,
    PENDING,
    REFUSED,
    IngestResult,
    NewEvent,
)
from tally.storage.base_batch import Processing
from tally.storage.sql import insert_rows
from tally.storage.sql import summaries as sql_summaries
from tally.storage.sql.batch import release_keys
from tally.storage.sql.event_rows import (
    EVENT_COLUMNS,
    INSERT_EVENT_HEAD,
    Ident,
    event_row,
    ident_of,
    stored_keys,
)
from tally.storage.sql.storage import PRUNE_CHUNK, SqlStorage
from tally.storage.sqlite.checkpoint import Checkpointer
from tally.storage.sqlite.schema import connect, migrate
from tally.storage.sqlite.stored_processing import StoredProcessing

_UPSERT_KEY_HEAD = (
    "INSERT INTO idempotency_keys (environment_id, event_type, key, event_id, captured_at, "
    "received_at)"
)
_UPSERT_KEY_TAIL = (
    " ON CONFLICT (environment_id, event_type, key) DO UPDATE "
    "SET event_id = excluded.event_id, captured_at = excluded.captured_at, "
    "received_at = excluded.received_at"
)


def insert_events(
    conn: sqlite3.Connection,
    batches: list[Sequence[NewEvent]],
    loaded_at: int,
    process: StoredProcessing | None = None,
) -> list[list[IngestResult]]:
    """Insert every event of ``batches`` in the caller's transaction, dropping
    idempotent duplicates (against stored keys and within the batches).

    The key look-up comes first: an event whose key is held is a duplicate,
    whatever its status. A ``refused`` event whose key is not held stores
    nothing of its batch (a REST request is all or nothing); a ``failing``
    one is stored as ``failed`` and claims nothing."""
    stored = stored_keys(
        conn, {ident for events in batches for ev in events if (ident := ident_of(ev))}
    )
    rows: list[tuple[Any, ...]] = []
    kept: dict[Ident, tuple[str, int, int]] = {}  # the keys this commit claims
    new_id = ids.new_id
    out: list[list[IngestResult]] = []
    for events in batches:
        results: list[IngestResult] = []
        first_row = len(rows)
        refused = False
        for ev in events:
            key = ev.idempotency_key
            ident = None
            if key is not None and ev.status in KEY_CHECKED:  # ident_of, inline: hot
                ident = (ev.environment_id, ev.type, key)
                prior = kept.get(ident) or stored.get(ident)
                if prior is not None and is_duplicate(prior[2], ev.received_at):
                    results.append(IngestResult(prior[0], prior[1], True))
                    continue
            if ev.status == REFUSED:
                refused = True
                results.append(NOT_STORED)
                continue
            event_id = new_id("evt")
            rows.append(event_row(event_id, ev, loaded_at))
            if ident is not None and ev.status == PENDING:
                kept[ident] = (event_id, ev.captured_at, ev.received_at)
            results.append(IngestResult(event_id, ev.captured_at, False))
        if refused:  # nothing of this batch is stored, no key of it claimed
            del rows[first_row:]
            mine = {r.event_id for r in results if not r.duplicate}
            for ident in [i for i, held in kept.items() if held[0] in mine]:
                del kept[ident]
            results = [r if r.duplicate else NOT_STORED for r in results]
        out.append(results)
    # what is stored settled (failed by a rule) is summarized here; what
    # processing settles, by processing (``SqlUnitOfWork.record_settled``)
    summaries = sql_summaries.stored_rows(rows)
    # with the worker on, the events are processed before they are written
    # (``stored_processing``), so each row is written once, as processed
    released = process(conn, rows, loaded_at) if process is not None and rows else []
    insert_rows(conn, INSERT_EVENT_HEAD, EVENT_COLUMNS, rows)
    sql_summaries.record(conn, summaries)
    if kept:
        key_rows = [(*ident, *held) for ident, held in kept.items()]
        insert_rows(conn, _UPSERT_KEY_HEAD, 6, key_rows, _UPSERT_KEY_TAIL)
    if released:
        release_keys(conn, released)
    return out


class SqliteStorage(SqlStorage):
    """``Storage`` on one SQLite file."""

    begin = "BEGIN IMMEDIATE"
    reader_name = "tally-sqlite-read"

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        commit_max_events: int = 5000,
        clock: Clock | None = None,
        readers: int = 2,
        effects: EffectRules | None = None,
        processing: Processing | None = None,
    ) -> None:
        self.path = path
        self._synchronous = synchronous.upper()
        self._stored_processing: StoredProcessing | None = None
        super().__init__(
            commit_max_events=commit_max_events,
            clock=clock,
            readers=readers,
            effects=effects,
            processing=processing,
        )

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self.path, synchronous=self._synchronous)
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer does it
        return conn

    async def start(self) -> None:
        if self._started:
            return
        await super().start()
        self._checkpointer = Checkpointer(self.path)
        self._checkpointer.start()

    async def close(self) -> None:
        if not self._started:
            return
        await super().close()
        await asyncio.to_thread(self._checkpointer.stop)

    def _connect_reader(self) -> sqlite3.Connection:
        return connect(self.path, synchronous=self._synchronous, readonly=True)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        migrate(conn)

    def _insert_events(
        self, conn: sqlite3.Connection, batches: list[Sequence[NewEvent]], loaded_at: int
    ) -> list[list[IngestResult]]:
        return insert_events(conn, batches, loaded_at, self._stored_processing)

    def process_as_stored(self, enabled: bool) -> None:
        """Process events in the transaction that stores them (the worker is
        on: see ``tally.storage.sqlite.stored_processing``); off, they wait as
        ``pending`` for a worker."""
        self._stored_processing = (
            StoredProcessing(lambda: self.effects, self.processing) if enabled else None
        )

    def _prune(self, conn: sqlite3.Connection, older_than_us: int) -> int:
        cur = conn.execute(
            "DELETE FROM idempotency_keys WHERE rowid IN (SELECT rowid FROM idempotency_keys "
            "WHERE received_at < ? ORDER BY received_at LIMIT ?)",
            (older_than_us, PRUNE_CHUNK),
        )
        return int(cur.rowcount)
