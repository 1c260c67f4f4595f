"""Storage interface for companies, users, memberships and traits."""

from __future__ import annotations

from typing import Protocol


class EntityStore(Protocol):
    """Companies, users and their memberships (filled in by the entities API)."""
