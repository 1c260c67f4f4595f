"""SQLite implementation of ``EntityStore`` — a mixin of ``SqliteStorage``.

Methods use the host's ``self._writer.call(fn)`` for writes (``fn(conn)`` runs
in one transaction on the writer thread), ``await self._read(fn)`` for reads
and ``self._now()`` for the current time in µs.
"""

from __future__ import annotations


class SqliteEntities:
    pass
