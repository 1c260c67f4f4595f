"""PostgreSQL ingestion under concurrency the other backend cannot have:
several storages (as several API processes would), each with more than one
group-committing writer, racing on the same idempotency keys. The database
decides each key: one stored event per key, and every answer names it."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from tally.clock import FrozenClock
from tally.model import NewEvent
from tally.pipeline.processing import PIPELINE

from .conftest import START
from .records import HOUR, T0, all_events, env_id, event

KEYS = 60
ROUNDS = 6


def test_storages_racing_on_keys_store_one_event_per_key(postgres_url: str) -> None:
    from tally.storage.postgres.storage import PostgresStorage

    clock = FrozenClock(START)

    async def main() -> None:
        stores = [
            PostgresStorage(postgres_url, clock=clock, writers=2, processing=PIPELINE)
            for _ in range(3)
        ]
        for s in stores:
            await s.start()
        try:
            env = await env_id(stores[0])
            # "old" held its key 25 hours ago: the key is free again, and the
            # race decides which new event takes it
            (expired,) = await stores[0].ingest(
                [event(env, key="old", received=T0 - 25 * HOUR, captured=T0 - 25 * HOUR)]
            )
            rng = random.Random(4)

            def batch() -> list[NewEvent]:
                keys = [f"k{rng.randrange(KEYS)}" for _ in range(8)] + ["old", None, None]
                rng.shuffle(keys)
                return [event(env, key=k) for k in keys]

            calls = []
            for _ in range(ROUNDS):
                for s in stores:
                    for _ in range(4):
                        events = batch()
                        calls.append((events, s.ingest(events)))
            answers = await asyncio.gather(*(c for _, c in calls))

            by_key: dict[str, set[str]] = defaultdict(set)
            kept_by_key: dict[str, list[str]] = defaultdict(list)
            keyless: list[str] = []
            for (events, _), results in zip(calls, answers, strict=True):
                for ev, res in zip(events, results, strict=True):
                    if ev.idempotency_key is None:
                        assert res.duplicate is False
                        keyless.append(res.event_id)
                        continue
                    by_key[ev.idempotency_key].add(res.event_id)
                    if not res.duplicate:
                        kept_by_key[ev.idempotency_key].append(res.event_id)

            # every answer for a key names one event, and exactly one call stored it
            assert all(len(ids) == 1 for ids in by_key.values())
            assert {k: len(v) for k, v in kept_by_key.items()} == {k: 1 for k in by_key}
            assert by_key["old"] != {expired.event_id}

            stored = await all_events(stores[0], env)
            stored_ids = {e.id for e in stored}
            expected = {next(iter(ids)) for ids in by_key.values()} | set(keyless)
            assert stored_ids == expected | {expired.event_id}
            assert len(stored) == len(stored_ids)
        finally:
            for s in stores:
                await s.close()

    asyncio.run(main())
