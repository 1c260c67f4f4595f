"""The console's sessions and reads (``base_console.ConsoleStore``), in SQL
that runs unchanged on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tally import ids
from tally.model import EventFilter
from tally.storage.base_console import (
    CompanyFiring,
    ConsoleSession,
    DailyCount,
    DuplicatesDropped,
    EventTypeStats,
    FailedGroup,
    LimitFiring,
    MeterRecord,
    PipelineHealth,
    UserDay,
)
from tally.storage.sql import summaries as sql_summaries
from tally.storage.sql.backlog import pending_backlog

if TYPE_CHECKING:
    from tally.model import ApiKey
    from tally.storage.sql.writer import WriterThread

T = TypeVar("T")
Conn = Any
DAY_US = 86_400_000_000


# ``environment_id`` as an expression no index covers: with it, a count of
# pending events walks the small pending index (events_pending) instead of
# every event of the environment (both SQLite and PostgreSQL pick it then)
_ENV_BY_STATUS = "environment_id || '' = ?"


def _conditions(environment_id: str, where: EventFilter) -> tuple[list[str], list[Any]]:
    from tally.storage.sql.storage import event_conditions

    return event_conditions(environment_id, where)


def _count(conn: Conn, clauses: list[str], args: list[Any]) -> int:
    sql = f"SELECT COUNT(*) FROM events WHERE {' AND '.join(clauses)}"
    return int(conn.execute(sql, args).fetchone()[0])


_FILTER_COLUMNS = ("company_id", "user_id", "flag_id", "subtype", "idempotency_key")


def _unindexed(clauses: list[str]) -> list[str]:
    """``clauses`` with the filter columns' comparisons written as expressions
    no index covers, so that a count of one status walks that status's small
    partial index (failed: ``events_failed``; pending: ``events_pending``)
    over the id range instead of every event the filter's index holds."""
    unindexed = {f"{column} = ?": f"{column} || '' = ?" for column in _FILTER_COLUMNS}
    return [unindexed.get(clause, clause) for clause in clauses]


def _failed(clauses: list[str]) -> list[str]:
    return [*_unindexed(clauses), "status = 'failed'"]


def _pending(clauses: list[str]) -> list[str]:
    """``clauses`` of pending events, walking the pending index (its size is
    the processing backlog, not the history)."""
    return [_ENV_BY_STATUS, *_unindexed(clauses[1:]), "status = 'pending'"]


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
        from tally.storage.sql.storage import KEY_COLUMNS, key_from_row

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
            if sql_summaries.counts_whole_types(where):
                return _nonzero(sql_summaries.status_counts(conn, environment_id, where))
            if where.status is not None:
                return _nonzero({where.status: _count(conn, clauses, args)})
            total = _count(conn, clauses, args)
            failed = _count(conn, _failed(clauses), args)
            pending = _count(conn, _pending(clauses), args)
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
        # the summaries and the pending backlog (``sql_summaries``): first and
        # last seen are the receipt times the ids carry
        def run(conn: Conn) -> list[EventTypeStats]:
            found = sql_summaries.subtype_totals(conn, environment_id)
            return [
                EventTypeStats(
                    t.subtype,
                    t.processed + t.failed,
                    ids.made_at_micros(t.first_id or ""),
                    ids.made_at_micros(t.last_id or ""),
                )
                for t in (found[name] for name in sorted(found)[:limit])
            ]

        return await self._read(run)

    async def daily_event_counts(self, environment_id: str, since: int) -> list[DailyCount]:
        def run(conn: Conn) -> list[DailyCount]:
            counts = sql_summaries.daily_counts(conn, environment_id, since)
            return [DailyCount(name, day, n) for (name, day), n in sorted(counts.items())]

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
                MeterRecord(
                    rid,
                    event,
                    payload,
                    status,
                    attempts,
                    code,
                    error,
                    next_at if status == "pending" else None,
                    created,
                )
                for rid, event, payload, status, attempts, code, error, next_at, created in rows
            ]

        return await self._read(run)

    async def pipeline_health(self, environment_id: str, since: int) -> PipelineHealth:
        id_min = ids.first_id_at("evt", since)

        def run(conn: Conn) -> PipelineHealth:
            backlog = pending_backlog(conn, environment_id=environment_id)
            window = ["environment_id = ?", "id >= ?"]
            args = [environment_id, id_min]
            received = _count(conn, window, args)
            failed = _count(conn, _failed(window), args)
            waiting_now = _count(conn, _pending(window), args)
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

    async def duplicates_dropped(
        self, environment_id: str, event_id: str
    ) -> DuplicatesDropped | None:
        sql = (
            "SELECT duplicates, last_duplicate_at FROM event_duplicates "
            "WHERE event_id = ? AND environment_id = ?"
        )

        def run(conn: Conn) -> DuplicatesDropped | None:
            row = conn.execute(sql, (event_id, environment_id)).fetchone()
            return None if row is None else DuplicatesDropped(int(row[0]), int(row[1]))

        return await self._read(run)

    # -- users --------------------------------------------------------------
    async def user_daily_activity(
        self, environment_id: str, user_id: str, since: int, most: int
    ) -> list[UserDay]:
        # the newest ``most`` of the user's events (events_user), at most
        sql = (
            f"SELECT subtype, captured_at / {DAY_US}, COUNT(*), SUM(quantity) FROM "
            "(SELECT subtype, captured_at, quantity, status, type FROM events "
            "WHERE user_id = ? AND environment_id = ? AND id >= ? ORDER BY id DESC LIMIT ?) "
            "AS recent WHERE type = 'track' AND status != 'failed' AND subtype IS NOT NULL "
            f"GROUP BY subtype, captured_at / {DAY_US} ORDER BY 1, 2"
        )
        args = (user_id, environment_id, ids.first_id_at("evt", since), most)

        def run(conn: Conn) -> list[UserDay]:
            return [
                UserDay(row[0], int(row[1]) * DAY_US, int(row[2]), int(row[3]))
                for row in conn.execute(sql, args).fetchall()
            ]

        return await self._read(run)

    async def firings_of_companies(
        self, environment_id: str, company_ids: list[str], user_id: str, limit: int
    ) -> list[CompanyFiring]:
        if not company_ids:
            return []
        marks = ",".join("?" * len(company_ids))
        sql = (
            "SELECT t.company_id, t.feature_id, t.period, t.period_start, t.action, "
            "t.event_id, t.usage, t.created_at, e.user_id FROM limit_triggers t "
            "LEFT JOIN events e ON e.id = t.event_id "
            f"WHERE t.company_id IN ({marks}) AND t.environment_id = ? "
            "ORDER BY t.created_at DESC, t.action LIMIT ?"
        )
        args = (*company_ids, environment_id, limit)

        def run(conn: Conn) -> list[CompanyFiring]:
            return [
                CompanyFiring(row[0], LimitFiring(*row[1:8]), row[8] == user_id)
                for row in conn.execute(sql, args).fetchall()
            ]

        return await self._read(run)
