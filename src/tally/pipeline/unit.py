"""What processing needs from storage inside one transaction.

The processing rules (``tally.pipeline.process``) work on an in-memory
working set and read through this protocol in bulk; at the end of a batch
every change is handed back in one ``Changes`` record, which the backend
writes in the same transaction as the events' new status.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class PendingEvent:
    id: str
    environment_id: str
    type: str
    subtype: str | None
    body: str
    quantity: int
    captured_at: int
    backfill: bool


@dataclass(slots=True)
class Outcome:
    """How processing left one event."""

    event_id: str
    status: str  # processed | failed
    error_message: str | None = None
    company_id: str | None = None
    user_id: str | None = None
    feature_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class EntityState:
    """A company or user as the batch sees it."""

    kind: str  # company | user
    id: str
    environment_id: str
    new: bool
    name: str | None = None
    traits: dict[str, Any] | None = None  # None: not loaded (unchanged)
    loaded: bool = False
    dirty: bool = False  # name or traits changed
    keys: dict[str, str] = field(default_factory=dict)  # known keys, name → value
    added_keys: dict[str, str] = field(default_factory=dict)  # to write
    last_seen: int | None = None


CounterKey = tuple[str, str, str, str, int]  # env, company, subtype, period kind, period start µs
KeyRef = tuple[str, str, str]  # environment, key name, value


@dataclass(slots=True)
class Changes:
    entities: list[EntityState] = field(default_factory=list)
    memberships: set[tuple[str, str, str]] = field(default_factory=set)  # env, company, user
    counters: dict[CounterKey, tuple[int, int]] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)


class UnitOfWork(Protocol):
    def claim_pending(self, limit: int) -> list[PendingEvent]: ...

    def lookup_keys(self, kind: str, refs: Iterable[KeyRef]) -> dict[KeyRef, str]:
        """The entity each (environment, key, value) points at, for those that
        point somewhere; the key ``id`` also matches an entity's own tally id."""
        ...

    def load_entity(self, kind: str, entity_id: str) -> tuple[str | None, str]:
        """(name, traits JSON text) of a stored entity."""
        ...

    def new_id(self, kind: str) -> str: ...

    def event_features(self, environment_id: str, subtype: str) -> list[str]: ...

    def billing_anchor(self, company_id: str) -> int | None: ...

    def apply(self, changes: Changes, now: int) -> None:
        """Write every change of the batch (entities, keys, memberships,
        counters, last_seen_at, event outcomes)."""
        ...
