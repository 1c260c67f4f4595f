"""The delivery queue on SQL (a mixin of ``SqlStorage``; portable SQL):
expansion of the outbox, leased claims, attempt outcomes and the
auto-disabling of failing endpoints.

Every call runs in one transaction on the delivery connection (on SQLite the
one writer; on PostgreSQL a connection of its own, so deliveries never queue
behind processing batches). Claims are safe with several delivery loops:
rows are picked with ``SKIP LOCKED`` on PostgreSQL, and a claim is a lease
(``lease_until``) plus the attempt number, so only the loop holding the
current attempt settles a delivery.

Processing writes one outbox row per transaction (its notices and meter
records, encoded); expanding it here makes a ``webhook_notices`` row (with
the payload) for each notice some endpoint wants, a delivery per (notice,
endpoint), and a delivery per meter record, then deletes the outbox row, all
in one transaction. Writes are kept few, since on SQLite they share one lock
with processing: a claim updates the delivery row only; the outcome updates
it and logs the attempt in one row. An attempt cut short (its loop died) is
logged as ``interrupted`` when its delivery is claimed again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from tally import ids
from tally.effects import billing
from tally.effects.billing import MeterRecord
from tally.effects.endpoints import AUTO_DISABLE_WINDOW_US, should_disable, wants
from tally.effects.payloads import entity_object, feature_object, plan_deliveries
from tally.effects.records import (
    FAILURE,
    INTERRUPTED,
    PENDING,
    SUCCESS,
    SUPERSEDED,
    AttemptResult,
    ClaimedDelivery,
)
from tally.effects.triggers import Notice
from tally.storage.sql import chunks, in_list
from tally.storage.sql_webhooks import WEBHOOK_COLUMNS, webhook_from_row

T = TypeVar("T")
Conn = Any

# what one claim expands at most (an outbox row holds a whole processing batch:
# it is expanded over several claims, each a short transaction)
EXPAND_NOTICES = 200
EXPAND_RECORDS = 1000
_NOTICES = msgspec.json.Decoder(list[Notice])
_RECORDS = msgspec.json.Decoder(list[MeterRecord])
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


def _decode(text: str | None) -> Any:
    return msgspec.json.decode(text) if text else {}


def _keys(conn: Conn, table: str, entity_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for part in chunks(list(entity_ids)):
        clause, args = in_list("entity_id", part)
        for entity_id, key, value in conn.execute(
            f"SELECT entity_id, key, value FROM {table} WHERE {clause} ORDER BY key", args
        ).fetchall():
            out.setdefault(entity_id, {})[key] = value
    return out


def _objects(conn: Conn, rows: Sequence[Notice]) -> dict[tuple[str, str], dict[str, Any]]:
    """The companies, users and features the notices name, as they stand now."""
    wanted: dict[str, set[str]] = {"company": set(), "user": set(), "feature": set()}
    for row in rows:
        if row.object_type in ("company", "user"):
            wanted[row.object_type].add(row.object_id)
        if row.company_id:
            wanted["company"].add(row.company_id)
        if row.feature_id:
            wanted["feature"].add(row.feature_id)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, table, key_table in (
        ("company", "companies", "company_keys"),
        ("user", "users", "user_keys"),
    ):
        found = sorted(wanted[kind])
        keys = _keys(conn, key_table, found)
        companies: dict[str, list[str]] = {}
        for part in chunks(found):
            clause, args = in_list("id", part)
            if kind == "user":
                m_clause, m_args = in_list("user_id", part)
                for user_id, company_id in conn.execute(
                    f"SELECT user_id, company_id FROM memberships WHERE {m_clause} "
                    "ORDER BY company_id",
                    m_args,
                ).fetchall():
                    companies.setdefault(user_id, []).append(company_id)
            for r in conn.execute(
                "SELECT id, environment_id, name, traits, last_seen_at, created_at, updated_at "
                f"FROM {table} WHERE {clause}",
                args,
            ).fetchall():
                out[(kind, r[0])] = entity_object(
                    entity_id=r[0],
                    environment_id=r[1],
                    name=r[2],
                    keys=keys.get(r[0], {}),
                    traits=_decode(r[3]),
                    last_seen_at=r[4],
                    created_at=r[5],
                    updated_at=r[6],
                    company_ids=companies.get(r[0], []) if kind == "user" else None,
                )
    for part in chunks(sorted(wanted["feature"])):
        clause, args = in_list("id", part)
        for r in conn.execute(
            f"SELECT id, name, feature_type, event_subtype FROM features WHERE {clause}", args
        ).fetchall():
            out[("feature", r[0])] = feature_object(r[0], r[1], r[2], r[3])
    return out


class SqlOutbox:
    claim_suffix = ""  # PostgreSQL: " FOR UPDATE SKIP LOCKED"

    if TYPE_CHECKING:

        def _delivery_call(self, fn: Callable[[Conn], T]) -> Awaitable[T]: ...

    # -- expansion of the outbox ------------------------------------------------
    def _expand(self, conn: Conn, now: int) -> bool:
        """Expand a bounded part of the oldest outbox row into notices and
        deliveries; returns whether there was anything to expand."""
        row = conn.execute(
            "SELECT id, notices, meter_records, notices_done, meter_records_done FROM outbox "
            f"ORDER BY id LIMIT 1{self.claim_suffix}"
        ).fetchone()
        if row is None:
            return False
        row_id, notices_text, records_text, notices_done, records_done = row
        all_notices = _NOTICES.decode(notices_text) if notices_text else []
        all_records = _RECORDS.decode(records_text) if records_text else []
        notices = all_notices[notices_done : notices_done + EXPAND_NOTICES]
        records = all_records[records_done : records_done + EXPAND_RECORDS]
        if notices:
            self._fan_out(conn, [(ids.new_id("whob"), n) for n in notices], now)
        if records:
            conn.executemany(
                "INSERT INTO deliveries (id, environment_id, kind, ref, request_type, payload, "
                "status, attempt_count, next_attempt_at, lease_until, created_at, updated_at) "
                "VALUES (?,?,'billing',?,?,?,'pending',0,?,0,?,?) ON CONFLICT (id) DO NOTHING",
                [
                    (
                        billing.record_id(m.event_id),
                        m.environment_id,
                        m.event_id,
                        m.request_type,
                        billing.record_body(m).decode(),
                        now,
                        now,
                        now,
                    )
                    for m in records
                ],
            )
        notices_done += len(notices)
        records_done += len(records)
        if notices_done >= len(all_notices) and records_done >= len(all_records):
            conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
        else:
            conn.execute(
                "UPDATE outbox SET notices_done = ?, meter_records_done = ? WHERE id = ?",
                (notices_done, records_done, row_id),
            )
        return True

    def _fan_out(self, conn: Conn, notices: list[tuple[str, Notice]], now: int) -> None:
        envs = sorted({n.environment_id for _, n in notices})
        clause, args = in_list("w.environment_id", envs)
        endpoints = [
            webhook_from_row(r)
            for r in conn.execute(
                f"SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE w.status = 'active' AND {clause} "
                "ORDER BY w.id",
                args,
            ).fetchall()
        ]
        targets = [
            (notice_id, n)
            for notice_id, n in notices
            if any(
                h.environment_id == n.environment_id and wants(h, n.action, n.feature_id)
                for h in endpoints
            )
        ]
        if not targets:
            return
        objects = _objects(conn, [n for _, n in targets])
        planned = plan_deliveries(targets, endpoints, objects, ids.new_id)
        by_id = dict(targets)
        conn.executemany(
            "INSERT INTO webhook_notices (id, environment_id, action, object_type, object_id, "
            "company_id, feature_id, event_id, payload, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    notice_id,
                    by_id[notice_id].environment_id,
                    by_id[notice_id].action,
                    by_id[notice_id].object_type,
                    by_id[notice_id].object_id,
                    by_id[notice_id].company_id,
                    by_id[notice_id].feature_id,
                    by_id[notice_id].event_id,
                    payload.decode(),
                    now,
                )
                for notice_id, payload in planned.payloads.items()
            ],
        )
        conn.executemany(
            "INSERT INTO deliveries (id, environment_id, kind, webhook_id, notice_id, "
            "request_type, status, attempt_count, next_attempt_at, lease_until, created_at, "
            "updated_at) VALUES (?,?,'webhook',?,?,?,'pending',0,?,0,?,?)",
            [
                (p.id, p.environment_id, p.webhook_id, p.notice_id, p.request_type, now, now, now)
                for p in planned.deliveries
            ],
        )

    # -- claims -------------------------------------------------------------
    async def claim_deliveries(
        self, now: int, limit: int, lease_us: int, *, billing: bool
    ) -> list[ClaimedDelivery]:
        kinds = "d.kind IN ('webhook', 'billing')" if billing else "d.kind = 'webhook'"
        pick = _PICK.format(kinds=kinds, suffix=self.claim_suffix)

        def run(conn: Conn) -> list[ClaimedDelivery]:
            if limit <= 0:  # expand everything, claim nothing
                while self._expand(conn, now):
                    pass
                return []
            self._expand(conn, now)  # a bounded share per call: short transactions
            picked = conn.execute(pick, (now, now, limit)).fetchall()
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
            failed: list[str] = []
            logged: list[tuple[Any, ...]] = []
            for r in sorted(results, key=lambda x: x.delivery_id):
                if r.ok:
                    status, retry_at, finished = SUCCESS, 0, r.finished_at
                elif r.retry_at is not None:
                    status, retry_at, finished = PENDING, r.retry_at, None
                else:
                    status, retry_at, finished = FAILURE, 0, r.finished_at
                won = conn.execute(
                    _SETTLE,
                    (
                        status,
                        r.response_code,
                        None if r.ok else r.error,
                        retry_at,
                        r.finished_at if r.ok else None,
                        finished,
                        now,
                        r.delivery_id,
                        r.attempt,
                    ),
                ).rowcount
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
                if won and status == FAILURE:
                    failed.append(r.delivery_id)
            conn.executemany(_LOG_ATTEMPT, logged)
            hooks: set[str] = set()
            for part in chunks(failed):
                clause, args = in_list("id", part)
                hooks.update(
                    row[0]
                    for row in conn.execute(
                        f"SELECT webhook_id FROM deliveries WHERE webhook_id IS NOT NULL "
                        f"AND {clause}",
                        args,
                    ).fetchall()
                )
            return self._disable_failing(conn, sorted(hooks), now)

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
