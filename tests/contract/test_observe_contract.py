"""What the metrics read from storage and record while processing, on every
backend: the pending backlog off the pending index, and per processed batch
the events processed and failed and each one's lag (enriched_at - loaded_at)."""

from __future__ import annotations

from datetime import timedelta

from tally.clock import to_micros
from tally.model import PendingBacklog
from tally.observe.metrics import metrics
from tally.storage.base import Storage

from .conftest import Backend
from .records import env_id, event, now_us


def sample(name: str, **labels: str) -> float:
    return metrics().registry.get_sample_value(name, labels) or 0.0


def figures() -> dict[str, float]:
    return {
        "processed": sample("tally_events_processed_total", outcome="processed"),
        "failed": sample("tally_events_processed_total", outcome="failed"),
        "lags": sample("tally_processing_lag_seconds_count"),
        "lag_sum": sample("tally_processing_lag_seconds_sum"),
        "under_10s": sample("tally_processing_lag_seconds_bucket", le="10.0"),
    }


def test_pending_backlog_and_processing_metrics(backend: Backend) -> None:
    async def scenario(storage: Storage) -> None:
        assert await storage.pending_backlog() == PendingBacklog(0, None)
        env = await env_id(storage)
        first = now_us(backend)
        await storage.ingest([event(env, received=first) for _ in range(3)])
        backend.clock.advance(timedelta(seconds=5))
        unreadable = event(env, received=now_us(backend), body="[1, 2")
        await storage.ingest([event(env, received=now_us(backend)), unreadable])
        assert await storage.pending_backlog() == PendingBacklog(5, first)

        before = figures()
        backend.clock.advance(timedelta(seconds=7))
        assert await storage.process_pending(100) == 5
        assert await storage.pending_backlog() == PendingBacklog(0, None)
        after = figures()
        moved = {k: after[k] - before[k] for k in before}
        assert moved["processed"] == 4
        assert moved["failed"] == 1
        assert moved["lags"] == 4  # a failed event has no enriched_at: no lag
        assert abs(moved["lag_sum"] - (3 * 12 + 1 * 7)) < 1e-6
        assert moved["under_10s"] == 1
        assert to_micros(backend.clock.now()) - first == 12_000_000

    backend.run(scenario)
