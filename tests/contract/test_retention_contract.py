"""Retention (``tally.retention``) on both backends: what pruning removes,
what it never touches, and that it goes in chunks beside live ingest.

Event ids encode the wall-clock time they were made, and pruning finds old
events by id first, then by ``loaded_at``; so these tests run their frozen
clock years ahead, where every id made during the test is "old" and only
``loaded_at`` (the frozen clock's time at ingest) decides what goes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tally.clock import FrozenClock, to_micros
from tally.effects.records import AttemptResult, ClaimedDelivery, WebhookEventFilter
from tally.effects.triggers import EffectRules
from tally.model import EventFilter
from tally.pipeline.processing import PIPELINE
from tally.retention.loop import Pruner
from tally.retention.policy import (
    DELIVERIES,
    EVENTS,
    LIMIT_TRIGGERS,
    Cutoffs,
    Pruned,
    RetentionPolicy,
)
from tally.storage.base import Storage
from tests.support.drain import drain
from tests.support.usage import (
    identify_event,
    make_world,
    read_counters,
    track_event,
)

from .conftest import Backend

FAR = datetime(2031, 1, 6, 12, 0, tzinfo=UTC)  # later than any id this run makes
DAY = timedelta(days=1)
SECOND = 1_000_000
DAY_US = 86_400 * SECOND
LEASE = 30 * SECOND


@dataclass
class Db(Backend):
    raw: Callable[[], Any]  # a sqlite3 or psycopg connection to the same data

    def now(self) -> int:
        return to_micros(self.clock.now())

    def count(self, sql: str) -> int:
        with closing(self.raw()) as conn:
            return int(conn.execute(sql).fetchone()[0])


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    clock = FrozenClock(FAR)
    effects = EffectRules()
    if request.param == "postgres":
        from tally.storage.postgres.storage import PostgresStorage

        url: str = request.getfixturevalue("postgres_url")
        yield Db(
            "postgres",
            clock,
            lambda: PostgresStorage(url, clock=clock, effects=effects, processing=PIPELINE),
            lambda: psycopg.connect(url, autocommit=True),
        )
    else:
        from tally.storage.sqlite.storage import SqliteStorage

        path = str(tmp_path / "r.db")
        yield Db(
            "sqlite",
            clock,
            lambda: SqliteStorage(path, clock=clock, effects=effects, processing=PIPELINE),
            lambda: sqlite3.connect(path),
        )


def keep(days: int = 0, *, deliveries: int = 30, triggers: int = 90) -> RetentionPolicy:
    return RetentionPolicy(
        delivery_log_days=deliveries, limit_trigger_days=triggers, event_days=days
    )


async def prune(s: Storage, db: Db, policy: RetentionPolicy, chunk: int = 1000) -> dict[str, int]:
    return await Pruner(s, policy, db.clock, chunk=chunk, pause_seconds=0).prune_once()


def snapshot(db: Db) -> dict[str, Any]:
    """Everything pruning events must leave as it was."""
    with closing(db.raw()) as conn:
        stored, _, _ = read_counters(conn)
        return {
            "counters": stored,
            "companies": sorted(conn.execute("SELECT id, name, traits FROM companies").fetchall()),
            "users": sorted(conn.execute("SELECT id, name, traits FROM users").fetchall()),
            "memberships": sorted(
                conn.execute("SELECT company_id, user_id FROM memberships").fetchall()
            ),
            "keys": sorted(conn.execute("SELECT entity_id, key, value FROM user_keys").fetchall()),
        }


# -- events ---------------------------------------------------------------------------------
def test_counters_and_entities_survive_the_pruning_of_their_events(db: Db) -> None:
    async def scenario(s: Storage) -> None:
        w = await make_world(s, [])
        at = db.now()
        events = [track_event(w.env, q, at, user=f"u{q % 4}") for q in range(1, 41)]
        events += [identify_event(w.env, f"u{i}", at) for i in range(4)]
        await s.ingest(events)
        assert await drain(s) == 44
        before = snapshot(db)
        assert (
            sum(q for (_, _, _, kind, _), (q, _) in before["counters"].items() if kind == "month")
            == 820
        )
        assert len(before["memberships"]) == 4

        db.clock.set(FAR + 8 * DAY)
        assert await prune(s, db, keep(10)) == {DELIVERIES: 0, LIMIT_TRIGGERS: 0, EVENTS: 0}
        assert await prune(s, db, keep(7)) == {DELIVERIES: 0, LIMIT_TRIGGERS: 0, EVENTS: 44}
        assert await s.list_events(w.env, EventFilter(limit=100)) == []
        assert snapshot(db) == before  # counters equal what they were, to the unit

    db.run(scenario)


def test_event_summaries_survive_the_pruning_of_their_events(db: Db) -> None:
    async def scenario(s: Storage) -> None:
        w = await make_world(s, [])
        await s.ingest([track_event(w.env, 2, db.now()) for _ in range(5)])
        await drain(s)
        before = await s.event_summaries(w.env, None, (), 50, 0)
        assert before and before[0].event_count == 5
        db.clock.set(FAR + 3 * DAY)
        await prune(s, db, keep(1))
        assert await s.event_summaries(w.env, None, (), 50, 0) == before

    db.run(scenario)


def test_pending_events_are_never_pruned(db: Db) -> None:
    async def scenario(s: Storage) -> None:
        w = await make_world(s, [])
        at = db.now()
        results = await s.ingest([track_event(w.env, q, at) for q in range(1, 11)])
        assert await s.process_pending(4) == 4
        db.clock.set(FAR + 40 * DAY)
        assert (await prune(s, db, keep(1)))[EVENTS] == 4
        left = await s.list_events(w.env, EventFilter(limit=100))
        assert sorted(e.id for e in left) == sorted(r.event_id for r in results[4:])
        assert {e.status for e in left} == {"pending"}
        assert await drain(s) == 6  # and they still count
        with closing(db.raw()) as conn:
            stored, _, _ = read_counters(conn)
        assert stored[(w.env, w.company, "api-call", "all_time", 0)] == (55, 10)

    db.run(scenario)


def test_failed_events_go_like_processed_ones(db: Db) -> None:
    async def scenario(s: Storage) -> None:
        w = await make_world(s, [])
        await s.ingest([track_event(w.env, 1, db.now()) for _ in range(3)])
        assert await s.fail_next_pending("set aside by the test") is not None
        await drain(s)
        db.clock.set(FAR + 2 * DAY)
        assert (await prune(s, db, keep(1)))[EVENTS] == 3
        assert db.count("SELECT COUNT(*) FROM events") == 0

    db.run(scenario)


def test_events_within_retention_are_kept(db: Db) -> None:
    async def scenario(s: Storage) -> None:
        w = await make_world(s, [])
        await s.ingest([track_event(w.env, 1, db.now()) for _ in range(3)])
        db.clock.set(FAR + 2 * DAY)
        recent = await s.ingest([track_event(w.env, 1, db.now()) for _ in range(2)])
        await drain(s)
        db.clock.set(FAR + 3 * DAY - timedelta(seconds=1))
        assert (await prune(s, db, keep(3)))[EVENTS] == 0
        db.clock.set(FAR + 3 * DAY + timedelta(seconds=1))
        assert (await prune(s, db, keep(3)))[EVENTS] == 3
        left = await s.list_events(w.env, EventFilter(limit=100))
        assert sorted(e.id for e in left) == sorted(r.event_id for r in recent)

    db.run(scenario)


def test_events_are_kept_forever_by_default(db: Db) -> None:
    async def scenario(s: Storage) -> None:
        w = await make_world(s, [])
        await s.ingest([track_event(w.env, 1, db.now()) for _ in range(3)])
        await drain(s)
        db.clock.set(FAR + 3000 * DAY)
        assert EVENTS not in await prune(s, db, RetentionPolicy())
        assert db.count("SELECT COUNT(*) FROM events") == 3

    db.run(scenario)


# -- chunks and concurrency -------------------------------------------------------------------
class Counting:
    """A storage whose prune calls (one transaction each) are recorded."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.calls: list[tuple[str, int]] = []

    async def prune_chunk(
        self, kind: str, cutoffs: Cutoffs, limit: int, after: tuple[Any, ...] | None = None
    ) -> Pruned:
        pruned = await self.storage.prune_chunk(kind, cutoffs, limit, after)
        self.calls.append((kind, pruned.rows))
        return pruned

    async def count_prunable(self, cutoffs: Cutoffs) -> dict[str, int]:
        return await self.storage.count_prunable(cutoffs)

    async def vacuum_dead_rows(self) -> list[str]:
        return await self.storage.vacuum_dead_rows()


def test_pruning_goes_in_chunks_no_larger_than_the_chunk(db: Db) -> None:
    async def scenario(s: Storage) -> None:
        w = await make_world(s, [])
        for _ in range(5):
            await s.ingest([track_event(w.env, 1, db.now()) for _ in range(50)])
        await drain(s)
        db.clock.set(FAR + 2 * DAY)
        policy = keep(1)
        cutoffs = policy.cutoffs(db.now())
        assert (await s.count_prunable(cutoffs))[EVENTS] == 250  # --dry-run
        # one call is one transaction: it deletes at most its limit, exactly
        first = await s.prune_chunk(EVENTS, cutoffs, 30)
        assert first.rows == 30
        assert db.count("SELECT COUNT(*) FROM events") == 220
        # the next chunk starts after the last row the first one deleted
        assert first.resume_after is not None
        oldest = db.count(f"SELECT COUNT(*) FROM events WHERE id > '{first.resume_after[0]}'")
        assert oldest == 220
        counting = Counting(s)
        pruner = Pruner(counting, policy, db.clock, chunk=100, pause_seconds=0)
        assert (await pruner.prune_once())[EVENTS] == 220
        chunks = [n for kind, n in counting.calls if kind == EVENTS]
        assert sum(chunks) == 220 and max(chunks) <= 100 and chunks[-1] < 100
        assert (await s.count_prunable(cutoffs))[EVENTS] == 0

    db.run(scenario)


def test_pruning_under_concurrent_ingest_loses_nothing_that_is_kept(db: Db) -> None:
    """Old processed events are pruned while new ones are ingested and
    processed: every acknowledged new event is there afterwards, every old
    one gone, and the counters hold them all."""

    async def scenario(s: Storage) -> None:
        w = await make_world(s, [])
        for _ in range(20):
            await s.ingest([track_event(w.env, 1, db.now()) for _ in range(100)])
        await drain(s)
        db.clock.set(FAR + 2 * DAY)
        acknowledged: list[str] = []
        stop = asyncio.Event()

        async def ingest() -> None:
            for _ in range(60):
                results = await s.ingest([track_event(w.env, 2, db.now()) for _ in range(25)])
                acknowledged.extend(r.event_id for r in results)
                await asyncio.sleep(0)
            stop.set()

        async def work() -> None:
            while not stop.is_set():
                if not await s.process_pending(100):
                    await asyncio.sleep(0.001)

        pruner = Pruner(s, keep(1), db.clock, chunk=50, pause_seconds=0)
        pruned, _, _ = await asyncio.gather(pruner.prune_once(), ingest(), work())
        await drain(s)
        assert pruned[EVENTS] == 2000
        left = await s.list_events(w.env, EventFilter(limit=5000))
        assert sorted(e.id for e in left) == sorted(acknowledged)
        assert len(acknowledged) == 1500
        with closing(db.raw()) as conn:
            stored, _, _ = read_counters(conn)
        assert stored[(w.env, w.company, "api-call", "all_time", 0)] == (2000 + 3000, 3500)

    db.run(scenario)


# -- deliveries -----------------------------------------------------------------------------------
def outcome(item: ClaimedDelivery, at: int, *, ok: bool, retry_at: int | None) -> AttemptResult:
    return AttemptResult(
        item.id,
        item.attempt,
        ok,
        200 if ok else 500,
        None if ok else "boom",
        at,
        at + 1000,
        retry_at,
    )


def test_finished_deliveries_go_with_their_attempts_and_notices_unfinished_stay(db: Db) -> None:
    async def scenario(s: Storage) -> None:
        w = await make_world(s, ["http://127.0.0.1:9/a"], types=("user.created",))
        at = db.now()
        await s.ingest([identify_event(w.env, f"u{i}", at) for i in range(6)])
        await s.ingest([track_event(w.env, 1, at) for _ in range(2)])  # 2 meter records
        await drain(s)
        hooks = await s.claim_deliveries(at, 10, LEASE, billing=False)
        assert len(hooks) == 6
        await s.record_attempts(
            [outcome(h, at, ok=True, retry_at=None) for h in hooks[:2]]
            + [outcome(h, at, ok=False, retry_at=None) for h in hooks[2:4]]
            + [outcome(h, at, ok=False, retry_at=at + 400 * DAY_US) for h in hooks[4:]],
            at,
        )
        meters = await s.claim_deliveries(at, 10, LEASE, billing=True)
        assert [m.kind for m in meters] == ["billing", "billing"]
        await s.record_attempts(
            [
                outcome(meters[0], at, ok=True, retry_at=None),
                outcome(meters[1], at, ok=False, retry_at=None),
            ],
            at,
        )
        assert db.count("SELECT COUNT(*) FROM delivery_attempts") == 8
        assert db.count("SELECT COUNT(*) FROM webhook_notices") == 6

        db.clock.set(FAR + 29 * DAY)
        assert (await prune(s, db, keep()))[DELIVERIES] == 0
        db.clock.set(FAR + 31 * DAY)
        assert (await prune(s, db, keep()))[DELIVERIES] == 5  # 2 + 2 webhooks, 1 meter record

        # left: the two webhooks waiting for a retry, with their attempts and
        # notices, and the meter record that never reached billing
        left = await s.list_webhook_events(w.env, WebhookEventFilter(limit=250))
        assert sorted(e.id for e in left) == sorted(h.id for h in hooks[4:])
        for h in hooks[4:]:
            event = await s.get_webhook_event(w.env, h.id)
            assert event is not None and [a.outcome for a in event.attempts] == ["failure"]
            assert event.payload  # its notice is still there
        assert db.count("SELECT COUNT(*) FROM webhook_notices") == 2
        assert db.count("SELECT COUNT(*) FROM delivery_attempts") == 3
        records = await s.list_meter_records(w.env, 10)
        assert [(r.id, r.status) for r in records] == [(meters[1].id, "failure")]

    db.run(scenario)


# -- limit triggers --------------------------------------------------------------------------------
def test_limit_triggers_go_once_their_period_has_been_closed_long_enough(db: Db) -> None:
    async def scenario(s: Storage) -> None:
        march = datetime(2026, 3, 15, 12, tzinfo=UTC)
        db.clock.set(march)
        w = await make_world(s, [], allocation=10)  # monthly
        await s.ingest([track_event(w.env, 1, to_micros(march)) for _ in range(10)])
        await drain(s)
        fired = await s.company_limit_firings(w.env, w.company, 10)
        assert sorted(f.action for f in fired) == [
            "entitlement.limit.reached",
            "entitlement.limit.warning",
        ]
        # March's period starts on the 1st; a month is taken as 31 days long
        start = datetime(2026, 3, 1, tzinfo=UTC)
        db.clock.set(start + (31 + 90) * DAY - timedelta(seconds=1))
        assert (await prune(s, db, keep()))[LIMIT_TRIGGERS] == 0
        db.clock.set(start + (31 + 90) * DAY + timedelta(seconds=1))
        assert (await prune(s, db, keep()))[LIMIT_TRIGGERS] == 2
        assert await s.company_limit_firings(w.env, w.company, 10) == []
        with closing(db.raw()) as conn:
            stored, _, _ = read_counters(conn)
        assert stored[(w.env, w.company, "api-call", "month", to_micros(start))] == (10, 10)

    db.run(scenario)
