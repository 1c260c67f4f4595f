"""Processing events in the commit that stores them (``tally.storage.sqlite.stored_processing``):
rows written once as processed, events behind a backlog wait their turn, and a
batch whose processing raises is stored pending for the worker."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tally.ingest.parse import Context, parse_capture_batch
from tally.model import ApiKey, IngestResult
from tally.pipeline.processing import PIPELINE
from tally.pipeline.worker import Worker
from tally.storage.sqlite.storage import SqliteStorage
from tests.support.poison import poison_track_events

KEY = ApiKey("key_t", "env_t", "secret", False, "sch_dev_", 0)
CTX = Context(key=KEY, received_at=datetime(2026, 1, 1, tzinfo=UTC))


def _batch(*events: str) -> bytes:
    return b'{"events":[' + ",".join(events).encode() + b"]}"


def _track(subtype: str, company: str = "c", key: str | None = None) -> str:
    extra = f',"idempotency_key":"{key}"' if key else ""
    return (
        f'{{"type":"track","body":{{"event":"{subtype}","company":{{"id":"{company}"}},'
        f'"user":{{"id":"u-{company}"}}}}{extra}}}'
    )


def _run(tmp_path: Path, scenario: Callable[[SqliteStorage], Awaitable[None]]) -> None:
    async def main() -> None:
        storage = SqliteStorage(str(tmp_path / "s.db"), processing=PIPELINE)
        await storage.start()
        try:
            await scenario(storage)
        finally:
            await storage.close()

    asyncio.run(main())


async def _statuses(storage: SqliteStorage, results: list[IngestResult]) -> list[str]:
    out = []
    for r in results:
        event = await storage.get_event("env_t", r.event_id)
        assert event is not None
        out.append(event.status)
    return out


def test_events_are_written_once_already_processed(tmp_path: Path) -> None:
    async def scenario(storage: SqliteStorage) -> None:
        storage.process_as_stored(True)
        results = await storage.ingest(
            parse_capture_batch(_batch(_track("a"), _track("a"), _track("b", "d")), CTX)
        )
        assert await _statuses(storage, results) == ["processed"] * 3
        assert await storage.process_pending(100) == 0  # nothing was left for a worker
        event = await storage.get_event("env_t", results[0].event_id)
        assert event is not None and event.company_id is not None and event.user_id is not None
        assert event.enriched_at == event.loaded_at  # no lag
        with sqlite3.connect(storage.path) as conn:
            counted = conn.execute(
                "SELECT subtype, quantity FROM usage_counters WHERE company_id = ? "
                "AND period = 'all_time'",
                (event.company_id,),
            ).fetchall()
        assert dict(counted) == {"a": 2}

    _run(tmp_path, scenario)


def test_a_failed_event_lets_its_key_go_in_the_same_commit(tmp_path: Path) -> None:
    async def scenario(storage: SqliteStorage) -> None:
        storage.process_as_stored(True)
        email = '{{"type":"identify","body":{{"keys":{{"id":"u-c","email":"{}"}}}}{}}}'
        await storage.ingest(parse_capture_batch(_batch(email.format("a@x", "")), CTX))
        # an event never changes the value of a key the user holds: it fails
        changed = email.format("b@x", ',"idempotency_key":"k1"')
        (first,) = await storage.ingest(parse_capture_batch(_batch(changed), CTX))
        assert await _statuses(storage, [first]) == ["failed"]
        # the corrected resend with the same key is stored, not a duplicate
        corrected = email.format("a@x", ',"idempotency_key":"k1"')
        (again,) = await storage.ingest(parse_capture_batch(_batch(corrected), CTX))
        assert not again.duplicate and again.event_id != first.event_id
        assert await _statuses(storage, [again]) == ["processed"]

    _run(tmp_path, scenario)


def test_events_behind_a_backlog_wait_for_the_worker_in_order(tmp_path: Path) -> None:
    async def scenario(storage: SqliteStorage) -> None:
        older = await storage.ingest(parse_capture_batch(_batch(_track("a")), CTX))  # pending
        storage.process_as_stored(True)
        # an identify that the backlog's track must not be overtaken by
        identify = (
            '{"type":"identify","body":{"keys":{"id":"u-c"},"company":{"keys":{"id":"c"}},'
            '"traits":{"plan":"pro"}}}'
        )
        newer = await storage.ingest(parse_capture_batch(_batch(identify, _track("b")), CTX))
        assert await _statuses(storage, older + newer) == ["pending"] * 3
        assert await Worker(storage, batch_size=1).run_until_idle() == 3
        assert await _statuses(storage, older + newer) == ["processed"] * 3
        # the backlog is gone: the next commit is processed as it is stored
        (last,) = await storage.ingest(parse_capture_batch(_batch(_track("c")), CTX))
        assert await _statuses(storage, [last]) == ["processed"]

    _run(tmp_path, scenario)


def test_a_batch_whose_processing_raises_is_stored_pending_for_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison_track_events(monkeypatch)

    async def scenario(storage: SqliteStorage) -> None:
        storage.process_as_stored(True)
        data = _batch(_track("a"), _track("poison"), _track("b"))
        results = await storage.ingest(parse_capture_batch(data, CTX))
        # stored, nothing of the failed processing kept: all three wait
        assert await _statuses(storage, results) == ["pending"] * 3
        assert await storage.pending_backlog() is not None
        assert await Worker(storage, batch_size=10).run_until_idle() == 3
        assert await _statuses(storage, results) == ["processed", "failed", "processed"]

    _run(tmp_path, scenario)
