"""Duplicates dropped against a stored event (``duplicates_dropped``, the
console's event page), on every backend: counted per event across commits
and within one, the last one's receipt kept, nothing for a request refused
as a whole, and nothing seen from another environment."""

from __future__ import annotations

from tally.storage.base import Storage

from .conftest import Backend
from .records import T0, event

SECOND = 1_000_000


def test_duplicates_are_counted_against_the_event_they_repeat(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env, _ = await s.ensure_environment("development", "development")
        other, _ = await s.ensure_environment("staging", "staging")
        [first, plain] = await s.ingest([event(env.id, key="order-7"), event(env.id)])
        assert await s.duplicates_dropped(env.id, first.event_id) is None
        # a retry in a later commit, then two more in one request
        [retry] = await s.ingest([event(env.id, key="order-7", received=T0 + 5 * SECOND)])
        assert retry.duplicate and retry.event_id == first.event_id
        twice = await s.ingest(
            [
                event(env.id, key="order-7", received=T0 + 9 * SECOND),
                event(env.id, key="order-7", received=T0 + 7 * SECOND),
            ]
        )
        assert all(r.duplicate for r in twice)
        found = await s.duplicates_dropped(env.id, first.event_id)
        assert found is not None and (found.count, found.last_at) == (3, T0 + 9 * SECOND)
        # a request refused as a whole dropped nothing: its client was told it failed
        refused = await s.ingest(
            [
                event(env.id, key="order-7", received=T0 + 20 * SECOND),
                event(env.id, key="order-8", status="refused", error="bad"),
            ]
        )
        assert not refused[1].stored
        again = await s.duplicates_dropped(env.id, first.event_id)
        assert again is not None and again.count == 3
        # a duplicate of an event stored by the same request counts too
        [new, dup] = await s.ingest(
            [event(env.id, key="order-9"), event(env.id, key="order-9", received=T0 + SECOND)]
        )
        assert dup.duplicate and dup.event_id == new.event_id
        inside = await s.duplicates_dropped(env.id, new.event_id)
        assert inside is not None and (inside.count, inside.last_at) == (1, T0 + SECOND)
        assert await s.duplicates_dropped(env.id, plain.event_id) is None
        assert await s.duplicates_dropped(other.id, first.event_id) is None

    backend.run(scenario)
