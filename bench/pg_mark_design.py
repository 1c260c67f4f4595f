"""What a narrower events table would save a PostgreSQL worker (issue 10).

Processing's largest single cost is the ``UPDATE`` that settles a batch's
events: it changes ``status``, ``company_id`` and ``user_id``, which indexes
cover, so every new row version is written on another page and adds an entry
to each of the table's indexes (not a HOT update). The design this measures
keeps those columns out of every index of ``events``, so the update can stay
on its page (HOT, given room: ``fillfactor``), and moves what the indexes
served into narrow tables:

- ``event_queue (id)``: the pending events (instead of ``events_pending``),
  deleted from as a batch settles;
- ``event_companies (company_id, event_id)`` and ``event_users``: reads by
  company and user (instead of ``events_company`` and ``events_user``),
  inserted as a batch settles.

Both sides run on copies of the template of ``bench/pg_worker_profile.py``
(``prep`` first) and settle the same ``--batches`` batches of ``--batch`` pending events with
the outcome rows processing would write (1,000 companies, 20,000 users): today's
statement is tally's own (``tally.storage.postgres.batch``). Copies alternate,
``--rounds`` of each; it prints the wall time of each step per batch, the
share of HOT updates and the size of the events heap.

    .venv/bin/python bench/pg_worker_profile.py prep --events 200000
    .venv/bin/python bench/pg_mark_design.py --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pg_bench import with_database
from tally.storage.postgres.adapter import PgConnection
from tally.storage.postgres.batch import _EVENT_COLUMNS, _MARK, update_json
from tally.storage.postgres.rows import rows_json

TEMPLATE = os.environ.get("TALLY_PROFILE_TEMPLATE", "tally_profile_template")
COPY = "tally_mark_design"

NARROW = """
CREATE TABLE event_queue (id TEXT PRIMARY KEY);
INSERT INTO event_queue SELECT id FROM events WHERE status = 'pending';
CREATE TABLE event_companies (company_id TEXT NOT NULL, event_id TEXT NOT NULL,
    PRIMARY KEY (company_id, event_id));
CREATE TABLE event_users (user_id TEXT NOT NULL, event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, event_id));
DROP INDEX events_pending;
DROP INDEX events_company;
DROP INDEX events_user;
DROP INDEX events_failed;
CREATE INDEX events_failed ON events (environment_id, id) WHERE error_message IS NOT NULL;
ALTER TABLE events SET (fillfactor = {fillfactor})
"""


def admin(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def fresh_copy(url: str, fillfactor: int | None) -> str:
    admin(url, f'DROP DATABASE IF EXISTS "{COPY}" WITH (FORCE)')
    admin(url, f'CREATE DATABASE "{COPY}" TEMPLATE "{TEMPLATE}"')
    db = with_database(url, COPY)
    with psycopg.connect(db, autocommit=True) as conn:
        if fillfactor is not None:
            for statement in NARROW.format(fillfactor=fillfactor).split(";"):
                conn.execute(statement)
            conn.execute("VACUUM FULL events")  # the fillfactor applies to every page
        conn.execute("ANALYZE")
    return db


def outcomes(conn: Any, count: int, now: int) -> list[tuple[Any, ...]]:
    """Outcome rows (``_EVENT_COLUMNS``) of the oldest ``count`` pending events."""
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM events WHERE status = 'pending' ORDER BY id LIMIT %s", (count,)
        )
    ]
    rows = []
    for event_id in ids:
        h = zlib.crc32(event_id.encode())
        company, user = f"cmp_{h % 1000:04d}{'0' * 22}", f"usr_{h % 20000:05d}{'0' * 21}"
        rows.append((event_id, "processed", None, company, user, None, now))
    return rows


def settle(conn: psycopg.Connection, rows: list[tuple[Any, ...]], narrow: bool) -> dict[str, float]:
    """One batch's settling writes, committed; wall seconds per step."""
    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    update_json(
        PgConnection(conn),
        "events",
        _MARK,
        _EVENT_COLUMNS,
        rows,
        " AND events.status = 'pending'",
        (rows[0][-1],),
    )
    steps["update"] = time.perf_counter() - t0
    if narrow:
        t = time.perf_counter()
        conn.execute(
            "DELETE FROM event_queue WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))",
            (rows_json([r[0] for r in rows]),),
        )
        steps["queue"] = time.perf_counter() - t
        t = time.perf_counter()
        for table, column, at in (
            ("event_companies", "company_id", 3),
            ("event_users", "user_id", 4),
        ):
            conn.execute(
                f"INSERT INTO {table} ({column}, event_id) SELECT j->>0, j->>1 "
                "FROM jsonb_array_elements(%s::jsonb) AS j ORDER BY 1, 2 ON CONFLICT DO NOTHING",
                (rows_json(sorted((r[at], r[0]) for r in rows)),),
            )
        steps["links"] = time.perf_counter() - t
    t = time.perf_counter()
    conn.commit()
    steps["commit"] = time.perf_counter() - t
    steps["total"] = time.perf_counter() - t0
    return steps


def measure(url: str, fillfactor: int | None, batches: int, batch: int) -> dict[str, Any]:
    db = fresh_copy(url, fillfactor)
    per_step: dict[str, list[float]] = {}
    now = time.time_ns() // 1000
    with psycopg.connect(db) as conn:
        for _ in range(batches):
            rows = outcomes(conn, batch, now)
            conn.commit()
            for step, seconds in settle(conn, rows, fillfactor is not None).items():
                per_step.setdefault(step, []).append(seconds)
        updated, hot, heap = conn.execute(
            "SELECT n_tup_upd, n_tup_hot_upd, pg_relation_size('events') "
            "FROM pg_stat_user_tables WHERE relname = 'events'"
        ).fetchone()
    admin(url, f'DROP DATABASE IF EXISTS "{COPY}" WITH (FORCE)')
    return {
        "steps": {step: statistics.median(v) for step, v in per_step.items()},
        "hot": hot / updated if updated else 0.0,
        "heap_mb": heap / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fillfactor", type=int, default=50, help="of the narrow design's events")
    args = parser.parse_args()
    designs = {"today": None, f"narrow, fillfactor {args.fillfactor}": args.fillfactor}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in designs}
    for _ in range(args.rounds):
        for name, fillfactor in designs.items():
            results[name].append(measure(args.database_url, fillfactor, args.batches, args.batch))
    print(f"settling a batch of {args.batch:,} events, median of {args.batches} batches per copy")
    for name, runs in results.items():
        for run in runs:
            steps = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in run["steps"].items())
            print(f"  {name:<24} {steps}; HOT {run['hot']:.0%}; heap {run['heap_mb']:.0f} MB")
    today = statistics.median(r["steps"]["total"] for r in results["today"])
    for name in list(designs)[1:]:
        narrow = statistics.median(r["steps"]["total"] for r in results[name])
        print(
            f"narrow / today: {narrow / today:.2f} "
            f"({(today - narrow) / args.batch * 1e6:.1f} µs saved per event)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
