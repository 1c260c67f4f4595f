"""The OpenAPI document of every route (``GET /openapi.json``), built from
the app's route table (``tally.api.app.api_routes``): each route carries its
operation (``tally.api.common.routing.ApiRoute``), declared next to its
resource's routes (``<resource>/openapi.py``), which also names the msgspec
structs its schemas come from (``SCHEMAS``) and refines them with what the
server accepts (``RULES``). ``tests/api/test_openapi.py`` checks that every
route of the app is here, and ``tests/e2e/test_fuzz.py`` fuzzes every
operation of it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tally import __version__
from tally.api import health
from tally.api.catalog import openapi as catalog
from tally.api.common import shapes
from tally.api.common.envelope import JSONBytes
from tally.api.common.openapi import Rules, envelope, op, refine
from tally.api.common.routing import ApiRoute
from tally.api.companies import openapi as companies
from tally.api.events import openapi as events
from tally.api.webhooks import openapi as webhooks

_RESOURCES = (events, companies, catalog, webhooks)
SCHEMAS: tuple[Any, ...] = (
    *(schema for resource in _RESOURCES for schema in resource.SCHEMAS),
    shapes.ErrorBody,
    shapes.DeleteResponse,
    shapes.CountResponse,
)
RULES: Rules = {name: rule for resource in _RESOURCES for name, rule in resource.RULES.items()}

HEALTH = op(
    "health",
    (200, envelope(health.SCHEMA), "up, with how far processing is behind"),
    (),
    public=True,
)
SELF = op("openapi", (200, {"type": "object"}, "this document"), (), public=True)


async def serve(request: Request) -> Response:
    return JSONBytes(openapi_document())


def document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The document of ``routes``; a route without an operation (the web
    console's) is not part of the API."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if isinstance(route, ApiRoute):
            paths.setdefault(route.path, {})[route.method] = route.operation
    _, components = msgspec.json.schema_components(
        SCHEMAS, ref_template="#/components/schemas/{name}"
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "tally", "version": __version__},
        "components": {
            "schemas": refine(components, RULES),
            "securitySchemes": {
                "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-Schematic-Api-Key"}
            },
        },
        "security": [{"ApiKeyAuth": []}],
        "paths": paths,
    }


@functools.cache
def openapi_document() -> bytes:
    """The document of the app's routes, as JSON text."""
    from tally.api.app import api_routes  # the app imports this module for ``serve``

    return msgspec.json.encode(document(api_routes()))
