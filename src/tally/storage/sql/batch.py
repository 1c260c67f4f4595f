"""A processing transaction on SQL: claim pending events, read a batch's
snapshot in bulk, write its changes — the ``BatchTransaction`` that the
pipeline drives (``tally.storage.base_batch``). The SQL is portable: SQLite
runs it on the writer's connection, PostgreSQL through ``PgUnitOfWork`` (a
subclass)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

import msgspec

from tally import ids
from tally.batch import (
    Changes,
    CounterKey,
    KeyRef,
    Needs,
    Outcome,
    PendingEvent,
    Snapshot,
    StoredEntity,
)
from tally.effects.billing import STRIPE_CUSTOMER_KEY
from tally.effects.triggers import EffectRules
from tally.storage.sql import effects as sql_effects
from tally.storage.sql import insert_rows
from tally.storage.sql import summaries as sql_summaries

_TABLES = {"company": ("companies", "company_keys", "comp"), "user": ("users", "user_keys", "user")}
_CHUNK = 500


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


class ConcurrentChange(Exception):
    """Another transaction changed what the batch read (a key it meant to add
    now belongs to someone else): the batch must be read and processed again."""


def release_keys(conn: Any, released: Iterable[tuple[str, str, str, str]]) -> None:
    """Free the idempotency keys of events that failed in processing (each
    still held by that event), so that a corrected resend is stored."""
    conn.executemany(
        "DELETE FROM idempotency_keys WHERE environment_id = ? AND event_type = ? "
        "AND key = ? AND event_id = ?",
        sorted(released),
    )


class SqlUnitOfWork:
    """One open processing transaction. The SQL is portable; PostgreSQL
    subclasses it to claim with ``SKIP LOCKED`` and to retry on conflicts."""

    claim_suffix = ""
    max_attempts = 1

    def __init__(
        self,
        conn: Any,
        rules: EffectRules | None = None,
        known: sql_summaries.KnownMembers | None = None,
    ) -> None:
        self.conn = conn
        self.rules = rules if rules is not None else EffectRules()
        self.known = known  # members stored already: not sent again
        # the event-type members the batch sends, stored once it commits
        self.settled_members: set[sql_summaries.Member] = set()

    def is_overflow(self, err: BaseException) -> bool:
        """Whether ``err`` says a usage counter would pass 64 bits."""
        if isinstance(err, OverflowError):
            return True
        return isinstance(err, sqlite3.IntegrityError) and "CHECK" in str(err)

    def is_conflict(self, err: BaseException) -> bool:
        """Whether ``err`` says another transaction got in the way."""
        return isinstance(err, ConcurrentChange)

    def savepoint(self, name: str) -> None:
        self.conn.execute(f"SAVEPOINT {name}")

    def rollback_to(self, name: str) -> None:
        self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}")

    def release(self, name: str) -> None:
        self.conn.execute(f"RELEASE SAVEPOINT {name}")

    def record_settled(self, events: list[PendingEvent], outcomes: list[Outcome]) -> None:
        """Count the settled events in the event summaries (``sql_summaries``)."""
        sql_summaries.record(self.conn, self._summary_rows(events, outcomes))

    def _summary_rows(
        self, events: list[PendingEvent], outcomes: list[Outcome]
    ) -> sql_summaries.SummaryRows:
        """What the batch adds to the summaries, less the members ``known``
        to be stored (a retried attempt records again: the last one counts)."""
        rows = sql_summaries.settled_rows(events, outcomes)
        if self.known is not None:
            rows.members = self.known.unknown(rows.members)
        self.settled_members = rows.members  # the others are known already
        return rows

    def claim_pending(self, limit: int) -> list[PendingEvent]:
        # the kind of the key that sent each event: only a secret key's may set
        # a billing key (an event with no key came from the operator's tools)
        rows = self.conn.execute(
            "SELECT id, environment_id, type, subtype, body, quantity, captured_at, backfill, "
            "idempotency_key, (SELECT kind FROM api_keys WHERE api_keys.id = events.api_key_id), "
            f"loaded_at FROM events WHERE status = 'pending' ORDER BY id LIMIT ?{self.claim_suffix}",
            (limit,),
        ).fetchall()
        return [
            PendingEvent(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                bool(r[7]),
                r[8],
                r[9] != "publishable",
                r[10],
            )
            for r in rows
        ]

    def read_counters(self, keys: Iterable[CounterKey]) -> dict[CounterKey, int]:
        found: dict[CounterKey, int] = {}
        for key in keys:
            row = self.conn.execute(
                "SELECT quantity FROM usage_counters WHERE company_id = ? AND subtype = ? "
                "AND period = ? AND period_start = ?",
                key[1:],
            ).fetchone()
            if row is not None:
                found[key] = row[0]
        return found

    def load_snapshot(self, needs: Needs) -> Snapshot:
        snapshot = Snapshot()
        for kind, refs in needs.refs.items():
            found = self._lookup_keys(kind, refs)
            for (env, key, value), entity_id in found.items():
                snapshot.keys[(kind, env, key, value)] = entity_id
            entity_ids = sorted(set(found.values()))
            self._load_entities(kind, entity_ids, snapshot)
            self._load_entity_keys(kind, entity_ids, snapshot)
            if kind == "user":  # links already stored are not written again
                sql = "SELECT company_id, user_id FROM memberships WHERE user_id"
                snapshot.memberships.update(self._rows_in(sql, entity_ids))
        self._load_effects(needs, snapshot)
        for env, subtype in needs.subtypes:
            rows = self.conn.execute(
                "SELECT id FROM features WHERE environment_id = ? AND event_subtype = ? "
                "AND feature_type = 'event' ORDER BY id",
                (env, subtype),
            ).fetchall()
            if rows:
                snapshot.features[(env, subtype)] = [r[0] for r in rows]
        return snapshot

    def _load_effects(self, needs: Needs, snapshot: Snapshot) -> None:
        """What side effects need: the endpoints' subscriptions, the numeric
        allocations of the batch's companies, their billing customer keys."""
        snapshot.subscribed = sql_effects.load_subscriptions(self.conn)
        companies = sorted(e.id for e in snapshot.entities.values() if e.kind == "company")
        if not companies:
            return
        if needs.subtypes:  # track events: limits, and meter records name the customer
            snapshot.limits = sql_effects.load_limits(self.conn, companies)
            for env, value, entity_id in sql_effects.load_customer_keys(self.conn, companies):
                snapshot.keys[("company", env, STRIPE_CUSTOMER_KEY, value)] = entity_id

    def _lookup_keys(self, kind: str, refs: Iterable[KeyRef]) -> dict[KeyRef, str]:
        table, key_table, prefix = _TABLES[kind]
        groups: dict[tuple[str, str], list[str]] = {}
        for env, key, value in refs:
            groups.setdefault((env, key), []).append(value)
        found: dict[KeyRef, str] = {}
        for (env, key), values in groups.items():
            for chunk in _chunks(values):
                for value, entity_id in self.key_lookup(key_table, env, key, chunk):
                    found[(env, key, value)] = entity_id
            if key == "id":  # an entity's own tally id also finds it
                own = [
                    v for v in values if v.startswith(prefix + "_") and (env, key, v) not in found
                ]
                for chunk in _chunks(own):
                    rows = self.conn.execute(
                        f"SELECT id FROM {table} WHERE environment_id = ? "
                        f"AND id IN ({','.join('?' * len(chunk))})",
                        (env, *chunk),
                    ).fetchall()
                    for (entity_id,) in rows:
                        found[(env, key, entity_id)] = entity_id
        return found

    def key_lookup(
        self, key_table: str, env: str, key: str, values: list[str]
    ) -> list[tuple[str, str]]:
        """(value, entity id) of each of ``values`` (at most ``_CHUNK``) that
        the key table holds under ``key``. PostgreSQL looks them up its own way."""
        rows = self.conn.execute(
            f"SELECT value, entity_id FROM {key_table} WHERE environment_id = ? "
            f"AND key = ? AND value IN ({','.join('?' * len(values))})",
            (env, key, *values),
        ).fetchall()
        return [(value, entity_id) for value, entity_id in rows]

    def _load_entity_keys(self, kind: str, entity_ids: list[str], snapshot: Snapshot) -> None:
        """Every key of the entities the batch found: an event may add a key
        name, never change the value of one the entity holds."""
        sql = (
            f"SELECT environment_id, key, value, entity_id FROM {_TABLES[kind][1]} WHERE entity_id"
        )
        for env, key, value, entity_id in self._rows_in(sql, entity_ids):
            snapshot.keys[(kind, env, key, value)] = entity_id

    def _rows_in(self, sql: str, values: list[str]) -> Iterable[Any]:
        """The rows of ``sql`` + `` IN (values)``, queried in chunks."""
        for chunk in _chunks(values):
            yield from self.conn.execute(
                f"{sql} IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()

    def load_entity(self, kind: str, entity_id: str) -> tuple[str | None, str]:
        """(name, traits JSON text) of one stored entity."""
        table = _TABLES[kind][0]
        row = self.conn.execute(
            f"SELECT name, traits FROM {table} WHERE id = ?", (entity_id,)
        ).fetchone()
        return (row[0], row[1]) if row else (None, "{}")

    def _load_entities(self, kind: str, entity_ids: list[str], snapshot: Snapshot) -> None:
        table = _TABLES[kind][0]
        anchor = "billing_anchor" if kind == "company" else "NULL"
        sql = f"SELECT id, environment_id, name, traits, {anchor} FROM {table} WHERE id"
        for entity_id, env, name, traits, billing_anchor in self._rows_in(sql, entity_ids):
            snapshot.entities[entity_id] = StoredEntity(
                kind, entity_id, env, name, traits, billing_anchor
            )

    def apply(self, changes: Changes, now: int) -> None:
        """Write ``changes`` whole: what they change and the events' rows."""
        self.apply_changes(changes, now)
        self.mark(changes, now)

    def apply_changes(self, changes: Changes, now: int) -> None:
        """Write what processing changed: entities, keys, memberships,
        counters and side effects (not the events' own rows). This is the
        single writer's way (SQLite: nothing changes under a batch, so its
        view is current and written whole, in any order); PostgreSQL's
        concurrent workers lock and write set-based
        (``tally.storage.postgres.batch``)."""
        many = self.conn.executemany
        new: dict[str, list[tuple[object, ...]]] = {"company": [], "user": []}
        dirty: dict[str, list[tuple[object, ...]]] = {"company": [], "user": []}
        seen: dict[str, list[tuple[object, ...]]] = {"company": [], "user": []}
        deletes: dict[str, list[tuple[str, str, str]]] = {"company": [], "user": []}
        inserts: dict[str, list[tuple[str, str, str, str, int]]] = {"company": [], "user": []}
        for e in changes.entities:
            traits = e.stored_traits if e.traits is None else msgspec.json.encode(e.traits).decode()
            if e.new:
                new[e.kind].append((e.id, e.environment_id, e.name, traits, e.last_seen, now, now))
            else:
                if e.dirty:
                    dirty[e.kind].append((e.name, traits, now, e.id))
                if e.last_seen is not None:
                    seen[e.kind].append((e.last_seen, now, e.id, e.last_seen))
            for key, value in e.added_keys.items():
                if e.replaces_keys and not e.new:
                    deletes[e.kind].append((e.id, key, value))
                inserts[e.kind].append((e.environment_id, key, value, e.id, now))
        for kind in ("company", "user"):
            table, key_table, _ = _TABLES[kind]
            many(
                f"INSERT INTO {table} (id, environment_id, name, traits, last_seen_at, "
                "created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                new[kind],
            )
            many(
                f"UPDATE {table} SET name = ?, traits = ?, updated_at = ? WHERE id = ?", dirty[kind]
            )
            many(
                f"UPDATE {table} SET last_seen_at = ?, updated_at = ? WHERE id = ? "
                "AND (last_seen_at IS NULL OR last_seen_at < ?)",
                seen[kind],
            )
            # a REST upsert's new value of a key name replaces the old one
            # (deletes before inserts); an event's only adds
            many(
                f"DELETE FROM {key_table} WHERE entity_id = ? AND key = ? AND value != ?",
                sorted(deletes[kind]),
            )
            added = many(
                f"INSERT INTO {key_table} (environment_id, key, value, entity_id, created_at) "
                "VALUES (?,?,?,?,?) ON CONFLICT (environment_id, key, value) DO UPDATE "
                f"SET entity_id = excluded.entity_id WHERE {key_table}.entity_id = excluded.entity_id",
                sorted(inserts[kind]),
            ).rowcount
            # a key already this entity's counts; one of another entity does not
            if inserts[kind] and added != len(inserts[kind]):
                raise ConcurrentChange(f"a {kind} key was claimed by another transaction")
        insert_rows(
            self.conn,
            "INSERT INTO memberships (id, environment_id, company_id, user_id, created_at)",
            5,
            [(ids.new_id("cmem"), env, c, u, now) for env, c, u in sorted(changes.memberships)],
            " ON CONFLICT (company_id, user_id) DO NOTHING",
        )
        insert_rows(
            self.conn,
            "INSERT INTO usage_counters (environment_id, company_id, subtype, period, "
            "period_start, quantity, events)",
            7,
            [(*key, qty, count) for key, (qty, count) in changes.counters.items()],
            " ON CONFLICT (company_id, subtype, period, period_start) DO UPDATE SET "
            "quantity = usage_counters.quantity + excluded.quantity, "
            "events = usage_counters.events + excluded.events",
        )
        sql_effects.write_effects(self.conn, changes, now, self.rules)

    def mark(self, changes: Changes, now: int) -> None:
        """Set the stored events' outcomes, and free the keys of those that failed."""
        self.conn.executemany(
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
        release_keys(self.conn, changes.released)
