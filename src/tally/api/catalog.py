"""Routes of features, company overrides (allocations) and feature usage."""

from __future__ import annotations

from starlette.routing import Route

routes: list[Route] = []
