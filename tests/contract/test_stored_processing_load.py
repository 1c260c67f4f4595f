"""Under load, processing as stored gives way to the worker's larger batches
(``tally.storage.sqlite.stored_processing.MAX_EVENTS``): a group commit of more
pending events than that is stored ``pending``, and once the worker has taken
the backlog, small commits are processed as they are stored again."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from tally.ingest.parse import Context, parse_capture_batch
from tally.model import ApiKey, NewEvent
from tally.pipeline.processing import PIPELINE
from tally.pipeline.worker import Worker
from tally.storage.sqlite.storage import SqliteStorage
from tally.storage.sqlite.stored_processing import MAX_EVENTS

KEY = ApiKey("key_t", "env_t", "secret", False, "sch_dev_", 0)
CTX = Context(key=KEY, received_at=datetime(2026, 1, 1, tzinfo=UTC))


def _events(count: int, start: int = 0) -> list[NewEvent]:
    """``count`` track events, parsed as the API does (100 to a request),
    handed to storage as one job: one group commit."""
    out: list[NewEvent] = []
    for first in range(start, start + count, 100):
        bodies = [
            f'{{"type":"track","body":{{"event":"api","company":{{"id":"c{i % 7}"}},'
            f'"user":{{"id":"u{i % 31}"}},"quantity":{1 + i % 3}}}}}'
            for i in range(first, min(first + 100, start + count))
        ]
        out.extend(parse_capture_batch(b'{"events":[' + ",".join(bodies).encode() + b"]}", CTX))
    return out


async def _statuses(storage: SqliteStorage, event_ids: list[str]) -> set[str]:
    out = set()
    for event_id in event_ids:
        event = await storage.get_event("env_t", event_id)
        assert event is not None
        out.add(event.status)
    return out


def test_a_large_group_commit_waits_for_the_worker_then_small_ones_are_processed_as_stored(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        storage = SqliteStorage(str(tmp_path / "s.db"), processing=PIPELINE)
        await storage.start()
        try:
            storage.process_as_stored(True)
            big = await storage.ingest(_events(MAX_EVENTS + 1))
            assert await _statuses(storage, [r.event_id for r in big]) == {"pending"}
            assert (await storage.pending_backlog()).count == MAX_EVENTS + 1
            # the worker takes the whole backlog in one batch
            assert await Worker(storage, batch_size=10_000).step() == MAX_EVENTS + 1
            small = await storage.ingest(_events(MAX_EVENTS, 10_000))
            assert await _statuses(storage, [r.event_id for r in small]) == {"processed"}
            assert (await storage.pending_backlog()).count == 0
            # both paths counted every event once
            total = sum(1 + i % 3 for i in range(MAX_EVENTS + 1)) + sum(
                1 + i % 3 for i in range(10_000, 10_000 + MAX_EVENTS)
            )
            with sqlite3.connect(storage.path) as conn:
                (stored,) = conn.execute(
                    "SELECT SUM(quantity) FROM usage_counters WHERE period = 'all_time'"
                ).fetchone()
            assert stored == total
        finally:
            await storage.close()

    asyncio.run(main())
