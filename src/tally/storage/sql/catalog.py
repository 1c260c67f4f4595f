"""``CatalogStore`` on SQL — a mixin of ``SqlStorage``, so SQLite and
PostgreSQL both run it: features and allocations here, usage reads in ``usage``.

Methods use the host's ``self._writer.call(fn)`` for writes (``fn(conn)`` runs
in one transaction on the writer thread), ``await self._read(fn)`` for reads
and ``self._now()`` for the current time in µs.

The SQL is portable between SQLite and PostgreSQL: id lists become
``IN (?,…)`` lists built by ``tally.storage.sql``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tally import ids
from tally.errors import NotFound
from tally.metering.catalog import (
    Allocation,
    AllocationChanges,
    AllocationFilter,
    AllocationNote,
    Feature,
    FeatureChanges,
    FeatureFilter,
    FeatureValues,
    check_note,
    resolve_allocation,
    resolve_feature,
)
from tally.storage.sql import contains, in_list, like_pattern
from tally.storage.sql.catalog_rows import (
    ALLOCATION_JOIN,
    FEATURE_COLUMNS,
    allocation_from_row,
    company_exists,
    feature_from_row,
    load_allocation,
    load_feature,
    notes_text,
)
from tally.storage.sql.usage import SqlUsage

if TYPE_CHECKING:
    from tally.storage.sql.writer import WriterThread

T = TypeVar("T")


class SqlCatalog(SqlUsage):
    if TYPE_CHECKING:
        _writer: WriterThread

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        def _now(self) -> int: ...

    async def _catalog_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._writer.call(fn)

    # -- features -----------------------------------------------------------
    async def create_feature(self, environment_id: str, changes: FeatureChanges) -> Feature:
        values = resolve_feature(None, changes)  # no stored state: check before queueing

        def run(conn: sqlite3.Connection) -> Feature:
            now = self._now()
            feature = Feature(
                ids.new_id("feat"),
                environment_id,
                values.name,
                values.description,
                values.feature_type,
                values.event_subtype,
                now,
                now,
            )
            conn.execute(
                "INSERT INTO features (id, environment_id, name, description, feature_type, "
                "event_subtype, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    feature.id,
                    environment_id,
                    feature.name,
                    feature.description,
                    feature.feature_type,
                    feature.event_subtype,
                    now,
                    now,
                ),
            )
            return feature

        return await self._catalog_write(run)

    async def get_feature(self, environment_id: str, feature_id: str) -> Feature | None:
        return await self._read(lambda conn: load_feature(conn, environment_id, feature_id))

    async def list_features(self, environment_id: str, where: FeatureFilter) -> list[Feature]:
        clauses = ["f.environment_id = ?"]
        args: list[Any] = [environment_id]
        if where.q:
            clauses.append(f"({contains('f.name')} OR f.id = ?)")
            args.extend((like_pattern(where.q), where.q))
        if where.ids:
            clause, values = in_list("f.id", where.ids)
            clauses.append(clause)
            args.extend(values)
        types = list(where.feature_types)
        if where.boolean_require_event:
            if types and "boolean" not in types:
                types.append("boolean")
            clauses.append("(f.feature_type != 'boolean' OR f.event_subtype IS NOT NULL)")
        if types:
            clause, values = in_list("f.feature_type", types)
            clauses.append(clause)
            args.extend(values)
        if where.without_override_for is not None:
            clauses.append(
                "NOT EXISTS (SELECT 1 FROM allocations a WHERE a.feature_id = f.id "
                "AND a.company_id = ?)"
            )
            args.append(where.without_override_for)
        sql = (
            f"SELECT {FEATURE_COLUMNS} FROM features f WHERE {' AND '.join(clauses)} "
            "ORDER BY f.name, f.id LIMIT ? OFFSET ?"
        )
        args.extend((where.limit, where.offset))
        return await self._read(
            lambda conn: [feature_from_row(r) for r in conn.execute(sql, args).fetchall()]
        )

    async def update_feature(
        self, environment_id: str, feature_id: str, changes: FeatureChanges
    ) -> Feature | None:
        """A changed ``event_subtype`` affects only events processed after the
        change: processed events keep their ``feature_ids``. Usage reads follow
        the new subtype at once, since counters are kept per subtype."""

        def run(conn: sqlite3.Connection) -> Feature | None:
            current = load_feature(conn, environment_id, feature_id)
            if current is None:
                return None
            before = FeatureValues(
                current.name, current.description, current.feature_type, current.event_subtype
            )
            values = resolve_feature(before, changes)
            now = self._now()
            conn.execute(
                "UPDATE features SET name = ?, description = ?, feature_type = ?, "
                "event_subtype = ?, updated_at = ? WHERE id = ?",
                (
                    values.name,
                    values.description,
                    values.feature_type,
                    values.event_subtype,
                    now,
                    feature_id,
                ),
            )
            return Feature(
                current.id,
                environment_id,
                values.name,
                values.description,
                values.feature_type,
                values.event_subtype,
                current.created_at,
                now,
            )

        return await self._catalog_write(run)

    async def delete_feature(self, environment_id: str, feature_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            deleted = conn.execute(
                "DELETE FROM features WHERE id = ? AND environment_id = ?",
                (feature_id, environment_id),
            ).rowcount
            if deleted:
                conn.execute("DELETE FROM allocations WHERE feature_id = ?", (feature_id,))
            return bool(deleted)

        return await self._catalog_write(run)

    # -- allocations --------------------------------------------------------
    def _save_allocation(
        self,
        conn: sqlite3.Connection,
        environment_id: str,
        company_id: str,
        feature: Feature,
        current: Allocation | None,
        changes: AllocationChanges,
        note: str | None,
        author_id: str,
    ) -> Allocation:
        values = resolve_allocation(
            feature.feature_type, current.values if current else None, changes
        )
        now = self._now()
        notes = current.notes if current else ()
        text = check_note(note)
        if text is not None:
            notes = (*notes, AllocationNote(ids.new_id("cmovn"), text, author_id, now))
        row = (
            values.value_type,
            values.value_numeric,
            None if values.value_bool is None else int(values.value_bool),
            values.metric_period,
            values.month_reset,
            notes_text(notes),
            now,
        )
        if current is None:
            allocation_id = ids.new_id("cmov")
            created_at = now
            conn.execute(
                "INSERT INTO allocations (value_type, value_numeric, value_bool, metric_period, "
                "month_reset, notes, updated_at, id, environment_id, company_id, feature_id, "
                "created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (*row, allocation_id, environment_id, company_id, feature.id, now),
            )
        else:
            allocation_id, created_at = current.id, current.created_at
            conn.execute(
                "UPDATE allocations SET value_type = ?, value_numeric = ?, value_bool = ?, "
                "metric_period = ?, month_reset = ?, notes = ?, updated_at = ? WHERE id = ?",
                (*row, allocation_id),
            )
        return Allocation(
            id=allocation_id,
            environment_id=environment_id,
            company_id=company_id,
            feature=feature,
            value_type=values.value_type,
            value_numeric=values.value_numeric,
            value_bool=values.value_bool,
            metric_period=values.metric_period,
            month_reset=values.month_reset,
            notes=notes,
            created_at=created_at,
            updated_at=now,
        )

    async def upsert_allocation(
        self,
        environment_id: str,
        company_id: str,
        feature_id: str,
        changes: AllocationChanges,
        note: str | None,
        author_id: str,
    ) -> tuple[Allocation, bool]:
        """One allocation per (company, feature): a second create for the same
        pair updates the first (same id, notes appended)."""

        def run(conn: sqlite3.Connection) -> tuple[Allocation, bool]:
            feature = load_feature(conn, environment_id, feature_id)
            if feature is None:
                raise NotFound(f"feature {feature_id[:64]!r} was not found in this environment")
            if not company_exists(conn, environment_id, company_id):
                raise NotFound(f"company {company_id[:64]!r} was not found in this environment")
            row = conn.execute(
                f"{ALLOCATION_JOIN} WHERE a.company_id = ? AND a.feature_id = ?",
                (company_id, feature_id),
            ).fetchone()
            current = allocation_from_row(row) if row else None
            saved = self._save_allocation(
                conn, environment_id, company_id, feature, current, changes, note, author_id
            )
            return saved, current is None

        return await self._catalog_write(run)

    async def update_allocation(
        self,
        environment_id: str,
        allocation_id: str,
        changes: AllocationChanges,
        note: str | None,
        author_id: str,
    ) -> Allocation | None:
        def run(conn: sqlite3.Connection) -> Allocation | None:
            current = load_allocation(conn, environment_id, allocation_id)
            if current is None:
                return None
            return self._save_allocation(
                conn,
                environment_id,
                current.company_id,
                current.feature,
                current,
                changes,
                note,
                author_id,
            )

        return await self._catalog_write(run)

    async def get_allocation(self, environment_id: str, allocation_id: str) -> Allocation | None:
        return await self._read(lambda conn: load_allocation(conn, environment_id, allocation_id))

    async def list_allocations(
        self, environment_id: str, where: AllocationFilter
    ) -> list[Allocation]:
        clauses = ["a.environment_id = ?"]
        args: list[Any] = [environment_id]
        for column, values in (
            ("a.company_id", where.company_ids),
            ("a.feature_id", where.feature_ids),
            ("a.id", where.ids),
        ):
            if values:
                clause, in_args = in_list(column, values)
                clauses.append(clause)
                args.extend(in_args)
        if where.q:
            clauses.append(
                f"({contains('f.name')} OR EXISTS (SELECT 1 FROM companies c "
                f"WHERE c.id = a.company_id AND {contains('c.name')}))"
            )
            args.extend((like_pattern(where.q), like_pattern(where.q)))
        sql = (
            f"{ALLOCATION_JOIN} WHERE {' AND '.join(clauses)} "
            "ORDER BY a.created_at DESC, a.id DESC LIMIT ? OFFSET ?"
        )
        args.extend((where.limit, where.offset))
        return await self._read(
            lambda conn: [allocation_from_row(r) for r in conn.execute(sql, args).fetchall()]
        )

    async def delete_allocation(self, environment_id: str, allocation_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return bool(
                conn.execute(
                    "DELETE FROM allocations WHERE id = ? AND environment_id = ?",
                    (allocation_id, environment_id),
                ).rowcount
            )

        return await self._catalog_write(run)
