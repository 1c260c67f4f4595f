"""Deleting a company keeps counters equal to the recount (issue 9 item 7).

The rule (``tests/support/usage.py``, docs/architecture.md): a company's
counters, keys, memberships and allocations go with it; its events stay, with
their ``company_id``, and count nowhere; later events with the same keys make
a new company that counts only its own events. On PostgreSQL a processing
batch racing the delete is read again rather than leave counters behind.
"""

from __future__ import annotations

import asyncio

from tally.clock import FrozenClock, to_micros
from tally.metering.catalog import UsageFilter
from tally.model import EventFilter
from tally.pipeline.processing import PIPELINE
from tally.storage.base import Storage
from tests.support.drain import drain
from tests.support.locks import wait_for_a_lock_wait
from tests.support.usage import (
    World,
    assert_counters_match,
    make_world,
    read_counters,
    track_event,
)

from .conftest import START, Backend

T0 = to_micros(START)


async def check_recount(s: Storage) -> set[str]:
    """Counters equal the recount; returns the deleted companies events name."""
    stored, expected, gone = await s._read(read_counters)  # type: ignore[attr-defined]
    assert_counters_match(stored, expected)
    return gone


async def company_ids_of(s: Storage, w: World) -> list[str | None]:
    events = await s.list_events(w.env, EventFilter(limit=100))
    return [e.company_id for e in reversed(events)]


def test_a_deleted_company_s_events_keep_its_id_and_count_nowhere(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await make_world(s, [])
        await s.ingest([track_event(w.env, n, T0) for n in (3, 4)])
        await drain(s)
        assert await check_recount(s) == set()

        deleted = await s.delete_company(w.env, w.company)
        assert deleted is not None and deleted.id == w.company
        assert await check_recount(s) == {w.company}  # no counter left, none expected
        assert await company_ids_of(s, w) == [w.company, w.company]

        # the same keys later: a new company, counting only its own events
        await s.ingest([track_event(w.env, 5, T0)])
        await drain(s)
        assert await check_recount(s) == {w.company}
        again = await s.lookup_company(w.env, {"id": "acme"})
        assert again is not None and again.id != w.company
        assert await company_ids_of(s, w) == [w.company, w.company, again.id]
        usage = await s.feature_usage(w.env, again.id, UsageFilter(), T0)
        assert [u.usage for u in usage] == [5]  # not 3 + 4 + 5
        assert await s.get_company(w.env, w.company) is None

    backend.run(scenario)


def test_a_batch_racing_a_company_delete_leaves_no_counter_behind(postgres_url: str) -> None:
    """PostgreSQL only (SQLite has one writer: a batch and a delete never
    overlap). The delete commits while a worker's batch, which read the
    company before, waits on it: the batch is read again and counts into a
    new company, not into the deleted one."""
    from tally.storage.postgres.adapter import PgConnection
    from tally.storage.postgres.storage import PostgresStorage
    from tally.storage.sql import entity_writes as writes

    async def main() -> None:
        s = PostgresStorage(postgres_url, clock=FrozenClock(START), processing=PIPELINE)
        await s.start()
        deleting = PgConnection.connect(postgres_url)
        watching = PgConnection.connect(postgres_url)
        try:
            w = await make_world(s, [])
            await s.ingest([track_event(w.env, 2, T0)])
            await drain(s)
            await s.ingest([track_event(w.env, 7, T0, user="u2")])

            deleting.execute("BEGIN")
            writes.delete(deleting, "company", w.company)  # not committed yet
            batch = asyncio.create_task(s.process_pending(100))
            await asyncio.to_thread(wait_for_a_lock_wait, watching)
            deleting.execute("COMMIT")
            assert await batch == 1

            assert await check_recount(s) == {w.company}
            (_, raced) = await company_ids_of(s, w)
            assert raced is not None and raced != w.company
            company = await s.lookup_company(w.env, {"id": "acme"})
            assert company is not None and company.id == raced
            rows = watching.execute(
                "SELECT COUNT(*) FROM usage_counters WHERE company_id = ?", (w.company,)
            ).fetchone()
            assert rows[0] == 0
        finally:
            deleting.close()
            watching.close()
            await s.close()

    asyncio.run(main())
