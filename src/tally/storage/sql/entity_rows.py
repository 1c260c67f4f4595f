"""Reading companies, users and memberships on an open connection of either
backend (a reader's, or the writer's inside its transaction), in bulk: one query per
kind of detail for a whole page of entities. The SQL is portable between
SQLite and PostgreSQL (see ``tally.storage.sql``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tally.clock import from_micros, to_micros
from tally.errors import Invalid
from tally.jsontext import read_object
from tally.metering import periods
from tally.storage.base_entities import (
    Company,
    CompanyHead,
    EntityFilter,
    EntityKey,
    Membership,
    UsageCounter,
    User,
)
from tally.storage.sql import FALSE, chunks, contains, in_list, like_pattern

TABLES = {"company": ("companies", "company_keys", "comp"), "user": ("users", "user_keys", "user")}
COMPANY_COLUMNS = (
    "id, environment_id, name, traits, last_seen_at, billing_anchor, created_at, updated_at"
)
# A page of companies with the user count of each, counted for the page's
# rows only (the derived table is limited first). Format with the filter's
# ``clause`` and ``order`` (on alias ``e``); then LIMIT and OFFSET.
COMPANY_PAGE = (
    f"SELECT e.*, (SELECT COUNT(*) FROM memberships m WHERE m.company_id = e.id) "
    f"FROM (SELECT {COMPANY_COLUMNS} FROM companies e WHERE {{clause}} "
    "ORDER BY {order} LIMIT ? OFFSET ?) e ORDER BY {order}"
)
USER_COLUMNS = "id, environment_id, name, traits, last_seen_at, created_at, updated_at"
_KIND_ORDER = {
    kind: rank for rank, kind in enumerate(("all_time", "day", "week", "month", "billing"))
}

_FIRST_KEY = (
    "(SELECT value FROM company_keys WHERE entity_id = c.id ORDER BY created_at, key LIMIT 1)"
)
_MEMBERSHIP_SELECT = (
    "SELECT m.id, m.environment_id, m.company_id, m.user_id, m.created_at, "
    f"c.name, {_FIRST_KEY}, c.last_seen_at, c.created_at, c.updated_at "
    "FROM memberships m LEFT JOIN companies c ON c.id = m.company_id"
)
# The counters of a page of companies in the current periods, in one
# statement: every subtype each company has (walked with index seeks, whatever
# the history), times the day, week and month periods, all time and (for a
# company with an anchor) its billing period. ``{companies}`` is a VALUES list
# of (company, billing start: -1 without an anchor); then day, week, month.
# A row per (company, subtype, period) with the counter's quantity and events
# as one text ('<quantity> <events>': one probe for both), NULL when there is no counter. Scalar subqueries, not a join: each is one probe of the
# primary key, whatever the planner knows (a join planned without statistics,
# or generic, hashes every counter of the table: tests/contract/test_pg_plans.py).
_PAGE_COUNTERS = """
WITH RECURSIVE c(company_id, billing_start) AS (
    VALUES {companies}
),
s(company_id, subtype) AS (
    SELECT c.company_id,
           (SELECT MIN(subtype) FROM usage_counters WHERE company_id = c.company_id)
    FROM c
    UNION ALL
    SELECT s.company_id,
           (SELECT MIN(subtype) FROM usage_counters WHERE company_id = s.company_id
            AND subtype > s.subtype)
    FROM s WHERE s.subtype IS NOT NULL
),
f(period, period_start) AS (
    VALUES ('all_time', 0), ('day', ?), ('week', ?), ('month', ?)
),
p(company_id, period, period_start) AS (
    SELECT c.company_id, f.period, f.period_start FROM c CROSS JOIN f
    UNION ALL
    SELECT c.company_id, 'billing', c.billing_start FROM c WHERE c.billing_start >= 0
)
SELECT s.company_id, s.subtype, p.period, p.period_start,
       (SELECT u.quantity || ' ' || u.events FROM usage_counters u
        WHERE u.company_id = s.company_id AND u.subtype = s.subtype
        AND u.period = p.period AND u.period_start = p.period_start)
FROM s JOIN p ON p.company_id = s.company_id
WHERE s.subtype IS NOT NULL
"""


def decode_traits(text: str | None) -> dict[str, Any]:
    return read_object(text)


def find_matches(
    conn: sqlite3.Connection, kind: str, environment_id: str, keys: Mapping[str, str]
) -> dict[tuple[str, str], str]:
    """The entity each (key, value) points at, for those that point somewhere;
    the key ``id`` also matches an entity's own tally id."""
    table, key_table, prefix = TABLES[kind]
    found: dict[tuple[str, str], str] = {}
    for key, value in keys.items():
        row = conn.execute(
            f"SELECT entity_id FROM {key_table} WHERE environment_id = ? AND key = ? AND value = ?",
            (environment_id, key, value),
        ).fetchone()
        if row is None and key == "id" and value.startswith(prefix + "_"):
            row = conn.execute(
                f"SELECT id FROM {table} WHERE id = ? AND environment_id = ?",
                (value, environment_id),
            ).fetchone()
        if row is not None:
            found[(key, value)] = row[0]
    return found


def ambiguous(kind: str, keys: Mapping[str, str], entity_ids: set[str]) -> Invalid:
    shown = ", ".join(sorted(entity_ids)[:5])
    return Invalid(
        f"the {kind} keys {dict(keys)} match {len(entity_ids)} different {kind} records "
        f"({shown}); send keys of one {kind} only"
    )


def find_one(
    conn: sqlite3.Connection, kind: str, environment_id: str, keys: Mapping[str, str]
) -> str | None:
    """The one entity ``keys`` point at (``None``: none); two is ``Invalid``."""
    found = set(find_matches(conn, kind, environment_id, keys).values())
    if len(found) > 1:
        raise ambiguous(kind, keys, found)
    return found.pop() if found else None


def exists(conn: sqlite3.Connection, kind: str, environment_id: str, entity_id: str) -> bool:
    table = TABLES[kind][0]
    row = conn.execute(
        f"SELECT 1 FROM {table} WHERE id = ? AND environment_id = ?", (entity_id, environment_id)
    ).fetchone()
    return row is not None


def _keys_of(conn: sqlite3.Connection, kind: str, ids: Sequence[str]) -> dict[str, list[EntityKey]]:
    key_table = TABLES[kind][1]
    out: dict[str, list[EntityKey]] = {}
    for part in chunks(ids):
        clause, args = in_list("entity_id", part)
        rows = conn.execute(
            f"SELECT entity_id, key, value, created_at FROM {key_table} "
            f"WHERE {clause} ORDER BY created_at, key",
            args,
        ).fetchall()
        for entity_id, key, value, created_at in rows:
            out.setdefault(entity_id, []).append(EntityKey(key, value, created_at))
    return out


def current_starts(now: datetime, anchor: int | None) -> dict[str, int]:
    """Start (µs) of the period of each counter kind that contains ``now``;
    -1 for the billing kind of a company without an anchor (no such counter)."""
    return {
        "day": to_micros(periods.day_start(now)),
        "week": to_micros(periods.week_start(now)),
        "month": to_micros(periods.month_start(now)),
        "billing": (
            to_micros(periods.billing_start(now, from_micros(anchor))) if anchor is not None else -1
        ),
    }


PAGE = 250  # companies per statement of ``counters_of`` (two parameters each)


def counters_of(
    conn: sqlite3.Connection, companies: Sequence[tuple[str, int | None]], now: datetime
) -> dict[str, tuple[UsageCounter, ...]]:
    """The counters in the current periods of each (company, billing anchor),
    in one statement per ``PAGE`` companies (not one per company)."""
    found: dict[str, list[tuple[str, str, int, str]]] = {}
    anchors = dict(companies)
    starts = current_starts(now, None)
    for part in chunks(list(anchors.items()), PAGE):
        args: list[Any] = []
        for company_id, anchor in part:
            args += (company_id, current_starts(now, anchor)["billing"])
        sql = _PAGE_COUNTERS.format(companies=",".join(["(?, ?)"] * len(part)))
        args += (starts["day"], starts["week"], starts["month"])
        for company_id, subtype, kind, start, counts in conn.execute(sql, args).fetchall():
            if counts is not None:
                found.setdefault(company_id, []).append((subtype, kind, start, counts))
    ends: dict[tuple[str, int, int | None], int | None] = {}  # the same for most companies
    out: dict[str, tuple[UsageCounter, ...]] = {}
    for company_id, rows in found.items():
        rows.sort(key=lambda row: (row[0], _KIND_ORDER[row[1]]))
        anchor = anchors[company_id]
        counters = []
        for subtype, kind, start, counts in rows:
            if (kind, start, anchor) not in ends:
                anchor_at = from_micros(anchor) if anchor is not None else None
                end = periods.period_end(kind, from_micros(start), anchor_at)
                ends[kind, start, anchor] = to_micros(end) if end is not None else None
            quantity, events = counts.split(" ")
            counters.append(
                UsageCounter(
                    subtype=subtype,
                    kind=kind,
                    period_start=start,
                    period_end=ends[kind, start, anchor],
                    quantity=int(quantity),
                    events=int(events),
                )
            )
        out[company_id] = tuple(counters)
    return out


def current_counters(
    conn: sqlite3.Connection, company_id: str, anchor: int | None, now: datetime
) -> tuple[UsageCounter, ...]:
    return counters_of(conn, [(company_id, anchor)], now).get(company_id, ())


def load_companies(
    conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], now: datetime
) -> list[Company]:
    """Companies with their keys, user counts and current counters, from
    rows of ``COMPANY_COLUMNS`` (and their user count, when a ninth column
    has it: ``COMPANY_PAGE``): two or three statements for the whole page."""
    ids = [row[0] for row in rows]
    keys = _keys_of(conn, "company", ids)
    counters = counters_of(conn, [(row[0], row[5]) for row in rows], now)
    users: dict[str, int] = {row[0]: int(row[8]) for row in rows if len(row) > 8}
    for part in chunks(ids) if len(users) < len(rows) else ():
        clause, args = in_list("company_id", part)
        for company_id, count in conn.execute(
            f"SELECT company_id, COUNT(*) FROM memberships WHERE {clause} GROUP BY company_id",
            args,
        ).fetchall():
            users[company_id] = int(count)
    return [
        Company(
            id=row[0],
            environment_id=row[1],
            name=row[2],
            traits=row[3] or "{}",
            last_seen_at=row[4],
            billing_anchor=row[5],
            created_at=row[6],
            updated_at=row[7],
            keys=tuple(keys.get(row[0], ())),
            user_count=users.get(row[0], 0),
            counters=counters.get(row[0], ()),
        )
        for row in rows
    ]


def _membership(row: Sequence[Any]) -> Membership:
    company = None
    if row[8] is not None:  # the company row exists
        company = CompanyHead(
            id=row[2],
            environment_id=row[1],
            name=row[5] or row[6] or row[2],
            last_seen_at=row[7],
            created_at=row[8],
            updated_at=row[9],
        )
    return Membership(row[0], row[1], row[2], row[3], row[4], company)


def load_users(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> list[User]:
    """Users with their keys and memberships, from rows of ``USER_COLUMNS``."""
    ids = [row[0] for row in rows]
    keys = _keys_of(conn, "user", ids)
    members: dict[str, list[Membership]] = {}
    for part in chunks(ids):
        clause, args = in_list("m.user_id", part)
        for row in conn.execute(
            f"{_MEMBERSHIP_SELECT} WHERE {clause} ORDER BY m.created_at, m.id", args
        ).fetchall():
            members.setdefault(row[3], []).append(_membership(row))
    return [
        User(
            id=row[0],
            environment_id=row[1],
            name=row[2],
            traits=row[3] or "{}",
            last_seen_at=row[4],
            created_at=row[5],
            updated_at=row[6],
            keys=tuple(keys.get(row[0], ())),
            memberships=tuple(members.get(row[0], ())),
        )
        for row in rows
    ]


def company_by_id(
    conn: sqlite3.Connection, environment_id: str, company_id: str, now: datetime
) -> Company | None:
    row = conn.execute(
        f"SELECT {COMPANY_COLUMNS} FROM companies WHERE id = ? AND environment_id = ?",
        (company_id, environment_id),
    ).fetchone()
    return load_companies(conn, [row], now)[0] if row else None


def user_by_id(conn: sqlite3.Connection, environment_id: str, user_id: str) -> User | None:
    row = conn.execute(
        f"SELECT {USER_COLUMNS} FROM users WHERE id = ? AND environment_id = ?",
        (user_id, environment_id),
    ).fetchone()
    return load_users(conn, [row])[0] if row else None


def membership_by_id(conn: sqlite3.Connection, membership_id: str) -> Membership | None:
    row = conn.execute(f"{_MEMBERSHIP_SELECT} WHERE m.id = ?", (membership_id,)).fetchone()
    return _membership(row) if row else None


def list_memberships(
    conn: sqlite3.Connection,
    environment_id: str,
    company_id: str | None,
    user_id: str | None,
    limit: int,
    offset: int,
) -> list[Membership]:
    clauses = ["m.environment_id = ?"]
    args: list[Any] = [environment_id]
    if company_id is not None:
        clauses.append("m.company_id = ?")
        args.append(company_id)
    if user_id is not None:
        clauses.append("m.user_id = ?")
        args.append(user_id)
    sql = (
        f"{_MEMBERSHIP_SELECT} WHERE {' AND '.join(clauses)} "
        "ORDER BY m.created_at DESC, m.id DESC LIMIT ? OFFSET ?"
    )
    rows = conn.execute(sql, (*args, limit, offset)).fetchall()
    return [_membership(row) for row in rows]


_SORTS = {
    "created_at": "e.created_at",
    "updated_at": "e.updated_at",
    "last_seen_at": "e.last_seen_at",
    "name": "e.name",
}


def entity_filter(kind: str, environment_id: str, where: EntityFilter) -> tuple[str, list[Any]]:
    """The WHERE clause (on alias ``e``) of a list or count."""
    key_table = TABLES[kind][1]
    clauses = ["e.environment_id = ?"]
    args: list[Any] = [environment_id]
    if where.match_none:
        clauses.append(FALSE)
    if where.ids:
        clause, ids_args = in_list("e.id", where.ids)
        clauses.append(clause)
        args.extend(ids_args)
    if where.q:
        clauses.append(
            f"({contains('e.name')} OR EXISTS (SELECT 1 FROM "
            f"{key_table} k WHERE k.entity_id = e.id AND {contains('k.value')}))"
        )
        args.extend((like_pattern(where.q), like_pattern(where.q)))
    if kind == "user" and where.company_id is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM memberships m WHERE m.company_id = ? AND m.user_id = e.id)"
        )
        args.append(where.company_id)
    if kind == "company" and where.with_feature is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM allocations a WHERE a.company_id = e.id AND a.feature_id = ?)"
        )
        args.append(where.with_feature)
    if kind == "company" and where.without_feature is not None:
        clauses.append(
            "NOT EXISTS (SELECT 1 FROM allocations a WHERE a.company_id = e.id "
            "AND a.feature_id = ?)"
        )
        args.append(where.without_feature)
    return " AND ".join(clauses), args


def entity_order(where: EntityFilter) -> str:
    column = _SORTS[where.sort]
    direction = "DESC" if where.descending else "ASC"
    return f"{column} IS NULL, {column} {direction}, e.id {direction}"
