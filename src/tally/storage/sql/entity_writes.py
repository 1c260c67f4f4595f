"""Writes of companies, users, memberships and traits, each run inside the
writer's transaction (``fn(conn, now)``). Upserts go through the pipeline's
own identify upsert (``Processing.upsert_entity``, handed to storage where it
is opened: ``tally.storage.base_batch``) on the backend's unit of work, so the API and identify events follow one set of
rules and write alike: on PostgreSQL a trait change is merged into the row
as stored (a worker may have changed it since it was read), and an upsert
that meets a concurrent write of the same keys runs again (``retrying``).
An error raised here rolls the whole write back."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from tally import ids
from tally.batch import ProcessingFailed
from tally.clock import from_micros, to_micros
from tally.errors import Invalid, NotFound
from tally.metering import periods
from tally.storage.base_batch import Processing
from tally.storage.base_entities import EntityUpsert, TraitChange
from tally.storage.sql import entity_rows as rows
from tally.storage.sql import in_list
from tally.storage.sql.batch import SqlUnitOfWork

T = TypeVar("T")


def retrying(uow: SqlUnitOfWork, write: Callable[[], T]) -> T:
    """``write()`` in a savepoint, run again (up to ``uow.max_attempts``)
    while it meets another transaction's write of the same rows: a worker or
    another server creating the same company by the same key at the same
    moment. Each attempt reads afresh. (SQLite has one writer: one attempt.)"""
    for attempt in range(1, uow.max_attempts + 1):
        uow.conn.execute("SAVEPOINT tally_entity_write")
        try:
            result = write()
        except Exception as err:
            uow.conn.execute("ROLLBACK TO SAVEPOINT tally_entity_write")
            if not uow.is_conflict(err) or attempt == uow.max_attempts:
                raise
            continue
        uow.conn.execute("RELEASE SAVEPOINT tally_entity_write")
        return result
    raise AssertionError("max_attempts is at least 1")


def resolve_for_write(
    conn: sqlite3.Connection, kind: str, env: str, change: EntityUpsert, now: int
) -> str | None:
    """The entity an upsert changes (``None``: it creates one), after the
    checks that need no write; attaches the keys of an upsert by tally id."""
    _, key_table, _ = rows.TABLES[kind]
    keys = dict(change.keys)
    matches = rows.find_matches(conn, kind, env, keys)
    found = set(matches.values())
    if change.id is not None:
        if not rows.exists(conn, kind, env, change.id):
            raise NotFound(f"{kind} {change.id[:64]!r} was not found in this environment")
        others = found - {change.id}
        if others:
            raise Invalid(
                f"the {kind} keys {keys} already belong to {', '.join(sorted(others))}, "
                f"not to {change.id}"
            )
        target: str | None = change.id
    else:
        if len(found) > 1:
            raise rows.ambiguous(kind, keys, found)
        target = next(iter(found), None)
    if target is None:
        if change.update_only:
            raise NotFound(f"no {kind} has the keys {keys}, and update_only forbids creating one")
        return None
    current = dict(
        conn.execute(
            f"SELECT key, value FROM {key_table} WHERE entity_id = ?", (target,)
        ).fetchall()
    )
    if change.prevent_key_remap:
        remapped = sorted(k for k, v in keys.items() if k in current and current[k] != v)
        if remapped:
            raise Invalid(
                f"the {kind} already has other values for the keys {remapped}, "
                "and prevent_key_remap forbids changing them"
            )
    if change.id is not None:
        # keys that point nowhere yet join the entity named by id (one value per key name)
        for key, value in keys.items():
            if (key, value) in matches or (key == "id" and value == target):
                continue
            conn.execute(f"DELETE FROM {key_table} WHERE entity_id = ? AND key = ?", (target, key))
            conn.execute(
                f"INSERT INTO {key_table} (environment_id, key, value, entity_id, created_at) "
                "VALUES (?,?,?,?,?)",
                (env, key, value, target, now),
            )
    return target


def upsert(
    processing: Processing,
    uow: SqlUnitOfWork,
    kind: str,
    env: str,
    change: EntityUpsert,
    now: int,
) -> str:
    conn = uow.conn
    table, key_table, _ = rows.TABLES[kind]
    if not change.keys and change.id is None:
        raise Invalid(f"keys must hold at least one key of the {kind}, or send its id")
    target = resolve_for_write(conn, kind, env, change, now)
    keys = dict(change.keys) if change.keys else {"id": target or ""}
    try:
        entity_id = processing.upsert_entity(uow, kind, env, keys, change.name, change.traits, now)
    except ProcessingFailed as err:
        raise Invalid(str(err)) from None
    if change.last_seen_at is not None:
        conn.execute(
            f"UPDATE {table} SET last_seen_at = ?, updated_at = ? WHERE id = ?",
            (change.last_seen_at, now, entity_id),
        )
    if change.remove_keys:
        clause, names = in_list("key", list(change.remove_keys))
        conn.execute(
            f"DELETE FROM {key_table} WHERE entity_id = ? AND {clause}", (entity_id, *names)
        )
        left = int(
            conn.execute(
                f"SELECT COUNT(*) FROM {key_table} WHERE entity_id = ?", (entity_id,)
            ).fetchone()[0]
        )
        if left == 0:
            raise Invalid(f"remove_keys would leave the {kind} without keys; it must keep one")
    if kind == "user" and (change.companies or change.exact_companies):
        link_companies(conn, env, entity_id, change, now)
    return entity_id


def link_companies(
    conn: sqlite3.Connection, env: str, user_id: str, change: EntityUpsert, now: int
) -> None:
    company_ids: list[str] = []
    for keys in change.companies:
        company_id = rows.find_one(conn, "company", env, keys)
        if company_id is None:
            raise NotFound(f"no company has the keys {dict(keys)} in this environment")
        company_ids.append(company_id)
    if change.exact_companies:
        clause, kept = in_list("company_id", company_ids, negate=True)
        conn.execute(f"DELETE FROM memberships WHERE user_id = ? AND {clause}", (user_id, *kept))
    for company_id in company_ids:
        ensure_membership(conn, env, company_id, user_id, now)


def ensure_membership(
    conn: sqlite3.Connection, env: str, company_id: str, user_id: str, now: int
) -> str:
    conn.execute(
        "INSERT INTO memberships (id, environment_id, company_id, user_id, created_at) "
        "VALUES (?,?,?,?,?) ON CONFLICT (company_id, user_id) DO NOTHING",
        (ids.new_id("cmem"), env, company_id, user_id, now),
    )
    row = conn.execute(
        "SELECT id FROM memberships WHERE company_id = ? AND user_id = ?", (company_id, user_id)
    ).fetchone()
    membership_id: str = row[0]
    return membership_id


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def _incremented(trait: str, current: Any, incr: int) -> int | float:
    if current is None:
        return incr
    if isinstance(current, bool):
        number: int | float | None = None
    elif isinstance(current, int | float):
        number = current
    elif isinstance(current, str):
        number = _number(current.strip())
    else:
        number = None
    if number is None:
        raise Invalid(
            f"the trait {trait!r} holds {json.dumps(current)[:64]}, which is not a number; "
            "incr adds only to numeric traits"
        )
    return number + incr


def trait(
    processing: Processing,
    uow: SqlUnitOfWork,
    kind: str,
    env: str,
    change: TraitChange,
    now: int,
) -> str:
    target = rows.find_one(uow.conn, kind, env, change.keys)
    if target is None and change.update_only:
        raise NotFound(
            f"no {kind} has the keys {dict(change.keys)}, and update_only forbids creating one"
        )
    value = change.set
    if change.incr is not None:
        current = None
        if target is not None:
            # take the row before reading it: on PostgreSQL this waits for a
            # concurrent increment or worker batch, so the value read is current
            uow.conn.execute(
                f"UPDATE {rows.TABLES[kind][0]} SET updated_at = updated_at WHERE id = ?",
                (target,),
            )
            _, traits_text = uow.load_entity(kind, target)
            current = rows.decode_traits(traits_text).get(change.trait)
        value = _incremented(change.trait, current, change.incr)
    keys = dict(change.keys)
    try:
        return processing.upsert_entity(uow, kind, env, keys, None, {change.trait: value}, now)
    except ProcessingFailed as err:
        raise Invalid(str(err)) from None


def delete(conn: sqlite3.Connection, kind: str, entity_id: str) -> None:
    """Delete the entity, its keys and memberships (a company: also its usage
    counters and allocations). Its events keep their ``company_id`` or
    ``user_id``: they are the record of what was counted and billed to whom,
    and a recount counts only companies that exist. The entity's own row
    goes first: on PostgreSQL that waits for any processing batch that holds
    it (``SqlUnitOfWork.hold_entities``), and a batch that comes after
    finds it gone and is read again, so no counter is left behind."""
    table, key_table, _ = rows.TABLES[kind]
    conn.execute(f"DELETE FROM {table} WHERE id = ?", (entity_id,))
    conn.execute(f"DELETE FROM {key_table} WHERE entity_id = ?", (entity_id,))
    if kind == "company":
        conn.execute("DELETE FROM memberships WHERE company_id = ?", (entity_id,))
        conn.execute("DELETE FROM usage_counters WHERE company_id = ?", (entity_id,))
        conn.execute("DELETE FROM allocations WHERE company_id = ?", (entity_id,))
    else:
        conn.execute("DELETE FROM memberships WHERE user_id = ?", (entity_id,))


def recount_billing(
    conn: sqlite3.Connection, environment_id: str, company_id: str, anchor: int | None
) -> None:
    """Rebuild the company's ``billing`` counters from its processed track
    events (none without an anchor)."""
    conn.execute(
        "DELETE FROM usage_counters WHERE company_id = ? AND period = ?",
        (company_id, periods.BILLING),
    )
    if anchor is None:
        return
    anchor_at = from_micros(anchor)
    totals: dict[tuple[str, int], list[int]] = {}
    cursor = conn.execute(
        "SELECT subtype, captured_at, quantity FROM events WHERE environment_id = ? "
        "AND company_id = ? AND type = 'track' AND status = 'processed' AND subtype IS NOT NULL",
        (environment_id, company_id),
    )
    for subtype, captured_at, quantity in cursor:
        start = to_micros(periods.billing_start(from_micros(captured_at), anchor_at))
        total = totals.setdefault((subtype, start), [0, 0])
        total[0] += quantity
        total[1] += 1
    conn.executemany(
        "INSERT INTO usage_counters (environment_id, company_id, subtype, period, period_start, "
        "quantity, events) VALUES (?,?,?,?,?,?,?)",
        [
            (environment_id, company_id, subtype, periods.BILLING, start, qty, count)
            for (subtype, start), (qty, count) in totals.items()
        ],
    )
