"""The console's user page reads, on every backend: a user's daily track
activity (failed events aside, read up to a number of its newest events)
and the limit webhooks fired for its companies, marked when its own event
fired them; each scoped to one environment."""

from __future__ import annotations

from tally.storage.base import Storage
from tally.storage.base_entities import EntityFilter
from tests.support.drain import drain

from .conftest import Backend
from .records import T0, fan_out, track, world

DAY = 86_400_000_000


def test_user_activity_and_the_firings_of_its_companies(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s, allocation=5)
        other, _ = await s.ensure_environment("staging", "staging")
        await s.ingest([track(w, 1, at=T0 - DAY), track(w, 2), track(w, 3)])
        await s.ingest([track(w, 4, subtype="export")])
        await drain(s)
        await fan_out(s, backend)
        [user] = await s.list_users(w.env, EntityFilter(q="u1"))
        since = T0 - 30 * DAY
        days = await s.user_daily_activity(w.env, user.id, since, 1000)
        day0 = T0 - T0 % DAY
        assert [(d.subtype, d.day_start, d.events, d.quantity) for d in days] == [
            ("api-call", day0 - DAY, 1, 1),
            ("api-call", day0, 2, 5),
            ("export", day0, 1, 4),
        ]
        newest = await s.user_daily_activity(w.env, user.id, since, 2)
        assert sum(d.events for d in newest) == 2
        assert ("export", day0, 1, 4) in [
            (d.subtype, d.day_start, d.events, d.quantity) for d in newest
        ]
        assert await s.user_daily_activity(other.id, user.id, since, 1000) == []

        firings = await s.firings_of_companies(w.env, [w.company], user.id, 10)
        assert {f.firing.action for f in firings} == {
            "entitlement.limit.warning",
            "entitlement.limit.reached",
        }
        assert all(f.by_user and f.company_id == w.company for f in firings)
        assert firings[0].firing.created_at >= firings[-1].firing.created_at
        someone_else = await s.firings_of_companies(w.env, [w.company], "user_nope", 10)
        assert len(someone_else) == len(firings) and not any(f.by_user for f in someone_else)
        assert await s.firings_of_companies(other.id, [w.company], user.id, 10) == []
        assert await s.firings_of_companies(w.env, [], user.id, 10) == []

    backend.run(scenario)
