"""What processing needs from storage inside one transaction.

The processing rules (``tally.pipeline.process``) are written against this
protocol, so every backend runs the same rules; a backend implements it on
one open transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


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


CounterKey = tuple[str, str, str, str, int]  # env, company, subtype, period kind, period start µs


class EntityRecord(Protocol):
    id: str
    name: str | None
    traits: str


class UnitOfWork(Protocol):
    def claim_pending(self, limit: int) -> list[PendingEvent]: ...

    def find_entities(self, kind: str, environment_id: str, keys: Mapping[str, str]) -> set[str]:
        """Ids of the ``kind`` ('company' or 'user') entities matching any key;
        the key ``id`` also matches an entity's own tally id."""
        ...

    def create_entity(
        self, kind: str, environment_id: str, name: str | None, traits: str, now: int
    ) -> str: ...

    def load_entity(self, kind: str, entity_id: str) -> tuple[str | None, str]:
        """(name, traits JSON text)."""
        ...

    def update_entity(
        self, kind: str, entity_id: str, name: str | None, traits: str, now: int
    ) -> None: ...

    def set_keys(
        self, kind: str, environment_id: str, entity_id: str, keys: Mapping[str, str], now: int
    ) -> None: ...

    def ensure_membership(
        self, environment_id: str, company_id: str, user_id: str, now: int
    ) -> None: ...

    def event_features(self, environment_id: str, subtype: str) -> list[str]: ...

    def billing_anchor(self, company_id: str) -> int | None: ...

    def savepoint(self) -> None: ...

    def rollback_savepoint(self) -> None: ...

    def release_savepoint(self) -> None: ...

    def add_counters(self, deltas: Mapping[CounterKey, tuple[int, int]]) -> None: ...

    def bump_last_seen(self, kind: str, seen: Mapping[str, int], now: int) -> None: ...

    def finish(self, outcomes: Iterable[Outcome], now: int) -> None: ...
