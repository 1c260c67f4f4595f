"""Planner statistics on PostgreSQL: tally keeps them current itself.

tally's tables start empty and fill fast. Until ``ANALYZE`` has run, the
planner guesses their sizes, and the guesses are wrong by orders of
magnitude at 100K rows: measured on this project's machines, the pending
claim sorted every pending row on disk, and ``GET /events?company_id=``
took 130 ms instead of 5 ms. autovacuum fixes this where it runs, but it is
off on some servers and lags after a large import everywhere. So:

- ``tally migrate`` (and every start, which migrates) analyzes the tables a
  migration changed;
- every start, and then every ``CHECK_EVERY_SECONDS`` on each processing
  connection, analyzes the tables whose rows changed by more than
  autovacuum's own default threshold since they were last analyzed (50 rows
  plus 10% of the table), or that hold rows and were never analyzed;
- one process at a time does it (an advisory lock), in a transaction of its
  own: ``ANALYZE`` reads a sample of each table (300 times the statistics
  target rows, about 100 ms at 1M events), and takes a lock that never blocks
  reads or writes.

``settings_warnings`` names what a deployment should change: autovacuum or
``track_counts`` off (without ``track_counts`` PostgreSQL counts no changes,
so neither autovacuum nor this module can tell when a table needs analyzing).
"""

from __future__ import annotations

from tally.storage.postgres.adapter import PgConnection

CHECK_EVERY_SECONDS = 30.0  # how often a processing connection looks
_LOCK_ID = 7_411_873_102  # pg_try_advisory_xact_lock: one analyzer at a time
# the same rule as autovacuum's defaults: analyze_threshold 50, scale factor 0.1
_STALE = (
    "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
    "WHERE s.schemaname = current_schema() AND ("
    "(s.last_analyze IS NULL AND s.last_autoanalyze IS NULL AND "
    "(s.n_live_tup > 0 OR s.n_mod_since_analyze > 0)) "
    "OR s.n_mod_since_analyze > 50 + 0.1 * GREATEST(c.reltuples, 0)) "
    "ORDER BY s.relname"
)


def stale_tables(conn: PgConnection) -> list[str]:
    """The tables of the current schema whose statistics are out of date."""
    return [str(row[0]) for row in conn.execute(_STALE).fetchall()]


def schema_tables(conn: PgConnection) -> list[str]:
    """Every table of the current schema."""
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
    ).fetchall()
    return [str(row[0]) for row in rows]


def analyze(conn: PgConnection, tables: list[str]) -> None:
    for table in tables:
        conn.execute(f'ANALYZE "{table}"')


def analyze_stale(conn: PgConnection) -> list[str]:
    """Inside the caller's transaction: analyze the stale tables, unless
    another process is at it already; returns the tables analyzed."""
    got = conn.execute("SELECT pg_try_advisory_xact_lock(?)", (_LOCK_ID,)).fetchone()
    if not (got and got[0]):
        return []
    tables = stale_tables(conn)
    analyze(conn, tables)
    return tables


def settings_warnings(conn: PgConnection) -> list[str]:
    """One sentence for each server setting that leaves tally's statistics or
    dead rows unmanaged."""
    warnings = []
    for name, consequence in (
        (
            "track_counts",
            "PostgreSQL counts no row changes, so no table is ever analyzed or vacuumed "
            "automatically and query plans degrade as the tables grow",
        ),
        (
            "autovacuum",
            "only tally's pruning loop (TALLY_PRUNE, beside the worker or delivery "
            "loop) vacuums its tables, once dead rows pile up in one; keep TALLY_PRUNE on "
            "or turn autovacuum on",
        ),
    ):
        row = conn.execute(f"SHOW {name}").fetchone()
        if row is not None and str(row[0]).lower() == "off":
            warnings.append(f"PostgreSQL setting {name} is off: {consequence}.")
    return warnings
