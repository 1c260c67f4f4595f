"""Row mapping and shared look-ups of the catalog tables (features,
allocations), used by ``catalog`` and ``usage``; the SQL is
portable between SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from tally.metering.catalog import Allocation, AllocationNote, Feature

FEATURE_COLUMNS = (
    "f.id, f.environment_id, f.name, f.description, f.feature_type, f.event_subtype, "
    "f.created_at, f.updated_at"
)
ALLOCATION_COLUMNS = (
    "a.id, a.environment_id, a.company_id, a.value_type, a.value_numeric, a.value_bool, "
    "a.metric_period, a.month_reset, a.notes, a.created_at, a.updated_at"
)
ALLOCATION_JOIN = f"SELECT {ALLOCATION_COLUMNS}, {FEATURE_COLUMNS} FROM allocations a JOIN features f ON f.id = a.feature_id"


def feature_from_row(row: Sequence[Any], at: int = 0) -> Feature:
    return Feature(*row[at : at + 8])


def notes_from_text(text: str | None) -> tuple[AllocationNote, ...]:
    if not text:
        return ()
    return tuple(
        AllocationNote(n["id"], n["note"], n["author_id"], n["created_at"])
        for n in json.loads(text)
    )


def notes_text(notes: Iterable[AllocationNote]) -> str:
    return json.dumps(
        [
            {"id": n.id, "note": n.note, "author_id": n.author_id, "created_at": n.created_at}
            for n in notes
        ]
    )


def allocation_from_row(row: Sequence[Any]) -> Allocation:
    return Allocation(
        id=row[0],
        environment_id=row[1],
        company_id=row[2],
        value_type=row[3],
        value_numeric=row[4],
        value_bool=None if row[5] is None else bool(row[5]),
        metric_period=row[6],
        month_reset=row[7],
        notes=notes_from_text(row[8]),
        created_at=row[9],
        updated_at=row[10],
        feature=feature_from_row(row, 11),
    )


def load_feature(conn: sqlite3.Connection, environment_id: str, feature_id: str) -> Feature | None:
    row = conn.execute(
        f"SELECT {FEATURE_COLUMNS} FROM features f WHERE f.id = ? AND f.environment_id = ?",
        (feature_id, environment_id),
    ).fetchone()
    return feature_from_row(row) if row else None


def load_allocation(
    conn: sqlite3.Connection, environment_id: str, allocation_id: str
) -> Allocation | None:
    row = conn.execute(
        f"{ALLOCATION_JOIN} WHERE a.id = ? AND a.environment_id = ?",
        (allocation_id, environment_id),
    ).fetchone()
    return allocation_from_row(row) if row else None


def company_exists(conn: sqlite3.Connection, environment_id: str, company_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM companies WHERE id = ? AND environment_id = ?", (company_id, environment_id)
    ).fetchone()
    return row is not None
