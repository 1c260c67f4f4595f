"""Billing meter records (pure): one per processed, non-backfill track event
attributed to an event feature, shaped like a Stripe meter event.

``identifier`` is the event's id: a receiver (or Stripe, which dedupes meter
events on it) that sees the same identifier twice must count it once; tally
retries with the same identifier and the same body. A negative quantity (a
usage correction) is an *adjustment* record: the same shape with a negative
``value`` and ``"type": "adjustment"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

METER_EVENT = "billing.meter_event"
ADJUSTMENT = "billing.meter_event_adjustment"
STRIPE_CUSTOMER_KEY = "stripe_customer_id"
IDEMPOTENCY_HEADER = "Idempotency-Key"
KIND_HEADER = "X-Tally-Billing-Record"


@dataclass(frozen=True, slots=True)
class MeterRecord:
    environment_id: str
    event_id: str
    company_id: str
    event_name: str  # the track event's subtype
    captured_at: int  # µs: the event's effective time
    customer_id: str
    quantity: int

    @property
    def is_adjustment(self) -> bool:
        return self.quantity < 0

    @property
    def request_type(self) -> str:
        return ADJUSTMENT if self.is_adjustment else METER_EVENT


def customer_id(company_id: str, keys: dict[str, str]) -> str:
    """The company's ``stripe_customer_id`` key, else its tally id."""
    return keys.get(STRIPE_CUSTOMER_KEY) or company_id


def record_body(record: MeterRecord) -> bytes:
    body: dict[str, object] = {
        "event_name": record.event_name,
        "identifier": record.event_id,
        "timestamp": record.captured_at // 1_000_000,
        "payload": {"stripe_customer_id": record.customer_id, "value": str(record.quantity)},
    }
    if record.is_adjustment:
        body["type"] = "adjustment"
    return msgspec.json.encode(body)


def record_id(event_id: str) -> str:
    """The record's id, made from its event's: the database holds one record
    per event, ever (a second insert for the same event is a no-op)."""
    return "mtr_" + event_id.partition("_")[2]


def record_headers(identifier: str, request_type: str) -> dict[str, str]:
    """Headers of every attempt: the identifier doubles as the idempotency key."""
    kind = "adjustment" if request_type == ADJUSTMENT else "meter_event"
    return {"Content-Type": "application/json", IDEMPOTENCY_HEADER: identifier, KIND_HEADER: kind}
