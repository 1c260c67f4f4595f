"""Storage interface for companies, users, memberships and traits, and the
plain records it takes and returns.

Writes follow the identify upsert (WIRE-NOTES §2): an entity is found by any
one of its keys (or by its tally id under the key ``id``), new keys are
added, a given name replaces the old one and traits merge at the top level.
Keys that point at two entities are refused (``Invalid``); a missing object
is ``NotFound``. Times are µs since the epoch, UTC. Traits travel as the JSON
text stored, never parsed on the way (so that no stored value, however deep,
can break the storage process's wire); the API reads them with
``tally.jsontext.read_object``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class EntityKey:
    key: str
    value: str
    created_at: int


@dataclass(frozen=True, slots=True)
class UsageCounter:
    """One usage counter of a company (``tally.metering.periods`` kinds)."""

    subtype: str
    kind: str  # all_time | day | week | month | billing
    period_start: int
    period_end: int | None  # None for all time
    quantity: int
    events: int


@dataclass(frozen=True, slots=True)
class CompanyHead:
    """The company of a membership, without its details."""

    id: str
    environment_id: str
    name: str  # display name: stored name, else first key value, else id
    last_seen_at: int | None
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class Membership:
    id: str
    environment_id: str
    company_id: str
    user_id: str
    created_at: int
    company: CompanyHead | None = None


@dataclass(frozen=True, slots=True)
class Company:
    id: str
    environment_id: str
    name: str | None
    traits: str  # the JSON object text as stored: read it with ``tally.jsontext.read_object``
    last_seen_at: int | None
    billing_anchor: int | None
    created_at: int
    updated_at: int
    keys: tuple[EntityKey, ...] = ()
    user_count: int = 0
    counters: tuple[UsageCounter, ...] = ()  # only those of the current periods

    @property
    def display_name(self) -> str:
        return display_name(self.name, self.keys, self.id)


@dataclass(frozen=True, slots=True)
class User:
    id: str
    environment_id: str
    name: str | None
    traits: str  # as ``Company.traits``
    last_seen_at: int | None
    created_at: int
    updated_at: int
    keys: tuple[EntityKey, ...] = ()
    memberships: tuple[Membership, ...] = ()

    @property
    def display_name(self) -> str:
        return display_name(self.name, self.keys, self.id)


def display_name(name: str | None, keys: tuple[EntityKey, ...], entity_id: str) -> str:
    """The stored name, else the first key's value, else the id."""
    if name:
        return name
    if keys:
        return keys[0].value
    return entity_id


@dataclass(frozen=True, slots=True)
class EntityUpsert:
    """``POST /companies`` and ``POST /users``."""

    keys: Mapping[str, str]
    id: str | None = None  # the tally id: upsert exactly this entity
    name: str | None = None
    traits: Mapping[str, Any] | None = None
    last_seen_at: int | None = None
    update_only: bool = False  # never create; NotFound when nothing matches
    prevent_key_remap: bool = False  # refuse to change the value of an existing key
    remove_keys: tuple[str, ...] = ()  # key names to drop (one key must remain)
    # users only: companies (by keys; {"id": "comp_…"} names one by id) to link
    companies: tuple[Mapping[str, str], ...] = ()
    exact_companies: bool = False  # the user's memberships become exactly ``companies``


@dataclass(frozen=True, slots=True)
class TraitChange:
    """``POST /company-traits`` and ``POST /user-traits``: set one trait or add
    an integer to a numeric one."""

    keys: Mapping[str, str]
    trait: str
    set: Any = None
    incr: int | None = None
    update_only: bool = False


@dataclass(frozen=True, slots=True)
class EntityFilter:
    ids: tuple[str, ...] = ()
    q: str | None = None  # substring of the name or of a key value
    company_id: str | None = None  # users: members of this company
    with_feature: str | None = None  # companies with an allocation of this feature
    without_feature: str | None = None  # companies without one
    match_none: bool = False  # a filter tally knows no entity can pass (plans, subscriptions)
    sort: str = "created_at"  # created_at | updated_at | last_seen_at | name
    descending: bool = True
    limit: int = 100
    offset: int = 0


class EntityStore(Protocol):
    """Companies, users and their memberships."""

    async def upsert_company(self, environment_id: str, change: EntityUpsert) -> Company: ...

    async def upsert_user(self, environment_id: str, change: EntityUpsert) -> User: ...

    async def get_company(self, environment_id: str, company_id: str) -> Company | None: ...

    async def get_user(self, environment_id: str, user_id: str) -> User | None: ...

    async def lookup_company(self, environment_id: str, keys: Mapping[str, str]) -> Company | None:
        """The company any of ``keys`` points at; ``Invalid`` when they point
        at two companies."""
        ...

    async def lookup_user(self, environment_id: str, keys: Mapping[str, str]) -> User | None: ...

    async def list_companies(self, environment_id: str, where: EntityFilter) -> list[Company]: ...

    async def count_companies(self, environment_id: str, where: EntityFilter) -> int: ...

    async def list_users(self, environment_id: str, where: EntityFilter) -> list[User]: ...

    async def count_users(self, environment_id: str, where: EntityFilter) -> int: ...

    async def delete_company(self, environment_id: str, company_id: str) -> Company | None:
        """Remove the company, its keys, memberships, counters and allocations
        (its events keep their ``company_id``); returns it as it was."""
        ...

    async def delete_company_by_keys(
        self, environment_id: str, keys: Mapping[str, str]
    ) -> Company | None: ...

    async def delete_user(self, environment_id: str, user_id: str) -> User | None: ...

    async def delete_user_by_keys(
        self, environment_id: str, keys: Mapping[str, str]
    ) -> User | None: ...

    async def list_memberships(
        self,
        environment_id: str,
        company_id: str | None,
        user_id: str | None,
        limit: int,
        offset: int,
    ) -> list[Membership]: ...

    async def get_or_create_membership(
        self, environment_id: str, company_id: str, user_id: str
    ) -> Membership:
        """``NotFound`` when the company or the user is not in the environment."""
        ...

    async def delete_membership(self, environment_id: str, membership_id: str) -> bool: ...

    async def upsert_company_trait(self, environment_id: str, change: TraitChange) -> Company: ...

    async def upsert_user_trait(self, environment_id: str, change: TraitChange) -> User: ...

    async def set_billing_anchor(
        self, environment_id: str | None, keys: Mapping[str, str], anchor: int | None
    ) -> Company:
        """Set (or clear, with ``None``) the company's billing anchor and
        recount its ``billing`` counters from its processed track events in
        the same transaction. ``environment_id`` None searches every
        environment (``Invalid`` when the keys match in more than one)."""
        ...
