"""Webhooks: the endpoints (and why one was switched off), the delivery log
with each attempt, a "send test" button (read-write keys), and the billing
meter records with their delivery state. Signing secrets are never shown."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tally.console.format import pretty_json
from tally.effects.endpoints import WebhookFilter
from tally.effects.probe import send_test
from tally.effects.records import WebhookEventFilter
from tally.errors import Forbidden, NotFound
from tally.storage.base_console import ConsoleSession

if TYPE_CHECKING:
    from tally.console.app import Console

LOG_ROWS = 50
TEST_REQUEST_TYPE = "test.send"


def _record_value(payload: str | None) -> str:
    try:
        value = json.loads(payload or "")["payload"]["value"]
    except (ValueError, KeyError, TypeError):
        return ""
    return str(value)


async def webhooks_page(c: Console, request: Request, session: ConsoleSession) -> Response:
    env = session.key.environment_id
    hooks = await c.storage.list_webhooks(env, WebhookFilter(limit=100))
    chosen = (request.query_params.get("webhook") or "")[:64]
    log = await c.storage.list_webhook_events(
        env, WebhookEventFilter(webhook_id=chosen or None, limit=LOG_ROWS)
    )
    tested = None
    test_id = (request.query_params.get("test") or "")[:64]
    if test_id:
        tested = await c.storage.get_webhook_event(env, test_id)
    records = await c.storage.list_meter_records(env, LOG_ROWS)
    return c.render(
        request,
        session,
        "webhooks.html",
        hooks=hooks,
        log=log,
        chosen=chosen,
        tested=tested,
        records=[(r, _record_value(r.payload)) for r in records],
    )


async def delivery_page(c: Console, request: Request, session: ConsoleSession) -> Response:
    env = session.key.environment_id
    delivery_id = request.path_params["delivery_id"][:64]
    delivery = await c.storage.get_webhook_event(env, delivery_id)
    if delivery is None:
        raise NotFound(f"delivery {delivery_id!r} was not found in this environment")
    return c.render(
        request,
        session,
        "delivery.html",
        delivery=delivery,
        payload=pretty_json(delivery.payload),
        nav="webhooks",
    )


async def send_test_page(c: Console, request: Request, session: ConsoleSession) -> Response:
    if not session.key.can_write:
        raise Forbidden(
            "a read-only key can look but not send: sign in with a read-write key to send a test"
        )
    env = session.key.environment_id
    webhook_id = request.path_params["webhook_id"][:64]
    hook = await c.storage.get_webhook(env, webhook_id)
    if hook is None:
        raise NotFound(f"webhook {webhook_id!r} was not found in this environment")
    result = await send_test(
        c.storage,
        c.clock,
        c.state.settings.delivery_timeout_seconds,
        hook,
        TEST_REQUEST_TYPE,
        c.state.guard,
    )
    return RedirectResponse(f"/console/webhooks?test={result.delivery_id}", 303)


pages: list[Any] = [
    ("/webhooks", webhooks_page, ["GET"]),
    ("/webhooks/deliveries/{delivery_id}", delivery_page, ["GET"]),
    ("/webhooks/{webhook_id}/test", send_test_page, ["POST"]),
]
data: list[Any] = []
