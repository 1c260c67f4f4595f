"""Small helpers for SQL that runs unchanged on SQLite and PostgreSQL
(``?`` placeholders; ``tally.storage.postgres.adapter`` turns them into ``%s``).

Lists of values become ``IN (?,?,…)`` lists built here: no JSON functions,
no ``IN ()`` (invalid on PostgreSQL), and at most ``MAX_LIST`` values per list.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")

MAX_LIST = 500  # values per IN (…) list

FALSE = "1 = 0"
TRUE = "1 = 1"


def placeholders(n: int) -> str:
    """``?,?,…`` for ``n`` values (``n`` ≥ 1: ``IN ()`` is not valid SQL)."""
    if n < 1:
        raise ValueError("an IN list needs at least one value")
    return ",".join("?" * n)


def chunks(values: Sequence[T], size: int = MAX_LIST) -> list[Sequence[T]]:
    """``values`` in slices of at most ``size`` (none for an empty sequence)."""
    return [values[i : i + size] for i in range(0, len(values), size)]


def in_list(column: str, values: Sequence[Any], *, negate: bool = False) -> tuple[str, list[Any]]:
    """The condition ``column IN (?,…)`` (``NOT IN`` when ``negate``) and its
    parameters. An empty list is false (``1 = 0``; negated: true, ``1 = 1``);
    a list longer than ``MAX_LIST`` becomes several lists joined with ``OR``
    (negated: ``AND``). ``column`` must be ``NOT NULL`` for the negated form to
    mean what it says."""
    values = list(values)
    if not values:
        return (TRUE if negate else FALSE), []
    operator, joiner = ("NOT IN", " AND ") if negate else ("IN", " OR ")
    parts = [f"{column} {operator} ({placeholders(len(part))})" for part in chunks(values)]
    clause = parts[0] if len(parts) == 1 else "(" + joiner.join(parts) + ")"
    return clause, values


def contains(column: str) -> str:
    """Case-insensitive substring match of ``column`` against a parameter made
    with ``like_pattern`` (SQLite's LIKE ignores ASCII case, PostgreSQL's
    does not: ``lower`` on both sides makes them agree)."""
    return f"lower({column}) LIKE lower(?) ESCAPE '\\'"


def like_pattern(text: str) -> str:
    """The ``LIKE`` pattern of ``contains`` matching ``text`` anywhere, with
    ``\\``, ``%`` and ``_`` in it escaped."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# the most rows one multi-row INSERT carries: a power of two that keeps the
# parameters under SQLite's oldest limit of 999 for tables of up to 31 columns
MAX_ROWS_PER_INSERT = 32


@functools.lru_cache(maxsize=64)
def multi_row_sql(head: str, columns: int, rows: int, tail: str = "") -> str:
    """``head VALUES (?,…),(?,…)… tail`` for ``rows`` rows of ``columns`` values."""
    one = "(" + ",".join("?" * columns) + ")"
    return f"{head} VALUES {','.join([one] * rows)}{tail}"


def power_of_two_slices(count: int, largest: int = MAX_ROWS_PER_INSERT) -> list[tuple[int, int]]:
    """(start, size) slices covering ``range(count)``, each size a power of two
    no larger than ``largest``: a multi-row statement per slice, from a set of
    a few statement texts that the driver's statement cache keeps prepared."""
    out: list[tuple[int, int]] = []
    start = 0
    size = largest
    while start < count:
        while size > count - start:
            size //= 2
        out.append((start, size))
        start += size
    return out


def insert_rows(
    conn: Any,
    head: str,
    columns: int,
    rows: Sequence[tuple[Any, ...]],
    tail: str = "",
) -> None:
    """Insert ``rows`` with a few multi-row statements rather than
    ``executemany``: the sqlite3 module lets go of the GIL around every step,
    so a statement per row hands the GIL back and forth with the event loop
    once per row; here it is once per statement."""
    for start, size in power_of_two_slices(len(rows)):
        args = [value for row in rows[start : start + size] for value in row]
        conn.execute(multi_row_sql(head, columns, size, tail), args)
