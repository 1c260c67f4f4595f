"""The console's sessions and reads (``base_console.ConsoleStore``), in SQL
that runs unchanged on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tally import ids
from tally.model import EventFilter
from tally.storage.base_console import (
    ConsoleSession,
    DailyCount,
    EventTypeStats,
    FailedGroup,
    LimitFiring,
    MeterRecord,
    PipelineHealth,
)
from tally.storage.sql_backlog import pending_backlog

if TYPE_CHECKING:
    from tally.model import ApiKey
    from tally.storage.sqlite_writer import WriterThread

T = TypeVar("T")
Conn = Any
DAY_US = 86_400_000_000


# ``environment_id`` as an expression no index covers: with it, a count of
# pending events walks the small pending index (events_pending) instead of
# every event of the environment (both SQLite and PostgreSQL pick it then)
_ENV_BY_STATUS = "environment_id || '' = ?"


def _conditions(environment_id: str, where: EventFilter) -> tuple[list[str], list[Any]]:
    from tally.storage.sql_storage import event_conditions

    return event_conditions(environment_id, where)


def _count(conn: Conn, clauses: list[str], args: list[Any]) -> int:
    sql = f"SELECT COUNT(*) FROM events WHERE {' AND '.join(clauses)}"
    return int(conn.execute(sql, args).fetchone()[0])


def _pending(clauses: list[str], where: EventFilter) -> list[str]:
    """``clauses`` of pending events, walking the pending index unless a
    filter has a better one (company, user, subtype, …)."""
    narrowed = any(
        (where.company_id, where.user_id, where.flag_id, where.event_subtype, where.idempotency_key)
    )
    head = clauses[0] if narrowed else _ENV_BY_STATUS
    return [head, *clauses[1:], "status = 'pending'"]


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {status: n for status, n in counts.items() if n}


class SqlConsole:
    if TYPE_CHECKING:
        _writer: WriterThread

        async def _read(self, fn: Callable[[Conn], T]) -> T: ...

        def _now(self) -> int: ...

    # -- sessions -----------------------------------------------------------
    async def create_console_session(
        self, token_hash: str, key_id: str, csrf_token: str, expires_at: int
    ) -> None:
        now = self._now()

        def run(conn: Conn) -> None:
            conn.execute("DELETE FROM console_sessions WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO console_sessions (token_hash, key_id, csrf_token, created_at, "
                "expires_at) VALUES (?,?,?,?,?)",
                (token_hash, key_id, csrf_token, now, expires_at),
            )

        await self._writer.call(run)

    async def find_console_session(self, token_hash: str, now: int) -> ConsoleSession | None:
        from tally.storage.sql_storage import KEY_COLUMNS, key_from_row

        def run(conn: Conn) -> ConsoleSession | None:
            row = conn.execute(
                f"SELECT s.csrf_token, s.expires_at, {KEY_COLUMNS} FROM console_sessions s "
                "JOIN api_keys k ON k.id = s.key_id JOIN environments e "
                "ON e.id = k.environment_id WHERE s.token_hash = ? AND s.expires_at > ? "
                "AND k.revoked_at IS NULL",
                (token_hash, now),
            ).fetchone()
            if row is None:
                return None
            key: ApiKey = key_from_row(row[2:])
            return ConsoleSession(key, row[0], row[1])

        return await self._read(run)

    async def delete_console_session(self, token_hash: str) -> None:
        def run(conn: Conn) -> None:
            conn.execute("DELETE FROM console_sessions WHERE token_hash = ?", (token_hash,))

        await self._writer.call(run)

    # -- events -------------------------------------------------------------
    async def count_events_by_status(
        self, environment_id: str, where: EventFilter
    ) -> dict[str, int]:
        clauses, args = _conditions(environment_id, where)

        def run(conn: Conn) -> dict[str, int]:
            if where.status is not None:
                return _nonzero({where.status: _count(conn, clauses, args)})
            total = _count(conn, clauses, args)
            failed = _count(conn, [*clauses, "status = 'failed'"], args)
            pending = _count(conn, _pending(clauses, where), args)
            return _nonzero(
                {"pending": pending, "processed": total - pending - failed, "failed": failed}
            )

        return await self._read(run)

    async def failed_event_groups(
        self, environment_id: str, id_min: str | None, limit: int
    ) -> list[FailedGroup]:
        sql = (
            "SELECT COALESCE(error_message, ''), COUNT(*), MIN(id), MAX(id) FROM events "
            "WHERE environment_id = ? AND status = 'failed' AND id >= ? "
            "GROUP BY COALESCE(error_message, '') ORDER BY COUNT(*) DESC, MAX(id) DESC LIMIT ?"
        )
        args = (environment_id, id_min or "", limit)

        def run(conn: Conn) -> list[FailedGroup]:
            return [
                FailedGroup(row[0], int(row[1]), row[2], row[3])
                for row in conn.execute(sql, args).fetchall()
            ]

        return await self._read(run)

    async def event_type_stats(self, environment_id: str, limit: int) -> list[EventTypeStats]:
        # index-only (environment_id, subtype, id): first and last seen are
        # the receipt times the ids carry
        sql = (
            "SELECT subtype, COUNT(*), MIN(id), MAX(id) FROM events "
            "WHERE environment_id = ? AND subtype IS NOT NULL GROUP BY subtype "
            "ORDER BY subtype LIMIT ?"
        )

        def run(conn: Conn) -> list[EventTypeStats]:
            return [
                EventTypeStats(
                    row[0], int(row[1]), ids.made_at_micros(row[2]), ids.made_at_micros(row[3])
                )
                for row in conn.execute(sql, (environment_id, limit)).fetchall()
            ]

        return await self._read(run)

    async def daily_event_counts(self, environment_id: str, since: int) -> list[DailyCount]:
        sql = (
            f"SELECT subtype, captured_at / {DAY_US}, COUNT(*) FROM events "
            "WHERE environment_id = ? AND subtype IS NOT NULL AND captured_at >= ? "
            f"GROUP BY subtype, captured_at / {DAY_US} ORDER BY 1, 2"
        )

        def run(conn: Conn) -> list[DailyCount]:
            return [
                DailyCount(row[0], int(row[1]) * DAY_US, int(row[2]))
                for row in conn.execute(sql, (environment_id, since)).fetchall()
            ]

        return await self._read(run)

    # -- companies ----------------------------------------------------------
    async def company_daily_usage(
        self, environment_id: str, company_id: str, since: int
    ) -> list[DailyCount]:
        sql = (
            "SELECT subtype, period_start, quantity FROM usage_counters "
            "WHERE company_id = ? AND environment_id = ? AND period = 'day' "
            "AND period_start >= ? ORDER BY subtype, period_start"
        )

        def run(conn: Conn) -> list[DailyCount]:
            rows = conn.execute(sql, (company_id, environment_id, since)).fetchall()
            return [DailyCount(row[0], row[1], int(row[2])) for row in rows]

        return await self._read(run)

    async def company_limit_firings(
        self, environment_id: str, company_id: str, limit: int
    ) -> list[LimitFiring]:
        sql = (
            "SELECT feature_id, period, period_start, action, event_id, usage, created_at "
            "FROM limit_triggers WHERE company_id = ? AND environment_id = ? "
            "ORDER BY created_at DESC, action LIMIT ?"
        )

        def run(conn: Conn) -> list[LimitFiring]:
            rows = conn.execute(sql, (company_id, environment_id, limit)).fetchall()
            return [LimitFiring(*row) for row in rows]

        return await self._read(run)

    # -- deliveries and health ----------------------------------------------
    async def list_meter_records(self, environment_id: str, limit: int) -> list[MeterRecord]:
        sql = (
            "SELECT id, ref, payload, status, attempt_count, response_code, last_error, "
            "next_attempt_at, created_at FROM deliveries WHERE environment_id = ? "
            "AND kind = 'billing' ORDER BY created_at DESC, id DESC LIMIT ?"
        )

        def run(conn: Conn) -> list[MeterRecord]:
            rows = conn.execute(sql, (environment_id, limit)).fetchall()
            return [
                MeterRecord(*row[:7], row[7] if row[3] == "pending" else None, row[8])
                for row in rows
            ]

        return await self._read(run)

    async def pipeline_health(self, environment_id: str, since: int) -> PipelineHealth:
        id_min = ids.first_id_at("evt", since)

        def run(conn: Conn) -> PipelineHealth:
            backlog = pending_backlog(conn, environment_id=environment_id)
            window = ["environment_id = ?", "id >= ?"]
            args = [environment_id, id_min]
            received = _count(conn, window, args)
            failed = _count(conn, [*window, "status = 'failed'"], args)
            waiting_now = _count(conn, _pending(window, EventFilter()), args)
            waiting = conn.execute(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND environment_id = ?",
                (environment_id,),
            ).fetchone()[0]
            settled = dict(
                conn.execute(
                    "SELECT status, COUNT(*) FROM deliveries WHERE environment_id = ? "
                    "AND finished_at >= ? GROUP BY status",
                    (environment_id, since),
                ).fetchall()
            )
            return PipelineHealth(
                pending=backlog.count,
                oldest_pending_at=backlog.oldest_loaded_at,
                received=received,
                processed=received - failed - waiting_now,
                failed=failed,
                deliveries_pending=int(waiting),
                deliveries_failed=int(settled.get("failure", 0)),
                deliveries_succeeded=int(settled.get("success", 0)),
            )

        return await self._read(run)
