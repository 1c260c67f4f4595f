"""Run tally's portable SQL (written with ``?`` placeholders, as sqlite3 takes
it) on a psycopg 3 connection, with the calls sqlite3's ``Connection`` has:
``execute``, ``executemany`` and cursors with ``fetchone``/``fetchall``/``rowcount``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import psycopg

_TOKENS = re.compile(r"'(?:[^']|'')*'|\?|%")
# (the ``?`` text of a statement, its parameters): see ``PgConnection.tracer``
Tracer = Callable[[str, Sequence[Any]], None]


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
    ``BEGIN``/``COMMIT`` like tally's sqlite3 connections.

    ``BEGIN`` is not sent on its own: it goes to the server with the
    transaction's first statement, in one round trip (a pipeline), and a
    transaction that ran no statement sends nothing at all. Each round trip
    costs more than the server's work for a small statement: the thread
    waiting for it has to get the GIL back from the event loop afterwards."""

    # For tests only (tests/contract/test_pg_plans.py records every statement
    # the hot paths run, to check their plans): when set, each statement is
    # passed to it, as tally wrote it and with its parameters, before it runs
    # (an ``executemany`` once, with its first row). Off, it costs one check.
    tracer: ClassVar[Tracer | None] = None

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn
        self._begin_pending = False

    @classmethod
    def connect(cls, url: str) -> PgConnection:
        return cls(psycopg.connect(url, autocommit=True))

    def execute(
        self, sql: str, params: Sequence[Any] = (), *, prepare: bool | None = None
    ) -> psycopg.Cursor[Any]:
        """``sql`` with ``params`` (``?`` placeholders). ``prepare``: psycopg's
        (``None``: prepared once it has run 5 times; ``False``: never, so
        that each run is planned for the tables as they are then)."""
        if sql == "BEGIN":
            self._begin_pending = True
            return self.raw.cursor()
        if self._begin_pending:
            self._begin_pending = False
            if sql in ("COMMIT", "ROLLBACK"):  # an empty transaction
                return self.raw.cursor()
            with self.raw.pipeline():
                self.raw.execute("BEGIN", prepare=None)
                return self._execute(sql, params, prepare)
        return self._execute(sql, params, prepare)

    def _execute(
        self, sql: str, params: Sequence[Any], prepare: bool | None = None
    ) -> psycopg.Cursor[Any]:
        if PgConnection.tracer is not None:
            PgConnection.tracer(sql, params)
        # without parameters psycopg sends the text as it is: no placeholders
        # to translate, and a doubled ``%`` would stay doubled
        if not params:
            return self.raw.execute(sql, None, prepare=prepare)
        return self.raw.execute(translate(sql), params, prepare=prepare)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        self._send_begin()
        cursor = self.raw.cursor()
        rows = list(rows)
        if rows and PgConnection.tracer is not None:
            PgConnection.tracer(sql, rows[0])
        if rows:
            cursor.executemany(translate(sql), rows)
        return cursor

    def copy(self, sql: str) -> AbstractContextManager[psycopg.Copy]:
        """``cursor.copy(sql)`` (a ``COPY … FROM STDIN``) in the open transaction."""
        self._send_begin()
        return self.raw.cursor().copy(sql)

    def _send_begin(self) -> None:
        if self._begin_pending:
            self._begin_pending = False
            self.raw.execute("BEGIN", prepare=None)

    def close(self) -> None:
        self.raw.close()
