"""Dead rows on PostgreSQL: tally vacuums its churning tables itself when
autovacuum is off or lags.

Processing an event rewrites its row, so each processed event leaves a dead
row behind, and a dead entry in the partial ``events_pending`` index that
every idle poll of the worker walks until a vacuum removes it; pruning
leaves dead rows in the tables it deletes from. autovacuum removes them
where it runs, but it is off on some servers, and with its default scale
factor (20%) it waits for 200K dead rows in a table of 1M. So the pruning
loop, after each pass, vacuums each of ``TABLES`` that holds at least
``MIN_DEAD_ROWS`` dead rows (and ``DEAD_SHARE`` of its live ones) and that
no vacuum (manual or automatic) has visited for ``LAG_SECONDS``, or whose
autovacuum is off.

``VACUUM (INDEX_CLEANUP ON)`` runs outside any transaction, on a connection
of its own, one process at a time (an advisory lock). It takes a lock that
never blocks reads, inserts, updates or deletes (only DDL, ``ANALYZE`` and
another vacuum of the same table wait for it), and reads only the pages
changed since the last vacuum (the visibility map).
"""

from __future__ import annotations

import psycopg

TABLES = (
    "events",
    "deliveries",
    "delivery_attempts",
    "webhook_notices",
    "limit_triggers",
    "idempotency_keys",
)
MIN_DEAD_ROWS = 10_000
DEAD_SHARE = 0.05
LAG_SECONDS = 600
_LOCK_ID = 7_411_873_103  # pg_try_advisory_lock: one vacuuming process at a time
_LAGGING = (
    "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
    "WHERE s.schemaname = current_schema() AND s.relname = ANY(%s) "
    "AND s.n_dead_tup >= GREATEST(%s, %s * s.n_live_tup) "
    "AND (current_setting('autovacuum') = 'off' "
    "OR COALESCE(c.reloptions, '{}') @> ARRAY['autovacuum_enabled=false'] "
    "OR COALESCE(GREATEST(s.last_vacuum, s.last_autovacuum), 'epoch') "
    "< now() - make_interval(secs => %s)) "
    "ORDER BY s.relname"
)


def lagging_tables(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """The tables of ``TABLES`` whose dead rows nothing cleans up in time."""
    rows = conn.execute(_LAGGING, (list(TABLES), MIN_DEAD_ROWS, DEAD_SHARE, LAG_SECONDS))
    return [str(row[0]) for row in rows.fetchall()]


def vacuum_lagging(url: str) -> list[str]:
    """Vacuum the lagging tables, unless another process is at it; returns
    the tables vacuumed."""
    with psycopg.connect(url, autocommit=True) as conn:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_ID,)).fetchone()
        if not (got and got[0]):
            return []
        try:
            tables = lagging_tables(conn)
            for table in tables:
                conn.execute(f'VACUUM (INDEX_CLEANUP ON) "{table}"')
            return tables
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
