"""Event summaries: what ``GET /event-types`` and the console's event-type
views read, kept up to date as events settle, so that those reads cost the
same at 10K and at 100M stored events (issue 10, "flat reads").

Two tables (migration 7, ``SCHEMA``), written in the transaction that
settles events, never read-modify-written by the reads:

- ``event_summaries``: per (environment, type, subtype, UTC day of
  ``captured_at``) the settled events: how many were processed and how many
  failed, the smallest and largest event id (the first and last received:
  ids sort by receipt time) and the latest ``captured_at`` of a processed
  one. ``subtype`` is ``''`` for events without one (identify, flag_check …).
- ``event_subtype_members``: every (environment, subtype, company or user)
  of a processed event, and ``event_subtype_counts`` their number per
  (environment, subtype, kind): ``company_count`` and ``user_count``, read
  without counting members.

An event is summarized once, when it settles: processed or failed in
processing (the pipeline calls ``SqlUnitOfWork.record_settled``), failed by
the operator (``fail_next_pending``), or stored already settled (a bad event of a
``/batch`` is stored ``failed``: ``insert_events``). Pending events are not
in the tables: the reads add them from the pending index (``events_pending``),
whose size is the processing backlog, not the history. So the reads answer
exactly what a scan of every event answered before: failed events are not
in ``/event-types`` (as before) and are in the console's counts (as before).

``record`` is the one writer; ``settled_rows`` and ``stored_rows`` are pure
and turn a processed batch, or a group commit's stored rows, into what it
writes. ``rebuild`` recounts everything from the stored events (the
migration's backfill, and tools that store events behind the pipeline's back).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

DAY_US = 86_400_000_000
NO_SUBTYPE = ""  # the subtype column of events that have none

PROCESSED = "processed"
FAILED = "failed"

_TABLES = """
CREATE TABLE event_summaries (
    environment_id TEXT NOT NULL,
    type TEXT NOT NULL,
    subtype TEXT NOT NULL,
    day BIGINT NOT NULL,
    processed BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    first_id TEXT NOT NULL,
    last_id TEXT NOT NULL,
    last_processed_at BIGINT,
    PRIMARY KEY (environment_id, subtype, type, day)
){options};
CREATE TABLE event_subtype_members (
    environment_id TEXT NOT NULL,
    subtype TEXT NOT NULL,
    kind TEXT NOT NULL,
    member_id TEXT NOT NULL,
    PRIMARY KEY (environment_id, subtype, kind, member_id)
){options};
CREATE TABLE event_subtype_counts (
    environment_id TEXT NOT NULL,
    subtype TEXT NOT NULL,
    kind TEXT NOT NULL,
    members BIGINT NOT NULL,
    PRIMARY KEY (environment_id, subtype, kind)
){options};
"""

# the backfill: the same sums ``record`` keeps, from every settled event
_BACKFILL = f"""
INSERT INTO event_summaries (environment_id, type, subtype, day, processed, failed,
    first_id, last_id, last_processed_at)
SELECT environment_id, type, COALESCE(subtype, ''), captured_at / {DAY_US} * {DAY_US},
    SUM(CASE WHEN status = 'failed' THEN 0 ELSE 1 END),
    SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),
    MIN(id), MAX(id), MAX(CASE WHEN status = 'failed' THEN NULL ELSE captured_at END)
FROM events WHERE status <> 'pending'
GROUP BY environment_id, type, COALESCE(subtype, ''), captured_at / {DAY_US} * {DAY_US};
INSERT INTO event_subtype_members (environment_id, subtype, kind, member_id)
SELECT DISTINCT environment_id, subtype, 'company', company_id FROM events
WHERE status = 'processed' AND subtype IS NOT NULL AND company_id IS NOT NULL;
INSERT INTO event_subtype_members (environment_id, subtype, kind, member_id)
SELECT DISTINCT environment_id, subtype, 'user', user_id FROM events
WHERE status = 'processed' AND subtype IS NOT NULL AND user_id IS NOT NULL;
INSERT INTO event_subtype_counts (environment_id, subtype, kind, members)
SELECT environment_id, subtype, kind, COUNT(*) FROM event_subtype_members
GROUP BY environment_id, subtype, kind;
"""


def schema(*, sqlite: bool) -> str:
    """Migration 7: the tables, filled from the events already stored."""
    return _TABLES.format(options=" WITHOUT ROWID" if sqlite else "") + _BACKFILL


def rebuild(conn: Any) -> None:
    """Recount the summaries from the stored events, in the caller's transaction."""
    conn.execute("DELETE FROM event_summaries")
    conn.execute("DELETE FROM event_subtype_members")
    conn.execute("DELETE FROM event_subtype_counts")
    for statement in _BACKFILL.split(";"):
        if statement.strip():
            conn.execute(statement)


# -- what a batch writes ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Settled:
    """One event as it settled."""

    event_id: str
    environment_id: str
    type: str
    subtype: str | None
    captured_at: int
    status: str  # processed | failed
    company_id: str | None = None
    user_id: str | None = None


DayKey = tuple[str, str, str, int]  # environment, subtype, type, day
Member = tuple[str, str, str, str]  # environment, subtype, kind, member id


@dataclass(slots=True)
class DayRow:
    processed: int = 0
    failed: int = 0
    first_id: str = ""
    last_id: str = ""
    last_processed_at: int | None = None


@dataclass(slots=True)
class SummaryRows:
    """A batch's additions, aggregated: one upsert per day row."""

    days: dict[DayKey, DayRow] = field(default_factory=dict)
    members: set[Member] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.days)


def summarize(settled: Iterable[Settled]) -> SummaryRows:
    """The summary rows of events that settled (pure)."""
    rows = SummaryRows()
    for e in settled:
        subtype = e.subtype if e.subtype is not None else NO_SUBTYPE
        key = (e.environment_id, subtype, e.type, e.captured_at - e.captured_at % DAY_US)
        row = rows.days.get(key)
        if row is None:
            row = rows.days[key] = DayRow(first_id=e.event_id, last_id=e.event_id)
        else:
            row.first_id = min(row.first_id, e.event_id)
            row.last_id = max(row.last_id, e.event_id)
        if e.status == FAILED:
            row.failed += 1
            continue
        row.processed += 1
        if row.last_processed_at is None or e.captured_at > row.last_processed_at:
            row.last_processed_at = e.captured_at
        if e.subtype is not None:
            if e.company_id is not None:
                rows.members.add((e.environment_id, e.subtype, "company", e.company_id))
            if e.user_id is not None:
                rows.members.add((e.environment_id, e.subtype, "user", e.user_id))
    return rows


class KnownMembers:
    """The members this process has seen committed, so that a batch sends
    only the others (one process's memory; processing only adds members, and
    ``rebuild``, which deletes them, stores again every member of a stored
    event, so a member known once stays stored).

    Most of a batch's members are stored already: a batch of 10,000 events
    of 20,000 users sent 12,000 member rows that inserted nothing, 6% of the
    PostgreSQL worker's time and 8% of SQLite's. Skipping them changes no
    count: ``event_subtype_counts`` adds the members an insert really added.
    Only members of a committed transaction may be remembered (a batch that
    rolled back stored none of its own): the storage remembers a batch's
    ``settled_members`` after its commit. Bounded: past ``limit`` entries the
    set starts again empty (it only ever saves work)."""

    def __init__(self, limit: int = 500_000) -> None:
        self._known: set[Member] = set()
        self._limit = limit

    def unknown(self, members: set[Member]) -> set[Member]:
        """The members of ``members`` not known to be stored."""
        return members - self._known

    def remember(self, members: set[Member]) -> None:
        """``members`` are stored (their transaction committed)."""
        if len(self._known) + len(members) > self._limit:
            self._known.clear()
        self._known.update(members)

    def __len__(self) -> int:
        return len(self._known)


def settled_rows(events: Sequence[Any], outcomes: Sequence[Any]) -> SummaryRows:
    """The summary rows of a processed batch: its claimed events
    (``PendingEvent``) and how each ended (``Outcome``)."""
    by_id = {e.id: e for e in events}
    return summarize(
        Settled(
            o.event_id,
            (e := by_id[o.event_id]).environment_id,
            e.type,
            e.subtype,
            e.captured_at,
            o.status,
            o.company_id,
            o.user_id,
        )
        for o in outcomes
    )


def stored_rows(rows: Sequence[Sequence[Any]]) -> SummaryRows:
    """The summary rows of the events a group commit stored already settled
    (``rows``: ``sqlite.event_row`` tuples; a pending event is summarized
    when it settles)."""
    return summarize(
        Settled(r[0], r[1], r[2], r[3], r[9], r[4], r[18], r[19]) for r in rows if r[4] != "pending"
    )


UPSERT_DAY = (
    "INSERT INTO event_summaries (environment_id, subtype, type, day, processed, failed, "
    "first_id, last_id, last_processed_at) VALUES (?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (environment_id, subtype, type, day) DO UPDATE SET "
    "processed = event_summaries.processed + excluded.processed, "
    "failed = event_summaries.failed + excluded.failed, "
    "first_id = CASE WHEN excluded.first_id < event_summaries.first_id "
    "THEN excluded.first_id ELSE event_summaries.first_id END, "
    "last_id = CASE WHEN excluded.last_id > event_summaries.last_id "
    "THEN excluded.last_id ELSE event_summaries.last_id END, "
    "last_processed_at = CASE WHEN event_summaries.last_processed_at IS NULL "
    "OR excluded.last_processed_at > event_summaries.last_processed_at "
    "THEN excluded.last_processed_at ELSE event_summaries.last_processed_at END"
)
_ADD_COUNT = (
    "INSERT INTO event_subtype_counts (environment_id, subtype, kind, members) VALUES (?,?,?,?) "
    "ON CONFLICT (environment_id, subtype, kind) DO UPDATE SET "
    "members = event_subtype_counts.members + excluded.members"
)
_INSERT_MEMBER = (
    "INSERT INTO event_subtype_members (environment_id, subtype, kind, member_id) "
    "VALUES (?,?,?,?) ON CONFLICT (environment_id, subtype, kind, member_id) DO NOTHING"
)


def record(conn: Any, rows: SummaryRows) -> None:
    """Add ``rows`` to the summaries, in the caller's transaction (in key
    order: concurrent PostgreSQL workers lock the same rows in the same order)."""
    if not rows:
        return
    conn.executemany(
        UPSERT_DAY,
        [
            (*key, r.processed, r.failed, r.first_id, r.last_id, r.last_processed_at)
            for key, r in sorted(rows.days.items())
        ],
    )
    groups: dict[tuple[str, str, str], list[Member]] = {}
    for member in sorted(rows.members):
        groups.setdefault(member[:3], []).append(member)
    added = []
    for group, members in groups.items():  # one statement per group: its new members
        new = conn.executemany(_INSERT_MEMBER, members).rowcount
        if new > 0:
            added.append((*group, new))
    conn.executemany(_ADD_COUNT, added)


# -- reads ---------------------------------------------------------------------------
# pending events of one environment through the pending index: ``environment_id``
# as an expression no other index covers (see ``console``)
_PENDING = "status = 'pending' AND environment_id || '' = ?"
# a subtype, as an expression no partial index's condition follows from
# (``subtype IS NOT NULL`` would let the planner walk events_env_subtype)
_HAS_SUBTYPE = "COALESCE(subtype, '') <> ''"


def _pending_events(conn: Any, alias: str = "") -> str:
    """``events`` as pending reads name it: on SQLite, held to the pending
    index (its planner has no statistics to tell that it is the small one;
    PostgreSQL's has, from ``tally.storage.postgres.stats``)."""
    named = f"events {alias}".rstrip()
    if isinstance(conn, sqlite3.Connection):
        return f"{named} INDEXED BY events_pending"
    return named


@dataclass(slots=True)
class SubtypeTotals:
    """One subtype's events, settled (the tables) and pending (the backlog)."""

    subtype: str
    processed: int = 0  # pending included: not failed
    failed: int = 0
    first_id: str | None = None
    last_id: str | None = None
    last_processed_at: int | None = None
    companies: int = 0
    users: int = 0

    def add(self, ok: int, failed: int, first: str, last: str, last_at: int | None) -> None:
        self.processed += ok
        self.failed += failed
        self.first_id = first if self.first_id is None else min(self.first_id, first)
        self.last_id = last if self.last_id is None else max(self.last_id, last)
        if last_at is not None and (
            self.last_processed_at is None or last_at > self.last_processed_at
        ):
            self.last_processed_at = last_at

    def add_members(self, kind: str, count: int) -> None:
        if kind == "company":
            self.companies += count
        else:
            self.users += count


def _subtype_filter(
    column: str, q_clause: str | None, subtypes: Sequence[str]
) -> tuple[str, list[Any]]:
    from tally.storage.sql import in_list, like_pattern

    clauses: list[str] = []
    args: list[Any] = []
    if q_clause:
        clauses.append(f"lower({column}) LIKE lower(?) ESCAPE '\\'")
        args.append(like_pattern(q_clause))
    if subtypes:
        clause, values = in_list(column, subtypes)
        clauses.append(clause)
        args.extend(values)
    return "".join(f" AND {c}" for c in clauses), args


def subtype_totals(
    conn: Any,
    environment_id: str,
    q: str | None = None,
    subtypes: Sequence[str] = (),
    *,
    members: bool = False,
) -> dict[str, SubtypeTotals]:
    """Every subtype of the environment (``q``: whose name holds it;
    ``subtypes``: among these) with its totals; ``members``: with its
    distinct companies and users of events that did not fail."""
    where, args = _subtype_filter("subtype", q, subtypes)
    out: dict[str, SubtypeTotals] = {}

    def totals(subtype: str) -> SubtypeTotals:
        found = out.get(subtype)
        if found is None:
            found = out[subtype] = SubtypeTotals(subtype)
        return found

    for subtype, ok, failed, first, last, last_at in conn.execute(
        "SELECT subtype, SUM(processed), SUM(failed), MIN(first_id), MAX(last_id), "
        "MAX(last_processed_at) FROM event_summaries WHERE environment_id = ? "
        f"AND subtype <> ''{where} GROUP BY subtype",
        (environment_id, *args),
    ).fetchall():
        totals(subtype).add(int(ok), int(failed), first, last, last_at)
    for subtype, count, first, last, last_at in conn.execute(
        "SELECT subtype, COUNT(*), MIN(id), MAX(id), MAX(captured_at) "
        f"FROM {_pending_events(conn)} WHERE {_PENDING} AND {_HAS_SUBTYPE}{where} GROUP BY subtype",
        (environment_id, *args),
    ).fetchall():
        totals(subtype).add(int(count), 0, first, last, last_at)
    if members:
        _count_members(conn, environment_id, where, args, totals)
    return out


def _count_members(
    conn: Any, environment_id: str, where: str, args: list[Any], totals: Any
) -> None:
    """Distinct companies and users per subtype: the stored members' counts,
    and the members of pending events that are not among them yet."""
    for subtype, kind, count in conn.execute(
        f"SELECT subtype, kind, members FROM event_subtype_counts WHERE environment_id = ?{where}",
        (environment_id, *args),
    ).fetchall():
        totals(subtype).add_members(kind, int(count))
    for kind, column in (("company", "company_id"), ("user", "user_id")):
        for subtype, count in conn.execute(
            f"SELECT subtype, COUNT(DISTINCT {column}) FROM {_pending_events(conn, 'e')} "
            f"WHERE {_PENDING} AND {_HAS_SUBTYPE} AND {column} || '' <> ''{where} AND NOT EXISTS "
            "(SELECT 1 FROM event_subtype_members m WHERE m.environment_id = e.environment_id "
            f"AND m.subtype = e.subtype AND m.kind = ? AND m.member_id = e.{column}) "
            "GROUP BY subtype",
            (environment_id, *args, kind),
        ).fetchall():
            totals(subtype).add_members(kind, int(count))


def counts_whole_types(where: Any) -> bool:
    """Whether the summaries answer how many events ``where`` (an
    ``EventFilter``) matches: filters by type, subtype and status only."""
    return not any(
        (
            where.company_id,
            where.user_id,
            where.flag_id,
            where.idempotency_key,
            where.id_min,
            where.id_max,
            where.newer_than,
        )
    )


def status_counts(conn: Any, environment_id: str, where: Any) -> dict[str, int]:
    """status → events of the types and subtype of ``where`` (``counts_whole_types``)."""
    from tally.storage.sql import in_list

    clauses: list[str] = []
    args: list[Any] = []
    if where.event_types:
        clause, values = in_list("type", where.event_types)
        clauses.append(clause)
        args.extend(values)
    if where.event_subtype is not None:
        clauses.append("subtype = ?")
        args.append(where.event_subtype)
    extra = "".join(f" AND {c}" for c in clauses)
    processed, failed = conn.execute(
        "SELECT COALESCE(SUM(processed), 0), COALESCE(SUM(failed), 0) FROM event_summaries "
        f"WHERE environment_id = ?{extra}",
        (environment_id, *args),
    ).fetchone()
    (pending,) = conn.execute(
        f"SELECT COUNT(*) FROM {_pending_events(conn)} WHERE {_PENDING}{extra}",
        (environment_id, *args),
    ).fetchone()
    counts = {"pending": int(pending), "processed": int(processed), "failed": int(failed)}
    if where.status is not None:
        return {where.status: counts.get(where.status, 0)}
    return counts


def daily_counts(conn: Any, environment_id: str, since: int) -> dict[tuple[str, int], int]:
    """(subtype, UTC day) → events of every status, whole days from the one
    that holds ``since``."""
    first_day = since - since % DAY_US
    out: dict[tuple[str, int], int] = {}
    for subtype, day, count in conn.execute(
        "SELECT subtype, day, SUM(processed + failed) FROM event_summaries "
        "WHERE environment_id = ? AND subtype <> '' AND day >= ? GROUP BY subtype, day",
        (environment_id, first_day),
    ).fetchall():
        out[(subtype, int(day))] = int(count)
    for subtype, captured_at in conn.execute(
        f"SELECT subtype, captured_at FROM {_pending_events(conn)} WHERE {_PENDING} "
        f"AND {_HAS_SUBTYPE} "
        "AND captured_at >= ?",
        (environment_id, first_day),
    ).fetchall():
        key = (subtype, captured_at - captured_at % DAY_US)
        out[key] = out.get(key, 0) + 1
    return out
