"""Reading the requests of webhook endpoints and their delivery log: bodies
(``CreateWebhookRequestBody`` and the rest; unknown fields are accepted)
turned into ``tally.effects.endpoints``' records, and the list filters."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request

from tally.api.common.paging import page
from tally.api.common.params import echo, query_list, query_str
from tally.effects.endpoints import WebhookChanges, WebhookFilter
from tally.effects.records import WebhookEventFilter

MAX_IDS = 100


class EntitlementTriggerConfig(msgspec.Struct, forbid_unknown_fields=False):
    feature_id: str


class CreditTriggerConfig(msgspec.Struct, forbid_unknown_fields=False):
    credit_id: str


class WebhookBody(msgspec.Struct, forbid_unknown_fields=False):
    """``CreateWebhookRequestBody`` / ``UpdateWebhookRequestBody``."""

    name: str | None = None
    url: str | None = None
    request_types: list[str] | None = None
    status: str | None = None
    entitlement_trigger_configs: list[EntitlementTriggerConfig] | None = None
    credit_trigger_configs: list[CreditTriggerConfig] | None = None


class TestWebhookBody(msgspec.Struct, forbid_unknown_fields=False):
    request_type: str | None = None


WEBHOOK_BODY = msgspec.json.Decoder(WebhookBody)
TEST_BODY = msgspec.json.Decoder(TestWebhookBody)


def webhook_changes(body: WebhookBody) -> WebhookChanges:
    return WebhookChanges(
        name=body.name,
        url=body.url,
        request_types=None if body.request_types is None else tuple(body.request_types),
        status=body.status,
        feature_ids=(
            None
            if body.entitlement_trigger_configs is None
            else tuple(c.feature_id for c in body.entitlement_trigger_configs)
        ),
        credit_ids=(
            None
            if body.credit_trigger_configs is None
            else tuple(c.credit_id for c in body.credit_trigger_configs)
        ),
    )


def webhook_filter(request: Request, params: dict[str, Any]) -> WebhookFilter:
    q = echo(params, "q", query_str(request, "q", 512))
    limit, offset = page(request, params)
    return WebhookFilter(q=q, limit=limit, offset=offset)


def event_filter(request: Request, params: dict[str, Any]) -> WebhookEventFilter:
    event_ids = query_list(request, "ids", MAX_IDS)
    q = echo(params, "q", query_str(request, "q", 512))
    webhook_id = echo(params, "webhook_id", query_str(request, "webhook_id", 255))
    echo(params, "ids", event_ids)
    limit, offset = page(request, params)
    return WebhookEventFilter(tuple(event_ids), q, webhook_id, limit, offset)
