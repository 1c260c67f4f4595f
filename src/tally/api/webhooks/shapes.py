"""Response shapes of webhook endpoints and their delivery log,
as msgspec structs. Field names and the required/optional split follow
``schematichq==1.4.6`` (``CreateWebhookRequestBody``, ``WebhookResponseData``,
``WebhookEventDetailResponseData``, ``TestWebhookResponseData``); fields the
SDK does not know (``status_reason``, ``last_error``, ``next_attempt_at``,
``attempts``) are extra, which its models allow.

A read-only key sees ``secret`` as ``""``: the SDK's model requires the
field (a string), and with the secret a reader could forge deliveries."""

from __future__ import annotations

import msgspec

from tally.api.common.shapes import opt_time
from tally.api.webhooks.requests import CreditTriggerConfig, EntitlementTriggerConfig
from tally.clock import format_micros
from tally.effects.endpoints import Webhook
from tally.effects.records import DeliveryAttempt, WebhookEvent


# -- responses ------------------------------------------------------------------
class WebhookResponseData(msgspec.Struct, omit_defaults=True):
    created_at: str
    id: str
    name: str
    request_types: list[str]
    secret: str
    status: str
    updated_at: str
    url: str
    credit_trigger_configs: list[CreditTriggerConfig] | None = None
    entitlement_trigger_configs: list[EntitlementTriggerConfig] | None = None
    status_reason: str | None = None


class WebhookAttemptData(msgspec.Struct, omit_defaults=True):
    number: int
    started_at: str
    outcome: str
    finished_at: str | None = None
    response_code: int | None = None
    error: str | None = None


class WebhookEventDetailResponseData(msgspec.Struct, omit_defaults=True):
    attempt_count: int
    created_at: str
    id: str
    request_type: str
    status: str
    updated_at: str
    webhook_id: str
    payload: str | None = None
    response_code: int | None = None
    sent_at: str | None = None
    webhook: WebhookResponseData | None = None
    last_error: str | None = None
    next_attempt_at: str | None = None
    attempts: list[WebhookAttemptData] | None = None


class TestWebhookResponseData(msgspec.Struct, omit_defaults=True):
    response_code: int
    success: bool
    failure_reason: str | None = None


def webhook(hook: Webhook, *, with_secret: bool = True) -> WebhookResponseData:
    """The endpoint; its signing secret blank unless ``with_secret``."""
    return WebhookResponseData(
        created_at=format_micros(hook.created_at),
        id=hook.id,
        name=hook.name,
        request_types=list(hook.request_types),
        secret=hook.secret if with_secret else "",
        status=hook.status,
        updated_at=format_micros(hook.updated_at),
        url=hook.url,
        credit_trigger_configs=[CreditTriggerConfig(c) for c in hook.credit_ids],
        entitlement_trigger_configs=[EntitlementTriggerConfig(f) for f in hook.feature_ids],
        status_reason=hook.status_reason,
    )


def _attempt(a: DeliveryAttempt) -> WebhookAttemptData:
    return WebhookAttemptData(
        number=a.number,
        started_at=format_micros(a.started_at),
        outcome=a.outcome,
        finished_at=opt_time(a.finished_at),
        response_code=a.response_code,
        error=a.error,
    )


def webhook_event(
    event: WebhookEvent, *, with_attempts: bool = False, with_secret: bool = True
) -> WebhookEventDetailResponseData:
    return WebhookEventDetailResponseData(
        attempt_count=event.attempt_count,
        created_at=format_micros(event.created_at),
        id=event.id,
        request_type=event.request_type,
        status=event.status,
        updated_at=format_micros(event.updated_at),
        webhook_id=event.webhook_id,
        payload=event.payload,
        response_code=event.response_code,
        sent_at=opt_time(event.sent_at),
        webhook=(
            webhook(event.webhook, with_secret=with_secret) if event.webhook is not None else None
        ),
        last_error=event.last_error,
        next_attempt_at=opt_time(event.next_attempt_at),
        attempts=[_attempt(a) for a in event.attempts] if with_attempts else None,
    )
