"""The pending backlog with a cap (GET /health's count), on every backend:
a count over the cap stops at it and says so; the oldest pending event is
found whatever the cap; one environment's backlog (the console's) leaves
the others' out."""

from __future__ import annotations

from datetime import timedelta

from tally.model import PendingBacklog
from tally.storage.base import Storage

from .conftest import Backend
from .records import env_id, event, now_us


def test_pending_backlog_counts_up_to_a_cap(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        assert await storage.pending_backlog(2) == PendingBacklog(0, None, False)
        env = await env_id(storage)
        first = now_us(backend)
        await storage.ingest([event(env, received=first) for _ in range(2)])
        assert await storage.pending_backlog(2) == PendingBacklog(2, first, False)
        backend.clock.advance(timedelta(seconds=3))
        await storage.ingest([event(env, received=now_us(backend))])
        assert await storage.pending_backlog(2) == PendingBacklog(2, first, True)
        assert await storage.pending_backlog() == PendingBacklog(3, first, False)
        assert await storage.process_pending(100) == 3
        assert await storage.pending_backlog(2) == PendingBacklog(0, None, False)

    backend.run(scenario)


def test_the_console_backlog_is_one_environments(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        env = await env_id(storage)
        other, _ = await storage.ensure_environment("staging", "staging")
        await storage.ingest([event(env, received=now_us(backend)) for _ in range(2)])
        backend.clock.advance(timedelta(seconds=4))
        late = now_us(backend)
        await storage.ingest([event(other.id, received=late)])
        health = await storage.pipeline_health(other.id, late - 60_000_000)
        assert (health.pending, health.oldest_pending_at) == (1, late)
        assert (await storage.pending_backlog()).count == 3

    backend.run(scenario)
