"""What the indexes of flat reads cost ingestion (issue 10, item 4): A/B in
one run, at the storage layer, on one backend.

Three databases of the current schema: as migrated (A), with both read
indexes of migration 7 dropped (B: ``events_idempotency``,
``events_rare_type``), and with only ``events_idempotency`` dropped (C),
each prefilled with ``--prefill`` events. Then ``--rounds`` rounds alternate
between them: each stores ``--events`` events through the backend's own
``insert_events`` in group commits of ``--commit`` events (half keyed, 1%
identify, as ``bench/ingest.py`` and ``bench/reads.py`` send them), timing
only the transactions. It prints events/s per variant (the median of its
rounds) and the ratios A/B and C/B: the share of ingest throughput the
indexes leave. On a loaded machine only the ratios mean something (the
rounds alternate so that every variant sees the same load).

    .venv/bin/python bench/read_index_cost.py
    .venv/bin/python bench/read_index_cost.py --database-url postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pg_bench
from tally.model import NewEvent
from tally.storage import is_postgres
from tally.storage.postgres.schema import migrate as pg_migrate
from tally.storage.postgres.storage import insert_events as pg_insert_events
from tally.storage.sqlite.schema import connect, migrate
from tally.storage.sqlite.storage import insert_events

READ_INDEXES = ("events_idempotency", "events_rare_type")
# each variant: the read indexes it drops
VARIANTS = {
    "A: both read indexes": (),
    "B: neither": READ_INDEXES,
    "C: rare type only": ("events_idempotency",),
}
SUBTYPES = ("api-call", "export", "search", "login")


def events(n: int, rng: random.Random, env: str) -> list[NewEvent]:
    now = time.time_ns() // 1000
    out = []
    for _ in range(n):
        identify = rng.random() < 0.01
        out.append(
            NewEvent(
                environment_id=env,
                type="identify" if identify else "track",
                status="pending",
                body='{"event":"api-call","company":{"id":"co-1"},"user":{"id":"u-1"}}',
                quantity=1,
                captured_at=now,
                received_at=now,
                subtype=None if identify else rng.choice(SUBTYPES),
                idempotency_key=f"k-{rng.getrandbits(64):016x}" if rng.random() < 0.5 else None,
            )
        )
    return out


@contextmanager
def database(url: str | None, workdir: Path, tag: str) -> Iterator[tuple[Any, Any]]:
    """(connection, insert function) on a fresh migrated database."""
    if url is not None:
        with pg_bench.fresh_database(url) as fresh:
            conn = pg_bench.connect(fresh)
            pg_migrate(conn)
            try:
                yield conn, pg_insert_events
            finally:
                conn.close()
        return
    conn = connect(str(workdir / f"{tag}.db"), synchronous="NORMAL")
    migrate(conn)
    try:
        yield conn, insert_events
    finally:
        conn.close()


def store(conn: Any, insert: Any, batch: list[NewEvent], postgres: bool) -> float:
    start = time.perf_counter()
    conn.execute("BEGIN" if postgres else "BEGIN IMMEDIATE")
    insert(conn, [batch], batch[-1].received_at)
    conn.execute("COMMIT")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ingest cost of the read indexes, A/B")
    parser.add_argument("--database-url", help="a postgresql:// URL (default: SQLite)")
    parser.add_argument("--prefill", type=int, default=200_000, help="events before (200,000)")
    parser.add_argument("--events", type=int, default=20_000, help="events per round (20,000)")
    parser.add_argument("--commit", type=int, default=1000, help="events per commit (1,000)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per variant (6)")
    args = parser.parse_args(argv)
    postgres = args.database_url is not None
    if postgres and not is_postgres(args.database_url):
        parser.error("--database-url must be a postgresql:// URL")
    rng = random.Random(10)
    with tempfile.TemporaryDirectory(prefix="tally-index-cost-") as tmp, ExitStack() as stack:
        variants = {}
        for tag, dropped in VARIANTS.items():
            conn, insert = stack.enter_context(
                database(args.database_url, Path(tmp), tag.split(":")[0])
            )
            for name in dropped:
                conn.execute(f"DROP INDEX {name}")
            for _ in range(0, args.prefill, 10_000):
                store(conn, insert, events(10_000, rng, "env_bench"), postgres)
            if postgres:
                pg_bench.after_prefill(conn)
            variants[tag] = (conn, insert, [])
        for _ in range(args.rounds):
            for conn, insert, rates in variants.values():
                batches = [
                    events(args.commit, rng, "env_bench") for _ in range(args.events // args.commit)
                ]
                seconds = sum(store(conn, insert, b, postgres) for b in batches)
                rates.append(args.events / seconds)
        backend = "PostgreSQL" if postgres else "SQLite (WAL, synchronous=NORMAL)"
        print(
            f"read index cost on {backend}: {args.prefill:,} events prefilled, "
            f"{args.rounds} alternating rounds of {args.events:,} in commits of {args.commit:,}"
        )
        medians = {}
        for tag, (_, _, rates) in variants.items():
            medians[tag] = statistics.median(rates)
            print(
                f"  {tag:<22} median {medians[tag]:>9,.0f} events/s  rounds "
                + " ".join(f"{r:,.0f}" for r in rates)
            )
        a, b, c = medians.values()
        print(f"  A/B: {a / b:.3f} (ingest keeps {a / b:.1%} of its throughput with both indexes)")
        print(f"  C/B: {c / b:.3f} (with the rare-type index alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
