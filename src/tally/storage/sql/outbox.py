"""The delivery queue on SQL (a mixin of ``SqlStorage``; portable SQL):
leased claims, attempt outcomes and the auto-disabling of failing
endpoints; the expansion of the outbox is ``fanout``.

Every call runs in one transaction on the delivery connection (on SQLite the
one writer; on PostgreSQL a connection of its own, so deliveries never queue
behind processing batches). Claims are safe with several delivery loops:
rows are picked with ``SKIP LOCKED`` on PostgreSQL, and a claim is a lease
(``lease_until``) plus the attempt number, so only the loop holding the
current attempt settles a delivery.

Writes are kept few, since on SQLite they share one lock with processing: a
claim updates the delivery row only; the outcome updates it and logs the
attempt in one row. An attempt cut short (its loop died) is
logged as ``interrupted`` when its delivery is claimed again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tally.effects.endpoints import AUTO_DISABLE_WINDOW_US, should_disable
from tally.effects.records import (
    FAILURE,
    INTERRUPTED,
    PENDING,
    SUCCESS,
    SUPERSEDED,
    AttemptResult,
    ClaimedDelivery,
)
from tally.storage.sql import chunks, in_list
from tally.storage.sql.fanout import SqlFanOut

T = TypeVar("T")
Conn = Any

# Picked first, then leased: an ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR
# UPDATE SKIP LOCKED)`` may run its subquery more than once on PostgreSQL and
# lease more than ``n`` rows.
_PICK = (
    "SELECT d.id, d.attempt_count, d.lease_until, d.leased_at FROM deliveries d "
    "WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND d.lease_until <= ? AND {kinds} "
    "AND (d.webhook_id IS NULL OR d.webhook_id IN "
    "(SELECT w.id FROM webhooks w WHERE w.status = 'active')) "
    "ORDER BY d.next_attempt_at, d.id LIMIT ?{suffix}"
)
_LEASE = (
    "UPDATE deliveries SET lease_until = ?, leased_at = ?, attempt_count = attempt_count + 1 "
    "WHERE {picked} AND status = 'pending' AND lease_until <= ? "
    "RETURNING id, kind, environment_id, webhook_id, notice_id, ref, request_type, payload, "
    "attempt_count"
)
_SETTLE = (
    "UPDATE deliveries SET status = ?, response_code = ?, last_error = ?, next_attempt_at = ?, "
    "sent_at = COALESCE(?, sent_at), finished_at = ?, lease_until = 0, updated_at = ? "
    "WHERE id = ? AND attempt_count = ? AND status = 'pending'"
)
_LOG_ATTEMPT = (
    "INSERT INTO delivery_attempts (delivery_id, number, started_at, finished_at, outcome, "
    "response_code, error) VALUES (?,?,?,?,?,?,?) ON CONFLICT (delivery_id, number) DO UPDATE "
    "SET finished_at = excluded.finished_at, outcome = excluded.outcome, "
    "response_code = excluded.response_code, error = excluded.error"
)


def _work_due(conn: Conn, now: int, kinds: str) -> bool:
    """Whether a claim may find anything: an outbox row, or a delivery due of
    the kinds it claims (meter records waiting for a sink are not work)."""
    if conn.execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is not None:
        return True
    row = conn.execute(
        "SELECT 1 FROM deliveries d WHERE d.status = 'pending' AND d.next_attempt_at <= ? "
        f"AND d.lease_until <= ? AND {kinds} LIMIT 1",
        (now, now),
    ).fetchone()
    return row is not None


class SqlOutbox(SqlFanOut):
    pick_setup: tuple[str, ...] = ()  # statements around the pick of due deliveries
    pick_teardown: tuple[str, ...] = ()

    if TYPE_CHECKING:

        def _delivery_call(self, fn: Callable[[Conn], T]) -> Awaitable[T]: ...

        def _read(self, fn: Callable[[Conn], T]) -> Awaitable[T]: ...

    # -- claims -------------------------------------------------------------
    async def claim_deliveries(
        self, now: int, limit: int, lease_us: int, *, billing: bool
    ) -> list[ClaimedDelivery]:
        kinds = "d.kind IN ('webhook', 'billing')" if billing else "d.kind = 'webhook'"
        pick = _PICK.format(kinds=kinds, suffix=self.claim_suffix)
        if limit > 0 and not await self._read(lambda conn: _work_due(conn, now, kinds)):
            return []  # an idle poll costs a read, not a write transaction

        def run(conn: Conn) -> list[ClaimedDelivery]:
            if limit <= 0:  # expand everything, claim nothing
                while self._expand(conn, now):
                    pass
                return []
            self._expand(conn, now)  # a bounded share per call: short transactions
            for statement in self.pick_setup:
                conn.execute(statement)
            picked = conn.execute(pick, (now, now, limit)).fetchall()
            for statement in self.pick_teardown:
                conn.execute(statement)
            if not picked:
                return []
            # a lease that ran out: its loop died mid-attempt
            interrupted = [
                (r[0], r[1], r[3] if r[3] is not None else now, now, INTERRUPTED, None, None)
                for r in picked
                if r[2] > 0 and r[1] > 0
            ]
            if interrupted:
                conn.executemany(
                    "INSERT INTO delivery_attempts (delivery_id, number, started_at, "
                    "finished_at, outcome, response_code, error) VALUES (?,?,?,?,?,?,?) "
                    "ON CONFLICT (delivery_id, number) DO NOTHING",
                    interrupted,
                )
            clause, args = in_list("id", [r[0] for r in picked])
            rows = conn.execute(
                _LEASE.format(picked=clause), (now + lease_us, now, *args, now)
            ).fetchall()
            return self._claimed(conn, sorted(rows, key=lambda r: r[0]))

        return await self._delivery_call(run)

    def _claimed(self, conn: Conn, rows: list[Any]) -> list[ClaimedDelivery]:
        hooks: dict[str, tuple[str, str]] = {}
        for part in chunks(sorted({r[3] for r in rows if r[3] is not None})):
            clause, args = in_list("id", part)
            for hook_id, url, secret in conn.execute(
                f"SELECT id, url, secret FROM webhooks WHERE {clause}", args
            ).fetchall():
                hooks[hook_id] = (url, secret)
        payloads: dict[str, str] = {}
        for part in chunks(sorted({r[4] for r in rows if r[4] is not None})):
            clause, args = in_list("id", part)
            payloads.update(
                conn.execute(
                    f"SELECT id, payload FROM webhook_notices WHERE {clause}", args
                ).fetchall()
            )
        out = []
        for r in rows:
            url, secret = hooks.get(r[3], (None, None)) if r[3] else (None, None)
            payload = r[7] if r[7] is not None else payloads.get(r[4], "") or ""
            out.append(
                ClaimedDelivery(
                    id=r[0],
                    kind=r[1],
                    environment_id=r[2],
                    webhook_id=r[3],
                    url=url,
                    secret=secret,
                    request_type=r[6],
                    ref=r[5],
                    payload=payload.encode(),
                    attempt=int(r[8]),
                )
            )
        return out

    # -- outcomes -----------------------------------------------------------
    async def record_attempts(self, results: Sequence[AttemptResult], now: int) -> list[str]:
        def run(conn: Conn) -> list[str]:
            ordered = sorted(results, key=lambda x: x.delivery_id)
            # which attempts are still current: locked here (PostgreSQL); a row
            # another loop holds is being claimed again, so ours was superseded
            current: dict[str, tuple[int, str, str | None]] = {}
            for part in chunks([r.delivery_id for r in ordered]):
                clause, args = in_list("id", part)
                for delivery_id, attempts, status, hook_id in conn.execute(
                    "SELECT id, attempt_count, status, webhook_id FROM deliveries "
                    f"WHERE {clause} ORDER BY id{self.claim_suffix}",
                    args,
                ).fetchall():
                    current[delivery_id] = (int(attempts), status, hook_id)
            settled: list[tuple[Any, ...]] = []
            logged: list[tuple[Any, ...]] = []
            failed_hooks: set[str] = set()
            for r in ordered:
                attempts, status, hook_id = current.get(r.delivery_id, (-1, "", None))
                won = attempts == r.attempt and status == PENDING
                if won:
                    if r.ok:
                        new_status, retry_at, finished = SUCCESS, 0, r.finished_at
                    elif r.retry_at is not None:
                        new_status, retry_at, finished = PENDING, r.retry_at, None
                    else:
                        new_status, retry_at, finished = FAILURE, 0, r.finished_at
                        if hook_id is not None:
                            failed_hooks.add(hook_id)
                    settled.append(
                        (
                            new_status,
                            r.response_code,
                            None if r.ok else r.error,
                            retry_at,
                            r.finished_at if r.ok else None,
                            finished,
                            now,
                            r.delivery_id,
                            r.attempt,
                        )
                    )
                outcome = (SUCCESS if r.ok else FAILURE) if won else SUPERSEDED
                logged.append(
                    (
                        r.delivery_id,
                        r.attempt,
                        r.started_at,
                        r.finished_at,
                        outcome,
                        r.response_code,
                        r.error,
                    )
                )
            conn.executemany(_SETTLE, settled)
            conn.executemany(_LOG_ATTEMPT, logged)
            return self._disable_failing(conn, sorted(failed_hooks), now)

        return await self._delivery_call(run)

    def _disable_failing(self, conn: Conn, hook_ids: list[str], now: int) -> list[str]:
        disabled = []
        for hook_id in hook_ids:
            row = conn.execute(
                "SELECT enabled_at FROM webhooks WHERE id = ? AND status = 'active'", (hook_id,)
            ).fetchone()
            if row is None:
                continue
            since = max(now - AUTO_DISABLE_WINDOW_US, int(row[0]))
            finished, failed = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status = ? THEN 1 ELSE 0 END), 0) "
                "FROM deliveries WHERE webhook_id = ? AND finished_at >= ? AND status != ?",
                (FAILURE, hook_id, since, PENDING),
            ).fetchone()
            if should_disable(int(finished), int(failed)):
                conn.execute(
                    "UPDATE webhooks SET status = 'inactive', status_reason = ?, updated_at = ? "
                    "WHERE id = ?",
                    (
                        f"switched off: {failed} of its last {finished} deliveries failed "
                        "within 24 hours",
                        now,
                        hook_id,
                    ),
                )
                disabled.append(hook_id)
        return disabled

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        def run(conn: Conn) -> dict[tuple[str, str], int]:
            out = {
                (kind, status): int(n)
                for kind, status, n in conn.execute(
                    "SELECT kind, status, COUNT(*) FROM deliveries GROUP BY kind, status"
                ).fetchall()
            }
            out[("outbox", PENDING)] = int(
                conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            )
            return out

        return await self._delivery_call(run)
