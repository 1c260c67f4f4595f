"""Retention benchmark (issue 10, item 5), on SQLite and PostgreSQL.

For each backend, in a fresh database:

1. stores ``--rows`` events through the storage's own ingest (batches of
   1,000) and marks them processed with an ``UPDATE`` per 10,000 (as
   processing leaves them: a rewritten row, on PostgreSQL a dead entry in the
   pending index), and as many finished webhook deliveries with an attempt
   each;
2. prunes them all with the pruning loop's own pass (chunks of at most
   1,000 rows, halved while one takes over 50 ms; a 50 ms pause) while an ingest loop stores batches of 100 events, and prints
   the longest prune transaction, the pass's time, and the ingest batches'
   p50/p99/max latency during the pass against the same loop without it;
3. on PostgreSQL, measures an idle poll of the worker (its pending claim, on
   a new connection, nothing pending) over ``--processed`` processed events
   before and after ``VACUUM (INDEX_CLEANUP ON) events``: the first poll
   walks every dead entry of the pending index, the next ones skip the
   entries the first marked dead.

Figures taken on a shared machine vary; compare within one run.

    .venv/bin/python bench/retention.py                         # both backends, 100K rows
    .venv/bin/python bench/retention.py --backend sqlite --rows 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tally.clock import FrozenClock, SystemClock
from tally.model import NewEvent
from tally.pipeline.processing import PIPELINE
from tally.retention.loop import Pruner
from tally.retention.policy import RetentionPolicy
from tally.storage.sql import retention as sql_retention
from tally.storage.sql.storage import SqlStorage

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH = 1000


def event(env: str, at: int, n: int) -> NewEvent:
    body = {"event": "api-call", "company": {"id": f"c{n % 500}"}, "user": {"id": f"u{n % 5000}"}}
    return NewEvent(
        environment_id=env,
        type="track",
        status="pending",
        body=json.dumps(body),
        quantity=1,
        captured_at=at,
        received_at=at,
        subtype="api-call",
    )


async def fill(s: SqlStorage, raw: Any, rows: int) -> str:
    env, _ = await s.ensure_environment("bench", "development")
    now = int(time.time() * 1_000_000)
    for start in range(0, rows, BATCH):
        await s.ingest([event(env.id, now, n) for n in range(start, min(rows, start + BATCH))])
    while True:  # processed, as the worker leaves them, in transactions of 10,000
        cur = raw.execute(
            "UPDATE events SET status = 'processed', updated_at = updated_at + 1 WHERE id IN "
            "(SELECT id FROM events WHERE status = 'pending' ORDER BY id LIMIT 10000)"
        )
        raw.commit()
        if cur.rowcount == 0:
            break
    deliveries = [
        (f"whd_{n:032x}", env.id, "whk_bench", "user.created", now, now, now) for n in range(rows)
    ]
    raw.cursor().executemany(_insert_deliveries(raw), deliveries)
    raw.cursor().executemany(
        _param(
            raw,
            "INSERT INTO delivery_attempts (delivery_id, number, started_at, finished_at, "
            "outcome, response_code) VALUES (?, 1, ?, ?, 'success', 200)",
        ),
        [(d[0], now, now) for d in deliveries],
    )
    raw.commit()
    return env.id


def _param(raw: Any, sql: str) -> str:
    return sql if _is_sqlite(raw) else sql.replace("?", "%s")


def _is_sqlite(raw: Any) -> bool:
    return type(raw).__module__ == "sqlite3"


def _insert_deliveries(raw: Any) -> str:
    return _param(
        raw,
        "INSERT INTO deliveries (id, environment_id, kind, webhook_id, request_type, status, "
        "attempt_count, response_code, next_attempt_at, finished_at, created_at, updated_at) "
        "VALUES (?, ?, 'webhook', ?, ?, 'success', 1, 200, 0, ?, ?, ?)",
    )


async def ingest_loop(s: SqlStorage, env: str, stop: asyncio.Event) -> list[float]:
    latencies = []
    n = 0
    while not stop.is_set():
        now = int(time.time() * 1_000_000)
        started = time.perf_counter()
        await s.ingest([event(env, now, n + i) for i in range(100)])
        latencies.append(time.perf_counter() - started)
        n += 100
        await asyncio.sleep(0.005)
    return latencies


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms ({len(ordered)} batches of 100)"
    )


BODIES: list[float] = []  # seconds each prune transaction's statements took


def _timed(prune: Any) -> Any:
    def run(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return prune(*args)
        finally:
            BODIES.append(time.perf_counter() - started)

    return run


# the statements of each prune transaction, timed where they run
sql_retention._PRUNERS.update({k: _timed(v) for k, v in sql_retention._PRUNERS.items()})


async def measure_prune(s: SqlStorage, env: str) -> None:
    """A pruning pass while an ingest loop runs, then the ingest loop alone
    for as long (the machine may be shared: the same span of it)."""
    later = FrozenClock(SystemClock().now() + timedelta(days=2))
    pruner = Pruner(s, RetentionPolicy(delivery_log_days=1, event_days=1), later)
    stop = asyncio.Event()
    task = asyncio.create_task(ingest_loop(s, env, stop))
    BODIES.clear()
    started = time.perf_counter()
    totals = await pruner.prune_once()
    seconds = time.perf_counter() - started
    stop.set()
    during = await task
    stop = asyncio.Event()
    task = asyncio.create_task(ingest_loop(s, env, stop))
    await asyncio.sleep(seconds)
    stop.set()
    alone = await task
    print(f"  pruned {totals} in {seconds:.1f} s (chunks of at most 1,000, 50 ms pauses)")
    bodies = sorted(BODIES)
    print(
        f"  prune transactions: {len(bodies)}; their statements took p50 "
        f"{statistics.median(bodies) * 1000:.1f} ms, p99 "
        f"{bodies[min(len(bodies) - 1, int(len(bodies) * 0.99))] * 1000:.1f} ms, "
        f"max {bodies[-1] * 1000:.1f} ms; "
        f"the longest call (its wait for the connection, the statements and the COMMIT) "
        f"{pruner.longest_chunk_seconds * 1000:.1f} ms"
    )
    print(f"  ingest while pruning: {summary(during)}")
    print(f"  ingest alone, after:  {summary(alone)}")


def idle_poll_ms(url: str, polls: int = 5) -> list[float]:
    """Each of ``polls`` idle claims on one new connection, in ms."""
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(polls):
            started = time.perf_counter()
            with conn.transaction():
                conn.execute(
                    "SELECT id FROM events WHERE status = 'pending' ORDER BY id LIMIT 2000 "
                    "FOR UPDATE SKIP LOCKED"
                ).fetchall()
            out.append((time.perf_counter() - started) * 1000)
    return out


def pending_index_pages(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        size = conn.execute("SELECT pg_relation_size('events_pending')").fetchone()
        dead = conn.execute(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'events'"
        ).fetchone()
    assert size is not None and dead is not None
    return f"pending index {size[0] // 8192} pages, {dead[0]} dead rows in events"


async def run_backend(name: str, rows: int, processed: int) -> None:
    print(f"{name}:")
    with tempfile.TemporaryDirectory(prefix="tally-retention-") as tmp:
        if name == "sqlite":
            import sqlite3

            from tally.storage.sqlite.storage import SqliteStorage

            path = str(Path(tmp) / "r.db")
            s: SqlStorage = SqliteStorage(path, processing=PIPELINE)
            await s.start()
            raw: Any = sqlite3.connect(path, timeout=30)
            try:
                env = await fill(s, raw, rows)
                await measure_prune(s, env)
            finally:
                raw.close()
                await s.close()
            return
        from tally.storage.postgres.storage import PostgresStorage

        database = f"retention_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{database}"
        try:
            s = PostgresStorage(url, processing=PIPELINE)
            await s.start()
            raw = psycopg.connect(url)
            try:
                env = await fill(s, raw, processed)
                raw.close()
                await s.close()  # its connections go: their statistics reach the server
                print(f"  {processed} processed events, no vacuum: {pending_index_pages(url)}")
                before = idle_poll_ms(url)
                print(
                    "  idle poll before vacuum: " + ", ".join(f"{ms:.2f}" for ms in before) + " ms"
                )
                with psycopg.connect(url, autocommit=True) as conn:
                    started = time.perf_counter()
                    conn.execute("VACUUM (INDEX_CLEANUP ON) events")
                    took = time.perf_counter() - started
                print(
                    f"  VACUUM (INDEX_CLEANUP ON) events: {took:.2f} s; {pending_index_pages(url)}"
                )
                after = idle_poll_ms(url)
                print(
                    "  idle poll after vacuum:  " + ", ".join(f"{ms:.2f}" for ms in after) + " ms"
                )
                s = PostgresStorage(url, processing=PIPELINE)
                await s.start()
                await measure_prune(s, env)
            finally:
                if not raw.closed:
                    raw.close()
                await s.close()
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rows", type=int, default=100_000, help="prunable rows (SQLite)")
    parser.add_argument(
        "--processed", type=int, default=200_000, help="processed events (PostgreSQL)"
    )
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for name in backends:
        asyncio.run(run_backend(name, args.rows, args.processed))


if __name__ == "__main__":
    main()
