"""The OpenAPI document is built from the app's route table: every route of
the app is in it, but for the few listed here with the reason they are not
part of the API; and every schema it refers to is in it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

from tally.api.app import api_routes
from tally.api.common.routing import ApiRoute
from tally.api.openapi import document
from tests.api.conftest import Api

# path -> why the document leaves it out
NOT_IN_THE_DOCUMENT = {
    "/": "the web console's home page (tally.console, docs/console.md), not an API route",
    "/console": "the web console's pages and assets (tally.console), not API routes",
}


def served(api: Api) -> dict[str, Any]:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = json.loads(response.content)
    return doc


def operations(route: BaseRoute) -> Iterator[tuple[str, str]]:
    """(path, method) of each operation of a route of the app."""
    assert isinstance(route, Route), f"{route!r}: only Route and Mount are expected here"
    for method in sorted(route.methods or ()):
        if method != "HEAD":
            yield route.path, method.lower()


def test_every_route_of_the_app_is_in_the_document_or_excluded_with_a_reason(api: Api) -> None:
    listed = {(path, method) for path, ops in served(api)["paths"].items() for method in ops}
    excluded_seen = set()
    for route in api.app.routes:
        path = route.path if isinstance(route, Route | Mount) else repr(route)
        if path in NOT_IN_THE_DOCUMENT:
            excluded_seen.add(path)
            continue
        assert not isinstance(route, Mount), f"{path}: a mount the document cannot list"
        for operation in operations(route):
            assert operation in listed, f"{operation} is neither in the document nor excluded"
    # the list of exclusions names routes that are there (the console is on here)
    assert excluded_seen == set(NOT_IN_THE_DOCUMENT)


def test_the_document_lists_nothing_but_the_routes_of_the_app(api: Api) -> None:
    routes = {
        op for route in api.app.routes if isinstance(route, ApiRoute) for op in operations(route)
    }
    listed = {(path, method) for path, ops in served(api)["paths"].items() for method in ops}
    assert listed == routes


def test_a_route_left_out_of_the_table_is_left_out_of_the_document() -> None:
    """The document follows the table: this is what makes the first test fail
    when a route is added without its operation."""
    table = api_routes()
    plain = Route("/new", lambda request: None, methods=["GET"])
    paths = document([*table, plain])["paths"]
    assert "/new" not in paths
    assert paths == document(table)["paths"]


def refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def test_every_schema_the_document_refers_to_is_in_it(api: Api) -> None:
    doc = served(api)
    names = set(doc["components"]["schemas"])
    missing = {r for r in refs(doc) if r.removeprefix("#/components/schemas/") not in names}
    assert missing == set()


def test_every_operation_id_is_unique(api: Api) -> None:
    ids = [op["operationId"] for ops in served(api)["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
