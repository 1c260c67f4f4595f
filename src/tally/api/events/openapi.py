"""OpenAPI operations of the events API, named by the route table in
``routes``; the schemas of events come from ``tally.ingest.wire``."""

from __future__ import annotations

from typing import Any

from tally.api.common.openapi import (
    KEYS,
    PAGE,
    READ,
    READ_ONE,
    STRING,
    STRINGS,
    TEXT,
    Ops,
    Rules,
    enum,
    envelope,
    list_of,
    op,
    optional,
    path_param,
    query,
    ref,
)
from tally.api.events import shapes
from tally.ingest import wire
from tally.ingest.parse import MAX_CAPTURE_BATCH, MAX_EVENT_BATCH
from tally.ingest.rules import MAX_IDEMPOTENCY_KEY_LENGTH
from tally.model import EVENT_TYPES

SCHEMAS: tuple[Any, ...] = (
    wire.CreateEventEnvelope,
    wire.CaptureEventEnvelope,
    wire.IdentifyBody,
    wire.TrackBody,
    wire.FlagCheckBody,
    wire.InferenceBody,
    shapes.RawEventResponseData,
    shapes.EventDetailResponseData,
    shapes.EventSummaryResponseData,
    shapes.CaptureBatchResponseData,
    shapes.EventBatchResponseData,
)

_EVENT_BODY: dict[str, Any] = {
    "oneOf": [ref(name) for name in ("IdentifyBody", "TrackBody", "FlagCheckBody", "InferenceBody")]
}
_IDEMPOTENCY_KEY = optional(
    {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH}
)
RULES: Rules = {
    "CreateEventEnvelope": (
        ["event_type", "body"],
        {"event_type": enum(EVENT_TYPES), "body": _EVENT_BODY, "idempotency_key": _IDEMPOTENCY_KEY},
    ),
    "CaptureEventEnvelope": (
        ["type", "body"],
        {"type": enum(EVENT_TYPES), "body": _EVENT_BODY, "idempotency_key": _IDEMPOTENCY_KEY},
    ),
    "IdentifyBody": (["keys"], {"keys": KEYS}),
    "IdentifyCompany": (["keys"], {"keys": KEYS}),
    "TrackBody": (
        ["event"],
        {"event": TEXT, "company": optional(KEYS), "user": optional(KEYS)},
    ),
}


def _events_body(envelope_name: str, most: int) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["events"],
        "properties": {"events": {**list_of(envelope_name), "maxItems": most}},
    }


_WRITE_ERRORS = (400, 401, 403, 413)
EVENT: Ops = {
    "create": op(
        "createEvent",
        (201, envelope(ref("RawEventResponseData")), "stored"),
        _WRITE_ERRORS,
        body=(ref("CreateEventEnvelope"), "one event"),
    ),
    "list": op(
        "listEvents",
        (200, envelope(list_of("EventDetailResponseData")), "newest first"),
        READ,
        params=[
            *(
                query(n, STRING)
                for n in ("company_id", "user_id", "flag_id", "event_subtype", "idempotency_key")
            ),
            query("event_types", {"type": "array", "items": {"enum": list(EVENT_TYPES)}}),
            *PAGE,
        ],
    ),
    "get": op(
        "getEvent",
        (200, envelope(ref("EventDetailResponseData")), "the event"),
        READ_ONE,
        params=[path_param("event_id")],
    ),
    "create_batch": op(
        "createEventBatch",
        (201, envelope(ref("EventBatchResponseData")), "stored"),
        _WRITE_ERRORS,
        body=(
            _events_body("CreateEventEnvelope", MAX_EVENT_BATCH),
            f"up to {MAX_EVENT_BATCH} events, all or none",
        ),
    ),
    "capture_batch": op(
        "captureBatch",
        (200, envelope(ref("CaptureBatchResponseData")), "stored (bad events failed)"),
        (400, 401, 413),
        body=(_events_body("CaptureEventEnvelope", MAX_CAPTURE_BATCH), "the SDK's buffered events"),
    ),
    "summaries": op(
        "getEventSummaries",
        (200, envelope(list_of("EventSummaryResponseData")), "one row per subtype"),
        READ,
        params=[query("q", STRING), query("event_subtypes", STRINGS), *PAGE],
    ),
}
