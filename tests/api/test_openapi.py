"""``GET /openapi.json`` lists every route of the app, the admin ones
included, with the parameters a client needs."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.routing import Route

from tests.api.conftest import Api


def document(api: Api) -> dict[str, Any]:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = json.loads(response.content)
    return doc


def test_every_route_of_the_app_is_in_the_document(api: Api) -> None:
    doc = document(api)
    routes = {
        (route.path, method.lower())
        for route in api.app.routes
        # "/" is the web console's home (tally.console, docs/console.md), not an API route
        if isinstance(route, Route) and route.path != "/"
        for method in route.methods or ()
        if method != "HEAD"
    }
    listed = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert routes - listed == set()
    assert listed - routes == set()


def test_every_path_parameter_and_body_is_described(api: Api) -> None:
    doc = document(api)
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        for method, op in ops.items():
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == names, (method, path)
            if method in ("post", "put"):
                assert "requestBody" in op, (method, path)
            assert op["operationId"], (method, path)


def test_map_parameters_are_deep_objects(api: Api) -> None:
    doc = document(api)
    lookup = doc["paths"]["/companies/lookup"]["get"]["parameters"]
    assert lookup == [
        {
            "name": "keys",
            "in": "query",
            "required": True,
            "style": "deepObject",
            "explode": True,
            "schema": {"type": "object", "additionalProperties": {"type": "string"}},
        }
    ]
    assert doc["paths"]["/health"]["get"]["security"] == []
