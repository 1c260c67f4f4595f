"""SQLite implementation of ``CatalogStore`` — a mixin of ``SqliteStorage``.

Methods use the host's ``self._writer.call(fn)`` for writes (``fn(conn)`` runs
in one transaction on the writer thread), ``await self._read(fn)`` for reads
and ``self._now()`` for the current time in µs.

Id lists go to SQLite as one JSON text parameter (``json_each``), so every
statement has a fixed shape whatever the number of ids.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tally import ids
from tally.clock import from_micros, to_micros
from tally.errors import Invalid, NotFound
from tally.metering.catalog import (
    Allocation,
    AllocationChanges,
    AllocationFilter,
    AllocationNote,
    Feature,
    FeatureChanges,
    FeatureFilter,
    FeatureUsage,
    FeatureValues,
    UsageFilter,
    check_note,
    resolve_allocation,
    resolve_feature,
)
from tally.metering.periods import counter_kind, period_end, period_start

if TYPE_CHECKING:
    from tally.storage.sqlite_writer import WriterThread

T = TypeVar("T")

_FEATURE = (
    "f.id, f.environment_id, f.name, f.description, f.feature_type, f.event_subtype, "
    "f.created_at, f.updated_at"
)
_ALLOCATION = (
    "a.id, a.environment_id, a.company_id, a.value_type, a.value_numeric, a.value_bool, "
    "a.metric_period, a.month_reset, a.notes, a.created_at, a.updated_at"
)
_ALLOCATION_JOIN = (
    f"SELECT {_ALLOCATION}, {_FEATURE} FROM allocations a JOIN features f ON f.id = a.feature_id"
)
_COUNTER = (
    "SELECT quantity FROM usage_counters "
    "WHERE company_id = ? AND subtype = ? AND period = ? AND period_start = ?"
)
_PREVIEWS = """
SELECT 'feature', f.id, f.name FROM features f
 WHERE f.environment_id = ?1 AND f.id IN (SELECT value FROM json_each(?2))
UNION ALL
SELECT 'company', c.id, COALESCE(NULLIF(c.name, ''), (
    SELECT k.value FROM company_keys k WHERE k.entity_id = c.id
     ORDER BY k.created_at, k.key LIMIT 1))
  FROM companies c
 WHERE c.environment_id = ?1 AND c.id IN (SELECT value FROM json_each(?3))
UNION ALL
SELECT 'user', u.id, COALESCE(NULLIF(u.name, ''), (
    SELECT k.value FROM user_keys k WHERE k.entity_id = u.id
     ORDER BY k.created_at, k.key LIMIT 1))
  FROM users u
 WHERE u.environment_id = ?1 AND u.id IN (SELECT value FROM json_each(?4))
"""


def _like(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _feature(row: Sequence[Any], at: int = 0) -> Feature:
    return Feature(*row[at : at + 8])


def _notes(text: str | None) -> tuple[AllocationNote, ...]:
    if not text:
        return ()
    return tuple(
        AllocationNote(n["id"], n["note"], n["author_id"], n["created_at"])
        for n in json.loads(text)
    )


def _notes_text(notes: Iterable[AllocationNote]) -> str:
    return json.dumps(
        [
            {"id": n.id, "note": n.note, "author_id": n.author_id, "created_at": n.created_at}
            for n in notes
        ]
    )


def _allocation(row: Sequence[Any]) -> Allocation:
    return Allocation(
        id=row[0],
        environment_id=row[1],
        company_id=row[2],
        value_type=row[3],
        value_numeric=row[4],
        value_bool=None if row[5] is None else bool(row[5]),
        metric_period=row[6],
        month_reset=row[7],
        notes=_notes(row[8]),
        created_at=row[9],
        updated_at=row[10],
        feature=_feature(row, 11),
    )


def _load_feature(conn: sqlite3.Connection, environment_id: str, feature_id: str) -> Feature | None:
    row = conn.execute(
        f"SELECT {_FEATURE} FROM features f WHERE f.id = ? AND f.environment_id = ?",
        (feature_id, environment_id),
    ).fetchone()
    return _feature(row) if row else None


def _load_allocation(
    conn: sqlite3.Connection, environment_id: str, allocation_id: str
) -> Allocation | None:
    row = conn.execute(
        f"{_ALLOCATION_JOIN} WHERE a.id = ? AND a.environment_id = ?",
        (allocation_id, environment_id),
    ).fetchone()
    return _allocation(row) if row else None


def _company_exists(conn: sqlite3.Connection, environment_id: str, company_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM companies WHERE id = ? AND environment_id = ?", (company_id, environment_id)
    ).fetchone()
    return row is not None


class SqliteCatalog:
    if TYPE_CHECKING:
        _writer: WriterThread

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        def _now(self) -> int: ...

    async def _catalog_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        result: T = await self._writer.call(fn)
        return result

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
        return await self._read(lambda conn: _load_feature(conn, environment_id, feature_id))

    async def list_features(self, environment_id: str, where: FeatureFilter) -> list[Feature]:
        clauses = ["f.environment_id = ?"]
        args: list[Any] = [environment_id]
        if where.q:
            clauses.append("(f.name LIKE ? ESCAPE '\\' OR f.id = ?)")
            args.extend((_like(where.q), where.q))
        if where.ids:
            clauses.append("f.id IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(where.ids))
        types = list(where.feature_types)
        if where.boolean_require_event:
            if types and "boolean" not in types:
                types.append("boolean")
            clauses.append("(f.feature_type != 'boolean' OR f.event_subtype IS NOT NULL)")
        if types:
            clauses.append("f.feature_type IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(types))
        sql = (
            f"SELECT {_FEATURE} FROM features f WHERE {' AND '.join(clauses)} "
            "ORDER BY f.name, f.id LIMIT ? OFFSET ?"
        )
        args.extend((where.limit, where.offset))
        return await self._read(
            lambda conn: [_feature(r) for r in conn.execute(sql, args).fetchall()]
        )

    async def update_feature(
        self, environment_id: str, feature_id: str, changes: FeatureChanges
    ) -> Feature | None:
        """A changed ``event_subtype`` affects only events processed after the
        change: processed events keep their ``feature_ids``. Usage reads follow
        the new subtype at once, since counters are kept per subtype."""

        def run(conn: sqlite3.Connection) -> Feature | None:
            current = _load_feature(conn, environment_id, feature_id)
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
            _notes_text(notes),
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
            feature = _load_feature(conn, environment_id, feature_id)
            if feature is None:
                raise NotFound(f"feature {feature_id[:64]!r} was not found in this environment")
            if not _company_exists(conn, environment_id, company_id):
                raise NotFound(f"company {company_id[:64]!r} was not found in this environment")
            row = conn.execute(
                f"{_ALLOCATION_JOIN} WHERE a.company_id = ? AND a.feature_id = ?",
                (company_id, feature_id),
            ).fetchone()
            current = _allocation(row) if row else None
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
            current = _load_allocation(conn, environment_id, allocation_id)
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
        return await self._read(lambda conn: _load_allocation(conn, environment_id, allocation_id))

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
                clauses.append(f"{column} IN (SELECT value FROM json_each(?))")
                args.append(json.dumps(values))
        if where.q:
            clauses.append(
                "(f.name LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM companies c "
                "WHERE c.id = a.company_id AND c.name LIKE ? ESCAPE '\\'))"
            )
            args.extend((_like(where.q), _like(where.q)))
        sql = (
            f"{_ALLOCATION_JOIN} WHERE {' AND '.join(clauses)} "
            "ORDER BY a.created_at DESC, a.id DESC LIMIT ? OFFSET ?"
        )
        args.extend((where.limit, where.offset))
        return await self._read(
            lambda conn: [_allocation(r) for r in conn.execute(sql, args).fetchall()]
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

    # -- usage --------------------------------------------------------------
    async def find_company_id(
        self, environment_id: str, company_id: str | None, keys: Mapping[str, str]
    ) -> str:
        def run(conn: sqlite3.Connection) -> str:
            if company_id is not None:
                if not _company_exists(conn, environment_id, company_id):
                    raise NotFound(f"company {company_id[:64]!r} was not found in this environment")
                return company_id
            found: set[str] = set()
            for key, value in keys.items():
                row = conn.execute(
                    "SELECT entity_id FROM company_keys "
                    "WHERE environment_id = ? AND key = ? AND value = ?",
                    (environment_id, key, value),
                ).fetchone()
                if row is None and key == "id" and _company_exists(conn, environment_id, value):
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
        clauses = [
            "f.environment_id = ?",
            "(a.id IS NOT NULL OR f.feature_type = 'event')",
        ]
        args: list[Any] = [company_id, environment_id]
        if where.feature_ids:
            clauses.append("f.id IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(where.feature_ids))
        if where.q:
            clauses.append("f.name LIKE ? ESCAPE '\\'")
            args.append(_like(where.q))
        sql = (
            f"SELECT {_FEATURE}, {_ALLOCATION} FROM features f "
            "LEFT JOIN allocations a ON a.feature_id = f.id AND a.company_id = ? "
            f"WHERE {' AND '.join(clauses)} ORDER BY f.name, f.id"
        )
        if where.limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args.extend((where.limit, where.offset))
        now = from_micros(now_us)

        def run(conn: sqlite3.Connection) -> list[FeatureUsage]:
            anchor_row = conn.execute(
                "SELECT billing_anchor FROM companies WHERE id = ?", (company_id,)
            ).fetchone()
            anchor = (
                from_micros(anchor_row[0]) if anchor_row and anchor_row[0] is not None else None
            )
            out: list[FeatureUsage] = []
            for row in conn.execute(sql, args).fetchall():
                feature = _feature(row)
                allocation = None
                if row[8] is not None:
                    allocation = _allocation((*row[8:], *row[:8]))
                if allocation is not None:
                    metric, reset = allocation.metric_period, allocation.month_reset
                elif feature.feature_type == "event":
                    metric, reset = "all_time", None
                else:
                    metric = reset = None
                if metric is None or feature.event_subtype is None:
                    out.append(FeatureUsage(company_id, feature, allocation, None, None))
                    continue
                kind = counter_kind(metric, reset or "first_of_month", anchor is not None)
                start = period_start(kind, now, anchor)
                end = period_end(kind, start, anchor)
                counter = conn.execute(
                    _COUNTER, (company_id, feature.event_subtype, kind, to_micros(start))
                ).fetchone()
                out.append(
                    FeatureUsage(
                        company_id=company_id,
                        feature=feature,
                        allocation=allocation,
                        period=metric,
                        usage=counter[0] if counter else 0,
                        period_start=to_micros(start),
                        period_end=None if end is None else to_micros(end),
                    )
                )
            return out

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
        args = (environment_id, *(json.dumps(ids_) for ids_ in lists))

        def run(conn: sqlite3.Connection) -> dict[tuple[str, str], str]:
            return {
                (kind, entity_id): name
                for kind, entity_id, name in conn.execute(_PREVIEWS, args).fetchall()
                if name is not None
            }

        return await self._read(run)
