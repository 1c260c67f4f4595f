"""The OpenAPI document of every route (``GET /openapi.json``), with the
parameters and request bodies a client needs: the event routes here, the
admin routes in ``openapi_admin``; body and response schemas generated from
the msgspec wire structs, refined by ``openapi_rules`` with what the server
accepts. ``tests/api/test_openapi.py`` checks that every route of the app
is here, and ``tests/e2e/test_fuzz.py`` fuzzes every operation of it.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from tally import __version__
from tally.api import (
    catalog_shapes,
    entity_requests,
    entity_shapes,
    health,
    shapes,
    webhook_shapes,
)
from tally.api import openapi_admin as admin
from tally.api.openapi_parts import (
    PAGE,
    READ,
    READ_ONE,
    STRING,
    STRINGS,
    envelope,
    json_body,
    list_of,
    op,
    path_param,
    query,
    ref,
)
from tally.api.openapi_rules import refine
from tally.ingest import wire
from tally.model import EVENT_TYPES

_SCHEMA_TYPES: tuple[Any, ...] = (
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
    shapes.ErrorBody,
    entity_requests.UpsertBody,
    entity_requests.KeysBody,
    entity_requests.MembershipBody,
    entity_requests.TraitBody,
    entity_shapes.CompanyDetailResponseData,
    entity_shapes.CompanyResponseData,
    entity_shapes.UserDetailResponseData,
    entity_shapes.UserResponseData,
    entity_shapes.CompanyMembershipDetailResponseData,
    entity_shapes.DeleteResponse,
    entity_shapes.CountResponse,
    catalog_shapes.FeatureBody,
    catalog_shapes.CompanyOverrideBody,
    catalog_shapes.FeatureDetailResponseData,
    catalog_shapes.CompanyOverrideResponseData,
    catalog_shapes.FeatureUsageResponseData,
    catalog_shapes.FeatureUsageDetailResponseData,
    webhook_shapes.WebhookBody,
    webhook_shapes.TestWebhookBody,
    webhook_shapes.WebhookResponseData,
    webhook_shapes.WebhookEventDetailResponseData,
    webhook_shapes.TestWebhookResponseData,
)


def _event_paths() -> dict[str, Any]:
    raw_event = ref("RawEventResponseData")
    return {
        "/events": {
            "post": op(
                "createEvent",
                (201, envelope(raw_event), "stored"),
                (400, 401, 403, 413),
                body=(ref("CreateEventEnvelope"), "one event"),
            ),
            "get": op(
                "listEvents",
                (200, envelope(list_of("EventDetailResponseData")), "newest first"),
                READ,
                params=[
                    *(
                        query(n, STRING)
                        for n in (
                            "company_id",
                            "user_id",
                            "flag_id",
                            "event_subtype",
                            "idempotency_key",
                        )
                    ),
                    query("event_types", {"type": "array", "items": {"enum": list(EVENT_TYPES)}}),
                    *PAGE,
                ],
            ),
        },
        "/events/{event_id}": {
            "get": op(
                "getEvent",
                (200, envelope(ref("EventDetailResponseData")), "the event"),
                READ_ONE,
                params=[path_param("event_id")],
            )
        },
        "/event-batch": {
            "post": op(
                "createEventBatch",
                (201, envelope(ref("EventBatchResponseData")), "stored"),
                (400, 401, 403, 413),
                body=(
                    {
                        "type": "object",
                        "required": ["events"],
                        "properties": {
                            "events": {**list_of("CreateEventEnvelope"), "maxItems": 1000}
                        },
                    },
                    "up to 1000 events, all or none",
                ),
            )
        },
        "/batch": {
            "post": op(
                "captureBatch",
                (200, envelope(ref("CaptureBatchResponseData")), "stored (bad events failed)"),
                (400, 401, 413),
                body=(
                    {
                        "type": "object",
                        "required": ["events"],
                        "properties": {
                            "events": {**list_of("CaptureEventEnvelope"), "maxItems": 100}
                        },
                    },
                    "the SDK's buffered events",
                ),
            )
        },
        "/event-types": {
            "get": op(
                "getEventSummaries",
                (200, envelope(list_of("EventSummaryResponseData")), "one row per subtype"),
                READ,
                params=[query("q", STRING), query("event_subtypes", STRINGS), *PAGE],
            )
        },
    }


@functools.cache
def openapi_document() -> bytes:
    _, components = msgspec.json.schema_components(
        _SCHEMA_TYPES, ref_template="#/components/schemas/{name}"
    )
    paths: dict[str, Any] = {
        **_event_paths(),
        "/health": {
            "get": op(
                "health",
                (200, envelope(health.SCHEMA), "up, with how far processing is behind"),
                (),
                public=True,
            )
        },
        "/openapi.json": {
            "get": op("openapi", (200, {"type": "object"}, "this document"), (), public=True)
        },
        **admin.entities("company", "companies", admin.COMPANY_FILTERS),
        **admin.entities("user", "users", admin.USER_FILTERS),
        **admin.membership_paths(),
        **admin.catalog_paths(),
        **admin.webhook_paths(),
        # operational, not part of the Schematic API (docs/monitoring.md)
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["operations"],
                "summary": "Prometheus metrics of this tally (not an API route)",
                "description": "The Prometheus text exposition. Loopback clients may always "
                "read it; other clients only with Authorization: Bearer <TALLY_METRICS_TOKEN>.",
                "security": [],
                "x-tally-operational": True,
                "responses": {
                    "200": {
                        "description": "the exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **{str(code): json_body(ref("ErrorBody"), "error") for code in (401, 403)},
                },
            }
        },
    }
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "tally", "version": __version__},
        "components": {
            "schemas": refine(components),
            "securitySchemes": {
                "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-Schematic-Api-Key"}
            },
        },
        "security": [{"ApiKeyAuth": []}],
        "paths": paths,
    }
    return msgspec.json.encode(doc)
