"""Records of deliveries: what the delivery loop claims and reports, and the
delivery log the API lists (``/webhook-events``)."""

from __future__ import annotations

from dataclasses import dataclass

from tally.effects.endpoints import Webhook

WEBHOOK = "webhook"
BILLING = "billing"

# delivery status (the SDK's WebhookEventStatus)
PENDING, SUCCESS, FAILURE = "pending", "success", "failure"
# attempt outcome
IN_FLIGHT, INTERRUPTED, SUPERSEDED = "in_flight", "interrupted", "superseded"


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery leased to one loop for one attempt (number ``attempt``)."""

    id: str
    kind: str  # webhook | billing
    environment_id: str
    webhook_id: str | None
    url: str | None  # the endpoint's (None for billing: the sink is a setting)
    secret: str | None
    request_type: str
    ref: str | None  # billing: the event id (the record's identifier)
    payload: bytes
    attempt: int


@dataclass(frozen=True, slots=True)
class AttemptResult:
    delivery_id: str
    attempt: int
    ok: bool
    response_code: int | None
    error: str | None
    started_at: int
    finished_at: int
    retry_at: int | None  # when to try again after a failure; None: it was the last attempt


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    number: int
    started_at: int
    finished_at: int | None
    outcome: str  # in_flight | success | failure | interrupted | superseded
    response_code: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One delivery of one notice to one endpoint, as the log shows it."""

    id: str
    environment_id: str
    webhook_id: str
    request_type: str
    payload: str
    status: str
    attempt_count: int
    response_code: int | None
    last_error: str | None
    next_attempt_at: int | None
    sent_at: int | None
    created_at: int
    updated_at: int
    webhook: Webhook | None = None
    attempts: tuple[DeliveryAttempt, ...] = ()


@dataclass(frozen=True, slots=True)
class WebhookEventFilter:
    ids: tuple[str, ...] = ()
    q: str | None = None
    webhook_id: str | None = None
    limit: int = 100
    offset: int = 0
