"""Webhook endpoints and their delivery log on SQL (a mixin of
``SqlStorage``; portable SQL, see ``tally.storage.sql``). Writes run in one
transaction on the writer thread (``self._writer.call``), reads on the
reader threads (``self._read``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from tally import ids
from tally.effects.endpoints import (
    Webhook,
    WebhookChanges,
    WebhookFilter,
    WebhookValues,
    resolve_webhook,
)
from tally.effects.records import (
    FAILURE,
    IN_FLIGHT,
    PENDING,
    AttemptResult,
    DeliveryAttempt,
    WebhookEvent,
    WebhookEventFilter,
)
from tally.storage.sql import contains, in_list, like_pattern

if TYPE_CHECKING:
    from tally.storage.sql.writer import WriterThread

T = TypeVar("T")

WEBHOOK_COLUMNS = (
    "w.id, w.environment_id, w.name, w.url, w.secret, w.request_types, w.status, "
    "w.status_reason, w.feature_ids, w.credit_ids, w.enabled_at, w.created_at, w.updated_at"
)
_EVENT_COLUMNS = (
    "d.id, d.environment_id, d.webhook_id, d.request_type, COALESCE(d.payload, n.payload), "
    "d.status, d.attempt_count, d.response_code, d.last_error, d.next_attempt_at, d.sent_at, "
    "d.created_at, d.updated_at, d.lease_until, d.leased_at"
)
_EVENT_FROM = (
    "FROM deliveries d LEFT JOIN webhook_notices n ON n.id = d.notice_id "
    "LEFT JOIN webhooks w ON w.id = d.webhook_id"
)
_SECRET_PREFIX = "whsec_"


def webhook_from_row(row: Sequence[Any], at: int = 0) -> Webhook:
    r = row[at : at + 13]
    return Webhook(
        id=r[0],
        environment_id=r[1],
        name=r[2],
        url=r[3],
        secret=r[4],
        request_types=tuple(msgspec.json.decode(r[5])),
        status=r[6],
        status_reason=r[7],
        feature_ids=tuple(msgspec.json.decode(r[8])),
        credit_ids=tuple(msgspec.json.decode(r[9])),
        enabled_at=r[10],
        created_at=r[11],
        updated_at=r[12],
    )


def _event_from_row(row: Sequence[Any]) -> WebhookEvent:
    hook = webhook_from_row(row, 15) if row[15] is not None else None
    return WebhookEvent(
        id=row[0],
        environment_id=row[1],
        webhook_id=row[2],
        request_type=row[3],
        payload=row[4] or "",
        status=row[5],
        attempt_count=row[6],
        response_code=row[7],
        last_error=row[8],
        next_attempt_at=row[9] if row[5] == PENDING else None,
        sent_at=row[10],
        created_at=row[11],
        updated_at=row[12],
        webhook=hook,
    )


def _json(values: Sequence[str]) -> str:
    return msgspec.json.encode(list(values)).decode()


def load_webhook(conn: Any, environment_id: str, webhook_id: str) -> Webhook | None:
    row = conn.execute(
        f"SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE w.id = ? AND w.environment_id = ?",
        (webhook_id, environment_id),
    ).fetchone()
    return webhook_from_row(row) if row else None


def _webhook_where(environment_id: str, where: WebhookFilter) -> tuple[str, list[Any]]:
    clauses = ["w.environment_id = ?"]
    args: list[Any] = [environment_id]
    if where.q:
        clauses.append(f"({contains('w.name')} OR {contains('w.url')})")
        args.extend((like_pattern(where.q), like_pattern(where.q)))
    return " AND ".join(clauses), args


def _event_where(
    environment_id: str, where: WebhookEventFilter, *, counts: bool = False
) -> tuple[str, list[Any]]:
    """The conditions of ``where`` on ``deliveries d`` (``counts``: on
    ``delivery_counts d``, which has webhook deliveries only and no ids)."""
    clauses = ["d.environment_id = ?"] if counts else ["d.environment_id = ?", "d.kind = 'webhook'"]
    args: list[Any] = [environment_id]
    if where.ids and not counts:
        clause, values = in_list("d.id", where.ids)
        clauses.append(clause)
        args.extend(values)
    if where.webhook_id is not None:
        clauses.append("d.webhook_id = ?")
        args.append(where.webhook_id)
    if where.q:
        clauses.append(contains("d.request_type"))
        args.append(like_pattern(where.q))
    return " AND ".join(clauses), args


class SqlWebhooks:
    if TYPE_CHECKING:
        _writer: WriterThread

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        def _now(self) -> int: ...

    async def _hook_write(self, fn: Callable[[Any], T]) -> T:
        return await self._writer.call(fn)

    # -- endpoints ----------------------------------------------------------
    async def create_webhook(self, environment_id: str, changes: WebhookChanges) -> Webhook:
        values = resolve_webhook(None, changes)  # no stored state: check before queueing

        def run(conn: Any) -> Webhook:
            now = self._now()
            hook = Webhook(
                id=ids.new_id("wh"),
                environment_id=environment_id,
                name=values.name,
                url=values.url,
                secret=_SECRET_PREFIX + ids.random_token(24),
                request_types=values.request_types,
                status=values.status,
                status_reason=None,
                feature_ids=values.feature_ids,
                credit_ids=values.credit_ids,
                enabled_at=now,
                created_at=now,
                updated_at=now,
            )
            conn.execute(
                "INSERT INTO webhooks (id, environment_id, name, url, secret, request_types, "
                "status, status_reason, feature_ids, credit_ids, enabled_at, created_at, "
                "updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    hook.id,
                    environment_id,
                    hook.name,
                    hook.url,
                    hook.secret,
                    _json(hook.request_types),
                    hook.status,
                    None,
                    _json(hook.feature_ids),
                    _json(hook.credit_ids),
                    now,
                    now,
                    now,
                ),
            )
            return hook

        return await self._hook_write(run)

    async def get_webhook(self, environment_id: str, webhook_id: str) -> Webhook | None:
        return await self._read(lambda conn: load_webhook(conn, environment_id, webhook_id))

    async def list_webhooks(self, environment_id: str, where: WebhookFilter) -> list[Webhook]:
        clause, args = _webhook_where(environment_id, where)
        sql = (
            f"SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE {clause} "
            "ORDER BY w.created_at DESC, w.id DESC LIMIT ? OFFSET ?"
        )
        args.extend((where.limit, where.offset))
        return await self._read(
            lambda conn: [webhook_from_row(r) for r in conn.execute(sql, args).fetchall()]
        )

    async def count_webhooks(self, environment_id: str, where: WebhookFilter) -> int:
        clause, args = _webhook_where(environment_id, where)
        sql = f"SELECT COUNT(*) FROM webhooks w WHERE {clause}"
        return await self._read(lambda conn: int(conn.execute(sql, args).fetchone()[0]))

    async def update_webhook(
        self, environment_id: str, webhook_id: str, changes: WebhookChanges
    ) -> Webhook | None:
        def run(conn: Any) -> Webhook | None:
            current = load_webhook(conn, environment_id, webhook_id)
            if current is None:
                return None
            values: WebhookValues = resolve_webhook(current.values, changes)
            now = self._now()
            switched_on = values.status == "active" and current.status != "active"
            enabled_at = now if switched_on else current.enabled_at
            reason = None if values.status == "active" else current.status_reason
            if values.status != "active" and current.status == "active":
                reason = "switched off through the API"
            conn.execute(
                "UPDATE webhooks SET name = ?, url = ?, request_types = ?, status = ?, "
                "status_reason = ?, feature_ids = ?, credit_ids = ?, enabled_at = ?, "
                "updated_at = ? WHERE id = ?",
                (
                    values.name,
                    values.url,
                    _json(values.request_types),
                    values.status,
                    reason,
                    _json(values.feature_ids),
                    _json(values.credit_ids),
                    enabled_at,
                    now,
                    webhook_id,
                ),
            )
            return load_webhook(conn, environment_id, webhook_id)

        return await self._hook_write(run)

    async def delete_webhook(self, environment_id: str, webhook_id: str) -> bool:
        def run(conn: Any) -> bool:
            deleted = conn.execute(
                "DELETE FROM webhooks WHERE id = ? AND environment_id = ?",
                (webhook_id, environment_id),
            ).rowcount
            if deleted:
                now = self._now()
                conn.execute(
                    "UPDATE deliveries SET status = ?, last_error = ?, finished_at = ?, "
                    "updated_at = ? WHERE webhook_id = ? AND status = ?",
                    (FAILURE, "the webhook endpoint was deleted", now, now, webhook_id, PENDING),
                )
            return bool(deleted)

        return await self._hook_write(run)

    # -- the delivery log ---------------------------------------------------
    async def list_webhook_events(
        self, environment_id: str, where: WebhookEventFilter
    ) -> list[WebhookEvent]:
        clause, args = _event_where(environment_id, where)
        sql = (
            f"SELECT {_EVENT_COLUMNS}, {WEBHOOK_COLUMNS} {_EVENT_FROM} WHERE {clause} "
            "ORDER BY d.id DESC LIMIT ? OFFSET ?"
        )
        args.extend((where.limit, where.offset))
        return await self._read(
            lambda conn: [_event_from_row(r) for r in conn.execute(sql, args).fetchall()]
        )

    async def count_webhook_events(self, environment_id: str, where: WebhookEventFilter) -> int:
        if where.ids:  # a list of ids: count those rows
            clause, args = _event_where(environment_id, where)
            sql = f"SELECT COUNT(*) FROM deliveries d WHERE {clause}"
        else:  # the counts the triggers keep (``delivery_counts``)
            clause, args = _event_where(environment_id, where, counts=True)
            sql = f"SELECT COALESCE(SUM(deliveries), 0) FROM delivery_counts d WHERE {clause}"
        return await self._read(lambda conn: int(conn.execute(sql, args).fetchone()[0]))

    async def get_webhook_event(self, environment_id: str, event_id: str) -> WebhookEvent | None:
        def run(conn: Any) -> WebhookEvent | None:
            row = conn.execute(
                f"SELECT {_EVENT_COLUMNS}, {WEBHOOK_COLUMNS} {_EVENT_FROM} "
                "WHERE d.id = ? AND d.environment_id = ? AND d.kind = 'webhook'",
                (event_id, environment_id),
            ).fetchone()
            if row is None:
                return None
            attempts = [
                DeliveryAttempt(*r)
                for r in conn.execute(
                    "SELECT number, started_at, finished_at, outcome, response_code, error "
                    "FROM delivery_attempts WHERE delivery_id = ? ORDER BY number",
                    (event_id,),
                ).fetchall()
            ]
            event = _event_from_row(row)
            lease_until, leased_at = row[13], row[14]
            numbers = {a.number for a in attempts}
            if event.status == PENDING and lease_until and event.attempt_count not in numbers:
                # leased and not settled: in flight (or its loop died; see lease_until)
                attempts.append(
                    DeliveryAttempt(event.attempt_count, leased_at, None, IN_FLIGHT, None, None)
                )
            return replace(event, attempts=tuple(attempts))

        return await self._read(run)

    async def log_test_delivery(
        self,
        webhook: Webhook,
        delivery_id: str,
        request_type: str,
        payload: bytes,
        result: AttemptResult,
    ) -> None:
        def run(conn: Any) -> None:
            now = self._now()
            status = "success" if result.ok else FAILURE
            conn.execute(
                "INSERT INTO deliveries (id, environment_id, kind, webhook_id, request_type, "
                "payload, status, attempt_count, response_code, last_error, "
                "next_attempt_at, lease_until, sent_at, finished_at, created_at, updated_at) "
                "VALUES (?,?,'webhook',?,?,?,?,1,?,?,?,0,?,?,?,?)",
                (
                    delivery_id,
                    webhook.environment_id,
                    webhook.id,
                    request_type,
                    payload.decode(),
                    status,
                    result.response_code,
                    result.error,
                    result.started_at,
                    result.finished_at if result.ok else None,
                    result.finished_at,
                    now,
                    now,
                ),
            )
            conn.execute(
                "INSERT INTO delivery_attempts (delivery_id, number, started_at, finished_at, "
                "outcome, response_code, error) VALUES (?,1,?,?,?,?,?)",
                (
                    delivery_id,
                    result.started_at,
                    result.finished_at,
                    status,
                    result.response_code,
                    result.error,
                ),
            )

        await self._hook_write(run)
