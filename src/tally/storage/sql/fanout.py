"""Expansion of the outbox on SQL (a mixin of ``SqlOutbox``; portable SQL).

Processing writes one outbox row per transaction (its notices and meter
records, encoded). Expanding it makes a ``webhook_notices`` row (with the
payload, built once with the objects the notice names as they stand now)
for each notice some endpoint wants, a delivery per (notice, endpoint), and
a delivery per meter record (its id made from the event's, so one per event
ever), a bounded slice per call so that each transaction stays short; the
row is deleted once all of it is expanded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from tally import ids
from tally.effects import billing
from tally.effects.billing import MeterRecord
from tally.effects.endpoints import wants
from tally.effects.payloads import entity_object, feature_object, plan_deliveries
from tally.effects.triggers import Notice
from tally.jsontext import read_object
from tally.storage.sql import chunks, in_list
from tally.storage.sql.webhooks import WEBHOOK_COLUMNS, webhook_from_row

Conn = Any

# what one call expands at most (an outbox row holds a whole processing batch:
# it is expanded over several calls, each a short transaction)
EXPAND_NOTICES = 200
EXPAND_RECORDS = 1000
_NOTICES = msgspec.json.Decoder(list[Notice])
_RECORDS = msgspec.json.Decoder(list[MeterRecord])


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
                    traits=read_object(r[3]),
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


class SqlFanOut:
    claim_suffix = ""  # PostgreSQL: " FOR UPDATE SKIP LOCKED"

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
