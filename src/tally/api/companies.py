"""Routes of companies, users, memberships and traits."""

from __future__ import annotations

from starlette.routing import Route

routes: list[Route] = []
