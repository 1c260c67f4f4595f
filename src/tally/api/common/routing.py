"""An entry of a resource's route table: the route and its OpenAPI operation.

``tally.api.openapi`` builds the document from the app's table, so a route
comes with its operation or not at all (``tests/api/test_openapi.py`` checks
that every route of the app is in the document)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.routing import Route


class ApiRoute(Route):
    """A Starlette ``Route`` for one method, with its OpenAPI operation. It
    matches and calls its endpoint exactly as a ``Route`` does."""

    def __init__(
        self, method: str, path: str, endpoint: Callable[..., Any], operation: dict[str, Any]
    ) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method.lower()
        self.operation = operation
