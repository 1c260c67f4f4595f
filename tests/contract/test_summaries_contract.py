"""Event summaries (``tally.storage.sql.summaries``) on every backend: what
the tables hold after processing equals a recount from the stored events,
and what ``event_summaries``, ``event_type_stats`` and ``daily_event_counts``
answer equals what a scan of every event gives, with events pending,
processed, failed in processing, failed at ingest and failed by the operator."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from tally import ids
from tally.model import EventFilter, NewEvent, StoredEvent
from tally.storage.base import Storage
from tally.storage.sql import summaries as sql_summaries
from tests.support.drain import drain

from .conftest import Backend
from .records import T0, event, track, world

DAY = 86_400_000_000
HOUR = 3_600_000_000


def _tables(conn: Any) -> tuple[list[tuple[Any, ...]], ...]:
    days = conn.execute(
        "SELECT environment_id, subtype, type, day, processed, failed, first_id, last_id, "
        "last_processed_at FROM event_summaries ORDER BY 1, 2, 3, 4"
    ).fetchall()
    members = conn.execute(
        "SELECT environment_id, subtype, kind, member_id FROM event_subtype_members "
        "ORDER BY 1, 2, 3, 4"
    ).fetchall()
    counts = conn.execute(
        "SELECT environment_id, subtype, kind, members FROM event_subtype_counts ORDER BY 1, 2, 3"
    ).fetchall()
    return [tuple(r) for r in days], [tuple(r) for r in members], [tuple(r) for r in counts]


async def assert_tables_equal_a_recount(s: Storage) -> None:
    kept = await s._writer.call(_tables)  # type: ignore[attr-defined]

    def recount(conn: Any) -> Any:
        sql_summaries.rebuild(conn)
        return _tables(conn)

    assert kept == await s._writer.call(recount)  # type: ignore[attr-defined]


async def every_event(s: Storage, env: str, where: EventFilter | None = None) -> list[StoredEvent]:
    return await s.list_events(env, replace(where or EventFilter(), limit=100_000))


WHOLE_TYPES = [
    EventFilter(),
    EventFilter(event_types=("track",)),
    EventFilter(event_types=("identify", "flag_check")),
    EventFilter(event_subtype="export"),
    EventFilter(event_subtype="export", status="failed"),
]


async def assert_reads_equal_a_scan(s: Storage, env: str) -> None:
    events = [e for e in await every_event(s, env) if e.subtype is not None]
    ok = [e for e in events if e.status != "failed"]
    expected = {}
    for name in sorted({e.subtype for e in ok if e.subtype}):
        mine = [e for e in ok if e.subtype == name]
        expected[name] = (
            len(mine),
            len({e.company_id for e in mine if e.company_id}),
            len({e.user_id for e in mine if e.user_id}),
            max(e.captured_at for e in mine),
        )
    rows = await s.event_summaries(env, None, [], 250, 0)
    got = {
        r.event_subtype: (r.event_count, r.company_count, r.user_count, r.last_seen_at)
        for r in rows
    }
    assert got == expected
    assert [r.event_subtype for r in rows] == sorted(expected)

    stats = await s.event_type_stats(env, 100)
    seen = {}
    for name in sorted({e.subtype for e in events if e.subtype}):
        mine = [e.id for e in events if e.subtype == name]
        seen[name] = (len(mine), ids.made_at_micros(min(mine)), ids.made_at_micros(max(mine)))
    assert {t.subtype: (t.count, t.first_seen_at, t.last_seen_at) for t in stats} == seen

    since = T0 - T0 % DAY - 3 * DAY
    daily = Counter(
        (e.subtype, e.captured_at - e.captured_at % DAY) for e in events if e.captured_at >= since
    )
    got_daily = await s.daily_event_counts(env, since)
    assert {(d.name, d.day_start): d.count for d in got_daily} == dict(daily)

    for where in WHOLE_TYPES:  # the console's counts per status
        scanned = Counter(e.status for e in await every_event(s, env, where))
        assert await s.count_events_by_status(env, where) == dict(scanned), where


def _mixed(env: str) -> list[NewEvent]:
    """Tracks of two subtypes for two companies over four days, identify and
    flag_check events, events that fail in processing (a body that is not
    JSON) and one that fails at ingest."""
    out: list[NewEvent] = []
    for i in range(40):
        subtype = "api-call" if i % 3 else "export"
        out.append(
            track(env, 1 + i % 4, at=T0 - (i % 4) * DAY - i, subtype=subtype, company=f"co-{i % 2}")
        )
    out.append(event(env, "identify", body='{"keys":{"id":"u9"}}'))
    out.append(event(env, "flag_check", body='{"flag_id":"f1"}', company_id="c1", flag_id="f1"))
    out.append(event(env, subtype="api-call", body="not json", captured=T0 - 2 * DAY))
    out.append(event(env, subtype="export", body="not json"))
    out.append(event(env, subtype="export", status="failing", error="read-only key"))
    return out


def test_summaries_equal_a_recount_after_processing_with_failures(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s, allocation=1000)
        other, _ = await s.ensure_environment("staging", "staging")
        await s.ingest(_mixed(w.env))
        await s.ingest([track(other.id, 2, subtype="elsewhere")])
        # pending only: everything read from the backlog
        await assert_reads_equal_a_scan(s, w.env)
        await s.process_pending(7)  # part processed, part pending
        await assert_reads_equal_a_scan(s, w.env)
        await assert_tables_equal_a_recount(s)
        assert await s.fail_next_pending("operator: poison") is not None
        await drain(s, 9)
        await s.ingest([track(w, 5, subtype="late")])  # one pending again
        await assert_reads_equal_a_scan(s, w.env)
        await drain(s)
        await assert_tables_equal_a_recount(s)
        await assert_reads_equal_a_scan(s, w.env)
        statuses = Counter(e.status for e in await every_event(s, w.env))
        assert statuses == {"processed": 42, "failed": 4}
        # the other environment's summaries are its own
        (row,) = await s.event_summaries(other.id, None, [], 100, 0)
        assert (row.event_subtype, row.event_count, row.company_count) == ("elsewhere", 1, 1)
        assert all(
            r.event_subtype != "elsewhere" for r in await s.event_summaries(w.env, None, [], 100, 0)
        )

    backend.run(scenario)


def test_summaries_survive_a_restart_and_filter_like_before(backend: Backend) -> None:
    async def first(s: Storage) -> str:
        w = await world(s)
        await s.ingest(_mixed(w.env))
        await drain(s, 5)
        return w.env

    env = backend.run(first)

    async def second(s: Storage) -> None:
        await assert_reads_equal_a_scan(s, env)
        names = [r.event_subtype for r in await s.event_summaries(env, "CALL", [], 100, 0)]
        assert names == ["api-call"]
        names = [
            r.event_subtype for r in await s.event_summaries(env, None, ["export", "x"], 100, 0)
        ]
        assert names == ["export"]
        assert await s.event_summaries(env, "_", [], 100, 0) == []
        (page,) = await s.event_summaries(env, None, [], 1, 1)
        assert page.event_subtype == "export"

    backend.run(second)


def test_summarize_is_a_pure_aggregate() -> None:
    settled = [
        sql_summaries.Settled("evt_2", "env", "track", "a", T0 + 5, "processed", "c1", "u1"),
        sql_summaries.Settled("evt_1", "env", "track", "a", T0 + 9, "failed", "c2", "u2"),
        sql_summaries.Settled("evt_3", "env", "track", "a", T0 + 1, "processed", "c1", None),
        sql_summaries.Settled("evt_4", "env", "identify", None, T0 - DAY, "processed", None, "u3"),
    ]
    rows = sql_summaries.summarize(settled)
    day = T0 - T0 % DAY
    a = rows.days[("env", "a", "track", day)]
    assert (a.processed, a.failed, a.first_id, a.last_id, a.last_processed_at) == (
        2,
        1,
        "evt_1",
        "evt_3",
        T0 + 5,
    )
    identify = rows.days[("env", "", "identify", day - DAY)]
    assert (identify.processed, identify.failed) == (1, 0)
    # members of processed events with a subtype only
    assert rows.members == {("env", "a", "company", "c1"), ("env", "a", "user", "u1")}
    assert not sql_summaries.summarize([])
