"""``EntityStore`` on SQL — a mixin of ``SqlStorage``, so SQLite and
PostgreSQL both run it (its SQL is portable, see ``tally.storage.sql``).

Methods use the host's ``self._writer.call(fn)`` for writes (``fn(conn)`` runs
in one transaction on the writer thread, so they serialize with ingestion and
the worker), ``await self._read(fn)`` for reads and ``self._now()`` for the
current time in µs. The SQL lives in ``entity_rows`` (reads) and
``entity_writes`` (writes).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from tally.clock import Clock
from tally.errors import Invalid, NotFound
from tally.storage.base_entities import (
    Company,
    EntityFilter,
    EntityUpsert,
    Membership,
    TraitChange,
    User,
)
from tally.storage.sql import entity_rows as rows
from tally.storage.sql import entity_writes as writes
from tally.storage.sql.batch import SqlUnitOfWork

if TYPE_CHECKING:
    from tally.storage.base_batch import Processing
    from tally.storage.sql.writer import WriterThread

T = TypeVar("T")


class SqlEntities:
    # upserts write as the worker does on this backend (PostgreSQL: ``PgUnitOfWork``)
    unit_of_work: type[SqlUnitOfWork] = SqlUnitOfWork

    if TYPE_CHECKING:
        _writer: WriterThread
        _clock: Clock

        @property
        def processing(self) -> Processing: ...

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        def _now(self) -> int: ...

    async def _write(self, fn: Callable[[sqlite3.Connection, int], T]) -> T:
        def run(conn: sqlite3.Connection) -> T:
            return fn(conn, self._now())

        return await self._writer.call(run)

    async def _upsert(self, fn: Callable[[SqlUnitOfWork, int], T]) -> T:
        """``fn(uow, now)`` as a ``_write``, again if it meets a concurrent
        write of the same entity (``writes.retrying``)."""

        def run(conn: sqlite3.Connection, now: int) -> T:
            uow = self.unit_of_work(conn)
            return writes.retrying(uow, lambda: fn(uow, now))

        return await self._write(run)

    # -- companies ------------------------------------------------------------
    async def upsert_company(self, environment_id: str, change: EntityUpsert) -> Company:
        def run(uow: SqlUnitOfWork, now: int) -> Company:
            company_id = writes.upsert(self.processing, uow, "company", environment_id, change, now)
            company = rows.company_by_id(uow.conn, environment_id, company_id, self._clock.now())
            assert company is not None
            return company

        return await self._upsert(run)

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
        clause, args = rows.entity_filter("company", environment_id, where)
        sql = rows.COMPANY_PAGE.format(clause=clause, order=rows.entity_order(where))
        return await self._read(
            lambda conn: rows.load_companies(
                conn,
                conn.execute(sql, (*args, where.limit, where.offset)).fetchall(),
                self._clock.now(),
            )
        )

    async def count_companies(self, environment_id: str, where: EntityFilter) -> int:
        clause, args = rows.entity_filter("company", environment_id, where)
        sql = f"SELECT COUNT(*) FROM companies e WHERE {clause}"
        return await self._read(lambda conn: int(conn.execute(sql, args).fetchone()[0]))

    async def delete_company(self, environment_id: str, company_id: str) -> Company | None:
        def run(conn: sqlite3.Connection, now: int) -> Company | None:
            company = rows.company_by_id(conn, environment_id, company_id, self._clock.now())
            if company is not None:
                writes.delete(conn, "company", company.id)
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
            writes.delete(conn, "company", company_id)
            return company

        return await self._write(run)

    async def upsert_company_trait(self, environment_id: str, change: TraitChange) -> Company:
        def run(uow: SqlUnitOfWork, now: int) -> Company:
            company_id = writes.trait(self.processing, uow, "company", environment_id, change, now)
            company = rows.company_by_id(uow.conn, environment_id, company_id, self._clock.now())
            assert company is not None
            return company

        return await self._upsert(run)

    async def set_billing_anchor(
        self, environment_id: str | None, keys: Mapping[str, str], anchor: int | None
    ) -> Company:
        def run(conn: sqlite3.Connection, now: int) -> Company:
            if environment_id is not None:
                envs = [environment_id]
            else:
                envs = [
                    r[0] for r in conn.execute("SELECT id FROM environments ORDER BY id").fetchall()
                ]
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
            writes.recount_billing(conn, env, company_id, anchor)
            company = rows.company_by_id(conn, env, company_id, self._clock.now())
            assert company is not None
            return company

        return await self._write(run)

    # -- users --------------------------------------------------------------
    async def upsert_user(self, environment_id: str, change: EntityUpsert) -> User:
        def run(uow: SqlUnitOfWork, now: int) -> User:
            user_id = writes.upsert(self.processing, uow, "user", environment_id, change, now)
            user = rows.user_by_id(uow.conn, environment_id, user_id)
            assert user is not None
            return user

        return await self._upsert(run)

    async def get_user(self, environment_id: str, user_id: str) -> User | None:
        return await self._read(lambda conn: rows.user_by_id(conn, environment_id, user_id))

    async def lookup_user(self, environment_id: str, keys: Mapping[str, str]) -> User | None:
        def run(conn: sqlite3.Connection) -> User | None:
            user_id = rows.find_one(conn, "user", environment_id, keys)
            return rows.user_by_id(conn, environment_id, user_id) if user_id else None

        return await self._read(run)

    async def list_users(self, environment_id: str, where: EntityFilter) -> list[User]:
        clause, args = rows.entity_filter("user", environment_id, where)
        sql = (
            f"SELECT {rows.USER_COLUMNS} FROM users e WHERE {clause} "
            f"ORDER BY {rows.entity_order(where)} LIMIT ? OFFSET ?"
        )
        return await self._read(
            lambda conn: rows.load_users(
                conn, conn.execute(sql, (*args, where.limit, where.offset)).fetchall()
            )
        )

    async def count_users(self, environment_id: str, where: EntityFilter) -> int:
        clause, args = rows.entity_filter("user", environment_id, where)
        sql = f"SELECT COUNT(*) FROM users e WHERE {clause}"
        return await self._read(lambda conn: int(conn.execute(sql, args).fetchone()[0]))

    async def delete_user(self, environment_id: str, user_id: str) -> User | None:
        def run(conn: sqlite3.Connection, now: int) -> User | None:
            user = rows.user_by_id(conn, environment_id, user_id)
            if user is not None:
                writes.delete(conn, "user", user.id)
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
            writes.delete(conn, "user", user_id)
            return user

        return await self._write(run)

    async def upsert_user_trait(self, environment_id: str, change: TraitChange) -> User:
        def run(uow: SqlUnitOfWork, now: int) -> User:
            user_id = writes.trait(self.processing, uow, "user", environment_id, change, now)
            user = rows.user_by_id(uow.conn, environment_id, user_id)
            assert user is not None
            return user

        return await self._upsert(run)

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
            membership_id = writes.ensure_membership(conn, environment_id, company_id, user_id, now)
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
