"""What the server accepts, told to clients in the OpenAPI document.

The msgspec structs that read request bodies are permissive on purpose
(``null`` equals absent, unknown fields are ignored, values are checked by
the rules with a sentence each), so the schemas generated from them say
little. These refinements add what a client needs to send a request that
is accepted: required fields, enumerations, lengths. They describe the
rules; they do not enforce them (the routes do).
"""

from __future__ import annotations

from typing import Any

from tally.effects.endpoints import REQUEST_TYPES, STATUSES
from tally.ingest.rules import MAX_IDEMPOTENCY_KEY_LENGTH
from tally.metering.catalog import FEATURE_TYPES, METRIC_PERIODS, MONTH_RESETS, VALUE_TYPES
from tally.model import EVENT_TYPES

TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 255}
KEYS: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 50,
    "propertyNames": {"minLength": 1, "maxLength": 255},
    "additionalProperties": TEXT,
}
OPTIONAL_KEYS: dict[str, Any] = {"anyOf": [KEYS, {"type": "null"}]}
EVENT_BODY: dict[str, Any] = {
    "oneOf": [
        {"$ref": f"#/components/schemas/{name}"}
        for name in ("IdentifyBody", "TrackBody", "FlagCheckBody", "InferenceBody")
    ],
}
IDEMPOTENCY_KEY: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH},
        {"type": "null"},
    ]
}


def _enum(values: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def _optional_enum(values: tuple[str, ...]) -> dict[str, Any]:
    return {"anyOf": [_enum(values), {"type": "null"}]}


# component -> (required fields, property schemas that replace the generated ones)
RULES: dict[str, tuple[list[str], dict[str, Any]]] = {
    "CreateEventEnvelope": (
        ["event_type", "body"],
        {"event_type": _enum(EVENT_TYPES), "body": EVENT_BODY, "idempotency_key": IDEMPOTENCY_KEY},
    ),
    "CaptureEventEnvelope": (
        ["type", "body"],
        {"type": _enum(EVENT_TYPES), "body": EVENT_BODY, "idempotency_key": IDEMPOTENCY_KEY},
    ),
    "IdentifyBody": (["keys"], {"keys": KEYS}),
    "IdentifyCompany": (["keys"], {"keys": KEYS}),
    "TrackBody": (
        ["event"],
        {"event": TEXT, "company": OPTIONAL_KEYS, "user": OPTIONAL_KEYS},
    ),
    "UpsertBody": (
        ["keys"],
        {
            "keys": KEYS,
            "name": {"anyOf": [{"type": "string", "maxLength": 1024}, {"type": "null"}]},
        },
    ),
    "KeysBody": (["keys"], {"keys": KEYS}),
    "MembershipBody": (["company_id", "user_id"], {"company_id": TEXT, "user_id": TEXT}),
    "TraitBody": (["keys", "trait"], {"keys": KEYS, "trait": TEXT}),
    "FeatureBody": (
        ["name", "feature_type"],
        {
            "name": TEXT,
            "feature_type": _enum(FEATURE_TYPES),
            "event_source": _optional_enum(("track",)),
        },
    ),
    "CompanyOverrideBody": (
        ["company_id", "feature_id", "value_type"],
        {
            "company_id": TEXT,
            "feature_id": TEXT,
            "value_type": _enum(VALUE_TYPES),
            "metric_period": _optional_enum(METRIC_PERIODS),
            "metric_period_month_reset": _optional_enum(MONTH_RESETS),
            "expiration_date": {"type": "null"},  # tally's overrides do not expire
        },
    ),
    "WebhookBody": (
        ["name", "url", "request_types"],
        {
            "name": TEXT,
            "url": {"type": "string", "pattern": "^https?://[a-z0-9.-]+(:[0-9]{1,5})?(/.*)?$"},
            "request_types": {"type": "array", "minItems": 1, "items": _enum(REQUEST_TYPES)},
            "status": _optional_enum(STATUSES),
        },
    ),
    "TestWebhookBody": (["request_type"], {"request_type": _enum(REQUEST_TYPES)}),
}


def refine(components: dict[str, Any]) -> dict[str, Any]:
    """``components`` with ``RULES`` applied (in place, and returned)."""
    for name, (required, properties) in RULES.items():
        schema = components[name]
        schema["required"] = required
        schema["properties"].update(properties)
    return components
