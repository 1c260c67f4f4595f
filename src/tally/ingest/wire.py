"""Wire shapes of incoming events (msgspec structs).

Bodies are kept as ``msgspec.Raw`` until the event type is known (the
Schematic body union has no discriminator), then decoded with the decoder of
that type. Unknown fields are tolerated everywhere; explicit ``null`` equals
absent.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
KeyMap = dict[str, str]


class CreateEventEnvelope(msgspec.Struct, forbid_unknown_fields=False):
    """``CreateEventRequestBody`` of ``POST /events`` and ``POST /event-batch``."""

    event_type: str | None = None
    body: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # empty when absent
    sent_at: str | None = None
    idempotency_key: str | None = None
    trusted_client_clock: bool | None = None
    backfill: bool | None = None


class CaptureEventEnvelope(msgspec.Struct, forbid_unknown_fields=False):
    """One event of ``POST /batch`` (the SDK's buffered capture format)."""

    type: str | None = None
    event_type: str | None = None  # older Go SDKs
    api_key: str | None = None  # informative only: the header is authoritative
    body: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # empty when absent
    sent_at: str | None = None
    idempotency_key: str | None = None
    trusted_client_clock: bool | None = None
    backfill: bool | None = None


class EventBatchEnvelope(msgspec.Struct):
    events: list[msgspec.Raw]


class CaptureBatchEnvelope(msgspec.Struct):
    events: list[msgspec.Raw]


class IdentifyCompany(msgspec.Struct):
    keys: KeyMap
    name: str | None = None
    traits: dict[str, Any] | None = None


class IdentifyBody(msgspec.Struct):
    keys: KeyMap
    name: str | None = None
    traits: dict[str, Any] | None = None
    company: IdentifyCompany | None = None


class TrackBody(msgspec.Struct):
    event: str
    company: KeyMap | None = None
    user: KeyMap | None = None
    traits: dict[str, Any] | None = None
    quantity: Int64 | None = None
    lease_id: str | None = None
    reservation_id: str | None = None


class FlagCheckBody(msgspec.Struct):
    flag_key: str
    reason: str
    value: bool
    company_id: str | None = None
    user_id: str | None = None
    flag_id: str | None = None
    rule_id: str | None = None
    error: str | None = None
    req_company: KeyMap | None = None
    req_user: KeyMap | None = None
    preflight: bool | None = None


class InferenceBody(msgspec.Struct):
    company: KeyMap
    input_tokens: Int64
    output_tokens: Int64
    provider: str
    response_model: str
    user: KeyMap | None = None
    request_model: str | None = None
    operation: str | None = None
    requests: Int64 | None = None
    cost: str | None = None
    currency: str | None = None
    cached_input_tokens: Int64 | None = None
    cache_creation_input_tokens: Int64 | None = None
    reasoning_tokens: Int64 | None = None
    lease_id: str | None = None
    event: str | None = None


BODY_TYPES: dict[str, type[msgspec.Struct]] = {
    "identify": IdentifyBody,
    "track": TrackBody,
    "flag_check": FlagCheckBody,
    "inference": InferenceBody,
}

BODY_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(kind) for name, kind in BODY_TYPES.items()
}
CREATE_DECODER = msgspec.json.Decoder(CreateEventEnvelope)
CAPTURE_DECODER = msgspec.json.Decoder(CaptureEventEnvelope)
EVENT_BATCH_DECODER = msgspec.json.Decoder(EventBatchEnvelope)
CAPTURE_BATCH_DECODER = msgspec.json.Decoder(CaptureBatchEnvelope)
