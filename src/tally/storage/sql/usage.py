"""The usage reads of ``CatalogStore`` on SQL (both backends): a company's feature usage (one
primary-key counter read per feature) and the names of event previews —
a mixin of ``SqlCatalog``. The SQL is portable between SQLite and
PostgreSQL (see ``tally.storage.sql``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from tally.clock import from_micros, to_micros
from tally.errors import Invalid, NotFound
from tally.metering.catalog import FeatureUsage, UsageFilter
from tally.metering.periods import counter_kind, period_end, period_start
from tally.storage.sql import contains, in_list, like_pattern
from tally.storage.sql.catalog_rows import (
    ALLOCATION_COLUMNS,
    FEATURE_COLUMNS,
    allocation_from_row,
    company_exists,
    feature_from_row,
)

T = TypeVar("T")

COUNTER_LOOKUP = (
    "SELECT quantity FROM usage_counters "
    "WHERE company_id = ? AND subtype = ? AND period = ? AND period_start = ?"
)

# The preview name of each kind (alias ``e``), followed by the ``e.id IN (…)``
# condition: a feature's name; a company's or user's name, else its first key.
_PREVIEW_SELECTS = (
    "SELECT 'feature', e.id, e.name FROM features e WHERE e.environment_id = ? AND ",
    "SELECT 'company', e.id, COALESCE(NULLIF(e.name, ''), ("
    "SELECT k.value FROM company_keys k WHERE k.entity_id = e.id "
    "ORDER BY k.created_at, k.key LIMIT 1)) "
    "FROM companies e WHERE e.environment_id = ? AND ",
    "SELECT 'user', e.id, COALESCE(NULLIF(e.name, ''), ("
    "SELECT k.value FROM user_keys k WHERE k.entity_id = e.id "
    "ORDER BY k.created_at, k.key LIMIT 1)) "
    "FROM users e WHERE e.environment_id = ? AND ",
)


def previews_query(environment_id: str, lists: Sequence[Sequence[str]]) -> tuple[str, list[Any]]:
    """One ``UNION ALL`` query naming the feature, company and user ids of
    ``lists`` (in that order; kinds without ids are left out)."""
    parts: list[str] = []
    args: list[Any] = []
    for select, ids_ in zip(_PREVIEW_SELECTS, lists, strict=True):
        if not ids_:
            continue
        clause, values = in_list("e.id", ids_)
        parts.append(select + clause)
        args.extend((environment_id, *values))
    return " UNION ALL ".join(parts), args


def usage_query(environment_id: str, company_id: str, where: UsageFilter) -> tuple[str, list[Any]]:
    """The features ``where`` asks for (with the company's allocation of
    each, if any): those allocated to the company, and every event feature."""
    clauses = [
        "f.environment_id = ?",
        "(a.id IS NOT NULL OR f.feature_type = 'event')",
    ]
    args: list[Any] = [company_id, environment_id]
    if where.feature_ids:
        clause, values = in_list("f.id", where.feature_ids)
        clauses.append(clause)
        args.extend(values)
    if where.q:
        clauses.append(contains("f.name"))
        args.append(like_pattern(where.q))
    sql = (
        f"SELECT {FEATURE_COLUMNS}, {ALLOCATION_COLUMNS} FROM features f "
        "LEFT JOIN allocations a ON a.feature_id = f.id AND a.company_id = ? "
        f"WHERE {' AND '.join(clauses)} ORDER BY f.name, f.id"
    )
    if where.limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args.extend((where.limit, where.offset))
    return sql, args


def usage_of(
    conn: sqlite3.Connection, company_id: str, row: Any, now: datetime, anchor: datetime | None
) -> FeatureUsage:
    """A row of ``usage_query`` with the company's usage in the current
    period of its allocation (an event feature without one: all time)."""
    feature = feature_from_row(row)
    allocation = None
    if row[8] is not None:
        allocation = allocation_from_row((*row[8:], *row[:8]))
    if allocation is not None:
        metric, reset = allocation.metric_period, allocation.month_reset
    elif feature.feature_type == "event":
        metric, reset = "all_time", None
    else:
        metric = reset = None
    if metric is None or feature.event_subtype is None:
        return FeatureUsage(company_id, feature, allocation, None, None)
    kind = counter_kind(metric, reset or "first_of_month", anchor is not None)
    start = period_start(kind, now, anchor)
    end = period_end(kind, start, anchor)
    counter = conn.execute(
        COUNTER_LOOKUP, (company_id, feature.event_subtype, kind, to_micros(start))
    ).fetchone()
    return FeatureUsage(
        company_id=company_id,
        feature=feature,
        allocation=allocation,
        period=metric,
        usage=counter[0] if counter else 0,
        period_start=to_micros(start),
        period_end=None if end is None else to_micros(end),
    )


class SqlUsage:
    if TYPE_CHECKING:

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    # -- usage --------------------------------------------------------------
    async def find_company_id(
        self, environment_id: str, company_id: str | None, keys: Mapping[str, str]
    ) -> str:
        def run(conn: sqlite3.Connection) -> str:
            if company_id is not None:
                if not company_exists(conn, environment_id, company_id):
                    raise NotFound(f"company {company_id[:64]!r} was not found in this environment")
                return company_id
            found: set[str] = set()
            for key, value in keys.items():
                row = conn.execute(
                    "SELECT entity_id FROM company_keys "
                    "WHERE environment_id = ? AND key = ? AND value = ?",
                    (environment_id, key, value),
                ).fetchone()
                if row is None and key == "id" and company_exists(conn, environment_id, value):
                    row = (value,)
                if row is not None:
                    found.add(row[0])
            if not found:
                shown = ", ".join(f"{k}={v}" for k, v in list(keys.items())[:5])[:200]
                raise NotFound(f"no company in this environment has the keys {shown}")
            if len(found) > 1:
                raise Invalid(
                    f"the keys name {len(found)} different companies; send keys of one company"
                )
            return found.pop()

        return await self._read(run)

    async def feature_usage(
        self, environment_id: str, company_id: str, where: UsageFilter, now_us: int
    ) -> list[FeatureUsage]:
        sql, args = usage_query(environment_id, company_id, where)
        now = from_micros(now_us)

        def run(conn: sqlite3.Connection) -> list[FeatureUsage]:
            anchor_row = conn.execute(
                "SELECT billing_anchor FROM companies WHERE id = ?", (company_id,)
            ).fetchone()
            anchor = (
                from_micros(anchor_row[0]) if anchor_row and anchor_row[0] is not None else None
            )
            return [
                usage_of(conn, company_id, row, now, anchor)
                for row in conn.execute(sql, args).fetchall()
            ]

        return await self._read(run)

    # -- previews -----------------------------------------------------------
    async def preview_names(
        self,
        environment_id: str,
        feature_ids: Iterable[str],
        company_ids: Iterable[str],
        user_ids: Iterable[str],
    ) -> dict[tuple[str, str], str]:
        lists = [sorted(set(feature_ids)), sorted(set(company_ids)), sorted(set(user_ids))]
        if not any(lists):
            return {}
        sql, args = previews_query(environment_id, lists)

        def run(conn: sqlite3.Connection) -> dict[tuple[str, str], str]:
            return {
                (kind, entity_id): name
                for kind, entity_id, name in conn.execute(sql, args).fetchall()
                if name is not None
            }

        return await self._read(run)
