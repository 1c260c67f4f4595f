"""PostgreSQL: the tables every processing batch rewrites rows of (the
counters, companies' and users' ``last_seen_at``) keep room on each page
(migration 10), so a rewritten row stays on its page: a HOT update, which
adds no index entry."""

from __future__ import annotations

import asyncio

from tally.clock import FrozenClock
from tally.pipeline.processing import PIPELINE
from tally.storage.postgres.adapter import PgConnection
from tally.storage.postgres.schema import migrate
from tally.storage.postgres.storage import PostgresStorage
from tests.support.drain import drain

from .conftest import START
from .records import track

COMPANIES = 300  # 1,200 counter rows (four periods): several pages of them


def test_migration_leaves_room_on_the_rewritten_tables(postgres_url: str) -> None:
    conn = PgConnection.connect(postgres_url)
    try:
        migrate(conn)
        options = dict(
            conn.execute(
                "SELECT relname, reloptions FROM pg_class WHERE relnamespace = "
                "current_schema()::regnamespace AND relname IN "
                "('usage_counters', 'companies', 'users')"
            ).fetchall()
        )
    finally:
        conn.raw.close()
    assert options == {
        "usage_counters": ["fillfactor=50"],
        "companies": ["fillfactor=50"],
        "users": ["fillfactor=70"],
    }


def _pages(url: str, table: str) -> dict[str, int]:
    """Each row's page (the block of its ``ctid``), by its identity."""
    key = "company_id || subtype || period || period_start" if table == "usage_counters" else "id"
    conn = PgConnection.connect(url)
    try:
        rows = conn.execute(f"SELECT {key}, (ctid::text::point)[0]::int FROM {table}").fetchall()
    finally:
        conn.raw.close()
    return {str(k): int(block) for k, block in rows}


def test_a_batch_rewrites_counters_and_companies_on_their_own_pages(postgres_url: str) -> None:
    async def scenario() -> tuple[dict[str, int], ...]:
        storage = PostgresStorage(postgres_url, clock=FrozenClock(START), processing=PIPELINE)
        await storage.start()
        try:
            env, _ = await storage.ensure_environment("production", "production")
            batch = [track(env.id, 1, company=f"co-{i:03d}") for i in range(COMPANIES)]
            await storage.ingest(batch)
            await drain(storage, COMPANIES)
            before = (_pages(postgres_url, "usage_counters"), _pages(postgres_url, "companies"))
            await storage.ingest(
                [
                    track(env.id, 2, at=b.captured_at + 1, company=f"co-{i:03d}")
                    for i, b in enumerate(batch)
                ]
            )
            await drain(storage, COMPANIES)  # every counter and company rewritten once
            after = (_pages(postgres_url, "usage_counters"), _pages(postgres_url, "companies"))
            return (*before, *after)
        finally:
            await storage.close()

    counters, companies, counters_after, companies_after = asyncio.run(scenario())
    assert len(counters) == 4 * COMPANIES and len(companies) == COMPANIES
    assert len(set(counters.values())) > 2  # the rows span several pages
    # full pages would have sent most of them elsewhere (half the counter
    # updates of a 200K-event drain, 88% of the companies')
    assert counters_after == counters
    assert companies_after == companies
