"""The console's part of the storage interface (``base_console``), on every
backend: sessions, the events list's new filters and counts, failed groups,
event type stats, daily volumes, a company's daily usage and limit firings,
meter records and pipeline health, each scoped to one environment."""

from __future__ import annotations

from tally import ids
from tally.clock import to_micros
from tally.model import EventFilter
from tally.storage.base import Storage
from tests.support.drain import drain

from .conftest import Backend
from .records import T0, event, fan_out, track, world

DAY = 86_400_000_000
HOUR = 3_600_000_000


def test_sessions_open_expire_close_and_die_with_their_key(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env, _ = await s.ensure_environment("development", "development")
        key = await s.create_api_key(env.id, "secret", True, "h-console", "sch_dev_abc")
        await s.create_console_session("tok1", key.id, "csrf1", T0 + HOUR)
        found = await s.find_console_session("tok1", T0)
        assert found is not None
        assert found.key.id == key.id and found.key.environment_name == "development"
        assert found.key.read_only and found.csrf_token == "csrf1" and found.expires_at == T0 + HOUR
        assert await s.find_console_session("tok1", T0 + HOUR) is None  # expired
        assert await s.find_console_session("other", T0) is None
        # a new session forgets the expired ones; a deleted one is gone
        await s.create_console_session("tok2", key.id, "csrf2", T0 + 2 * HOUR)
        await s.delete_console_session("tok2")
        assert await s.find_console_session("tok2", T0) is None
        # revoking the key ends its sessions
        await s.create_console_session("tok3", key.id, "csrf3", T0 + 2 * HOUR)
        assert await s.find_console_session("tok3", T0) is not None
        await s.revoke_api_key(key.id)
        assert await s.find_console_session("tok3", T0) is None

    backend.run(scenario)


def test_event_filters_status_and_id_ranges_and_counts(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env, _ = await s.ensure_environment("development", "development")
        other, _ = await s.ensure_environment("staging", "staging")
        stored = await s.ingest(
            [
                event(env.id),
                event(env.id, status="failed", error="bad body"),
                event(env.id, status="failed", error="bad body"),
                event(env.id, subtype="other"),
                event(other.id, status="failed", error="bad body"),
            ]
        )
        first, second, third, fourth = (r.event_id for r in stored[:4])
        assert [e.id for e in await s.list_events(env.id, EventFilter(status="failed"))] == [
            third,
            second,
        ]
        newer = await s.list_events(env.id, EventFilter(newer_than=second))
        assert [e.id for e in newer] == [fourth, third]
        ranged = await s.list_events(env.id, EventFilter(id_min=second, id_max=fourth))
        assert [e.id for e in ranged] == [third, second]
        counts = await s.count_events_by_status(env.id, EventFilter())
        assert counts == {"pending": 2, "failed": 2}
        assert await s.count_events_by_status(env.id, EventFilter(status="failed")) == {"failed": 2}
        assert await s.count_events_by_status(env.id, EventFilter(id_min=third)) == {
            "pending": 1,
            "failed": 1,
        }
        assert await s.count_events_by_status(env.id, EventFilter(event_subtype="other")) == {
            "pending": 1
        }
        assert await s.count_events_by_status(env.id, EventFilter(newer_than=fourth)) == {}
        # an id made now sorts after every event stored before
        assert ids.first_id_at("evt", ids.made_at_micros(first)) <= first
        assert await s.list_events(env.id, EventFilter(id_min=ids.new_id("evt"))) == []

    backend.run(scenario)


def test_failed_groups_largest_first(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env, _ = await s.ensure_environment("development", "development")
        other, _ = await s.ensure_environment("staging", "staging")
        await s.ingest([event(env.id, status="failed", error="missing company")] * 3)
        await s.ingest([event(env.id, status="failed", error="read-only key")])
        await s.ingest([event(env.id)])
        await s.ingest([event(other.id, status="failed", error="elsewhere")] * 5)
        groups = await s.failed_event_groups(env.id, None, 10)
        assert [(g.error_message, g.count) for g in groups] == [
            ("missing company", 3),
            ("read-only key", 1),
        ]
        assert groups[0].first_id < groups[0].last_id
        assert await s.failed_event_groups(env.id, ids.new_id("evt"), 10) == []
        assert len(await s.failed_event_groups(env.id, None, 1)) == 1

    backend.run(scenario)


def test_event_type_stats_and_daily_counts(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env, _ = await s.ensure_environment("development", "development")
        other, _ = await s.ensure_environment("staging", "staging")
        stored = await s.ingest(
            [
                event(env.id, subtype="a", captured=T0 - 2 * DAY),
                event(env.id, subtype="a", captured=T0),
                event(env.id, subtype="a", captured=T0 + 1),
                event(env.id, subtype="b", captured=T0 - DAY),
                event(env.id, "identify"),
                event(other.id, subtype="c"),
            ]
        )
        stats = await s.event_type_stats(env.id, 100)
        # first and last seen: when tally received them (their ids say)
        a_first, a_last, b = (
            ids.made_at_micros(r.event_id) for r in (stored[0], stored[2], stored[3])
        )
        assert [(t.subtype, t.count, t.first_seen_at, t.last_seen_at) for t in stats] == [
            ("a", 3, a_first, a_last),
            ("b", 1, b, b),
        ]
        daily = await s.daily_event_counts(env.id, T0 - DAY - DAY // 2)
        day0 = T0 - T0 % DAY
        assert [(d.name, d.day_start, d.count) for d in daily] == [
            ("a", day0, 2),
            ("b", day0 - DAY, 1),
        ]

    backend.run(scenario)


def test_company_usage_firings_meter_records_and_health(backend: Backend) -> None:

    async def scenario(s: Storage) -> None:
        w = await world(s, allocation=5)
        other, _ = await s.ensure_environment("staging", "staging")
        now = to_micros(backend.clock.now())
        health = await s.pipeline_health(w.env, now - HOUR)
        assert (health.pending, health.received) == (0, 0)
        await s.ingest([track(w, 2), track(w, 3), track(w, 1, at=T0 - DAY)])
        await s.ingest([event(w.env, status="failed", error="x")])
        await s.ingest([event(other.id)])
        health = await s.pipeline_health(w.env, now - HOUR)
        assert health.pending == 3 and health.oldest_pending_at == T0
        assert (health.received, health.processed, health.failed) == (4, 0, 1)
        await drain(s)
        await fan_out(s, backend)
        daily = await s.company_daily_usage(w.env, w.company, T0 - 30 * DAY)
        day0 = T0 - T0 % DAY
        assert [(d.name, d.day_start, d.count) for d in daily] == [
            ("api-call", day0 - DAY, 1),
            ("api-call", day0, 5),
        ]
        assert await s.company_daily_usage(other.id, w.company, T0 - 30 * DAY) == []
        firings = await s.company_limit_firings(w.env, w.company, 10)
        assert {f.action for f in firings} == {
            "entitlement.limit.warning",
            "entitlement.limit.reached",
        }
        assert all(f.feature_id == w.feature and f.period == "month" for f in firings)
        assert await s.company_limit_firings(other.id, w.company, 10) == []
        records = await s.list_meter_records(w.env, 10)
        assert len(records) == 3 and {r.status for r in records} == {"pending"}
        assert all(r.event_id and r.event_id.startswith("evt_") for r in records)
        assert await s.list_meter_records(other.id, 10) == []
        health = await s.pipeline_health(w.env, now - HOUR)
        assert (health.pending, health.processed, health.failed) == (0, 3, 1)
        assert await s.count_events_by_status(w.env, EventFilter()) == {
            "processed": 3,
            "failed": 1,
        }
        assert health.deliveries_pending == 3 + 2  # meter records and two limit notices
        other_health = await s.pipeline_health(other.id, now - HOUR)
        assert (other_health.received, other_health.processed, other_health.failed) == (1, 1, 0)
        assert other_health.deliveries_pending == 0

    backend.run(scenario)
