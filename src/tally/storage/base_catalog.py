"""Storage interface for features, allocations (company overrides) and usage."""

from __future__ import annotations

from typing import Protocol


class CatalogStore(Protocol):
    """Features, allocations and usage reads (filled in by the catalog API)."""
