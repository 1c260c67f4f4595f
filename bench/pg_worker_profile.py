"""Where a PostgreSQL worker's time goes, in process (issue 10).

``prep`` stores ``--events`` pending track events (the prefill of
``bench/pipeline.py --targets``: 1,000 companies of 20 users) in a template
database; ``run`` copies it (``CREATE DATABASE … TEMPLATE``: seconds, so runs
can be repeated on the same backlog) and times ``storage.process_pending``
in a loop until the backlog is empty, printing events/s, the CPU per 1,000
events of this process and of its PostgreSQL backends, and with ``--statements``
the wall time of each statement the processing ran (summed over the run).

    .venv/bin/python bench/pg_worker_profile.py prep --events 100000
    .venv/bin/python bench/pg_worker_profile.py run --batch 2000 --statements
    PYTHONPATH=/elsewhere/src .venv/bin/python bench/pg_worker_profile.py run   # other code

The template (``tally_profile_template``, or ``$TALLY_PROFILE_TEMPLATE``) stays until ``drop``. The machine
is shared: compare CPU per event rather than events/s when it is busy.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline as bench
from pg_bench import with_database
from tally.pipeline.processing import PIPELINE
from tally.settings import Settings
from tally.storage import open_storage
from tally.storage.postgres.adapter import PgConnection

TEMPLATE = os.environ.get("TALLY_PROFILE_TEMPLATE", "tally_profile_template")
WALL: collections.Counter[str] = collections.Counter()
RUNS: collections.Counter[str] = collections.Counter()


def admin(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def prep(url: str, events: int) -> None:
    admin(url, f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
    admin(url, f'CREATE DATABASE "{TEMPLATE}"')
    db = with_database(url, TEMPLATE)
    bench.tally(db, "keys", "create", "--environment", "development", env=dict(os.environ))
    env_id = bench.query(db, "SELECT id FROM environments WHERE name = 'development'")[0][0]
    print(f"stored {events:,} pending events in {bench.prefill(db, env_id, events, seed=1):.1f} s")


def time_statements() -> None:
    """Sum the wall time of every statement ``PgConnection`` runs."""
    execute, many = PgConnection._execute, PgConnection.executemany

    def key(sql: str) -> str:
        return re.sub(r"\s+", " ", sql)[:110]

    def timed_execute(self: PgConnection, sql: str, params: Sequence[Any], *rest: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(self, sql, params, *rest)
        finally:
            WALL[key(sql)] += time.perf_counter() - started
            RUNS[key(sql)] += 1

    def timed_many(self: PgConnection, sql: str, rows: Any) -> Any:
        started = time.perf_counter()
        try:
            return many(self, sql, rows)
        finally:
            WALL["(many) " + key(sql)] += time.perf_counter() - started
            RUNS["(many) " + key(sql)] += 1

    PgConnection._execute = timed_execute  # type: ignore[method-assign]
    PgConnection.executemany = timed_many  # type: ignore[method-assign]


def backend_cpu(url: str, name: str) -> float:
    """CPU seconds the server's backends of database ``name`` used so far
    (a server on this machine: /proc)."""
    with psycopg.connect(url, autocommit=True) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchall()
        ]
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def drain(db: str, name: str, admin_url: str, batch: int) -> None:
    storage = open_storage(Settings(database_url=db), processing=PIPELINE)
    await storage.start()
    try:
        await storage.process_pending(1)  # connections open, start-up ANALYZE done
        WALL.clear()
        RUNS.clear()
        server0, client0 = backend_cpu(admin_url, name), time.process_time()
        started = time.perf_counter()
        done = 0
        while True:
            claimed = await storage.process_pending(batch)
            done += claimed
            if claimed < batch:
                break
        wall = time.perf_counter() - started
        server, client = backend_cpu(admin_url, name) - server0, time.process_time() - client0
    finally:
        await storage.close()
    print(f"batch {batch}: {done:,} events in {wall:.1f} s = {done / wall:,.0f}/s")
    print(
        f"CPU per 1,000 events: worker {client / done * 1e6:.0f} ms, "
        f"PostgreSQL {server / done * 1e6:.0f} ms"
    )
    for sql, seconds in WALL.most_common(25):
        print(f"{seconds:7.2f} s {RUNS[sql]:6d}x  {sql}")


def run(url: str, batch: int, statements: bool) -> None:
    if statements:
        time_statements()
    name = f"tally_profile_{secrets.token_hex(3)}"
    admin(url, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    db = with_database(url, name)
    try:
        asyncio.run(drain(db, name, url, batch))
        bench.check_counters(db)
    finally:
        admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("prep", "run", "drop"))
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--statements", action="store_true", help="time each statement")
    args = parser.parse_args()
    if args.action == "prep":
        prep(args.database_url, args.events)
    elif args.action == "run":
        run(args.database_url, args.batch, args.statements)
    else:
        admin(args.database_url, f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
