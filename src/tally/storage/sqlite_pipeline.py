"""``UnitOfWork`` on an open SQLite transaction (the writer's connection)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping

from tally import ids
from tally.pipeline.unit import CounterKey, Outcome, PendingEvent

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

    def find_entities(self, kind: str, environment_id: str, keys: Mapping[str, str]) -> set[str]:
        table, key_table, prefix = _TABLES[kind]
        found: set[str] = set()
        for key, value in keys.items():
            row = self.conn.execute(
                f"SELECT entity_id FROM {key_table} WHERE environment_id = ? AND key = ? AND value = ?",
                (environment_id, key, value),
            ).fetchone()
            if row is not None:
                found.add(row[0])
            elif key == "id" and value.startswith(prefix + "_"):
                own = self.conn.execute(
                    f"SELECT id FROM {table} WHERE id = ? AND environment_id = ?",
                    (value, environment_id),
                ).fetchone()
                if own is not None:
                    found.add(own[0])
        return found

    def create_entity(
        self, kind: str, environment_id: str, name: str | None, traits: str, now: int
    ) -> str:
        table, _, prefix = _TABLES[kind]
        entity_id = ids.new_id(prefix)
        self.conn.execute(
            f"INSERT INTO {table} (id, environment_id, name, traits, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?)",
            (entity_id, environment_id, name, traits, now, now),
        )
        return entity_id

    def load_entity(self, kind: str, entity_id: str) -> tuple[str | None, str]:
        table = _TABLES[kind][0]
        row = self.conn.execute(
            f"SELECT name, traits FROM {table} WHERE id = ?", (entity_id,)
        ).fetchone()
        return (row[0], row[1]) if row else (None, "{}")

    def update_entity(
        self, kind: str, entity_id: str, name: str | None, traits: str, now: int
    ) -> None:
        table = _TABLES[kind][0]
        self.conn.execute(
            f"UPDATE {table} SET name = ?, traits = ?, updated_at = ? WHERE id = ?",
            (name, traits, now, entity_id),
        )

    def set_keys(
        self, kind: str, environment_id: str, entity_id: str, keys: Mapping[str, str], now: int
    ) -> None:
        _, key_table, _prefix = _TABLES[kind]
        for key, value in keys.items():
            if key == "id" and value == entity_id:
                continue  # the entity's own id is not a key
            # one value per key name: a new value replaces the old one
            self.conn.execute(
                f"DELETE FROM {key_table} WHERE entity_id = ? AND key = ? AND value != ?",
                (entity_id, key, value),
            )
            self.conn.execute(
                f"INSERT INTO {key_table} (environment_id, key, value, entity_id, created_at) "
                "VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
                (environment_id, key, value, entity_id, now),
            )

    def ensure_membership(
        self, environment_id: str, company_id: str, user_id: str, now: int
    ) -> None:
        self.conn.execute(
            "INSERT INTO memberships (id, environment_id, company_id, user_id, created_at) "
            "VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
            (ids.new_id("cmem"), environment_id, company_id, user_id, now),
        )

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

    def savepoint(self) -> None:
        self.conn.execute("SAVEPOINT tally_event")

    def rollback_savepoint(self) -> None:
        self.conn.execute("ROLLBACK TO tally_event")

    def release_savepoint(self) -> None:
        self.conn.execute("RELEASE tally_event")

    def add_counters(self, deltas: Mapping[CounterKey, tuple[int, int]]) -> None:
        self.conn.executemany(
            "INSERT INTO usage_counters (environment_id, company_id, subtype, period, period_start, "
            "quantity, events) VALUES (?,?,?,?,?,?,?) ON CONFLICT (company_id, subtype, period, "
            "period_start) DO UPDATE SET quantity = quantity + excluded.quantity, "
            "events = events + excluded.events",
            [(*key, qty, count) for key, (qty, count) in deltas.items()],
        )

    def bump_last_seen(self, kind: str, seen: Mapping[str, int], now: int) -> None:
        table = _TABLES[kind][0]
        self.conn.executemany(
            f"UPDATE {table} SET last_seen_at = ?, updated_at = ? WHERE id = ? "
            "AND (last_seen_at IS NULL OR last_seen_at < ?)",
            [(at, now, entity_id, at) for entity_id, at in seen.items()],
        )

    def finish(self, outcomes: Iterable[Outcome], now: int) -> None:
        self.conn.executemany(
            "UPDATE events SET status = ?, error_message = ?, company_id = ?, user_id = ?, "
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
                for o in outcomes
            ],
        )
