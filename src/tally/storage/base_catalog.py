"""Storage interface for features, allocations (company overrides) and usage.

Records and the pure rules they obey live in ``tally.metering.catalog``;
a backend applies those rules inside its write transaction, so a check and
the write it guards cannot be split by a concurrent request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from tally.metering.catalog import (
    Allocation,
    AllocationChanges,
    AllocationFilter,
    Feature,
    FeatureChanges,
    FeatureFilter,
    FeatureUsage,
    UsageFilter,
)


class CatalogStore(Protocol):
    # features
    async def create_feature(self, environment_id: str, changes: FeatureChanges) -> Feature:
        """Raises ``Invalid`` when the values break a rule (an event feature
        without an ``event_subtype``, …)."""
        ...

    async def get_feature(self, environment_id: str, feature_id: str) -> Feature | None: ...

    async def list_features(self, environment_id: str, where: FeatureFilter) -> list[Feature]:
        """Ordered by name, then id."""
        ...

    async def update_feature(
        self, environment_id: str, feature_id: str, changes: FeatureChanges
    ) -> Feature | None:
        """``None`` when there is no such feature. A new ``event_subtype``
        changes the attribution of events processed from now on; events already
        processed keep their ``feature_ids``, and counters (kept per subtype)
        are not moved."""
        ...

    async def delete_feature(self, environment_id: str, feature_id: str) -> bool:
        """Deletes the feature and its allocations; usage counters (per
        subtype) stay. False when there was no such feature."""
        ...

    # allocations (company overrides)
    async def upsert_allocation(
        self,
        environment_id: str,
        company_id: str,
        feature_id: str,
        changes: AllocationChanges,
        note: str | None,
        author_id: str,
    ) -> tuple[Allocation, bool]:
        """The one allocation of (company, feature), created or updated by
        ``changes`` (a ``note`` is appended to its notes); the bool says whether
        it was created. Raises ``NotFound`` for an unknown company or feature
        and ``Invalid`` for values that break a rule."""
        ...

    async def update_allocation(
        self,
        environment_id: str,
        allocation_id: str,
        changes: AllocationChanges,
        note: str | None,
        author_id: str,
    ) -> Allocation | None: ...

    async def get_allocation(
        self, environment_id: str, allocation_id: str
    ) -> Allocation | None: ...

    async def list_allocations(
        self, environment_id: str, where: AllocationFilter
    ) -> list[Allocation]:
        """Newest first."""
        ...

    async def delete_allocation(self, environment_id: str, allocation_id: str) -> bool: ...

    # usage
    async def find_company_id(
        self, environment_id: str, company_id: str | None, keys: Mapping[str, str]
    ) -> str:
        """The company named by its id or by any of ``keys``. Raises
        ``NotFound`` when none matches and ``Invalid`` when the keys name two
        companies."""
        ...

    async def feature_usage(
        self, environment_id: str, company_id: str, where: UsageFilter, now_us: int
    ) -> list[FeatureUsage]:
        """Every feature the company has an allocation for, and every event
        feature it has none for, ordered by feature name. Usage is the counter
        of the allocation's period that contains ``now_us`` (one primary-key
        read per feature, whatever the number of stored events); an event
        feature without an allocation shows its all-time usage."""
        ...

    # previews of events
    async def preview_names(
        self,
        environment_id: str,
        feature_ids: Iterable[str],
        company_ids: Iterable[str],
        user_ids: Iterable[str],
    ) -> dict[tuple[str, str], str]:
        """``(kind, id) → name`` for kinds ``feature``, ``company`` and ``user``,
        in one query. A company or user is named by its stored name, else its
        first key's value; ids not found are left out."""
        ...
