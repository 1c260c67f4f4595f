"""Pruning on SQL (a mixin of ``SqlStorage``; portable SQL): one chunk of
one kind of row per call and per transaction, so that a prune never holds
the write lock (SQLite) or many row locks (PostgreSQL) for long. What is old
enough is ``tally.retention.policy``'s to say; the loop is
``tally.retention.loop``.

Each chunk picks the rows first (``FOR UPDATE SKIP LOCKED`` on PostgreSQL:
a row another transaction holds waits for the next pass), then deletes
exactly those, so a transaction never deletes more than ``limit`` of them:

- events: the oldest by id (ids encode when they were stored, so the
  primary key finds them with no index on ``loaded_at``), also ``loaded_at``
  before the cutoff and never ``pending``;
- deliveries: finished before the cutoff (the ``deliveries_finished``
  index), with their attempts and the webhook notices no delivery sends any
  more (``deliveries_notice``); a billing meter record that was given up is
  kept;
- limit triggers: by period kind and start (``limit_triggers_period``).

Calls run on the delivery connection: on SQLite that is the one writer, so a
chunk queues between ingest commits like any write; on PostgreSQL a
connection of its own, so a chunk never waits behind processing or ingest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tally import ids
from tally.retention.policy import DELIVERIES, EVENTS, LIMIT_TRIGGERS, Cutoffs, Pruned
from tally.storage.sql import chunks, in_list

T = TypeVar("T")
Conn = Any

_EVENTS_WHERE = "id < ? AND loaded_at < ? AND status != 'pending'"
_DELIVERIES_WHERE = (
    "{d}finished_at < ? AND {d}status != 'pending' "
    "AND NOT ({d}kind = 'billing' AND {d}status = 'failure')"
)
_TRIGGERS_WHERE = "period = ? AND period_start < ?"


def _event_args(cut: Cutoffs) -> tuple[str, int]:
    before = cut.events_loaded_before
    assert before is not None, "events are kept forever: nothing to prune"
    return ids.first_id_at("evt", before), before


Resume = tuple[Any, ...] | None


def prune_events(conn: Conn, cut: Cutoffs, limit: int, after: Resume, suffix: str = "") -> Pruned:
    since, resume = ("", ()) if after is None else (" AND id > ?", after)
    rows = conn.execute(
        f"SELECT id FROM events WHERE {_EVENTS_WHERE}{since} ORDER BY id LIMIT ?{suffix}",
        (*_event_args(cut), *resume, limit),
    ).fetchall()
    picked = [row[0] for row in rows]
    for part in chunks(picked):
        clause, args = in_list("id", part)
        conn.execute(f"DELETE FROM events WHERE {clause}", args)
        # the console's count of duplicates dropped against them goes with them
        conn.execute(
            f"DELETE FROM event_duplicates WHERE {clause.replace('id', 'event_id', 1)}", args
        )
    return Pruned(len(picked), (picked[-1],) if picked else after)


def prune_deliveries(
    conn: Conn, cut: Cutoffs, limit: int, after: Resume, suffix: str = ""
) -> Pruned:
    since, resume = ("", ()) if after is None else (" AND (finished_at, id) > (?, ?)", after)
    rows = conn.execute(
        f"SELECT id, notice_id, finished_at FROM deliveries "
        f"WHERE {_DELIVERIES_WHERE.format(d='')}{since} "
        f"ORDER BY finished_at, id LIMIT ?{suffix}",
        (cut.deliveries_finished_before, *resume, limit),
    ).fetchall()
    picked = sorted(row[0] for row in rows)
    for part in chunks(picked):
        clause, args = in_list("delivery_id", part)
        conn.execute(f"DELETE FROM delivery_attempts WHERE {clause}", args)
        clause, args = in_list("id", part)
        conn.execute(f"DELETE FROM deliveries WHERE {clause}", args)
    # a notice is the payload its deliveries send: it goes with the last one
    # (all of a notice's deliveries are made with it, in one transaction)
    for part in chunks(sorted({row[1] for row in rows if row[1] is not None})):
        clause, args = in_list("id", part)
        conn.execute(
            f"DELETE FROM webhook_notices WHERE {clause} AND NOT EXISTS "
            "(SELECT 1 FROM deliveries d WHERE d.notice_id = webhook_notices.id)",
            args,
        )
    return Pruned(len(picked), (rows[-1][2], rows[-1][0]) if rows else after)


def prune_limit_triggers(
    conn: Conn, cut: Cutoffs, limit: int, after: Resume, suffix: str = ""
) -> Pruned:
    removed = 0
    for kind, before in cut.triggers_started_before:
        if removed >= limit:
            break
        rows = conn.execute(
            "SELECT company_id, feature_id, period_start, action FROM limit_triggers "
            f"WHERE {_TRIGGERS_WHERE} ORDER BY period_start LIMIT ?{suffix}",
            (kind, before, limit - removed),
        ).fetchall()
        conn.executemany(
            "DELETE FROM limit_triggers WHERE company_id = ? AND feature_id = ? "
            "AND period = ? AND period_start = ? AND action = ?",
            [(company, feature, kind, start, action) for company, feature, start, action in rows],
        )
        removed += len(rows)
    return Pruned(removed)  # few rows: each chunk starts from the beginning


_PRUNERS: dict[str, Callable[[Conn, Cutoffs, int, Resume, str], Pruned]] = {
    EVENTS: prune_events,
    DELIVERIES: prune_deliveries,
    LIMIT_TRIGGERS: prune_limit_triggers,
}


def count_prunable(conn: Conn, cut: Cutoffs) -> dict[str, int]:
    """How many rows of each kind the cutoffs let go (``tally prune --dry-run``)."""

    def count(sql: str, args: tuple[Any, ...]) -> int:
        return int(conn.execute(sql, args).fetchone()[0])

    finished = (cut.deliveries_finished_before,)
    out = {
        DELIVERIES: count(
            f"SELECT COUNT(*) FROM deliveries WHERE {_DELIVERIES_WHERE.format(d='')}", finished
        ),
        "delivery_attempts": count(
            "SELECT COUNT(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id "
            f"WHERE {_DELIVERIES_WHERE.format(d='d.')}",
            finished,
        ),
        LIMIT_TRIGGERS: sum(
            count(f"SELECT COUNT(*) FROM limit_triggers WHERE {_TRIGGERS_WHERE}", pair)
            for pair in cut.triggers_started_before
        ),
    }
    if cut.events_loaded_before is not None:
        out[EVENTS] = count(f"SELECT COUNT(*) FROM events WHERE {_EVENTS_WHERE}", _event_args(cut))
    return out


class SqlRetention:
    claim_suffix = ""  # PostgreSQL: " FOR UPDATE SKIP LOCKED"
    # statements that open each prune transaction: on PostgreSQL, index
    # access only. A chunk names at most 1,000 rows by key, and the planner
    # sometimes prefers a sequential scan of the whole table for an IN list
    # of 500 (measured: delivery_attempts at 30K rows), which grows with it
    prune_setup: tuple[str, ...] = ()

    if TYPE_CHECKING:

        def _delivery_call(self, fn: Callable[[Conn], T]) -> Awaitable[T]: ...

        def _read(self, fn: Callable[[Conn], T]) -> Awaitable[T]: ...

    async def prune_chunk(
        self, kind: str, cutoffs: Cutoffs, limit: int, after: Resume = None
    ) -> Pruned:
        prune = _PRUNERS[kind]
        suffix, setup = self.claim_suffix, self.prune_setup

        def run(conn: Conn) -> Pruned:
            for statement in setup:
                conn.execute(statement)
            return prune(conn, cutoffs, limit, after, suffix)

        return await self._delivery_call(run)

    async def count_prunable(self, cutoffs: Cutoffs) -> dict[str, int]:
        return await self._read(lambda conn: count_prunable(conn, cutoffs))

    async def vacuum_dead_rows(self) -> list[str]:
        """SQLite has nothing to do: a DELETE or an UPDATE takes the old
        entries out of every index at once (no dead rows, no vacuum)."""
        return []
