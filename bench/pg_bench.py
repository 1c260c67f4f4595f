"""PostgreSQL pieces of the benchmarks (``bench/ingest.py --database-url``,
``bench/pipeline.py``): a fresh database per run, one-off reads, what the
prefill needs, which processes serve the bench, and the COPY ceiling.

Nothing here imports the benchmarks; they pass in what to store."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from tally.storage.postgres.adapter import PgConnection
from tally.storage.postgres.storage import EVENT_COLUMNS

CEILING_TABLE = "bench_copy_ceiling"


def with_database(url: str, name: str) -> str:
    """``url`` naming the database ``name`` instead of its own."""
    return urlsplit(url)._replace(path=f"/{name}").geturl()


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new database ``tally_bench_…`` on ``admin_url``'s server, dropped
    (with any connection left to it) at the end; yields its URL."""
    name = f"tally_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """One read on a fresh connection (``?`` placeholders, as tally writes them)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return list(PgConnection(conn).execute(sql, params).fetchall())


def server_pids(url: str) -> set[int]:
    """The processes of a PostgreSQL server on this machine that work for the
    database ``url`` names: the postmaster and its children (background
    processes, this database's backends, and backends that just ended),
    except the backends of other databases. Empty when the server is
    elsewhere or cannot be asked (Linux /proc)."""
    if urlsplit(url).hostname not in (None, "", "127.0.0.1", "localhost", "::1"):
        return set()
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            foreign = {
                int(pid)
                for (pid,) in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname <> current_database()"
                ).fetchall()
            }
            (backend,) = conn.execute("SELECT pg_backend_pid()").fetchone() or (0,)
    except psycopg.Error:
        return set()
    try:
        postmaster = _parent(backend)
    except (OSError, IndexError, ValueError):
        return set()
    pids = {postmaster}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if _parent(int(entry.name)) == postmaster:
                    pids.add(int(entry.name))
    return pids - foreign


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def server_line(url: str) -> str:
    """The server's version and the settings that decide what a COMMIT costs."""
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('synchronous_commit', 'fsync', 'wal_sync_method', 'shared_buffers')"
            ).fetchall()
        )
    shared_mb = int(settings.get("shared_buffers", 0)) * 8 // 1024
    return (
        f"PostgreSQL {version[0] if version else '?'}, synchronous_commit="
        f"{settings.get('synchronous_commit')}, fsync={settings.get('fsync')} "
        f"({settings.get('wal_sync_method')}), shared_buffers={shared_mb} MB"
    )


def connect(url: str) -> PgConnection:
    """A connection like tally's writers' (autocommit, explicit BEGIN/COMMIT)."""
    return PgConnection.connect(url)


def after_prefill(conn: PgConnection) -> None:
    """Vacuum, analyze and checkpoint what the prefill wrote, so that none of
    it runs during the measurements."""
    conn.execute("VACUUM ANALYZE")
    conn.execute("CHECKPOINT")


def copy_ceiling(
    url: str,
    seconds: float,
    max_rows: int,
    make_batch: Callable[[], list[tuple[Any, ...]]],
    *,
    indexes: bool = False,
) -> tuple[int, float, float]:
    """One client's ``COPY … FROM STDIN`` (``write_row`` per row, a commit per
    batch) into a fresh table with the events table's columns and only its
    primary key (with ``indexes``: all of the events table's indexes); (rows,
    seconds of COPY + COMMIT, seconds of the whole loop). ``make_batch``
    builds the rows of one batch (``EVENT_COLUMNS``' order)."""
    copy_sql = f"COPY {CEILING_TABLE} ({EVENT_COLUMNS}) FROM STDIN"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {CEILING_TABLE}")
        if indexes:
            conn.execute(
                f"CREATE TABLE {CEILING_TABLE} (LIKE events INCLUDING DEFAULTS INCLUDING INDEXES)"
            )
        else:
            conn.execute(f"CREATE TABLE {CEILING_TABLE} (LIKE events INCLUDING DEFAULTS)")
            conn.execute(f"ALTER TABLE {CEILING_TABLE} ADD PRIMARY KEY (id)")
        conn.autocommit = False
        timed = 0.0
        rows = 0
        loop_start = time.perf_counter()
        try:
            while (timed < seconds or rows == 0) and rows < max_rows:
                batch = make_batch()
                t0 = time.perf_counter()
                with conn.cursor().copy(copy_sql) as copy:
                    for row in batch:
                        copy.write_row(row)
                conn.commit()
                timed += time.perf_counter() - t0
                rows += len(batch)
            loop = time.perf_counter() - loop_start
        finally:
            conn.rollback()
            conn.autocommit = True
            conn.execute(f"DROP TABLE IF EXISTS {CEILING_TABLE}")
    return rows, timed, loop
