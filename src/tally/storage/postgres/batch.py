"""Set-based writes of a processing batch on PostgreSQL (issue 10: the
worker's throughput).

Each kind of write is one statement per batch, whatever its number of rows:
the rows travel as one JSON text (``tally.storage.postgres.rows``) that
``jsonb_array_elements`` turns back into rows. An ``executemany`` cost the
worker a server execution and a client-side adaptation per row: the counter
upserts, the summaries and the events' own rows were 40% of its time
(``jsonb`` rather than ``json``: ``->>`` on ``json`` parses the element's
text again for each field, twice the server's time; arrays cost the client
three times as much to send).

Lock order: a writer that inserts or upserts rows that concurrent workers
may write too sends them sorted; ``INSERT … SELECT`` over a single function
scan inserts them in that order (the same order ``executemany`` gave). An
``UPDATE … FROM`` may join in any order: the rows it updates are locked
beforehand, in sorted order (``SetBasedUnitOfWork.hold_entities``; the claim locks
the events).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tally import ids
from tally.batch import Changes, Outcome, PendingEvent
from tally.storage.postgres.rows import ANY_JSON, ENCODER, rows_from, rows_json, values_json
from tally.storage.sql import effects as sql_effects
from tally.storage.sql import summaries as sql_summaries
from tally.storage.sql.batch import (
    _TABLES,
    ConcurrentChange,
    SqlUnitOfWork,
    release_keys,
)


def _names(columns: str) -> str:
    return ", ".join(c.split()[0] for c in columns.split(","))


def insert_json(
    conn: Any, table: str, columns: str, rows: Sequence[Sequence[Any]], tail: str = ""
) -> int:
    """``INSERT INTO table (columns) SELECT … tail`` of ``rows`` (in their
    order) in one statement; returns the rows inserted (or updated)."""
    if not rows:
        return 0
    cursor = conn.execute(
        f"INSERT INTO {table} ({_names(columns)}) {rows_from(columns)}{tail}", (rows_json(rows),)
    )
    return int(cursor.rowcount)


def update_json(
    conn: Any,
    table: str,
    assignments: str,
    columns: str,
    rows: Sequence[Sequence[Any]],
    where: str = "",
    params: Sequence[Any] = (),
) -> int:
    """``UPDATE table SET assignments FROM (rows) v WHERE table.id = v.id
    where`` in one statement (``columns`` name ``v``'s, ``id`` first;
    ``params``: those of ``assignments``). The ids are also looked up as a
    list (``= ANY``): the planner, which cannot know how many rows the JSON
    holds, would otherwise hash them and read the whole table."""
    if not rows:
        return 0
    cursor = conn.execute(
        f"WITH v AS MATERIALIZED ({rows_from(columns)}) UPDATE {table} SET {assignments} "
        f"FROM v WHERE {table}.id = v.id AND {table}.id = ANY(ARRAY(SELECT id FROM v)){where}",
        (rows_json(rows), *params),
    )
    return int(cursor.rowcount)


_ENTITY_COLUMNS = (
    "id text, environment_id text, name text, traits text, last_seen_at bigint, "
    "created_at bigint, updated_at bigint"
)
_KEY_COLUMNS = "environment_id text, key text, value text, entity_id text, created_at bigint"
_MEMBERSHIP_COLUMNS = (
    "id text, environment_id text, company_id text, user_id text, created_at bigint"
)
_COUNTER_COLUMNS = (
    "environment_id text, company_id text, subtype text, period text, period_start bigint, "
    "quantity bigint, events bigint"
)
_COUNTER_UPSERT = (
    " ON CONFLICT (company_id, subtype, period, period_start) DO UPDATE SET "
    "quantity = usage_counters.quantity + excluded.quantity, "
    "events = usage_counters.events + excluded.events"
)
_EVENT_COLUMNS = (
    "id text, status text, error_message text, company_id text, user_id text, "
    "feature_ids text, enriched_at bigint"
)
_MARK = (
    "status = v.status, error_message = v.error_message, "
    "company_id = COALESCE(v.company_id, events.company_id), "
    "user_id = COALESCE(v.user_id, events.user_id), feature_ids = v.feature_ids, "
    "enriched_at = v.enriched_at, updated_at = ?"
)


@dataclass(slots=True)
class _EntityRows:
    """One kind's entity writes of a batch."""

    new: list[tuple[Any, ...]] = field(default_factory=list)
    dirty: list[tuple[Any, ...]] = field(default_factory=list)  # id, name or None, updates
    seen: list[tuple[str, int]] = field(default_factory=list)
    deletes: list[tuple[str, str, str]] = field(default_factory=list)
    inserts: list[tuple[str, str, str, str, int]] = field(default_factory=list)


def _entity_rows(changes: Changes, now: int) -> dict[str, _EntityRows]:
    out = {"company": _EntityRows(), "user": _EntityRows()}
    for e in changes.entities:
        rows = out[e.kind]
        if e.new:
            traits = e.stored_traits if e.traits is None else ENCODER.encode(e.traits).decode()
            rows.new.append((e.id, e.environment_id, e.name, traits, e.last_seen, now, now))
        else:
            if e.dirty:  # merged into what is stored now (another worker may change it)
                updates = ENCODER.encode(e.trait_updates).decode()
                rows.dirty.append((e.id, e.name if e.name_given else None, updates))
            if e.last_seen is not None:
                rows.seen.append((e.id, e.last_seen))
        for key, value in e.added_keys.items():
            if e.replaces_keys and not e.new:
                rows.deletes.append((e.id, key, value))
            rows.inserts.append((e.environment_id, key, value, e.id, now))
    return out


class SetBasedUnitOfWork(SqlUnitOfWork):
    """``SqlUnitOfWork`` writing each kind of row of a batch with one
    statement (PostgreSQL: ``PgUnitOfWork``); snapshot reads by arrays."""

    def record_settled(self, events: list[PendingEvent], outcomes: list[Outcome]) -> None:
        record_summaries(self.conn, self._summary_rows(events, outcomes))

    def _rows_in(self, sql: str, values: list[str]) -> Iterable[Any]:
        # one statement whatever the number of values (``= ANY``: one index
        # probe per value, in custom and generic plans alike)
        if not values:
            return []
        return self.conn.execute(f"{sql} = {ANY_JSON}", (values_json(values),)).fetchall()

    def hold_entities(self, changes: Changes) -> None:
        """Make sure every stored company and user the batch writes about
        still exists, and keep it so until commit: a key-share lock, which
        other workers share and a delete waits for; the entities the batch
        updates get the lock that update takes (``FOR NO KEY UPDATE``), in
        sorted order, so that the set-based updates after it may meet them in
        any order without deadlocking another worker. One deleted since the
        snapshot was read means the batch must be read again: its keys now
        find nothing, or someone else. Without this a batch racing a delete
        would leave counters, keys or memberships of a company that is gone.
        (SQLite has one writer: nothing changes under a batch.)"""
        wanted: dict[str, set[str]] = {"company": set(), "user": set()}
        updated: dict[str, set[str]] = {"company": set(), "user": set()}
        new: set[str] = set()
        for e in changes.entities:
            if e.new:
                new.add(e.id)
            elif e.dirty or e.last_seen is not None:
                updated[e.kind].add(e.id)
            else:
                wanted[e.kind].add(e.id)
        wanted["company"].update(key[1] for key in changes.counters)
        for _, company_id, user_id in changes.memberships:
            wanted["company"].add(company_id)
            wanted["user"].add(user_id)
        for o in changes.outcomes:
            if o.company_id is not None:
                wanted["company"].add(o.company_id)
            if o.user_id is not None:
                wanted["user"].add(o.user_id)
        for kind in ("company", "user"):
            shared = wanted[kind] - updated[kind] - new
            self._lock(kind, sorted(updated[kind]), " FOR NO KEY UPDATE")
            self._lock(kind, sorted(shared), " FOR KEY SHARE")

    def _lock(self, kind: str, entity_ids: list[str], mode: str) -> None:
        if not entity_ids:
            return
        rows = self.conn.execute(
            f"SELECT id FROM {_TABLES[kind][0]} WHERE id = {ANY_JSON} ORDER BY id{mode}",
            (values_json(entity_ids),),
        ).fetchall()
        if len(rows) != len(entity_ids):
            raise ConcurrentChange(f"a {kind} of the batch was deleted meanwhile")

    def apply_changes(self, changes: Changes, now: int) -> None:
        self.hold_entities(changes)
        for kind, rows in _entity_rows(changes, now).items():
            self._write_entities(kind, rows, now)
        memberships = [(ids.new_id("cmem"), *m, now) for m in sorted(changes.memberships)]
        insert_json(
            self.conn,
            "memberships",
            _MEMBERSHIP_COLUMNS,
            memberships,
            " ON CONFLICT (company_id, user_id) DO NOTHING",
        )
        counters = [(*key, qty, count) for key, (qty, count) in sorted(changes.counters.items())]
        insert_json(self.conn, "usage_counters", _COUNTER_COLUMNS, counters, _COUNTER_UPSERT)
        sql_effects.write_effects(self.conn, changes, now, self.rules)

    def _write_entities(self, kind: str, rows: _EntityRows, now: int) -> None:
        table, key_table, _ = _TABLES[kind]
        insert_json(self.conn, table, _ENTITY_COLUMNS, sorted(rows.new))
        update_json(
            self.conn,
            table,
            f"name = COALESCE(v.name, {table}.name), "
            f"traits = ({table}.traits::jsonb || v.traits::jsonb)::text, updated_at = ?",
            "id text, name text, traits text",
            rows.dirty,
            params=(now,),
        )
        update_json(
            self.conn,
            table,
            "last_seen_at = v.at, updated_at = ?",
            "id text, at bigint",
            rows.seen,
            f" AND ({table}.last_seen_at IS NULL OR {table}.last_seen_at < v.at)",
            params=(now,),
        )
        # a REST upsert's new value of a key name replaces the old one
        # (deletes before inserts); an event's only adds
        self.conn.executemany(
            f"DELETE FROM {key_table} WHERE entity_id = ? AND key = ? AND value != ?",
            sorted(rows.deletes),
        )
        inserts = sorted(rows.inserts)
        tail = (
            " ON CONFLICT (environment_id, key, value) DO UPDATE SET entity_id = "
            f"excluded.entity_id WHERE {key_table}.entity_id = excluded.entity_id"
        )
        if len({row[:3] for row in inserts}) == len(inserts):
            added = insert_json(self.conn, key_table, _KEY_COLUMNS, inserts, tail)
        else:  # one statement may not upsert a row twice: one per row
            sql = f"INSERT INTO {key_table} ({_names(_KEY_COLUMNS)}) VALUES (?,?,?,?,?){tail}"
            added = self.conn.executemany(sql, inserts).rowcount
        # a key already this entity's counts; one of another entity does not
        if inserts and added != len(inserts):
            raise ConcurrentChange(f"a {kind} key was claimed by another transaction")

    def mark(self, changes: Changes, now: int) -> None:
        rows = [
            (
                o.event_id,
                o.status,
                o.error_message,
                o.company_id,
                o.user_id,
                ENCODER.encode(o.feature_ids).decode() if o.feature_ids else None,
                now if o.status == "processed" else None,
            )
            for o in changes.outcomes
        ]
        update_json(
            self.conn,
            "events",
            _MARK,
            _EVENT_COLUMNS,
            rows,
            " AND events.status = 'pending'",
            (now,),
        )
        release_keys(self.conn, changes.released)


# PostgreSQL: one statement for the day rows and one for the members and
# their counts, whatever their number (``tally.storage.postgres.batch``); the
# counts add the members the insert really added (a member already stored,
# by this worker or a concurrent one, adds nothing)
_COUNT_MEMBERS = (
    "WITH added AS (INSERT INTO event_subtype_members (environment_id, subtype, kind, member_id) "
    + rows_from("environment_id text, subtype text, kind text, member_id text")
    + " ON CONFLICT (environment_id, subtype, kind, member_id) DO NOTHING "
    "RETURNING environment_id, subtype, kind) "
    "INSERT INTO event_subtype_counts (environment_id, subtype, kind, members) "
    "SELECT environment_id, subtype, kind, COUNT(*) FROM added "
    "GROUP BY environment_id, subtype, kind ORDER BY environment_id, subtype, kind "
    "ON CONFLICT (environment_id, subtype, kind) DO UPDATE SET "
    "members = event_subtype_counts.members + excluded.members"
)
_DAY_COLUMNS = (
    "environment_id text, subtype text, type text, day bigint, processed bigint, "
    "failed bigint, first_id text, last_id text, last_processed_at bigint"
)


def record_summaries(conn: Any, rows: sql_summaries.SummaryRows) -> None:
    """``sql_summaries.record`` in two statements, whatever the number of rows."""
    if not rows:
        return
    days = [
        (*key, r.processed, r.failed, r.first_id, r.last_id, r.last_processed_at)
        for key, r in sorted(rows.days.items())
    ]
    upsert = sql_summaries.UPSERT_DAY
    head, tail = upsert[: upsert.index(" VALUES")], upsert[upsert.index(" ON CONFLICT") :]
    conn.execute(
        f"{head} {rows_from(_DAY_COLUMNS)}{tail}",
        (rows_json(days),),
    )
    if rows.members:
        conn.execute(_COUNT_MEMBERS, (rows_json(sorted(rows.members)),))
