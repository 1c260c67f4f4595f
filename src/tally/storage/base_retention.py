"""The part of ``Storage`` that prunes what the retention settings let go
(``tally.retention``)."""

from __future__ import annotations

from typing import Any, Protocol

from tally.retention.policy import Cutoffs, Pruned


class RetentionStore(Protocol):
    async def prune_chunk(
        self, kind: str, cutoffs: Cutoffs, limit: int, after: tuple[Any, ...] | None = None
    ) -> Pruned:
        """Delete at most ``limit`` rows of ``kind`` (``tally.retention.policy.KINDS``)
        that ``cutoffs`` let go, in one transaction, after the row ``after``
        names (the previous chunk's ``resume_after``); returns how many, and
        where the next chunk starts."""
        ...

    async def count_prunable(self, cutoffs: Cutoffs) -> dict[str, int]:
        """How many rows of each kind ``cutoffs`` let go, deleting nothing."""
        ...

    async def vacuum_dead_rows(self) -> list[str]:
        """Vacuum the tables whose dead rows nothing else cleans up in time;
        returns their names (PostgreSQL; nothing to do on SQLite)."""
        ...
