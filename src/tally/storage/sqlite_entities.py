"""SQLite implementation of ``EntityStore`` — a mixin of ``SqliteStorage``.

Methods use the host's ``self._writer.call(fn)`` for writes (``fn(conn)`` runs
in one transaction on the writer thread, so they serialize with ingestion and
the worker), ``await self._read(fn)`` for reads and ``self._now()`` for the
current time in µs. Upserts go through the pipeline's own identify upsert
(``tally.pipeline.process.upsert_entity``), so the API and identify events
follow one set of rules.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from tally import ids
from tally.clock import Clock, from_micros, to_micros
from tally.errors import Invalid, NotFound
from tally.metering import periods
from tally.pipeline.identities import ProcessingFailed
from tally.pipeline.process import upsert_entity
from tally.storage import sqlite_entity_rows as rows
from tally.storage.base_entities import (
    Company,
    EntityFilter,
    EntityUpsert,
    Membership,
    TraitChange,
    User,
)
from tally.storage.sqlite_pipeline import SqliteUnitOfWork

if TYPE_CHECKING:
    from tally.storage.sqlite_writer import WriterThread

T = TypeVar("T")
_SORTS = {
    "created_at": "e.created_at",
    "updated_at": "e.updated_at",
    "last_seen_at": "e.last_seen_at",
    "name": "e.name",
}


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filter(kind: str, environment_id: str, where: EntityFilter) -> tuple[str, list[Any]]:
    """The WHERE clause (on alias ``e``) of a list or count."""
    key_table = rows.TABLES[kind][1]
    clauses = ["e.environment_id = ?"]
    args: list[Any] = [environment_id]
    if where.match_none:
        clauses.append("0")
    if where.ids:
        clauses.append(f"e.id IN ({rows.marks(where.ids)})")
        args.extend(where.ids)
    if where.q:
        clauses.append(
            "(e.name LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM "
            f"{key_table} k WHERE k.entity_id = e.id AND k.value LIKE ? ESCAPE '\\'))"
        )
        args.extend((_like(where.q), _like(where.q)))
    if kind == "user" and where.company_id is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM memberships m WHERE m.company_id = ? AND m.user_id = e.id)"
        )
        args.append(where.company_id)
    if kind == "company" and where.with_feature is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM allocations a WHERE a.company_id = e.id AND a.feature_id = ?)"
        )
        args.append(where.with_feature)
    if kind == "company" and where.without_feature is not None:
        clauses.append(
            "NOT EXISTS (SELECT 1 FROM allocations a WHERE a.company_id = e.id "
            "AND a.feature_id = ?)"
        )
        args.append(where.without_feature)
    return " AND ".join(clauses), args


def _order(where: EntityFilter) -> str:
    column = _SORTS[where.sort]
    direction = "DESC" if where.descending else "ASC"
    return f"{column} IS NULL, {column} {direction}, e.id {direction}"


def _resolve_for_write(
    conn: sqlite3.Connection, kind: str, env: str, change: EntityUpsert, now: int
) -> str | None:
    """The entity an upsert changes (``None``: it creates one), after the
    checks that need no write; attaches the keys of an upsert by tally id."""
    _, key_table, _ = rows.TABLES[kind]
    keys = dict(change.keys)
    matches = rows.find_matches(conn, kind, env, keys)
    found = set(matches.values())
    if change.id is not None:
        if not rows.exists(conn, kind, env, change.id):
            raise NotFound(f"{kind} {change.id[:64]!r} was not found in this environment")
        others = found - {change.id}
        if others:
            raise Invalid(
                f"the {kind} keys {keys} already belong to {', '.join(sorted(others))}, "
                f"not to {change.id}"
            )
        target: str | None = change.id
    else:
        if len(found) > 1:
            raise rows.ambiguous(kind, keys, found)
        target = next(iter(found), None)
    if target is None:
        if change.update_only:
            raise NotFound(f"no {kind} has the keys {keys}, and update_only forbids creating one")
        return None
    current = dict(
        conn.execute(
            f"SELECT key, value FROM {key_table} WHERE entity_id = ?", (target,)
        ).fetchall()
    )
    if change.prevent_key_remap:
        remapped = sorted(k for k, v in keys.items() if k in current and current[k] != v)
        if remapped:
            raise Invalid(
                f"the {kind} already has other values for the keys {remapped}, "
                "and prevent_key_remap forbids changing them"
            )
    if change.id is not None:
        # keys that point nowhere yet join the entity named by id (one value per key name)
        for key, value in keys.items():
            if (key, value) in matches or (key == "id" and value == target):
                continue
            conn.execute(f"DELETE FROM {key_table} WHERE entity_id = ? AND key = ?", (target, key))
            conn.execute(
                f"INSERT INTO {key_table} (environment_id, key, value, entity_id, created_at) "
                "VALUES (?,?,?,?,?)",
                (env, key, value, target, now),
            )
    return target


def _upsert(conn: sqlite3.Connection, kind: str, env: str, change: EntityUpsert, now: int) -> str:
    table, key_table, _ = rows.TABLES[kind]
    if not change.keys and change.id is None:
        raise Invalid(f"keys must hold at least one key of the {kind}, or send its id")
    target = _resolve_for_write(conn, kind, env, change, now)
    keys = dict(change.keys) if change.keys else {"id": target or ""}
    try:
        entity_id = upsert_entity(
            SqliteUnitOfWork(conn), kind, env, keys, change.name, change.traits, now
        )
    except ProcessingFailed as err:
        raise Invalid(str(err)) from None
    if change.last_seen_at is not None:
        conn.execute(
            f"UPDATE {table} SET last_seen_at = ?, updated_at = ? WHERE id = ?",
            (change.last_seen_at, now, entity_id),
        )
    if change.remove_keys:
        names = list(change.remove_keys)
        conn.execute(
            f"DELETE FROM {key_table} WHERE entity_id = ? AND key IN ({rows.marks(names)})",
            (entity_id, *names),
        )
        left = conn.execute(
            f"SELECT COUNT(*) FROM {key_table} WHERE entity_id = ?", (entity_id,)
        ).fetchone()[0]
        if left == 0:
            raise Invalid(f"remove_keys would leave the {kind} without keys; it must keep one")
    if kind == "user" and (change.companies or change.exact_companies):
        _link_companies(conn, env, entity_id, change, now)
    return entity_id


def _link_companies(
    conn: sqlite3.Connection, env: str, user_id: str, change: EntityUpsert, now: int
) -> None:
    company_ids: list[str] = []
    for keys in change.companies:
        company_id = rows.find_one(conn, "company", env, keys)
        if company_id is None:
            raise NotFound(f"no company has the keys {dict(keys)} in this environment")
        company_ids.append(company_id)
    if change.exact_companies:
        conn.execute(
            f"DELETE FROM memberships WHERE user_id = ? AND company_id NOT IN "
            f"({rows.marks(company_ids)})",
            (user_id, *company_ids),
        )
    for company_id in company_ids:
        _ensure_membership(conn, env, company_id, user_id, now)


def _ensure_membership(
    conn: sqlite3.Connection, env: str, company_id: str, user_id: str, now: int
) -> str:
    conn.execute(
        "INSERT INTO memberships (id, environment_id, company_id, user_id, created_at) "
        "VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
        (ids.new_id("cmem"), env, company_id, user_id, now),
    )
    row = conn.execute(
        "SELECT id FROM memberships WHERE company_id = ? AND user_id = ?", (company_id, user_id)
    ).fetchone()
    membership_id: str = row[0]
    return membership_id


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def _incremented(trait: str, current: Any, incr: int) -> int | float:
    if current is None:
        return incr
    if isinstance(current, bool):
        number: int | float | None = None
    elif isinstance(current, int | float):
        number = current
    elif isinstance(current, str):
        number = _number(current.strip())
    else:
        number = None
    if number is None:
        raise Invalid(
            f"the trait {trait!r} holds {json.dumps(current)[:64]}, which is not a number; "
            "incr adds only to numeric traits"
        )
    return number + incr


def _trait(conn: sqlite3.Connection, kind: str, env: str, change: TraitChange, now: int) -> str:
    target = rows.find_one(conn, kind, env, change.keys)
    if target is None and change.update_only:
        raise NotFound(
            f"no {kind} has the keys {dict(change.keys)}, and update_only forbids creating one"
        )
    value = change.set
    if change.incr is not None:
        current = None
        if target is not None:
            _, traits_text = SqliteUnitOfWork(conn).load_entity(kind, target)
            current = rows.decode_traits(traits_text).get(change.trait)
        value = _incremented(change.trait, current, change.incr)
    keys = dict(change.keys)
    try:
        return upsert_entity(
            SqliteUnitOfWork(conn), kind, env, keys, None, {change.trait: value}, now
        )
    except ProcessingFailed as err:
        raise Invalid(str(err)) from None


def _delete(conn: sqlite3.Connection, kind: str, entity_id: str) -> None:
    table, key_table, _ = rows.TABLES[kind]
    conn.execute(f"DELETE FROM {key_table} WHERE entity_id = ?", (entity_id,))
    if kind == "company":
        conn.execute("DELETE FROM memberships WHERE company_id = ?", (entity_id,))
        conn.execute("DELETE FROM usage_counters WHERE company_id = ?", (entity_id,))
        conn.execute("DELETE FROM allocations WHERE company_id = ?", (entity_id,))
    else:
        conn.execute("DELETE FROM memberships WHERE user_id = ?", (entity_id,))
    conn.execute(f"DELETE FROM {table} WHERE id = ?", (entity_id,))


def recount_billing(
    conn: sqlite3.Connection, environment_id: str, company_id: str, anchor: int | None
) -> None:
    """Rebuild the company's ``billing`` counters from its processed track
    events (none without an anchor)."""
    conn.execute(
        "DELETE FROM usage_counters WHERE company_id = ? AND period = ?",
        (company_id, periods.BILLING),
    )
    if anchor is None:
        return
    anchor_at = from_micros(anchor)
    totals: dict[tuple[str, int], list[int]] = {}
    cursor = conn.execute(
        "SELECT subtype, captured_at, quantity FROM events WHERE environment_id = ? "
        "AND company_id = ? AND type = 'track' AND status = 'processed' AND subtype IS NOT NULL",
        (environment_id, company_id),
    )
    for subtype, captured_at, quantity in cursor:
        start = to_micros(periods.billing_start(from_micros(captured_at), anchor_at))
        total = totals.setdefault((subtype, start), [0, 0])
        total[0] += quantity
        total[1] += 1
    conn.executemany(
        "INSERT INTO usage_counters (environment_id, company_id, subtype, period, period_start, "
        "quantity, events) VALUES (?,?,?,?,?,?,?)",
        [
            (environment_id, company_id, subtype, periods.BILLING, start, qty, count)
            for (subtype, start), (qty, count) in totals.items()
        ],
    )


class SqliteEntities:
    if TYPE_CHECKING:
        _writer: WriterThread
        _clock: Clock

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        def _now(self) -> int: ...

    async def _write(self, fn: Callable[[sqlite3.Connection, int], T]) -> T:
        def run(conn: sqlite3.Connection) -> T:
            return fn(conn, self._now())

        result: T = await self._writer.call(run)
        return result

    # -- companies ------------------------------------------------------------
    async def upsert_company(self, environment_id: str, change: EntityUpsert) -> Company:
        def run(conn: sqlite3.Connection, now: int) -> Company:
            company_id = _upsert(conn, "company", environment_id, change, now)
            company = rows.company_by_id(conn, environment_id, company_id, self._clock.now())
            assert company is not None
            return company

        return await self._write(run)

    async def get_company(self, environment_id: str, company_id: str) -> Company | None:
        return await self._read(
            lambda conn: rows.company_by_id(conn, environment_id, company_id, self._clock.now())
        )

    async def lookup_company(self, environment_id: str, keys: Mapping[str, str]) -> Company | None:
        def run(conn: sqlite3.Connection) -> Company | None:
            company_id = rows.find_one(conn, "company", environment_id, keys)
            if company_id is None:
                return None
            return rows.company_by_id(conn, environment_id, company_id, self._clock.now())

        return await self._read(run)

    async def list_companies(self, environment_id: str, where: EntityFilter) -> list[Company]:
        clause, args = _filter("company", environment_id, where)
        sql = (
            f"SELECT {rows.COMPANY_COLUMNS} FROM companies e WHERE {clause} "
            f"ORDER BY {_order(where)} LIMIT ? OFFSET ?"
        )
        return await self._read(
            lambda conn: rows.load_companies(
                conn,
                conn.execute(sql, (*args, where.limit, where.offset)).fetchall(),
                self._clock.now(),
            )
        )

    async def count_companies(self, environment_id: str, where: EntityFilter) -> int:
        clause, args = _filter("company", environment_id, where)
        sql = f"SELECT COUNT(*) FROM companies e WHERE {clause}"
        return await self._read(lambda conn: int(conn.execute(sql, args).fetchone()[0]))

    async def delete_company(self, environment_id: str, company_id: str) -> Company | None:
        def run(conn: sqlite3.Connection, now: int) -> Company | None:
            company = rows.company_by_id(conn, environment_id, company_id, self._clock.now())
            if company is not None:
                _delete(conn, "company", company.id)
            return company

        return await self._write(run)

    async def delete_company_by_keys(
        self, environment_id: str, keys: Mapping[str, str]
    ) -> Company | None:
        def run(conn: sqlite3.Connection, now: int) -> Company | None:
            company_id = rows.find_one(conn, "company", environment_id, keys)
            if company_id is None:
                return None
            company = rows.company_by_id(conn, environment_id, company_id, self._clock.now())
            _delete(conn, "company", company_id)
            return company

        return await self._write(run)

    async def upsert_company_trait(self, environment_id: str, change: TraitChange) -> Company:
        def run(conn: sqlite3.Connection, now: int) -> Company:
            company_id = _trait(conn, "company", environment_id, change, now)
            company = rows.company_by_id(conn, environment_id, company_id, self._clock.now())
            assert company is not None
            return company

        return await self._write(run)

    async def set_billing_anchor(
        self, environment_id: str | None, keys: Mapping[str, str], anchor: int | None
    ) -> Company:
        def run(conn: sqlite3.Connection, now: int) -> Company:
            if environment_id is not None:
                envs = [environment_id]
            else:
                envs = [r[0] for r in conn.execute("SELECT id FROM environments ORDER BY id")]
            found = [
                (env, company_id)
                for env in envs
                if (company_id := rows.find_one(conn, "company", env, keys)) is not None
            ]
            if not found:
                raise NotFound(f"no company has the keys {dict(keys)}")
            if len(found) > 1:
                shown = ", ".join(f"{c} in {e}" for e, c in found)
                raise Invalid(
                    f"the keys {dict(keys)} match companies in {len(found)} environments "
                    f"({shown}); name the environment"
                )
            env, company_id = found[0]
            conn.execute(
                "UPDATE companies SET billing_anchor = ?, updated_at = ? WHERE id = ?",
                (anchor, now, company_id),
            )
            recount_billing(conn, env, company_id, anchor)
            company = rows.company_by_id(conn, env, company_id, self._clock.now())
            assert company is not None
            return company

        return await self._write(run)

    # -- users --------------------------------------------------------------
    async def upsert_user(self, environment_id: str, change: EntityUpsert) -> User:
        def run(conn: sqlite3.Connection, now: int) -> User:
            user_id = _upsert(conn, "user", environment_id, change, now)
            user = rows.user_by_id(conn, environment_id, user_id)
            assert user is not None
            return user

        return await self._write(run)

    async def get_user(self, environment_id: str, user_id: str) -> User | None:
        return await self._read(lambda conn: rows.user_by_id(conn, environment_id, user_id))

    async def lookup_user(self, environment_id: str, keys: Mapping[str, str]) -> User | None:
        def run(conn: sqlite3.Connection) -> User | None:
            user_id = rows.find_one(conn, "user", environment_id, keys)
            return rows.user_by_id(conn, environment_id, user_id) if user_id else None

        return await self._read(run)

    async def list_users(self, environment_id: str, where: EntityFilter) -> list[User]:
        clause, args = _filter("user", environment_id, where)
        sql = (
            f"SELECT {rows.USER_COLUMNS} FROM users e WHERE {clause} "
            f"ORDER BY {_order(where)} LIMIT ? OFFSET ?"
        )
        return await self._read(
            lambda conn: rows.load_users(
                conn, conn.execute(sql, (*args, where.limit, where.offset)).fetchall()
            )
        )

    async def count_users(self, environment_id: str, where: EntityFilter) -> int:
        clause, args = _filter("user", environment_id, where)
        sql = f"SELECT COUNT(*) FROM users e WHERE {clause}"
        return await self._read(lambda conn: int(conn.execute(sql, args).fetchone()[0]))

    async def delete_user(self, environment_id: str, user_id: str) -> User | None:
        def run(conn: sqlite3.Connection, now: int) -> User | None:
            user = rows.user_by_id(conn, environment_id, user_id)
            if user is not None:
                _delete(conn, "user", user.id)
            return user

        return await self._write(run)

    async def delete_user_by_keys(
        self, environment_id: str, keys: Mapping[str, str]
    ) -> User | None:
        def run(conn: sqlite3.Connection, now: int) -> User | None:
            user_id = rows.find_one(conn, "user", environment_id, keys)
            if user_id is None:
                return None
            user = rows.user_by_id(conn, environment_id, user_id)
            _delete(conn, "user", user_id)
            return user

        return await self._write(run)

    async def upsert_user_trait(self, environment_id: str, change: TraitChange) -> User:
        def run(conn: sqlite3.Connection, now: int) -> User:
            user_id = _trait(conn, "user", environment_id, change, now)
            user = rows.user_by_id(conn, environment_id, user_id)
            assert user is not None
            return user

        return await self._write(run)

    # -- memberships ----------------------------------------------------------
    async def list_memberships(
        self,
        environment_id: str,
        company_id: str | None,
        user_id: str | None,
        limit: int,
        offset: int,
    ) -> list[Membership]:
        return await self._read(
            lambda conn: rows.list_memberships(
                conn, environment_id, company_id, user_id, limit, offset
            )
        )

    async def get_or_create_membership(
        self, environment_id: str, company_id: str, user_id: str
    ) -> Membership:
        def run(conn: sqlite3.Connection, now: int) -> Membership:
            if not rows.exists(conn, "company", environment_id, company_id):
                raise NotFound(f"company {company_id[:64]!r} was not found in this environment")
            if not rows.exists(conn, "user", environment_id, user_id):
                raise NotFound(f"user {user_id[:64]!r} was not found in this environment")
            membership_id = _ensure_membership(conn, environment_id, company_id, user_id, now)
            membership = rows.membership_by_id(conn, membership_id)
            assert membership is not None
            return membership

        return await self._write(run)

    async def delete_membership(self, environment_id: str, membership_id: str) -> bool:
        def run(conn: sqlite3.Connection, now: int) -> bool:
            cursor = conn.execute(
                "DELETE FROM memberships WHERE id = ? AND environment_id = ?",
                (membership_id, environment_id),
            )
            return cursor.rowcount > 0

        return await self._write(run)
