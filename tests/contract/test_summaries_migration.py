"""Migration 7 on a database that already holds history, on every backend:
it fills the event summaries and the delivery counts from what is stored,
so that the reads after an upgrade answer what they answered before it."""

from __future__ import annotations

from typing import Any

from tally.effects.records import WebhookEventFilter
from tally.storage.base import Storage
from tests.support.drain import drain

from .conftest import Backend
from .records import fan_out, track
from .test_summaries_contract import (
    _mixed,
    _tables,
    assert_reads_equal_a_scan,
    world,
)

# what migrations 7 and later made, as a database at version 6 lacks it
_LATER = (
    "DROP TABLE event_duplicates",  # 8: the console's duplicates
    "DROP INDEX deliveries_finished",  # 9: retention's indexes
    "DROP INDEX deliveries_notice",
    "DROP INDEX limit_triggers_period",
)
_UNDO_SQLITE = (
    *_LATER,
    "DROP TRIGGER deliveries_counted",
    "DROP TRIGGER deliveries_uncounted",
    "DROP TABLE delivery_counts",
    "DROP TABLE event_summaries",
    "DROP TABLE event_subtype_members",
    "DROP TABLE event_subtype_counts",
    "DROP INDEX events_idempotency",
    "DROP INDEX events_rare_type",
    "PRAGMA user_version = 6",
)
_UNDO_POSTGRES = (
    *_LATER,
    *_UNDO_SQLITE[len(_LATER) + 2 : len(_LATER) + 8],
    "DROP TRIGGER deliveries_counted ON deliveries",
    "DROP TRIGGER deliveries_uncounted ON deliveries",
    "DROP FUNCTION tally_count_deliveries()",
    "UPDATE tally_schema SET version = 6",
)


def test_migration_7_fills_summaries_and_counts_from_stored_history(backend: Backend) -> None:
    undo = _UNDO_POSTGRES if backend.name == "postgres" else _UNDO_SQLITE

    async def history(s: Storage) -> tuple[str, Any, int]:
        w = await world(s, allocation=3)
        await s.ingest([*_mixed(w.env), *(track(w, 2) for _ in range(3))])  # past the limit
        await drain(s, 6)
        await s.ingest(_mixed(w.env)[:5])  # some left pending
        await fan_out(s, backend)
        kept = await s._writer.call(_tables)  # type: ignore[attr-defined]
        count = await s.count_webhook_events(w.env, WebhookEventFilter())
        assert count > 0

        def back_to_6(conn: Any) -> None:
            for statement in undo:
                conn.execute(statement)

        await s._writer.call(back_to_6)  # type: ignore[attr-defined]
        return w.env, kept, count

    env, kept, count = backend.run(history)

    async def upgraded(s: Storage) -> None:  # start() migrates
        assert await s._writer.call(_tables) == kept  # type: ignore[attr-defined]
        assert await s.count_webhook_events(env, WebhookEventFilter()) == count
        await assert_reads_equal_a_scan(s, env)

    backend.run(upgraded)
