"""Deep pages of ``list_events`` (``tally.storage.sql.pages``) on every
backend: whatever a client asks, in whatever order, a page at ``offset`` is
the slice of the whole list that ``OFFSET`` gives, also while new events
arrive between pages, for remembered filters and for the others."""

from __future__ import annotations

from dataclasses import replace

from tally.model import EventFilter
from tally.storage.base import Storage
from tally.storage.sql.pages import MIN_OFFSET

from .conftest import Backend
from .records import event

EVENTS = 3 * MIN_OFFSET + 57


async def _ids(s: Storage, env: str, where: EventFilter) -> list[str]:
    return [e.id for e in await s.list_events(env, where)]


async def _whole(s: Storage, env: str, where: EventFilter) -> list[str]:
    return await _ids(s, env, replace(where, limit=100_000, offset=0))


async def _ingest(s: Storage, env: str, n: int, start: int = 0) -> None:
    events = []
    for i in range(start, start + n):
        kind = "identify" if i % 7 == 0 else "track"
        events.append(
            event(
                env,
                kind,
                subtype="api-call" if i % 2 else "export",
                key=f"k{i % 5}" if i % 3 == 0 else None,
                company_id=f"c{i % 4}",
                status="failed" if i % 11 == 0 else "pending",
                error="bad" if i % 11 == 0 else None,
            )
        )
    await s.ingest(events)


FILTERS = [
    EventFilter(),
    EventFilter(event_types=("track",)),
    EventFilter(event_types=("identify",)),
    EventFilter(event_subtype="api-call"),
    EventFilter(company_id="c1"),
    EventFilter(status="failed"),
]


def test_pages_at_every_offset_are_slices_of_the_whole_list(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env, _ = await s.ensure_environment("development", "development")
        other, _ = await s.ensure_environment("staging", "staging")
        await _ingest(s, env.id, EVENTS)
        await _ingest(s, other.id, 50)
        for where in FILTERS:
            whole = await _whole(s, env.id, where)
            for limit in (100, 37):
                # paging on, as a client does, then back, then the same page again
                offsets = list(range(0, len(whole) + limit, limit))
                for offset in [*offsets, *reversed(offsets), offsets[-2], offsets[-2]]:
                    page = await _ids(s, env.id, replace(where, limit=limit, offset=offset))
                    assert page == whole[offset : offset + limit], (where, limit, offset)

    backend.run(scenario)


def test_pages_shift_like_offset_when_events_arrive_between_them(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env, _ = await s.ensure_environment("development", "development")
        await _ingest(s, env.id, EVENTS)
        for where in FILTERS[:4]:
            offset, limit = MIN_OFFSET, 50
            arrivals = 0
            for step in range(6):
                page = await _ids(s, env.id, replace(where, limit=limit, offset=offset))
                whole = await _whole(s, env.id, where)
                assert page == whole[offset : offset + limit], (where, step)
                # a few new events (none, some, more than a page) before the next page
                n = (0, 3, 20, 0, 120, 1)[step]
                await _ingest(s, env.id, n, start=EVENTS + arrivals)
                arrivals += n
                offset += limit if step % 2 == 0 else 0  # on, or the same page again

    backend.run(scenario)
