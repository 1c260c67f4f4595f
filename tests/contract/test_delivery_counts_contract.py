"""``count_webhook_events`` reads the counts that triggers on ``deliveries``
keep (``tally.storage.sql.delivery_counts``), on every backend: after fan-out,
with every filter, after deliveries are deleted (as retention prunes them) and
after a test delivery, they equal a count of the delivery log itself."""

from __future__ import annotations

from typing import Any

from tally.effects.endpoints import WebhookChanges
from tally.effects.records import AttemptResult, WebhookEventFilter
from tally.storage.base import Storage

from .conftest import Backend
from .test_effects_contract import T0, queued


async def _log_count(s: Storage, env: str, where: WebhookEventFilter) -> int:
    everything = await s.list_webhook_events(env, WebhookEventFilter(limit=100_000, ids=where.ids))
    return sum(
        1
        for e in everything
        if (where.webhook_id is None or e.webhook_id == where.webhook_id)
        and (not where.q or where.q.lower() in e.request_type.lower())
    )


async def _assert_counts(s: Storage, env: str, filters: list[WebhookEventFilter]) -> None:
    for where in filters:
        assert await s.count_webhook_events(env, where) == await _log_count(s, env, where), where


def test_counts_follow_fan_out_deletes_and_test_deliveries(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await queued(s, backend, 7)
        second = await s.create_webhook(
            w.env,
            WebhookChanges(name="b", url="http://127.0.0.1:9/b", request_types=("user.created",)),
        )
        everything = await s.list_webhook_events(w.env, WebhookEventFilter(limit=250))
        filters = [
            WebhookEventFilter(),
            WebhookEventFilter(webhook_id=w.hook.id),
            WebhookEventFilter(webhook_id=second.id),
            WebhookEventFilter(q="USER."),
            WebhookEventFilter(q="company"),
            WebhookEventFilter(ids=(everything[0].id, everything[3].id, "whe_missing")),
        ]
        assert await s.count_webhook_events(w.env, WebhookEventFilter()) == 7
        await _assert_counts(s, w.env, filters)

        def prune(conn: Any) -> None:  # as retention deletes old deliveries
            conn.execute(
                "DELETE FROM deliveries WHERE id IN (?, ?)", (everything[1].id, everything[2].id)
            )

        await s._writer.call(prune)  # type: ignore[attr-defined]
        assert await s.count_webhook_events(w.env, WebhookEventFilter()) == 5
        await _assert_counts(s, w.env, filters)
        tested = AttemptResult("whe_test1", 1, True, 200, None, T0, T0 + 1, None)
        await s.log_test_delivery(second, "whe_test1", "user.created", b"{}", tested)
        assert await s.count_webhook_events(w.env, WebhookEventFilter()) == 6
        await _assert_counts(s, w.env, filters)
        staging, _ = await s.ensure_environment("staging", "staging")
        assert await s.count_webhook_events(staging.id, WebhookEventFilter()) == 0

    backend.run(scenario)
