"""The records a processing batch reads and writes, shared by the pipeline
(which rules on them) and storage (which reads and writes them), so that
neither imports the other's code for them.

Processing is pure: storage claims a batch of ``PendingEvent``, reads in
bulk what the batch ``Needs`` into a ``Snapshot``, the pipeline's
``tally.pipeline.rules.process_events`` returns the ``Changes``, and storage
writes them in the same transaction as the events' new status
(``tally.pipeline.processing`` drives it, ``tally.storage.base_batch`` is the
transaction it drives).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tally.effects.billing import MeterRecord
from tally.effects.triggers import Limit, Notice, Watch


class ProcessingFailed(Exception):
    """The event cannot be processed; ``str(err)`` tells a person what to fix.
    The event becomes ``failed`` with this message and the batch goes on."""


CounterKey = tuple[str, str, str, str, int]  # env, company, subtype, period kind, period start µs
KeyRef = tuple[str, str, str]  # environment, key name, value
IndexKey = tuple[str, str, str, str]  # kind, environment, key name, value


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
    idempotency_key: str | None = None
    # sent with a secret key (or by the operator's own tools, with none):
    # only such an event may set a billing key (``stripe_customer_id``)
    secret: bool = True
    loaded_at: int = 0  # when it was stored (µs): the processing lag starts there


@dataclass(frozen=True, slots=True)
class StoredEntity:
    kind: str  # company | user
    id: str
    environment_id: str
    name: str | None
    traits: str  # JSON object text
    billing_anchor: int | None = None


@dataclass(slots=True)
class Needs:
    """What a batch must read before it can be processed."""

    refs: dict[str, set[KeyRef]] = field(default_factory=lambda: {"company": set(), "user": set()})
    subtypes: set[tuple[str, str]] = field(default_factory=set)  # env, subtype


@dataclass(slots=True)
class Snapshot:
    """What storage holds of the batch's keys, entities and features."""

    keys: dict[IndexKey, str] = field(default_factory=dict)
    entities: dict[str, StoredEntity] = field(default_factory=dict)
    features: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    # stored quantity of counters, read only when a first attempt overflowed
    counters: dict[CounterKey, int] = field(default_factory=dict)
    counters_read: bool = False  # whether ``counters`` holds the stored totals
    # (company id, user id) links already stored among the batch's users:
    # only new links are written
    memberships: set[tuple[str, str]] = field(default_factory=set)
    # numeric allocations of the batch's companies: (company id, subtype) → limits
    limits: dict[tuple[str, str], list[Limit]] = field(default_factory=dict)
    # (environment, action) that some active webhook endpoint subscribes to
    subscribed: set[tuple[str, str]] = field(default_factory=set)


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

    kind: str
    id: str
    environment_id: str
    new: bool
    name: str | None = None
    traits: dict[str, Any] | None = None  # None: not read yet (``stored_traits``)
    billing_anchor: int | None = None
    stored_traits: str = "{}"  # JSON object text, read when the batch needs the traits
    dirty: bool = False  # name or traits changed
    name_given: bool = False  # the batch set the name
    trait_updates: dict[str, Any] = field(default_factory=dict)  # the batch's trait changes
    keys: dict[str, str] = field(default_factory=dict)  # known keys, name → value
    added_keys: dict[str, str] = field(default_factory=dict)  # to write
    # a secret-key REST upsert's new values replace the entity's old ones;
    # an event's never do (the unique index refuses a second value instead)
    replaces_keys: bool = False
    last_seen: int | None = None
    revision: int = 0  # bumped by every real change (name, traits, keys)


@dataclass(slots=True)
class Changes:
    entities: list[EntityState] = field(default_factory=list)
    memberships: set[tuple[str, str, str]] = field(default_factory=set)  # env, company, user
    counters: dict[CounterKey, tuple[int, int]] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    # side effects, written in the same transaction (tally.effects)
    watches: dict[CounterKey, Watch] = field(default_factory=dict)  # counters allocations watch
    notices: list[Notice] = field(default_factory=list)  # identity webhooks for the outbox
    meter_records: list[MeterRecord] = field(default_factory=list)
    # idempotency keys the batch's failed events let go: (env, type, key, event id)
    released: list[tuple[str, str, str, str]] = field(default_factory=list)
