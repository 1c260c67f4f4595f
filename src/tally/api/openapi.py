"""The OpenAPI document, generated from the msgspec wire structs."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from tally import __version__
from tally.api import shapes
from tally.ingest import wire

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
    shapes.ErrorBody,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["data", "params"],
        "properties": {"data": data, "params": {"type": "object"}},
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(_ref("ErrorBody"), "error") for code in codes}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


@functools.cache
def openapi_document() -> bytes:
    _, components = msgspec.json.schema_components(
        _SCHEMA_TYPES, ref_template="#/components/schemas/{name}"
    )
    page = [
        _query("limit", {"type": "integer", "minimum": 0, "maximum": 250}),
        _query("offset", {"type": "integer", "minimum": 0}),
    ]
    events_array = {"type": "array", "items": _ref("CreateEventEnvelope"), "maxItems": 1000}
    capture_array = {"type": "array", "items": _ref("CaptureEventEnvelope"), "maxItems": 100}
    paths: dict[str, Any] = {
        "/events": {
            "post": {
                "operationId": "createEvent",
                "requestBody": _json(_ref("CreateEventEnvelope"), "one event"),
                "responses": {
                    "201": _json(_envelope(_ref("RawEventResponseData")), "stored"),
                    **_errors(400, 401, 403, 413),
                },
            },
            "get": {
                "operationId": "listEvents",
                "parameters": [
                    *(
                        _query(n, {"type": "string"})
                        for n in (
                            "company_id",
                            "user_id",
                            "flag_id",
                            "event_subtype",
                            "idempotency_key",
                        )
                    ),
                    {
                        **_query("event_types", {"type": "array", "items": {"type": "string"}}),
                        "explode": True,
                    },
                    *page,
                ],
                "responses": {
                    "200": _json(
                        _envelope({"type": "array", "items": _ref("EventDetailResponseData")}),
                        "newest first",
                    ),
                    **_errors(400, 401, 403),
                },
            },
        },
        "/events/{event_id}": {
            "get": {
                "operationId": "getEvent",
                "parameters": [
                    {
                        "name": "event_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json(_envelope(_ref("EventDetailResponseData")), "the event"),
                    **_errors(401, 403, 404),
                },
            }
        },
        "/event-batch": {
            "post": {
                "operationId": "createEventBatch",
                "requestBody": _json(
                    {
                        "type": "object",
                        "required": ["events"],
                        "properties": {"events": events_array},
                    },
                    "up to 1000 events, all or none",
                ),
                "responses": {
                    "201": _json(
                        _envelope(
                            {
                                "type": "object",
                                "properties": {
                                    "events": {
                                        "type": "array",
                                        "items": _ref("RawEventResponseData"),
                                    }
                                },
                            }
                        ),
                        "stored",
                    ),
                    **_errors(400, 401, 403, 413),
                },
            }
        },
        "/batch": {
            "post": {
                "operationId": "captureBatch",
                "requestBody": _json(
                    {
                        "type": "object",
                        "required": ["events"],
                        "properties": {"events": capture_array},
                    },
                    "the SDK's buffered events",
                ),
                "responses": {
                    "200": _json(
                        _envelope(_ref("CaptureBatchResponseData")), "stored (bad events as failed)"
                    ),
                    **_errors(400, 401, 413),
                },
            }
        },
        "/event-types": {
            "get": {
                "operationId": "getEventSummaries",
                "parameters": [
                    _query("q", {"type": "string"}),
                    {
                        **_query("event_subtypes", {"type": "array", "items": {"type": "string"}}),
                        "explode": True,
                    },
                    *page,
                ],
                "responses": {
                    "200": _json(
                        _envelope({"type": "array", "items": _ref("EventSummaryResponseData")}),
                        "one row per subtype",
                    ),
                    **_errors(400, 401, 403),
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "security": [],
                "responses": {"200": {"description": "up"}},
            }
        },
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
                    **_errors(401, 403),
                },
            }
        },
    }
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "tally", "version": __version__},
        "components": {
            "schemas": components,
            "securitySchemes": {
                "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-Schematic-Api-Key"}
            },
        },
        "security": [{"ApiKeyAuth": []}],
        "paths": paths,
    }
    return msgspec.json.encode(doc)
