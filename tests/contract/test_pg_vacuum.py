"""Dead rows on PostgreSQL (``tally.storage.postgres.vacuum``): processed
events leave dead rows, and dead entries in the pending index, that tally
vacuums itself when autovacuum does not."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from tally.pipeline.processing import PIPELINE
from tally.storage.postgres import vacuum as postgres_vacuum
from tally.storage.postgres.storage import PostgresStorage
from tests.support.drain import drain
from tests.support.usage import make_world, track_event


def table_stat(url: str, table: str, expression: str) -> object:
    """``expression`` over ``table``'s row of ``pg_stat_user_tables``."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT {expression} FROM pg_stat_user_tables "
            "WHERE schemaname = current_schema() AND relname = %s",
            (table,),
        ).fetchone()
    return row[0] if row else None


def dead_rows(url: str, table: str) -> int:
    return int(table_stat(url, table, "n_dead_tup") or 0)


def autovacuumed(url: str, table: str) -> bool:
    """Whether autovacuum (where it is on) vacuumed ``table`` before tally could."""
    return bool(table_stat(url, table, "last_autovacuum IS NOT NULL"))


def settle_statistics(url: str, table: str, at_least: int) -> int:
    """The server's dead-row count once the closed connections' counts reached it."""
    deadline = time.monotonic() + 15
    while (dead := dead_rows(url, table)) < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
    return dead


def test_processed_events_dead_rows_are_vacuumed_when_nothing_else_does_it(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_vacuum, "MIN_DEAD_ROWS", 200)

    async def scenario() -> list[str]:
        s = PostgresStorage(postgres_url, processing=PIPELINE)
        await s.start()
        try:
            w = await make_world(s, [])
            at = int(time.time() * 1_000_000)
            for _ in range(3):
                await s.ingest([track_event(w.env, 1, at) for _ in range(100)])
            assert await drain(s) == 300
        finally:
            await s.close()  # its backends exit: their counts reach the server
        assert settle_statistics(postgres_url, "events", 300) >= 300
        s = PostgresStorage(postgres_url, processing=PIPELINE)
        await s.start()
        try:
            return await s.vacuum_dead_rows()
        finally:
            await s.close()

    vacuumed = asyncio.run(scenario())
    assert "events" in vacuumed or autovacuumed(postgres_url, "events")
    assert dead_rows(postgres_url, "events") == 0
    # below the threshold now: the next pass leaves it alone
    assert "events" not in postgres_vacuum.vacuum_lagging(postgres_url)


def test_a_table_with_few_dead_rows_is_left_to_autovacuum(postgres_url: str) -> None:
    async def scenario() -> None:
        s = PostgresStorage(postgres_url, processing=PIPELINE)
        await s.start()
        try:
            w = await make_world(s, [])
            await s.ingest([track_event(w.env, 1, int(time.time() * 1_000_000)) for _ in range(50)])
            await drain(s)
            assert await s.vacuum_dead_rows() == []  # 50 dead rows: under MIN_DEAD_ROWS
        finally:
            await s.close()

    asyncio.run(scenario())
