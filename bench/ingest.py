"""Ingestion benchmark of tally (issue 2's last acceptance point; with
``--database-url postgresql://…``, issue 4's).

In one run, on this machine:

1. fills a fresh database with ``--events`` events (SQLite by default: a file
   in the work directory, 1,000,000 events; with a PostgreSQL ``--database-url``:
   a new database ``tally_bench_…`` on that server, dropped at the end, 200,000
   events; half with idempotency keys, all still inside the 24-hour key window)
   straight through ``insert_events``, marks them processed (history the
   worker is done with), creates a secret key with the CLI, and starts the real
   server on it (``python -m tally serve``), twice: with its processing worker
   off (ingestion alone) and on (the default configuration, where every event
   accepted must also be counted); ``--worker on`` or ``off`` runs one of them;
2. drives it with ``wrk`` (a distinct body on every request, see
   ``bench/wrk/events.lua``; half of the events carry an idempotency key and
   5% reuse a recently-sent one) for single ``POST /events``,
   ``POST /event-batch`` (100 events) and ``POST /batch`` (100 events), after a
   warm-up each, checking that the rows stored match the events sent minus
   the duplicates;
3. measures two ceilings: the storage ceiling (one Python loop, ``executemany``
   in batches of 1000 into a fresh table with the same columns and only a
   primary key, same pragmas, a commit per batch, as issue 2 asks; on
   PostgreSQL one psycopg client's ``COPY … FROM STDIN`` of the same rows with
   ``write_row``, a commit per 1000 rows, into a fresh table like the events
   table, indexes included, since issue 4 asks for "COPY of the same rows"
   and names no other table; the same COPY into a primary-key-only table is
   printed for information; ``bench/pg_bench.py``) and the HTTP ceiling (a
   trivial JSON endpoint on Starlette + uvicorn with tally's server options,
   ``bench/ceiling_app.py``, driven by wrk with the same connections and with
   64, the higher figure counting);
4. prints events/s, p50/p99 latency and non-2xx counts per mode, the ceilings,
   and the ratios against their targets; with the worker on, also the backlog
   left when each run ends (in seconds of that run's traffic), the time the
   worker then took to drain it, the event-to-processed lag (p50/p99 of
   ``enriched_at - loaded_at`` of the run's events) and each mode's rate as a
   share of the worker-off rate of the same run (issue 10's targets). It
   reports; it does not assert (exit 0).

The machine may be shared: before each measurement the bench waits a little
for other processes to leave the CPUs alone, and reports how many cores they
used during each measurement anyway ("others").

    .venv/bin/python bench/ingest.py                # the full run (3-5 minutes when quiet)
    .venv/bin/python bench/ingest.py --quick        # a smoke test (about 40 seconds)
    .venv/bin/python bench/ingest.py --worker off   # ingestion alone, no processing
    .venv/bin/python bench/ingest.py --worker on    # only the default configuration
    .venv/bin/python bench/ingest.py --database-url postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pg_bench
from harness import (
    HOST,
    OtherLoad,
    WrkResult,
    ensure_wrk,
    free_port,
    log,
    machine_line,
    parse_wrk,
    serve_command,
    start_process,
    stop_process,
    wait_http,
)
from tally import ids
from tally.model import NewEvent
from tally.storage import is_postgres, sqlite_path
from tally.storage.postgres.storage import insert_events as pg_insert_events
from tally.storage.sqlite.schema import connect
from tally.storage.sqlite.storage import insert_events

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "wrk" / "events.lua"
CEILING_APP = BENCH_DIR / "ceiling_app.py"
CEILING_CONNECTIONS = 64  # the HTTP ceiling is measured here too; the higher figure counts
T = TypeVar("T")

SUBTYPES = ("api-call", "page-view", "search", "export", "login", "upload", "download", "message")
KEY_RATE = 0.5  # share of events that carry an idempotency key
DUP_RATE = 0.05  # share of events that reuse a recently-sent key (inside KEY_RATE)
STORAGE_TARGET = 0.20  # batched ingest ≥ 20% of the storage ceiling
COPY_TARGET = 0.40  # PostgreSQL: batched ingest ≥ 40% of the COPY ceiling
HTTP_TARGET = 0.50  # single-event ingest ≥ 50% of the HTTP ceiling
WORKER_ON_TARGET = 0.60  # batched ingest with the worker on ≥ 60% of worker off
BACKLOG_TARGET_S = 2.0  # backlog at the end of a run < 2 s of its traffic
LAG_TARGET_MS = 2000.0  # event → processed lag p99 < 2 s
DISTURBED = 0.25  # cores used by other processes above which a measurement is redone

# The columns insert_events writes, in its order (tally/storage/sql/event_rows.py).
CEILING_INSERT = (
    "INSERT INTO events (id, environment_id, type, subtype, status, body, quantity, "
    "idempotency_key, sent_at, captured_at, loaded_at, updated_at, trusted_client_clock, "
    "backfill, error_message, api_key_id, remote_ip, user_agent, company_id, user_id, flag_id) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


@dataclass(frozen=True)
class Mode:
    name: str  # the Lua script's mode
    label: str
    path: str
    per_request: int


MODES = (
    Mode("single", "POST /events (1 event)", "/events", 1),
    Mode("event-batch", "POST /event-batch (100)", "/event-batch", 100),
    Mode("capture", "POST /batch (100)", "/batch", 100),
)


@dataclass
class ModeResult:
    mode: Mode
    connections: int
    wrk: WrkResult
    stored: int  # rows the run added to the events table
    expected: int  # events sent minus the duplicates among them
    pending: int  # events still pending (not yet processed) right after the run
    drain_s: float | None  # seconds the worker then took to process them (None: not waited)
    worker: bool = False  # the server's processing worker was on
    lag_ms: dict[int, float] | None = None  # p50/p99 of enriched_at - loaded_at (worker on)

    @property
    def events_per_s(self) -> float:
        return self.wrk.rps * self.mode.per_request

    @property
    def backlog_s(self) -> float | None:
        """The backlog left when the run ended, in seconds of the run's traffic."""
        return self.pending / self.events_per_s if self.events_per_s else None


# -- small helpers ------------------------------------------------------------
def wait_quiet(cfg: Config, threshold: float = 0.15) -> None:
    """Wait, at most ``cfg.quiet_wait`` seconds and only while the run's waiting
    budget lasts, until processes outside the bench use less than ``threshold``
    cores over one second (the machine may be shared)."""
    max_wait = min(cfg.quiet_wait, cfg.quiet_budget)
    if max_wait <= 0:
        return
    start = time.monotonic()
    waited = False
    try:
        while True:
            probe = OtherLoad()
            time.sleep(1.0)
            cores = probe.cores()
            if cores is None or cores < threshold:
                if waited:
                    log("  the machine is quiet again")
                return
            if time.monotonic() - start >= max_wait:
                log(f"  other processes still use {cores:.2f} cores; measuring anyway")
                return
            if not waited:
                log(f"  other processes use {cores:.2f} cores; waiting up to {max_wait:.0f} s")
                waited = True
    finally:
        cfg.quiet_budget -= time.monotonic() - start


def track_body(rng: random.Random) -> tuple[str, str, int]:
    """A track body like bench/wrk/events.lua's: 20,000 users, each always in
    the same one of 1,000 companies."""
    subtype = rng.choice(SUBTYPES)
    quantity = rng.randint(1, 5)
    user = rng.randint(1, 20000)
    body = (
        f'{{"event":"{subtype}","company":{{"id":"co-{user % 1000 + 1}"}},'
        f'"user":{{"id":"user-{user}"}},'
        f'"traits":{{"plan":"pro","region":"eu-west"}},"quantity":{quantity}}}'
    )
    return body, subtype, quantity


def events_table_sql(db_path: Path) -> str:
    """``CREATE TABLE events`` as tally's migrations left it in ``db_path``
    (columns only: no secondary index comes with it)."""
    conn = sqlite3.connect(db_path)
    try:
        row = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        raise RuntimeError(f"no events table in {db_path}")
    return str(row[0])


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def read(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """One read on a fresh connection (SQLite read-only, or PostgreSQL)."""
    if is_postgres(database_url):
        return pg_bench.query(database_url, sql)
    path = sqlite_path(database_url)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return list(conn.execute(sql).fetchall())
    finally:
        conn.close()


def count_events(database_url: str, where: str = "") -> int:
    return int(read(database_url, f"SELECT count(*) FROM events {where}")[0][0])


# what the pipeline would have left of events long processed (not counted)
SETTLE_HISTORY = (
    "UPDATE events SET status = 'processed', enriched_at = loaded_at WHERE status = 'pending'"
)


def count_pending(database_url: str) -> int:
    return count_events(database_url, "WHERE status = 'pending'")


def settle_history(database_url: str) -> None:
    """Mark every pending event processed (no counting), as the prefill does."""
    with write_connection(database_url, synchronous="OFF") as conn:
        conn.execute(SETTLE_HISTORY)
        postgres = is_postgres(database_url)
        conn.execute("VACUUM ANALYZE events" if postgres else "PRAGMA wal_checkpoint(TRUNCATE)")


@contextmanager
def write_connection(database_url: str, *, synchronous: str = "FULL") -> Iterator[Any]:
    """A connection of tally's kind (explicit transactions) beside the server
    (SQLite's ``synchronous`` for bulk loads the bench can redo)."""
    conn: Any = (
        pg_bench.connect(database_url)
        if is_postgres(database_url)
        else connect(sqlite_path(database_url), synchronous=synchronous)
    )
    try:
        yield conn
    finally:
        conn.close()


def processing_lag_ms(database_url: str, since_us: int, until_us: int) -> dict[int, float] | None:
    """p50/p99 of ``enriched_at - loaded_at`` (ms) of the events stored in
    [since, until) and processed since (None when none was)."""
    rows = read(
        database_url,
        "SELECT COALESCE(enriched_at, updated_at) - loaded_at FROM events "
        f"WHERE loaded_at >= {since_us} AND loaded_at < {until_us} AND status <> 'pending'",
    )
    lags = sorted(int(row[0]) for row in rows)
    if not lags:
        return None
    return {p: lags[min(len(lags) - 1, len(lags) * p // 100)] / 1000 for p in (50, 99)}


def wait_settled(database_url: str, timeout: float = 15.0) -> None:
    """Wait until the events table stops growing (the requests still in
    flight when wrk stopped have landed): unchanged over 1 s."""
    deadline = time.monotonic() + timeout
    last = count_events(database_url)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = count_events(database_url)
        if now == last:
            return
        last = now


def wait_drained(database_url: str, timeout: float) -> float | None:
    """Seconds until no event is pending (the worker caught up); None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if count_pending(database_url) == 0:
            return time.monotonic() - start
        time.sleep(0.25)
    return None


# -- 1. the database ----------------------------------------------------------
def create_secret_key(database_url: str, env: dict[str, str]) -> str:
    cmd = [
        sys.executable,
        "-m",
        "tally",
        "keys",
        "create",
        "--environment",
        "development",
        "--database-url",
        database_url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"tally keys create failed:\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def key_record(database_url: str, key: str) -> tuple[str, str]:
    """(api key id, environment id) of ``key``, found by its stored prefix."""
    for key_id, env_id, prefix in read(
        database_url, "SELECT id, environment_id, prefix FROM api_keys"
    ):
        if key.startswith(prefix):
            return key_id, env_id
    raise RuntimeError("the key the CLI printed is not in the database")


def prefill_chunks(count: int, env_id: str, key_id: str, hours: float) -> Iterator[list[NewEvent]]:
    """``count`` prefill events in chunks of 10,000, logging progress as they
    are taken. Their receipt times are spread over the last ``hours`` hours."""
    rng = random.Random(20240501)
    start = time.perf_counter()
    now_us = time.time_ns() // 1000
    first_us = now_us - int(hours * 3600 * 1_000_000)
    step = (now_us - first_us) / max(count, 1)
    chunk = 10_000
    done = 0
    next_report = time.monotonic() + 5
    while done < count:
        size = min(chunk, count - done)
        events = []
        for i in range(done, done + size):
            at = first_us + int(i * step)
            body, subtype, quantity = track_body(rng)
            key = f"prefill-{rng.getrandbits(64):016x}" if rng.random() < KEY_RATE else None
            events.append(
                NewEvent(
                    environment_id=env_id,
                    type="track",
                    status="pending",
                    body=body,
                    quantity=quantity,
                    captured_at=at,
                    received_at=at,
                    subtype=subtype,
                    idempotency_key=key,
                    sent_at=at,
                    api_key_id=key_id,
                    remote_ip=HOST,
                    user_agent="tally-bench/prefill",
                )
            )
        yield events
        done += size
        if time.monotonic() >= next_report:
            rate = done / (time.perf_counter() - start)
            log(f"  prefill: {done:,}/{count:,} events ({rate:,.0f}/s)")
            next_report = time.monotonic() + 5


def prefill(
    database_url: str, count: int, env_id: str, key_id: str, hours: float, processed: bool
) -> float:
    """Store ``count`` events through ``insert_events`` in chunks; returns seconds.

    Their receipt times are all inside the 24-hour idempotency window by
    default, so every prefill key stays in the key table while the server
    runs. With ``processed``, each chunk is then marked ``processed`` as the
    pipeline would have left it long ago, so that the server's worker does not
    spend the bench working off a backlog of a million history events (the
    entities they name are not created)."""
    return store_chunks(database_url, prefill_chunks(count, env_id, key_id, hours), processed)


def store_chunks(
    database_url: str, chunks: Iterator[list[NewEvent]], processed: bool = True
) -> float:
    """Store each chunk of events through the backend's ``insert_events`` in a
    transaction of its own (marked processed, with ``processed``); returns seconds."""
    start = time.perf_counter()
    postgres = is_postgres(database_url)
    insert = pg_insert_events if postgres else insert_events
    with write_connection(database_url, synchronous="OFF") as conn:
        for events in chunks:
            conn.execute("BEGIN" if postgres else "BEGIN IMMEDIATE")
            insert(conn, [events], events[-1].received_at)
            if processed:
                conn.execute(SETTLE_HISTORY)
            conn.execute("COMMIT")
        if postgres:
            pg_bench.after_prefill(conn)
        else:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - start


# -- 3. the ceilings ----------------------------------------------------------
@dataclass
class StorageCeiling:
    rate: float  # rows/s, timing only executemany + COMMIT
    loop_rate: float  # rows/s of the whole loop, building the rows included
    rows: int
    others: float | None  # cores other processes used meanwhile


def ceiling_batches() -> Callable[[], list[tuple[Any, ...]]]:
    """A maker of ceiling batches: 1000 rows of the columns ``insert_events``
    writes, in its order, like the events the bench sends."""
    rng = random.Random(7)
    env_id = ids.new_id("env")
    key_id = ids.new_id("key")

    def batch() -> list[tuple[Any, ...]]:
        now_us = time.time_ns() // 1000
        rows = []
        for _ in range(1000):
            body, subtype, quantity = track_body(rng)
            key = f"ceil-{rng.getrandbits(64):016x}" if rng.random() < KEY_RATE else None
            rows.append(
                (
                    ids.new_id("evt"),
                    env_id,
                    "track",
                    subtype,
                    "pending",
                    body,
                    quantity,
                    key,
                    now_us,
                    now_us,
                    now_us,
                    now_us,
                    0,
                    0,
                    None,
                    key_id,
                    HOST,
                    "tally-bench/ceiling",
                    None,
                    None,
                    None,
                )
            )
        return rows

    return batch


def storage_ceiling(db_path: Path, table_sql: str, seconds: float, max_rows: int) -> StorageCeiling:
    """Rows/s of one Python loop: executemany in batches of 1000, a commit per
    batch, WAL and synchronous=FULL, into a fresh table with only a primary key."""
    others = OtherLoad()
    make_batch = ceiling_batches()
    conn = connect(str(db_path), synchronous="FULL")
    try:
        conn.execute(table_sql)
        timed = 0.0
        rows = 0
        loop_start = time.perf_counter()
        while (timed < seconds or rows == 0) and rows < max_rows:
            batch = make_batch()
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(CEILING_INSERT, batch)
            conn.execute("COMMIT")
            timed += time.perf_counter() - t0
            rows += len(batch)
        loop = time.perf_counter() - loop_start
    finally:
        conn.close()
    return StorageCeiling(rows / timed, rows / loop, rows, others.cores())


def copy_ceiling(
    database_url: str, seconds: float, max_rows: int, indexes: bool = False
) -> StorageCeiling:
    """PostgreSQL: rows/s of one client's COPY, a commit per 1000 rows (with
    ``indexes``: into a table with all of the events table's indexes)."""
    others = OtherLoad()
    rows, timed, loop = pg_bench.copy_ceiling(
        database_url, seconds, max_rows, ceiling_batches(), indexes=indexes
    )
    return StorageCeiling(rows / timed, rows / loop, rows, others.cores())


# -- 2. wrk -------------------------------------------------------------------
def run_wrk(
    url: str,
    *,
    threads: int,
    connections: int,
    duration: int,
    script_args: list[str] | None = None,
) -> WrkResult:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if script_args is not None:
        cmd += ["-s", str(LUA_SCRIPT), url, "--", *script_args]
    else:
        cmd.append(url)
    others = OtherLoad()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0 or "Requests/sec" not in done.stdout:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = parse_wrk(done.stdout)
    result.others = others.cores()
    return result


# -- the run ------------------------------------------------------------------
@dataclass
class Config:
    events: int
    duration: int
    warmup: int
    connections: int
    batch_connections: int
    threads: int
    storage_seconds: float
    prefill_hours: float
    prefill_processed: bool
    workers: tuple[bool, ...]  # the server's TALLY_WORKER in each pass: off, on, or both
    drain_timeout: float
    quiet_wait: float
    quiet_budget: float  # seconds of waiting for quiet left in this run (spent as it goes)
    retries: int
    workdir: Path
    keep: bool
    database_url: str | None = None  # PostgreSQL: the server to create the bench database on

    @property
    def postgres(self) -> bool:
        return self.database_url is not None


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        description="tally ingestion benchmark: events/s, latency and the two ceilings.",
    )
    parser.add_argument(
        "--database-url",
        help="a postgresql:// URL: run on PostgreSQL, in a fresh database created on that "
        "server (and dropped afterwards); the URL's own database is only used to create it. "
        "Default: SQLite, in the work directory",
    )
    parser.add_argument(
        "--events",
        type=int,
        help="events to prefill (default 1,000,000 on SQLite, 200,000 on PostgreSQL)",
    )
    parser.add_argument("--duration", type=int, help="seconds per measured wrk run (default 10)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up before each run (default 2)")
    parser.add_argument(
        "--connections",
        type=int,
        default=256,
        help="wrk connections for POST /events and the HTTP ceiling (default 256: a durable "
        "ack waits for an fsync'd commit, so single events need clients in flight to fill "
        "the server; the ceiling is also measured at 64 and the higher figure counts)",
    )
    parser.add_argument(
        "--batch-connections",
        type=int,
        default=16,
        help="wrk connections for the 100-event batch calls (default 16: throughput is flat "
        "from 8 to 64 connections here, only the latency grows with them)",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--storage-seconds",
        type=float,
        help="seconds of inserts for the storage ceiling (default 5)",
    )
    parser.add_argument(
        "--prefill-hours",
        type=float,
        default=12.0,
        help="spread prefill receipt times over this many past hours (default 12, "
        "inside the 24 h idempotency window)",
    )
    parser.add_argument(
        "--prefill-pending",
        action="store_true",
        help="leave the prefilled events pending (default: mark them processed, "
        "so the worker has no backlog of history to work off)",
    )
    parser.add_argument(
        "--worker",
        choices=("on", "off", "both"),
        default="both",
        help="TALLY_WORKER for the server: run every mode with the processing worker off "
        "(ingestion alone), on (the default configuration: every event accepted is also "
        "counted, in the same server) or both, in that order (default both)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="with the worker on: most seconds to wait, after each mode, for the "
        "worker to process what it ingested before the next mode (default 120)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="before each measurement, wait up to this many seconds for other processes to "
        "leave the CPUs alone (default 30; 0 with --quick)",
    )
    parser.add_argument(
        "--quiet-budget",
        type=float,
        default=300.0,
        help="most seconds the whole run spends waiting for quiet (default 300)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        help="measure again (at most this many times) when other processes kept more than "
        f"{DISTURBED} cores busy during a measurement (default 1; 0 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 20,000 prefill events, 3 s runs, 1 s warm-ups",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="directory for the databases and logs (default: a fresh temp dir)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory afterwards")
    args = parser.parse_args(argv)

    quick = args.quick
    if args.database_url is not None and not is_postgres(args.database_url):
        parser.error("--database-url must be a postgresql:// URL (SQLite is the default)")
    postgres = args.database_url is not None
    default_events = 20_000 if quick else (200_000 if postgres else 1_000_000)
    events = args.events if args.events is not None else default_events
    duration = args.duration if args.duration is not None else (3 if quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    storage_seconds = (
        args.storage_seconds if args.storage_seconds is not None else (1.0 if quick else 5.0)
    )
    if (
        events < 0
        or duration < 1
        or warmup < 0
        or min(args.connections, args.batch_connections, args.threads) < 1
    ):
        parser.error("--events ≥ 0, --duration ≥ 1, --warmup ≥ 0, --connections and --threads ≥ 1")
    threads = min(args.threads, args.connections)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tally-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return Config(
        events=events,
        duration=duration,
        warmup=warmup,
        connections=args.connections,
        batch_connections=args.batch_connections,
        threads=threads,
        storage_seconds=storage_seconds,
        prefill_hours=args.prefill_hours,
        prefill_processed=not args.prefill_pending,
        workers={"off": (False,), "on": (True,), "both": (False, True)}[args.worker],
        drain_timeout=args.drain_timeout,
        quiet_wait=args.quiet_wait if args.quiet_wait is not None else (0.0 if quick else 30.0),
        quiet_budget=args.quiet_budget,
        retries=args.retries if args.retries is not None else (0 if quick else 1),
        workdir=workdir,
        keep=args.keep or args.workdir is not None,
        database_url=args.database_url,
    )


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"


def fmt_others(cores: float | None) -> str:
    return "-" if cores is None else f"{cores:.2f}"


def report(
    cfg: Config,
    machine: str,
    prefill_s: float,
    prefilled: int,
    storage_runs: list[StorageCeiling],
    http_runs: list[WrkResult],
    health: WrkResult | None,
    modes: list[ModeResult],
    database: str,
    bare: StorageCeiling | None = None,
) -> None:
    # a ceiling is the best that was seen: the highest of its measurements
    storage = max(storage_runs, key=lambda r: r.rate)
    http = max(http_runs, key=lambda r: r.rps)
    ceiling_name = "COPY" if cfg.postgres else "storage"
    line = "-" * 118
    print()
    print("tally ingest benchmark")
    print(line)
    print(f"machine : {machine}")
    print(
        f"prefill : {prefilled:,} events in {prefill_s:.0f} s ({KEY_RATE:.0%} with idempotency "
        f"keys, receipt times over the last {cfg.prefill_hours:g} h, stored "
        f"{'processed' if cfg.prefill_processed else 'pending'})"
        + (
            "; PostgreSQL prefills 200,000 by default, not SQLite's 1,000,000 (--events)"
            if cfg.postgres
            else ""
        )
    )
    print(
        f"server  : python -m tally serve, TALLY_LOG_LEVEL=warning, TALLY_WORKER="
        f"{'/'.join('on' if w else 'off' for w in cfg.workers)} (a server each); "
        f"a 2xx only after the COMMIT; all on {HOST}"
    )
    print(f"database: {database}")
    print(
        f"load    : wrk -t{cfg.threads}, {cfg.duration} s runs after {cfg.warmup} s warm-ups, "
        f"--latency; a distinct body per request, {KEY_RATE:.0%} of events with an "
        f"idempotency key, {DUP_RATE:.0%} of events a duplicate of a recent key"
    )
    print(line)
    print(
        f"{'mode':<25}{'worker':>7}{'conns':>6}{'req/s':>9}{'events/s':>10}{'p50':>10}"
        f"{'p99':>10}{'non-2xx':>8}{'sockerr':>8}{'stored/expected':>20}{'pending after':>16}"
        f"{'others':>8}"
    )
    for r in modes:
        w = r.wrk
        check = f"{r.stored:,}/{r.expected:,}" if r.expected else "-"
        pending = f"{r.pending:,}" if r.worker else "-"
        if r.drain_s is not None:
            pending += f" ({r.drain_s:.0f} s)"
        print(
            f"{r.mode.label:<25}{'on' if r.worker else 'off':>7}{r.connections:>6}"
            f"{w.rps:>9,.0f}{r.events_per_s:>10,.0f}"
            f"{fmt_ms(w.latency_ms.get(50)):>10}{fmt_ms(w.latency_ms.get(99)):>10}"
            f"{w.non2xx:>8}{w.socket_error_total:>8}{check:>20}{pending:>16}"
            f"{fmt_others(w.others):>8}"
        )
    if health is not None:
        print(
            f"{'(info) GET /health':<25}{'':>7}{cfg.connections:>6}{health.rps:>9,.0f}{'-':>10}"
            f"{fmt_ms(health.latency_ms.get(50)):>10}{fmt_ms(health.latency_ms.get(99)):>10}"
            f"{health.non2xx:>8}{health.socket_error_total:>8}{'-':>20}{'-':>16}"
            f"{fmt_others(health.others):>8}"
        )
    print(
        "  stored/expected: rows the run added / events sent minus the duplicates among them.\n"
        "  pending after: events not yet processed by the worker when wrk stopped (and the "
        "seconds it then took to catch up).\n"
        "  others: cores that processes outside this bench kept busy during the run (the "
        f"machine may be shared; above {DISTURBED} a measurement is redone, at most "
        f"{cfg.retries} times)"
        + (
            "; the PostgreSQL processes serving the bench's database count as the bench's."
            if cfg.postgres
            else "."
        )
    )
    print(line)
    print("ceilings (each measured before and after the tally runs; the higher one counts)")
    print(
        f"  {ceiling_name} runs{' ' * (7 - len(ceiling_name))}: "
        + ", ".join(f"{r.rate:,.0f} rows/s (others {fmt_others(r.others)})" for r in storage_runs)
    )
    print(
        "  HTTP runs   : "
        + ", ".join(f"{r.rps:,.0f} req/s (others {fmt_others(r.others)})" for r in http_runs)
    )
    how = (
        "one psycopg client, COPY FROM STDIN + write_row x 1000 + COMMIT per batch"
        if cfg.postgres
        else "one Python loop, executemany x 1000 + COMMIT per batch, WAL, synchronous=FULL"
    )
    table = (
        "fresh table like the events table (its columns and indexes: the rows stored as tally "
        "must store them)"
        if cfg.postgres
        else "fresh table with the events columns and only its primary key"
    )
    print(
        f"  {ceiling_name:<7}: {storage.rate:>9,.0f} rows/s  {how}, {table} ({storage.rows:,} "
        f"rows; {storage.loop_rate:,.0f} rows/s if building the rows in Python counts; others "
        f"{fmt_others(storage.others)})"
    )
    if bare is not None:
        print(
            f"  (info) : {bare.rate:>9,.0f} rows/s  the same COPY into a fresh table with only "
            f"the primary key (others {fmt_others(bare.others)})"
        )
    print(
        f"  HTTP   : {http.rps:>9,.0f} req/s   trivial JSON endpoint (GET), Starlette + uvicorn "
        f"with tally's options (loop/http auto, no access log), {http.connections} conns; p50 "
        f"{fmt_ms(http.latency_ms.get(50))}, p99 {fmt_ms(http.latency_ms.get(99))}, non-2xx "
        f"{http.non2xx}, others {fmt_others(http.others)}"
    )
    print(line)
    print("targets")
    # the ceiling targets are ingestion's: the worker-off pass where there is one
    first = cfg.workers[0]
    by_name = {r.mode.name: r for r in modes if r.worker == first}
    target = COPY_TARGET if cfg.postgres else STORAGE_TARGET
    rows: list[tuple[str, float, float, float]] = []
    for name in ("event-batch", "capture"):
        if name in by_name and storage.rate > 0:
            r = by_name[name]
            rows.append(
                (f"{r.mode.label} / {ceiling_name} ceiling", r.events_per_s, storage.rate, target)
            )
    if "single" in by_name and http.rps > 0:
        r = by_name["single"]
        rows.append((f"{r.mode.label} / HTTP ceiling", r.events_per_s, http.rps, HTTP_TARGET))
    for label, value, ceiling, target in rows:
        ratio = value / ceiling
        verdict = "met" if ratio >= target else "MISSED"
        print(
            f"  {label:<44}{value:>10,.0f} / {ceiling:>9,.0f} = {ratio:>6.1%}"
            f"   target >= {target:.0%}   {verdict}"
        )
    for name in ("event-batch", "capture"):
        if bare is not None and bare.rate > 0 and name in by_name:
            r = by_name[name]
            print(
                f"  {'(info) ' + r.mode.label + ' / primary-key COPY':<44}"
                f"{r.events_per_s:>10,.0f} / {bare.rate:>9,.0f} = "
                f"{r.events_per_s / bare.rate:>6.1%}   (no target)"
            )
    report_worker_on(modes)
    problems = [r for r in modes if r.wrk.non2xx or r.wrk.socket_error_total]
    if problems:
        print(
            "  WARNING: non-2xx responses or socket errors in: "
            + ", ".join(r.mode.label for r in problems)
        )
    else:
        print("  non-2xx responses: 0 in every mode")
    busy = [
        value
        for value in (storage.others, http.others, *(r.wrk.others for r in modes))
        if value is not None and value > DISTURBED
    ]
    if busy:
        print(
            f"  NOTE: other processes kept up to {max(busy):.2f} cores busy during some "
            "measurements; rerun on a quiet machine for figures to rely on"
        )
    print(line)


def report_worker_on(modes: list[ModeResult]) -> None:
    """Issue 10's targets: with the worker on, batched ingest keeps >= 60% of
    the worker-off rate of the same run, and what it accepts is counted soon:
    the backlog when a run ends is under 2 s of its traffic, the lag p99 under 2 s."""
    off = {r.mode.name: r for r in modes if not r.worker}
    for r in (r for r in modes if r.worker):
        label = f"{r.mode.label}, worker on"
        if r.mode.name in off and off[r.mode.name].events_per_s:
            base = off[r.mode.name].events_per_s
            ratio = r.events_per_s / base
            batched = r.mode.per_request > 1
            verdict = ("met" if ratio >= WORKER_ON_TARGET else "MISSED") if batched else "(info)"
            print(
                f"  {label + ' / worker off':<44}{r.events_per_s:>10,.0f} / {base:>9,.0f} = "
                f"{ratio:>6.1%}   target >= {WORKER_ON_TARGET:.0%}   {verdict}"
            )
        backlog = r.backlog_s
        if backlog is not None:
            drained = "not drained" if r.drain_s is None else f"drained in {r.drain_s:.1f} s"
            print(
                f"  {label + ': backlog at the end':<44}{r.pending:>10,} events = "
                f"{backlog:>5.2f} s of traffic   target < {BACKLOG_TARGET_S:g} s   "
                f"{'met' if backlog < BACKLOG_TARGET_S else 'MISSED'} ({drained})"
            )
        if r.lag_ms is not None:
            p99 = r.lag_ms[99]
            print(
                f"  {label + ': lag p50 / p99':<44}{fmt_ms(r.lag_ms[50]):>10} / {fmt_ms(p99):>9}"
                f"   target p99 < {LAG_TARGET_MS / 1000:g} s   "
                f"{'met' if p99 < LAG_TARGET_MS else 'MISSED'}"
            )


def settle(
    cfg: Config, what: str, measure: Callable[[], T], others: Callable[[T], float | None]
) -> T:
    """``measure()``, done again (up to ``cfg.retries`` times, while the waiting
    budget lasts) while other processes kept more than ``DISTURBED`` cores busy;
    the least disturbed of the attempts counts."""
    best = measure()
    for _ in range(cfg.retries):
        used = others(best)
        if used is None or used <= DISTURBED:
            break
        if cfg.quiet_budget <= 0:
            log(f"  other processes used {used:.2f} cores during {what}; no waiting budget left")
            break
        log(f"  other processes used {used:.2f} cores during {what}; measuring it again")
        again = measure()
        if (others(again) or 0.0) < used:
            best = again
    return best


def run_mode(
    cfg: Config, mode: Mode, base: str, key: str, database_url: str, tag: str, worker: bool
) -> ModeResult:
    """Warm-up, measured wrk run, then the stored-rows check and the worker backlog."""
    conns = cfg.connections if mode.per_request == 1 else cfg.batch_connections
    threads = min(cfg.threads, conns)

    def script_args(phase: str) -> list[str]:
        seed = str(int.from_bytes(os.urandom(3), "big"))
        run_id = f"{tag}-{mode.name}-{phase}-{seed}"
        return [mode.name, str(mode.per_request), key, run_id, str(KEY_RATE), str(DUP_RATE), seed]

    wait_quiet(cfg)
    if cfg.warmup:
        warm = run_wrk(
            base + mode.path,
            threads=threads,
            connections=conns,
            duration=cfg.warmup,
            script_args=script_args("warm"),
        )
        if warm.non2xx:
            log(f"  the warm-up had {warm.non2xx} non-2xx responses")
    wait_settled(database_url)  # the warm-up's requests in flight land before counting
    before = count_events(database_url)
    since_us = time.time_ns() // 1000
    res = run_wrk(
        base + mode.path,
        threads=threads,
        connections=conns,
        duration=cfg.duration,
        script_args=script_args("run"),
    )
    pending = count_pending(database_url) if worker else 0  # the backlog as the run ends
    wait_settled(database_url)  # let the requests still in flight when wrk stopped land
    until_us = time.time_ns() // 1000
    stored = count_events(database_url) - before
    expected = res.counters.get("events", 0) - res.counters.get("dups", 0)
    log(
        f"  {res.rps * mode.per_request:,.0f} events/s, p50 {fmt_ms(res.latency_ms.get(50))}, "
        f"p99 {fmt_ms(res.latency_ms.get(99))}, non-2xx {res.non2xx}, {pending:,} pending, "
        f"others {fmt_others(res.others)}"
    )
    drain_s = lag = None
    if worker:
        drain_s = wait_drained(database_url, cfg.drain_timeout)
        log(
            f"  the worker processed its backlog in {drain_s:.1f} s"
            if drain_s is not None
            else f"  the worker did not process its backlog within {cfg.drain_timeout:g} s"
        )
        lag = processing_lag_ms(database_url, since_us, until_us)
        if lag is not None:
            log(f"  event -> processed lag p50 {fmt_ms(lag[50])}, p99 {fmt_ms(lag[99])}")
    return ModeResult(mode, conns, res, stored, expected, pending, drain_s, worker, lag)


def measure_storage(cfg: Config, database_url: str) -> StorageCeiling:
    """The storage ceiling: SQLite's executemany into a database file of its
    own, or PostgreSQL's COPY into a table of its own in ``database_url``."""
    if cfg.postgres:
        log(
            f"COPY ceiling: {cfg.storage_seconds:g} s of COPY x 1000 into a copy of the events table"
        )
    else:
        log(f"storage ceiling: {cfg.storage_seconds:g} s of executemany x 1000")
        table_sql = events_table_sql(Path(sqlite_path(database_url)))
    ceiling_db = cfg.workdir / "ceiling.db"

    def once() -> StorageCeiling:
        wait_quiet(cfg)
        if cfg.postgres:
            return copy_ceiling(database_url, cfg.storage_seconds, 5_000_000, indexes=True)
        remove_db(ceiling_db)
        return storage_ceiling(ceiling_db, table_sql, cfg.storage_seconds, 5_000_000)

    try:
        result = settle(cfg, "the ceiling", once, lambda r: r.others)
    finally:
        remove_db(ceiling_db)
    log(f"  {result.rate:,.0f} rows/s, others {fmt_others(result.others)}")
    return result


def measure_http(
    cfg: Config, env: dict[str, str], children: list[subprocess.Popen[bytes]]
) -> WrkResult:
    port = free_port()
    log_path = cfg.workdir / "ceiling.log"
    app = start_process(
        [sys.executable, str(CEILING_APP), "--host", HOST, "--port", str(port)], log_path, env
    )
    children.append(app)
    url = f"http://{HOST}:{port}/"
    wait_http(url, app, log_path, timeout=30)
    best: WrkResult | None = None
    try:
        for conns in sorted({CEILING_CONNECTIONS, cfg.connections}):
            log(f"HTTP ceiling: GET {url} with {conns} connections")

            def once(conns: int = conns) -> WrkResult:
                wait_quiet(cfg)
                if cfg.warmup:
                    run_wrk(url, threads=cfg.threads, connections=conns, duration=cfg.warmup)
                return run_wrk(url, threads=cfg.threads, connections=conns, duration=cfg.duration)

            run = settle(cfg, "the HTTP ceiling", once, lambda r: r.others)
            run.connections = conns
            log(f"  {run.rps:,.0f} req/s, others {fmt_others(run.others)}")
            if best is None or run.rps > best.rps:
                best = run
    finally:
        stop_process(app)
    assert best is not None
    result = best
    return result


@contextmanager
def fresh_database(cfg: Config) -> Iterator[str]:
    """The URL of an empty database: a new one on the PostgreSQL server (dropped
    at the end), or a SQLite file in the work directory."""
    if cfg.database_url is not None:
        with pg_bench.fresh_database(cfg.database_url) as url:
            log(f"created the database {url.rsplit('/', 1)[1].split('?')[0]} (dropped at the end)")
            yield url
        return
    db_path = cfg.workdir / "tally.db"
    remove_db(db_path)
    yield f"sqlite:///{db_path}"


def run(cfg: Config) -> None:
    ensure_wrk()
    machine = machine_line()
    log(f"work directory {cfg.workdir}")
    keep = cfg.keep
    try:
        with fresh_database(cfg) as database_url:
            keep = run_on(cfg, machine, database_url) or keep
    except Exception:
        keep = True
        raise
    finally:
        if keep:
            log(f"kept {cfg.workdir} (databases, server.log)")
        else:
            shutil.rmtree(cfg.workdir, ignore_errors=True)


def start_server(
    cfg: Config,
    database_url: str,
    env: dict[str, str],
    children: list[subprocess.Popen[bytes]],
    worker: bool,
) -> tuple[str, subprocess.Popen[bytes]]:
    """``tally serve`` on the database. With the worker on, what an earlier
    worker-off pass left pending is first marked processed, as the prefill's
    history is: every worker-on pass starts with nothing pending, so that its
    figures measure the traffic of its own runs, not a backlog of another pass."""
    if worker and (left := count_pending(database_url)):
        log(f"  marking the {left:,} events an earlier pass left pending as processed history")
        settle_history(database_url)
    port = free_port()
    base = f"http://{HOST}:{port}"
    server_log = cfg.workdir / "server.log"
    server = start_process(
        serve_command(port, database_url),
        server_log,
        env,
    )
    children.append(server)
    wait_http(f"{base}/health", server, server_log, timeout=60)
    log(f"tally serving {base} (worker {'on' if worker else 'off'})")
    return base, server


def run_on(cfg: Config, machine: str, database_url: str) -> bool:
    """The bench on a fresh database; True when its work directory should be
    kept (some request failed)."""
    if cfg.postgres:
        database = pg_bench.server_line(database_url)
        OtherLoad.ours = lambda: pg_bench.server_pids(database_url)
    else:
        database = f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=FULL"
    env = {
        **os.environ,
        "TALLY_LOG_LEVEL": "warning",
    }
    tag = secrets.token_hex(4)
    children: list[subprocess.Popen[bytes]] = []  # stopped in the finally clause
    try:
        # 1. a fresh database, a key from the CLI, the prefill
        key = create_secret_key(database_url, env)
        key_id, env_id = key_record(database_url, key)
        log(f"prefilling {cfg.events:,} events")
        prefill_s = prefill(
            database_url, cfg.events, env_id, key_id, cfg.prefill_hours, cfg.prefill_processed
        )
        prefilled = count_events(database_url)
        log(
            f"prefilled {prefilled:,} events in {prefill_s:.1f} s "
            f"({prefilled / max(prefill_s, 1e-9):,.0f}/s)"
        )

        # 3. the ceilings, before the server runs (and again after it)
        storage_runs = [measure_storage(cfg, database_url)]
        bare = None
        if cfg.postgres:  # (info) the same COPY without the events table's indexes
            wait_quiet(cfg)
            bare = copy_ceiling(database_url, cfg.storage_seconds, 5_000_000)
            log(f"  (info) COPY into a table with only the primary key: {bare.rate:,.0f} rows/s")
        http_runs = [measure_http(cfg, env, children)]

        # 1 (cont.) and 2. the real server on the prefilled database, once per
        # worker setting, and the three ingestion modes against it
        results: list[ModeResult] = []
        health: WrkResult | None = None
        for worker in cfg.workers:
            env["TALLY_WORKER"] = "on" if worker else "off"
            base, server = start_server(cfg, database_url, env, children, worker)
            for mode in MODES:
                conns = cfg.connections if mode.per_request == 1 else cfg.batch_connections
                log(f"{mode.label}: {conns} connections, worker {'on' if worker else 'off'}")
                results.append(
                    settle(
                        cfg,
                        mode.label,
                        lambda mode=mode, base=base, worker=worker: run_mode(
                            cfg, mode, base, key, database_url, tag, worker
                        ),
                        lambda r: r.wrk.others,
                    )
                )
            if health is None:
                log("(info) tally GET /health")

                def measure_health(base: str = base) -> WrkResult:
                    wait_quiet(cfg)
                    return run_wrk(
                        f"{base}/health",
                        threads=cfg.threads,
                        connections=cfg.connections,
                        duration=min(cfg.duration, 5),
                    )

                health = settle(cfg, "GET /health", measure_health, lambda r: r.others)
            stop_process(server)

        log("the ceilings again, now that the server is gone")
        storage_runs.append(measure_storage(cfg, database_url))
        http_runs.append(measure_http(cfg, env, children))
        report(
            cfg,
            machine,
            prefill_s,
            prefilled,
            storage_runs,
            http_runs,
            health,
            results,
            database,
            bare,
        )
        return any(r.wrk.non2xx or r.wrk.socket_error_total for r in results)
    finally:
        for child in children:
            stop_process(child)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
