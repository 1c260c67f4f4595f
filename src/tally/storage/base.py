"""The storage interface every backend implements.

Writes that return are durable (committed). ``ingest`` applies idempotency
atomically: two identical submissions racing yield one stored event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tally.model import (
    ApiKey,
    Environment,
    EventFilter,
    EventSummary,
    IngestResult,
    NewEvent,
    PendingBacklog,
    StoredEvent,
)
from tally.storage.base_catalog import CatalogStore
from tally.storage.base_console import ConsoleStore
from tally.storage.base_entities import EntityStore
from tally.storage.base_retention import RetentionStore
from tally.storage.base_webhooks import DeliveryStore, WebhookStore


class Storage(
    EntityStore,
    CatalogStore,
    WebhookStore,
    DeliveryStore,
    ConsoleStore,
    RetentionStore,
    Protocol,
):
    async def start(self) -> None:
        """Open connections and run pending migrations."""

    async def close(self) -> None:
        """Finish in-flight writes and release every connection."""

    # environments and keys
    async def ensure_environment(self, name: str, kind: str) -> tuple[Environment, bool]:
        """The environment called ``name``, created when missing; the bool says
        whether it was created now."""
        ...

    async def list_environments(self) -> list[Environment]: ...

    async def create_api_key(
        self, environment_id: str, kind: str, read_only: bool, key_hash: str, prefix: str
    ) -> ApiKey: ...

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """The active (unrevoked) key with this hash."""
        ...

    async def list_api_keys(self, environment_name: str | None = None) -> list[ApiKey]: ...

    async def revoke_api_key(self, key_id_or_prefix: str) -> ApiKey | None: ...

    # events
    async def ingest(self, events: Sequence[NewEvent]) -> list[IngestResult]:
        """Store ``events`` in one durable commit, dropping idempotent duplicates.
        Returns one result per input, in order."""
        ...

    def process_as_stored(self, enabled: bool) -> None:
        """Whether the events of each commit are processed in it (where the
        backend can: SQLite), rather than left ``pending`` for a worker."""
        ...

    async def process_pending(self, limit: int) -> int:
        """Claim up to ``limit`` pending events, oldest first, and process them
        in one transaction; returns how many were claimed (0: nothing to do)."""
        ...

    async def pending_backlog(self, cap: int | None = None) -> PendingBacklog:
        """How many events are pending (counted up to ``cap`` when given)
        and when the oldest was stored, off the pending-events index (the
        metrics read it at every scrape, ``GET /health`` at most once a
        second per process)."""
        ...

    async def fail_next_pending(self, message: str) -> str | None:
        """Set the oldest pending event aside as ``failed`` with ``message``;
        returns its id (None when nothing is pending)."""
        ...

    async def get_event(self, environment_id: str, event_id: str) -> StoredEvent | None: ...

    async def list_events(self, environment_id: str, where: EventFilter) -> list[StoredEvent]: ...

    async def event_summaries(
        self,
        environment_id: str,
        q: str | None,
        subtypes: Sequence[str],
        limit: int,
        offset: int,
    ) -> list[EventSummary]: ...

    async def prune_idempotency_keys(self, older_than_us: int) -> int:
        """Forget keys first seen before ``older_than_us``; returns how many."""
        ...
