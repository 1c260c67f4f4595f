"""The transactional interface storage provides for processing.

The pipeline owns the logic of a batch (decode, read what it needs, rule,
write; retry, overflow); storage owns the transaction. Storage never
imports the pipeline: whoever opens a storage hands it the pipeline's
``Processing`` (``PIPELINE``, in the pipeline's ``processing`` module), and
storage calls it with a ``BatchTransaction`` — one open transaction of its
backend — for the worker's batches, for events processed as they are stored
(SQLite) and for the admin API's upserts, which follow the identify rules.
The records both sides share live in ``tally.batch``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from tally.batch import Changes, CounterKey, Needs, Outcome, PendingEvent, Snapshot
from tally.effects.triggers import EffectRules


class BatchTransaction(Protocol):
    """One open transaction of a backend; the caller commits it."""

    # what processing records for side effects (``apply_changes`` writes them)
    rules: EffectRules
    # how often a batch that meets another transaction's change is read and
    # processed again (SQLite has one writer: once)
    max_attempts: int

    def claim_pending(self, limit: int) -> list[PendingEvent]:
        """Up to ``limit`` pending events, oldest first (each claimed by this
        transaction alone, where writers run concurrently)."""
        ...

    def load_snapshot(self, needs: Needs) -> Snapshot:
        """What storage holds of the keys, entities and features ``needs`` lists."""
        ...

    def read_counters(self, keys: Iterable[CounterKey]) -> dict[CounterKey, int]:
        """The stored quantity of each of ``keys`` that exists."""
        ...

    def apply_changes(self, changes: Changes, now: int) -> None:
        """Write what processing changed, but not the events' own rows."""
        ...

    def mark(self, changes: Changes, now: int) -> None:
        """Set the stored events' outcomes and free the keys of those that failed."""
        ...

    def apply(self, changes: Changes, now: int) -> None:
        """``apply_changes`` and ``mark``."""
        ...

    def record_settled(self, events: list[PendingEvent], outcomes: list[Outcome]) -> None:
        """Count the settled events in the event summaries."""
        ...

    def savepoint(self, name: str) -> None: ...

    def rollback_to(self, name: str) -> None:
        """Undo everything since the savepoint ``name`` (which stays)."""
        ...

    def release(self, name: str) -> None: ...

    def is_overflow(self, err: BaseException) -> bool:
        """Whether ``err`` says a usage counter would pass 64 bits."""
        ...

    def is_conflict(self, err: BaseException) -> bool:
        """Whether ``err`` says another transaction got in the way."""
        ...


class Processing(Protocol):
    """What storage is handed where it is opened: the pipeline's processing,
    run on storage's transactions."""

    def process_pending(self, tx: BatchTransaction, limit: int, now: int) -> int:
        """Claim up to ``limit`` pending events, process them and set their
        outcomes; returns how many were claimed."""
        ...

    def process(self, tx: BatchTransaction, events: list[PendingEvent], now: int) -> Changes:
        """Process ``events`` (oldest first) and write everything they change
        except their own rows, which the caller writes."""
        ...

    def upsert_entity(
        self,
        tx: BatchTransaction,
        kind: str,
        environment_id: str,
        keys: Mapping[str, str],
        name: str | None,
        traits: Mapping[str, Any] | None,
        now: int,
    ) -> str:
        """An identify upsert outside an event (the admin API): read, rule and
        write one entity; returns its id. Raises ``ProcessingFailed``."""
        ...
