"""The worker sets aside an event that processing code cannot handle, and goes
on (on each backend)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tally.ingest.parse import Context, parse_capture_batch
from tally.model import ApiKey
from tally.pipeline.worker import Worker
from tally.storage.base import Storage
from tests.support.poison import poison_track_events

from .conftest import Backend

KEY = ApiKey("key_t", "env_t", "secret", False, "sch_dev_", 0)


def test_a_poison_event_is_set_aside_and_the_rest_is_processed(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison_track_events(monkeypatch)

    async def scenario(storage: Storage) -> None:
        ctx = Context(key=KEY, received_at=datetime(2026, 1, 1, tzinfo=UTC))
        data = (
            b'{"events":[{"type":"track","body":{"event":"a","company":{"id":"c"}}},'
            b'{"type":"track","body":{"event":"poison","company":{"id":"c"}}},'
            b'{"type":"track","body":{"event":"b","company":{"id":"c"}}}]}'
        )
        results = await storage.ingest(parse_capture_batch(data, ctx))
        done = await Worker(storage, batch_size=10).run_until_idle()
        assert done == 3
        events = {r.event_id: await storage.get_event("env_t", r.event_id) for r in results}
        statuses = [events[r.event_id].status for r in results]  # type: ignore[union-attr]
        assert statuses == ["processed", "failed", "processed"]
        poison = events[results[1].event_id]
        assert poison is not None and poison.error_message is not None
        assert "KeyError" in poison.error_message

    backend.run(scenario)
