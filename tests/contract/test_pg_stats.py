"""tally keeps PostgreSQL's planner statistics current itself
(``tally.storage.postgres.stats``): after migrations, at start, and while it
processes, on a server whose autovacuum may be off."""

from __future__ import annotations

import asyncio
import time

from tally.clock import FrozenClock
from tally.pipeline.processing import PIPELINE
from tally.storage.postgres.adapter import PgConnection
from tally.storage.postgres.schema import migrate
from tally.storage.postgres.stats import CHECK_EVERY_SECONDS, stale_tables
from tally.storage.postgres.storage import PostgresStorage

from .conftest import START
from .records import T0, event

_STATS = (
    "SELECT s.last_analyze IS NOT NULL OR s.last_autoanalyze IS NOT NULL, c.reltuples, "
    "s.n_live_tup FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
    "WHERE s.schemaname = current_schema() AND s.relname = ?"
)


def _stats(conn: PgConnection, table: str) -> tuple[bool, float, int]:
    row = conn.execute(_STATS, (table,)).fetchone()
    assert row is not None, table
    return bool(row[0]), float(row[1]), int(row[2])


def test_migrate_leaves_every_table_analyzed(postgres_url: str) -> None:
    conn = PgConnection.connect(postgres_url)
    try:
        migrate(conn)
        never = conn.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() "
            "AND last_analyze IS NULL AND last_autoanalyze IS NULL"
        ).fetchall()
        assert never == []
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchone()
        assert tables is not None and tables[0] >= 10
    finally:
        conn.raw.close()


def test_processing_analyzes_a_table_that_filled_up(postgres_url: str) -> None:
    """3,000 events land after start; the next processing pass past the check
    interval finds ``events`` stale and analyzes it, so the planner knows its
    size (``reltuples``), with no ANALYZE by hand and autovacuum off or on."""
    count = 3_000

    async def scenario() -> tuple[bool, float]:
        storage = PostgresStorage(postgres_url, clock=FrozenClock(START), processing=PIPELINE)
        await storage.start()
        watch = PgConnection.connect(postgres_url)
        try:
            env, _ = await storage.ensure_environment("development", "development")
            await storage.ingest(
                [event(env.id, status="failed", error="x", received=T0 + i) for i in range(count)]
            )
            # the writer's backend reports its row counts to the statistics
            # system within PostgreSQL's own flush interval (10 s when idle)
            deadline = time.monotonic() + 30
            while "events" not in stale_tables(watch):
                assert time.monotonic() < deadline, "events never became stale"
                await asyncio.sleep(0.2)
            await storage.process_pending(10)  # within the interval: no check yet
            assert "events" in stale_tables(watch)
            storage._last_stats_check -= CHECK_EVERY_SECONDS  # the interval has passed
            await storage.process_pending(10)
            analyzed, reltuples, _ = _stats(watch, "events")
            assert "events" not in stale_tables(watch)
            return analyzed, reltuples
        finally:
            watch.raw.close()
            await storage.close()

    analyzed, reltuples = asyncio.run(scenario())
    assert analyzed
    assert reltuples == count
