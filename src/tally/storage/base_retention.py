"""The part of ``Storage`` that prunes what the retention settings let go
(``tally.retention``)."""

from __future__ import annotations

from typing import Protocol

from tally.retention.policy import Cutoffs


class RetentionStore(Protocol):
    async def prune_chunk(self, kind: str, cutoffs: Cutoffs, limit: int) -> int:
        """Delete at most ``limit`` rows of ``kind`` (``tally.retention.policy.KINDS``)
        that ``cutoffs`` let go, in one transaction; returns how many."""
        ...

    async def count_prunable(self, cutoffs: Cutoffs) -> dict[str, int]:
        """How many rows of each kind ``cutoffs`` let go, deleting nothing."""
        ...

    async def vacuum_dead_rows(self) -> list[str]:
        """Vacuum the tables whose dead rows nothing else cleans up in time;
        returns their names (PostgreSQL; nothing to do on SQLite)."""
        ...
