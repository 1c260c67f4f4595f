"""Refusals every resource words alike."""

from __future__ import annotations

from tally.errors import NotFound


def not_found(kind: str, object_id: str) -> NotFound:
    """``company 'acme' was not found in this environment``."""
    return NotFound(f"{kind} {object_id[:64]!r} was not found in this environment")
