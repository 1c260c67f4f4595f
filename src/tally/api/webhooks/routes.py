"""Routes of webhook endpoints and their delivery log (the SDK's
``client.webhooks.*``): ``/webhooks``, ``/webhooks/count``,
``/webhooks/{id}``, ``/webhooks/{id}/test``, ``/webhook-events``,
``/webhook-events/count``, ``/webhook-events/{id}``.

Admin calls: a secret key (publishable keys: 403); changes also need a key
that is not read-only. Responses carry the endpoint's signing ``secret``, as
the SDK's ``WebhookResponseData`` requires, blank (``""``) for read-only keys.

A URL whose host is or resolves to a private address is refused (400)
unless ``TALLY_WEBHOOK_ALLOW_PRIVATE`` (``tally.effects.targets``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tally.api.common.admin import admin
from tally.api.common.bodies import read_json
from tally.api.common.envelope import ok
from tally.api.common.errors import not_found
from tally.api.common.routing import ApiRoute
from tally.api.common.shapes import DELETED, CountResponse
from tally.api.state import AppState
from tally.api.webhooks import requests, shapes
from tally.api.webhooks.openapi import WEBHOOK, WEBHOOK_EVENT
from tally.effects.endpoints import REQUEST_TYPES, WebhookChanges, check_url, url_host
from tally.effects.probe import send_test
from tally.effects.targets import addresses
from tally.errors import Invalid

AREA = "webhooks"


async def _changes(state: AppState, body: requests.WebhookBody) -> WebhookChanges:
    """The requested changes, with a new URL checked against private targets."""
    changes = requests.webhook_changes(body)
    guard = state.guard
    if changes.url is not None and not guard.allow_private:
        host, port = url_host(check_url(changes.url))
        try:
            async with asyncio.timeout(state.settings.delivery_timeout_seconds):
                await addresses(host, port, guard.resolver, allow_private=guard.allow_private)
        except TimeoutError:
            raise Invalid(f"the webhook URL's host {host[:120]} did not resolve in time") from None
    return changes


# -- endpoints ------------------------------------------------------------------
async def create_webhook(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    body = await read_json(request, requests.WEBHOOK_BODY, "webhook")
    hook = await state.storage.create_webhook(key.environment_id, await _changes(state, body))
    return ok(shapes.webhook(hook), status=201)


async def list_webhooks(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    params: dict[str, Any] = {}
    hooks = await state.storage.list_webhooks(
        key.environment_id, requests.webhook_filter(request, params)
    )
    return ok([shapes.webhook(h, with_secret=key.can_write) for h in hooks], params)


async def count_webhooks(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    params: dict[str, Any] = {}
    count = await state.storage.count_webhooks(
        key.environment_id, requests.webhook_filter(request, params)
    )
    return ok(CountResponse(count=count), params)


async def get_webhook(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    webhook_id = request.path_params["webhook_id"]
    hook = await state.storage.get_webhook(key.environment_id, webhook_id)
    if hook is None:
        raise not_found("webhook", webhook_id)
    return ok(shapes.webhook(hook, with_secret=key.can_write))


async def update_webhook(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    webhook_id = request.path_params["webhook_id"]
    body = await read_json(request, requests.WEBHOOK_BODY, "webhook")
    hook = await state.storage.update_webhook(
        key.environment_id, webhook_id, await _changes(state, body)
    )
    if hook is None:
        raise not_found("webhook", webhook_id)
    return ok(shapes.webhook(hook))


async def delete_webhook(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    webhook_id = request.path_params["webhook_id"]
    if not await state.storage.delete_webhook(key.environment_id, webhook_id):
        raise not_found("webhook", webhook_id)
    return ok(DELETED)


async def test_webhook(request: Request) -> Response:
    """Send one signed test delivery now and answer how it went; it is logged
    like any delivery, and never retried."""
    state, key = await admin(request, AREA, write=True)
    webhook_id = request.path_params["webhook_id"]
    body = await read_json(request, requests.TEST_BODY, "webhook test")
    if not body.request_type:
        raise Invalid("request_type is required (for example test.send)")
    if body.request_type not in REQUEST_TYPES:
        raise Invalid(f"unknown request type {body.request_type[:64]!r}")
    hook = await state.storage.get_webhook(key.environment_id, webhook_id)
    if hook is None:
        raise not_found("webhook", webhook_id)
    result = await send_test(
        state.storage,
        state.clock,
        state.settings.delivery_timeout_seconds,
        hook,
        body.request_type,
        state.guard,
    )
    return ok(
        shapes.TestWebhookResponseData(
            response_code=result.response_code or 0, success=result.ok, failure_reason=result.error
        )
    )


# -- the delivery log -----------------------------------------------------------
async def list_webhook_events(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    params: dict[str, Any] = {}
    events = await state.storage.list_webhook_events(
        key.environment_id, requests.event_filter(request, params)
    )
    return ok([shapes.webhook_event(e, with_secret=key.can_write) for e in events], params)


async def count_webhook_events(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    params: dict[str, Any] = {}
    count = await state.storage.count_webhook_events(
        key.environment_id, requests.event_filter(request, params)
    )
    return ok(CountResponse(count=count), params)


async def get_webhook_event(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    event_id = request.path_params["webhook_event_id"]
    event = await state.storage.get_webhook_event(key.environment_id, event_id)
    if event is None:
        raise not_found("webhook event", event_id)
    return ok(shapes.webhook_event(event, with_attempts=True, with_secret=key.can_write))


routes = [
    ApiRoute("POST", "/webhooks", create_webhook, WEBHOOK["create"]),
    ApiRoute("GET", "/webhooks", list_webhooks, WEBHOOK["list"]),
    ApiRoute("GET", "/webhooks/count", count_webhooks, WEBHOOK["count"]),
    ApiRoute("GET", "/webhooks/{webhook_id}", get_webhook, WEBHOOK["get"]),
    ApiRoute("PUT", "/webhooks/{webhook_id}", update_webhook, WEBHOOK["update"]),
    ApiRoute("DELETE", "/webhooks/{webhook_id}", delete_webhook, WEBHOOK["delete"]),
    ApiRoute("POST", "/webhooks/{webhook_id}/test", test_webhook, WEBHOOK["test"]),
    ApiRoute("GET", "/webhook-events", list_webhook_events, WEBHOOK_EVENT["list"]),
    ApiRoute("GET", "/webhook-events/count", count_webhook_events, WEBHOOK_EVENT["count"]),
    ApiRoute("GET", "/webhook-events/{webhook_event_id}", get_webhook_event, WEBHOOK_EVENT["get"]),
]
