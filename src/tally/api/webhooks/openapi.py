"""OpenAPI operations of webhook endpoints and their delivery log, named by
the route table in ``routes``."""

from __future__ import annotations

from typing import Any

from tally.api.common.openapi import (
    PAGE,
    READ,
    READ_ONE,
    STRING,
    STRINGS,
    TEXT,
    WRITE,
    Ops,
    Rules,
    crud,
    enum,
    envelope,
    list_of,
    op,
    optional,
    path_param,
    query,
    ref,
)
from tally.api.webhooks import requests, shapes
from tally.effects.endpoints import REQUEST_TYPES, STATUSES

SCHEMAS: tuple[Any, ...] = (
    requests.WebhookBody,
    requests.TestWebhookBody,
    shapes.WebhookResponseData,
    shapes.WebhookEventDetailResponseData,
    shapes.TestWebhookResponseData,
)
RULES: Rules = {
    "WebhookBody": (
        ["name", "url", "request_types"],
        {
            "name": TEXT,
            "url": {"type": "string", "pattern": "^https?://[a-z0-9.-]+(:[0-9]{1,5})?(/.*)?$"},
            "request_types": {"type": "array", "minItems": 1, "items": enum(REQUEST_TYPES)},
            "status": optional(enum(STATUSES)),
        },
    ),
    "TestWebhookBody": (["request_type"], {"request_type": enum(REQUEST_TYPES)}),
}

_SEARCH = [query("q", STRING), *PAGE]
_EVENT_FILTERS = [query("ids", STRINGS), query("webhook_id", STRING), *_SEARCH]
_COUNT = envelope(ref("CountResponse"))

WEBHOOK: Ops = {
    **crud("webhook", "WebhookBody", "WebhookResponseData", title="Webhook", list_params=_SEARCH),
    "count": op("countWebhooks", (200, _COUNT, "how many"), READ, params=_SEARCH),
    "test": op(
        "testWebhook",
        (200, envelope(ref("TestWebhookResponseData")), "how the delivery went"),
        WRITE,
        params=[path_param("webhook_id")],
        body=(ref("TestWebhookBody"), "the request type to send"),
    ),
}
WEBHOOK_EVENT: Ops = {
    "list": op(
        "listWebhookEvents",
        (200, envelope(list_of("WebhookEventDetailResponseData")), "newest first"),
        READ,
        params=_EVENT_FILTERS,
    ),
    "count": op("countWebhookEvents", (200, _COUNT, "how many"), READ, params=_EVENT_FILTERS),
    "get": op(
        "getWebhookEvent",
        (200, envelope(ref("WebhookEventDetailResponseData")), "with its attempts"),
        READ_ONE,
        params=[path_param("webhook_event_id")],
    ),
}
