"""Run tally's portable SQL (written with ``?`` placeholders, as sqlite3 takes
it) on a psycopg 3 connection, with the calls sqlite3's ``Connection`` has:
``execute``, ``executemany`` and cursors with ``fetchone``/``fetchall``/``rowcount``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

_TOKENS = re.compile(r"'(?:[^']|'')*'|\?|%")


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """``?`` → ``%s`` and ``%`` → ``%%``, leaving string literals alone."""

    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        return token.replace("%", "%%")

    return _TOKENS.sub(swap, sql)


class PgConnection:
    """A psycopg connection in autocommit mode, driven with explicit
    ``BEGIN``/``COMMIT`` like tally's sqlite3 connections."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    @classmethod
    def connect(cls, url: str) -> PgConnection:
        return cls(psycopg.connect(url, autocommit=True))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.raw.execute(translate(sql), params or None, prepare=None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        rows = list(rows)
        if rows:
            cursor.executemany(translate(sql), rows)
        return cursor

    def close(self) -> None:
        self.raw.close()
