"""``UnitOfWork`` on an open SQLite transaction (the writer's connection)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

import msgspec

from tally import ids
from tally.pipeline.unit import Changes, KeyRef, PendingEvent

_TABLES = {"company": ("companies", "company_keys", "comp"), "user": ("users", "user_keys", "user")}


class SqliteUnitOfWork:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._features: dict[tuple[str, str], list[str]] = {}
        self._anchors: dict[str, int | None] = {}

    def claim_pending(self, limit: int) -> list[PendingEvent]:
        rows = self.conn.execute(
            "SELECT id, environment_id, type, subtype, body, quantity, captured_at, backfill "
            "FROM events WHERE status = 'pending' ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        return [PendingEvent(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) for r in rows]

    def lookup_keys(self, kind: str, refs: Iterable[KeyRef]) -> dict[KeyRef, str]:
        table, key_table, prefix = _TABLES[kind]
        groups: dict[tuple[str, str], list[str]] = {}
        for env, key, value in refs:
            groups.setdefault((env, key), []).append(value)
        found: dict[KeyRef, str] = {}
        for (env, key), values in groups.items():
            for start in range(0, len(values), 500):
                chunk = values[start : start + 500]
                rows = self.conn.execute(
                    f"SELECT value, entity_id FROM {key_table} WHERE environment_id = ? "
                    f"AND key = ? AND value IN ({','.join('?' * len(chunk))})",
                    (env, key, *chunk),
                ).fetchall()
                for value, entity_id in rows:
                    found[(env, key, value)] = entity_id
            if key == "id":  # the entity's own tally id also finds it
                own = [
                    v for v in values if v.startswith(prefix + "_") and (env, key, v) not in found
                ]
                for value in own:
                    row = self.conn.execute(
                        f"SELECT id FROM {table} WHERE id = ? AND environment_id = ?", (value, env)
                    ).fetchone()
                    if row is not None:
                        found[(env, key, value)] = row[0]
        return found

    def load_entity(self, kind: str, entity_id: str) -> tuple[str | None, str]:
        table = _TABLES[kind][0]
        row = self.conn.execute(
            f"SELECT name, traits FROM {table} WHERE id = ?", (entity_id,)
        ).fetchone()
        return (row[0], row[1]) if row else (None, "{}")

    def new_id(self, kind: str) -> str:
        return ids.new_id(_TABLES[kind][2])

    def event_features(self, environment_id: str, subtype: str) -> list[str]:
        key = (environment_id, subtype)
        cached = self._features.get(key)
        if cached is None:
            rows = self.conn.execute(
                "SELECT id FROM features WHERE environment_id = ? AND event_subtype = ? "
                "AND feature_type = 'event' ORDER BY id",
                key,
            ).fetchall()
            cached = self._features[key] = [r[0] for r in rows]
        return list(cached)

    def billing_anchor(self, company_id: str) -> int | None:
        if company_id not in self._anchors:
            row = self.conn.execute(
                "SELECT billing_anchor FROM companies WHERE id = ?", (company_id,)
            ).fetchone()
            self._anchors[company_id] = row[0] if row else None
        return self._anchors[company_id]

    def apply(self, changes: Changes, now: int) -> None:
        execute, many = self.conn.execute, self.conn.executemany
        deletes: dict[str, list[tuple[str, str, str]]] = {"company": [], "user": []}
        inserts: dict[str, list[tuple[str, str, str, str, int]]] = {"company": [], "user": []}
        seen: dict[str, list[tuple[int, int, str, int]]] = {"company": [], "user": []}
        for entity in changes.entities:
            table = _TABLES[entity.kind][0]
            if entity.new:
                extra = ", billing_anchor" if entity.kind == "company" else ""
                execute(
                    f"INSERT INTO {table} (id, environment_id, name, traits, last_seen_at, "
                    f"created_at, updated_at{extra}) VALUES (?,?,?,?,?,?,?{',NULL' if extra else ''})",
                    (
                        entity.id,
                        entity.environment_id,
                        entity.name,
                        msgspec.json.encode(entity.traits or {}).decode(),
                        entity.last_seen,
                        now,
                        now,
                    ),
                )
            else:
                if entity.dirty:
                    execute(
                        f"UPDATE {table} SET name = ?, traits = ?, updated_at = ? WHERE id = ?",
                        (
                            entity.name,
                            msgspec.json.encode(entity.traits or {}).decode(),
                            now,
                            entity.id,
                        ),
                    )
                if entity.last_seen is not None:
                    seen[entity.kind].append((entity.last_seen, now, entity.id, entity.last_seen))
            for key, value in entity.added_keys.items():
                if not entity.new:
                    deletes[entity.kind].append((entity.id, key, value))
                inserts[entity.kind].append((entity.environment_id, key, value, entity.id, now))
        for kind in ("company", "user"):
            table, key_table, _ = _TABLES[kind]
            many(
                f"UPDATE {table} SET last_seen_at = ?, updated_at = ? WHERE id = ? "
                "AND (last_seen_at IS NULL OR last_seen_at < ?)",
                seen[kind],
            )
            # a new value of a key name replaces the old one; deletes before inserts
            many(
                f"DELETE FROM {key_table} WHERE entity_id = ? AND key = ? AND value != ?",
                deletes[kind],
            )
            many(
                f"INSERT INTO {key_table} (environment_id, key, value, entity_id, created_at) "
                "VALUES (?,?,?,?,?) ON CONFLICT (environment_id, key, value) "
                "DO UPDATE SET entity_id = excluded.entity_id",
                inserts[kind],
            )
        many(
            "INSERT INTO memberships (id, environment_id, company_id, user_id, created_at) "
            "VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
            [(ids.new_id("cmem"), env, c, u, now) for env, c, u in changes.memberships],
        )
        many(
            "INSERT INTO usage_counters (environment_id, company_id, subtype, period, period_start, "
            "quantity, events) VALUES (?,?,?,?,?,?,?) ON CONFLICT (company_id, subtype, period, "
            "period_start) DO UPDATE SET quantity = quantity + excluded.quantity, "
            "events = events + excluded.events",
            [(*key, qty, count) for key, (qty, count) in changes.counters.items()],
        )
        many(
            "UPDATE events SET status = ?, error_message = ?, "
            "company_id = COALESCE(?, company_id), user_id = COALESCE(?, user_id), "
            "feature_ids = ?, enriched_at = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
            [
                (
                    o.status,
                    o.error_message,
                    o.company_id,
                    o.user_id,
                    json.dumps(o.feature_ids) if o.feature_ids else None,
                    now if o.status == "processed" else None,
                    now,
                    o.event_id,
                )
                for o in changes.outcomes
            ],
        )
