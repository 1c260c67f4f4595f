"""Pipeline benchmark of tally (issue 3; with a PostgreSQL URL, issue 4 too).

In one run, on this machine, it prints:

1. **worker throughput**: events/s that one ``tally worker --burst`` process
   turns from ``pending`` into ``processed`` (identities, features, counters),
   on ``--small`` and then ``--large`` stored events;
2. **usage reads**: p50/p99 of ``GET /feature-usage`` for one company with an
   allocation, with ``--small`` and with ``--large`` stored events, and their
   ratio (a usage read is a primary-key look-up: the two should be within 2x);
3. **event-to-processed latency** (``enriched_at - loaded_at`` of every event
   of the run, read back from the database) while single-event ``POST
   /events`` load runs at half the maximum rate measured just before, with
   the worker running inside ``tally serve`` as it does by default;
4. with ``--scale`` (meant for PostgreSQL): end-to-end throughput (events
   stored and processed per second, from the first request until nothing is
   pending) of 1 API process + 1 worker and of 2 API processes + 2 workers
   under the same batched load, with the CPU use of the machine.
5. with ``--targets`` (instead of 1 to 4; PostgreSQL, issue 10): one ``tally
   worker --burst`` over a backlog of ``--events`` pending events (1M by
   default), then 1 API process + 1 ``tally worker`` end to end under batched
   load (``POST /event-batch`` of 100) for ``--duration`` seconds, on a fresh
   database whose statistics are left as ``tally migrate`` and start-up leave
   them (nobody runs ``ANALYZE`` by hand); all of it twice: with the server's
   autovacuum setting, and with autovacuum off for every table of tally
   (``ALTER TABLE … SET (autovacuum_enabled = false)`` right after the
   migration), the server setting some deployments have. Printed against the
   targets: >= 10,000 events/s for the worker, >= 8,000 end to end.
6. with ``--effects`` (instead of 1 to 5): what side effects cost the worker —
   ``tally worker --burst`` throughput on ``--effects-events`` pending events
   without side effects, then with 10 webhook endpoints (subscribed to every
   notice tally sends) and a billing sink configured and a ``tally deliver``
   process delivering to local receivers while the worker runs; the ratio
   (target: at least 0.8) and how long delivery took to drain. The catalog
   (features, 1,000 companies with allocations) is the same in both runs;
   see ``bench/effects_setup.py``. The worker writes billing meter records in
   both runs (whether or not ``TALLY_BILLING_SINK_URL`` is set, since issue
   9): the first run has no endpoints and no delivery process.

    .venv/bin/python bench/pipeline.py                       # SQLite, 10k and 1M events
    .venv/bin/python bench/pipeline.py --quick               # a smoke test
    .venv/bin/python bench/pipeline.py --database-url postgresql://postgres@127.0.0.1/postgres --scale
    .venv/bin/python bench/pipeline.py --database-url postgresql://postgres@127.0.0.1/postgres --targets
    .venv/bin/python bench/pipeline.py --database-url postgresql://… --targets --events 50000 --duration 5
    .venv/bin/python bench/pipeline.py --effects             # side effects, SQLite
    .venv/bin/python bench/pipeline.py --effects --database-url postgresql://postgres@127.0.0.1/postgres

With a PostgreSQL URL the bench creates a fresh database on that server
(``tally_bench_…``) and drops it at the end; the URL's own database is only
used to create it. wrk comes from Debian's package (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pg_bench
from effects_setup import ENDPOINTS, configure, receiver_counts
from harness import (
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
from tally.model import NewEvent
from tally.pipeline.processing import PIPELINE
from tally.settings import Settings
from tally.storage import is_postgres, open_storage

BENCH = Path(__file__).resolve().parent
PACED_LUA = BENCH / "wrk" / "paced.lua"
EVENTS_LUA = BENCH / "wrk" / "events.lua"
HOST = "127.0.0.1"
SUBTYPES = ("api-call", "page-view", "search", "export")


# -- the database ---------------------------------------------------------------
@contextmanager
def fresh_database(url: str | None, workdir: Path) -> Iterator[str]:
    if url is None or not is_postgres(url):
        path = workdir / "pipeline.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        yield f"sqlite:///{path}"
        return
    with pg_bench.fresh_database(url) as database_url:
        yield database_url


def query(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One read on a fresh connection (sqlite3 or psycopg)."""
    if is_postgres(database_url):
        return pg_bench.query(database_url, sql, params)
    conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=60)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


def tally(database_url: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tally", *args, "--database-url", database_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tally {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prefill(database_url: str, env_id: str, count: int, seed: int) -> float:
    """Store ``count`` pending track events through the storage API; seconds."""
    rng = random.Random(seed)

    async def run() -> None:
        storage = open_storage(Settings(database_url=database_url), processing=PIPELINE)
        await storage.start()
        try:
            done = 0
            while done < count:
                size = min(5000, count - done)
                now = time.time_ns() // 1000
                events = []
                for _ in range(size):
                    subtype = rng.choice(SUBTYPES)
                    qty = rng.randint(1, 5)
                    company = rng.randint(1, 1000)  # 1,000 companies of 20 users each
                    body = msgspec.json.encode(
                        {
                            "event": subtype,
                            "company": {"id": f"co-{company}"},
                            "user": {"id": f"user-{company}-{rng.randint(1, 20)}"},
                            "quantity": qty,
                        }
                    ).decode()
                    key = f"pf-{rng.getrandbits(64):016x}" if rng.random() < 0.5 else None
                    events.append(
                        NewEvent(
                            environment_id=env_id,
                            type="track",
                            status="pending",
                            body=body,
                            quantity=qty,
                            captured_at=now,
                            received_at=now,
                            subtype=subtype,
                            idempotency_key=key,
                        )
                    )
                await storage.ingest(events)
                done += size
        finally:
            await storage.close()

    started = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - started


def burst(database_url: str, env: dict[str, str]) -> tuple[int, float]:
    """Run ``tally worker --burst``; (events processed, seconds it reported)."""
    out = tally(database_url, "worker", "--burst", env=env)
    match = re.search(r"processed (\d+) events in ([\d.]+) s", out)
    if not match:
        raise RuntimeError(f"unexpected worker output: {out!r}")
    return int(match.group(1)), float(match.group(2))


def check_counters(database_url: str) -> None:
    """The all-time counters equal a recount from the processed events."""
    counted = dict(
        (tuple(r[:2]), int(r[2]))
        for r in query(
            database_url,
            "SELECT company_id, subtype, quantity FROM usage_counters WHERE period = 'all_time'",
        )
    )
    recount = dict(
        (tuple(r[:2]), int(r[2]))
        for r in query(
            database_url,
            "SELECT company_id, subtype, SUM(quantity) FROM events WHERE status = 'processed' "
            "AND type = 'track' AND company_id IS NOT NULL GROUP BY company_id, subtype",
        )
    )
    if counted != recount:
        raise RuntimeError("usage counters differ from a recount of the processed events")


# -- servers and load -------------------------------------------------------------
@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str


def serve(
    database_url: str, workdir: Path, env: dict[str, str], *, worker: bool, http_workers: int = 1
) -> Server:
    port = free_port()
    log_path = workdir / f"server-{port}.log"
    proc = start_process(
        serve_command(port, database_url, "--workers", str(http_workers)),
        log_path,
        {**env, "TALLY_WORKER": "on" if worker else "off"},
    )
    base = f"http://{HOST}:{port}"
    wait_http(f"{base}/health", proc, log_path, timeout=60)
    return Server(proc, base)


def wrk(url: str, connections: int, seconds: int, *extra: str) -> Any:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        *extra,
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if "Requests/sec" not in done.stdout:
        raise RuntimeError(f"wrk failed:\n{done.stdout}\n{done.stderr}")
    return parse_wrk(done.stdout)


def wrk_script(url: str, script: Path, connections: int, seconds: int, *args: str) -> Any:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        "--",
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if "Requests/sec" not in done.stdout:
        raise RuntimeError(f"wrk failed:\n{done.stdout}\n{done.stderr}")
    return parse_wrk(done.stdout)


def http_json(method: str, url: str, key: str, body: Any = None) -> Any:
    data = None if body is None else msgspec.json.encode(body)
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("X-Schematic-Api-Key", key)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return msgspec.json.decode(resp.read())["data"]


def wait_drained(database_url: str, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not query(database_url, "SELECT 1 FROM events WHERE status = 'pending' LIMIT 1"):
            return time.monotonic() - started
        time.sleep(0.2)
    return None


class Cpu:
    """Share of the machine's CPU time used between start and stop."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    def used(self) -> float:
        total, idle = self._read()
        dt, di = total - self._start[0], idle - self._start[1]
        return 1.0 - di / dt if dt else 0.0


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- the run -------------------------------------------------------------------------
def usage_reads(
    database_url: str, workdir: Path, env: dict[str, str], key: str, seconds: int
) -> tuple[float, float, float]:
    """(req/s, p50 ms, p99 ms) of GET /feature-usage for co-1."""
    server = serve(database_url, workdir, env, worker=False)
    try:
        company = http_json("GET", f"{server.base}/companies/lookup?keys[id]=co-1", key)["id"]
        listed = http_json("GET", f"{server.base}/features", key)
        if not [f for f in listed if f.get("event_subtype") == "api-call"]:
            feature = http_json(
                "POST",
                f"{server.base}/features",
                key,
                {"name": "API calls", "feature_type": "event", "event_subtype": "api-call"},
            )
            http_json(
                "POST",
                f"{server.base}/company-overrides",
                key,
                {
                    "company_id": company,
                    "feature_id": feature["id"],
                    "value_type": "numeric",
                    "value_numeric": 1_000_000,
                    "metric_period": "current_month",
                },
            )
        url = f"{server.base}/feature-usage?company_id={company}"
        usage = http_json("GET", url, key)
        log(
            f"  usage of co-1: {[(u.get('feature', {}).get('name'), u.get('usage')) for u in usage]}"
        )
        wrk(url, 8, 2, "-H", f"X-Schematic-Api-Key: {key}")
        res = wrk(url, 8, seconds, "-H", f"X-Schematic-Api-Key: {key}")
        return res.rps, res.latency_ms.get(50, float("nan")), res.latency_ms.get(99, float("nan"))
    finally:
        stop_process(server.proc)


def latency_at_half(
    database_url: str, workdir: Path, env: dict[str, str], key: str, seconds: int, conns: int
) -> dict[str, float]:
    server = serve(database_url, workdir, env, worker=False)
    try:
        peak = wrk_script(f"{server.base}/events", PACED_LUA, conns, seconds, key, "0", "peak")
    finally:
        stop_process(server.proc)
    drained = wait_drained(database_url, 0)  # the worker was off: drain with a burst
    if drained is None:
        burst(database_url, env)
    target = peak.rps / 2
    server = serve(database_url, workdir, env, worker=True)
    try:
        # each connection waits ``delay`` ms, then its request takes about the
        # latency L: rate = C / (delay + L). Calibrate L with short trials.
        delay = max(0.0, conns * 1000.0 / target - peak.latency_ms.get(50, 0.0))
        for _ in range(2):
            trial = wrk_script(
                f"{server.base}/events", PACED_LUA, conns, 3, key, f"{delay:.0f}", "trial"
            )
            took = max(0.0, conns * 1000.0 / max(trial.rps, 1.0) - delay)
            delay = max(0.0, conns * 1000.0 / target - took)
        wait_drained(database_url, 120)
        t0 = time.time_ns() // 1000
        paced = wrk_script(
            f"{server.base}/events", PACED_LUA, conns, seconds, key, f"{delay:.0f}", "paced"
        )
        t1 = time.time_ns() // 1000
        backlog = wait_drained(database_url, 300)
    finally:
        stop_process(server.proc)
    lags = [
        (row[0] - row[1]) / 1000.0
        for row in query(
            database_url,
            "SELECT enriched_at, loaded_at FROM events WHERE status = 'processed' "
            "AND loaded_at BETWEEN ? AND ?",
            (t0, t1),
        )
    ]
    return {
        "peak": peak.rps,
        "target": target,
        "achieved": paced.rps,
        "p50": percentile(lags, 50),
        "p99": percentile(lags, 99),
        "events": float(len(lags)),
        "drain": backlog if backlog is not None else float("nan"),
        "http_p99": paced.latency_ms.get(99, float("nan")),
    }


def scale(
    database_url: str, workdir: Path, env: dict[str, str], key: str, seconds: int, apis: int
) -> dict[str, float]:
    """End-to-end throughput with ``apis`` API processes and as many workers."""
    before = int(query(database_url, "SELECT COUNT(*) FROM events")[0][0])
    server = serve(database_url, workdir, env, worker=False, http_workers=apis)
    workers = [
        start_process(
            [sys.executable, "-m", "tally", "worker", "--database-url", database_url],
            workdir / f"worker-{apis}-{i}.log",
            env,
        )
        for i in range(apis)
    ]
    cpu = Cpu()
    started = time.monotonic()
    try:
        load = wrk_script(
            f"{server.base}/event-batch",
            EVENTS_LUA,
            16,
            seconds,
            "event-batch",
            "100",
            key,
            f"scale{apis}-{secrets.token_hex(3)}",
            "0.5",
            "0.05",
            str(apis),
        )
        drain = wait_drained(database_url, 600)
        elapsed = time.monotonic() - started
        used = cpu.used()
    finally:
        stop_process(server.proc)
        for proc in workers:
            stop_process(proc)
    stored = int(query(database_url, "SELECT COUNT(*) FROM events")[0][0]) - before
    return {
        "ingest": load.rps * 100,
        "stored": float(stored),
        "seconds": elapsed,
        "end_to_end": stored / elapsed,
        "drain": drain if drain is not None else float("nan"),
        "cpu": used,
        "non2xx": float(load.non2xx),
    }


# -- side effects ----------------------------------------------------------------------
def delivery_backlog(database_url: str) -> int:
    """Deliveries not yet settled plus outbox rows not yet expanded."""
    pending = query(database_url, "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'")
    outbox = query(database_url, "SELECT COUNT(*) FROM outbox")
    return int(pending[0][0]) + int(outbox[0][0])


def effects_run(
    url: str, workdir: Path, env: dict[str, str], events: int, *, effects: bool
) -> dict[str, Any]:
    """One ``tally worker --burst`` over ``events`` pending events, with or
    without side effects configured."""
    key = tally(url, "keys", "create", "--environment", "development", env=env)
    env_id = query(url, "SELECT id FROM environments WHERE name = 'development'")[0][0]
    port = free_port()
    receiver = f"http://{HOST}:{port}"
    receiver_proc = start_process(
        [sys.executable, str(BENCH / "receiver_app.py"), "--port", str(port)],
        workdir / "receiver.log",
        env,
    )
    deliver = None
    try:
        wait_http(f"{receiver}/stats", receiver_proc, workdir / "receiver.log", timeout=30)
        configure(url, env_id, receiver if effects else None, allocation=max(2, events // 2000))
        prefill(url, env_id, events, seed=3)
        run_env = dict(env)
        if effects:
            run_env["TALLY_BILLING_SINK_URL"] = f"{receiver}/billing"
            run_env["TALLY_WEBHOOK_ALLOW_PRIVATE"] = "true"  # the receivers are on 127.0.0.1
            deliver = start_process(
                [sys.executable, "-m", "tally", "deliver", "--database-url", url],
                workdir / "deliver.log",
                run_env,
            )
            started = time.monotonic()  # the loop is up (and polling) before the burst
            while "tally deliver on" not in (workdir / "deliver.log").read_text():
                if time.monotonic() - started > 60 or deliver.poll() is not None:
                    raise RuntimeError((workdir / "deliver.log").read_text())
                time.sleep(0.05)
        n, secs = burst(url, run_env)
        backlog_at_end = delivery_backlog(url) if effects else 0
        delivered_during = sum(receiver_counts(receiver).values())  # requests that arrived
        drain = 0.0
        if effects:
            started = time.monotonic()
            while delivery_backlog(url) and time.monotonic() - started < 1800:
                time.sleep(0.2)
            drain = time.monotonic() - started
        counts = dict(
            ((r[0], r[1]), int(r[2]))
            for r in query(
                url, "SELECT kind, status, COUNT(*) FROM deliveries GROUP BY kind, status"
            )
        )
        received = receiver_counts(receiver)
    finally:
        stop_process(deliver)
        stop_process(receiver_proc)
    check_counters(url)
    del key
    return {
        "events": n,
        "seconds": secs,
        "rate": n / secs,
        "backlog": backlog_at_end,
        "delivered_during": delivered_during,
        "drain": drain,
        "webhooks": counts.get(("webhook", "success"), 0),
        "records": counts.get(("billing", "success"), 0),
        "failed": sum(v for (_, status), v in counts.items() if status == "failure"),
        "received": sum(received.values()),
    }


def run_effects(args: argparse.Namespace, env: dict[str, str]) -> int:
    """``--effects-rounds`` rounds of (without, with), alternating, so that a
    noisy machine weighs on both alike; the medians are compared."""
    workdir = Path(tempfile.mkdtemp(prefix="tally-effects-"))
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    backend = "?"
    try:
        for round_no in range(1, args.effects_rounds + 1):
            for label, effects in (("without", False), ("with", True)):
                run_dir = workdir / f"{label}-{round_no}"
                run_dir.mkdir()
                with fresh_database(args.database_url, run_dir) as url:
                    backend = "PostgreSQL" if is_postgres(url) else "SQLite"
                    log(
                        f"{backend} round {round_no}: {args.effects_events:,} events {label} side effects"
                    )
                    result = effects_run(url, run_dir, env, args.effects_events, effects=effects)
                    runs[label].append(result)
                    log(f"  {result}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    off = statistics.median(r["rate"] for r in runs["without"])
    on = statistics.median(r["rate"] for r in runs["with"])
    ratio = on / off
    last = runs["with"][-1]
    line = "-" * 78
    print(line)
    print(f"tally side-effect benchmark on {backend} — {machine_line()}")
    print(line)
    rounds = len(runs["with"])
    for label, median in (("without side effects", off), ("with side effects", on)):
        each = ", ".join(f"{r['rate']:,.0f}" for r in runs[label.split()[0]])
        print(f"  worker {label:<37}{median:>10,.0f} events/s  (median of {rounds}: {each})")
    print(
        f"  with / without                              {ratio:>10.2f}x     target >= 0.8  "
        f"{'met' if ratio >= 0.8 else 'MISSED'}"
    )
    print(
        f"  with side effects: {ENDPOINTS} webhook endpoints (every notice) and a billing sink, "
        "tally deliver running"
    )
    print(
        f"  last round: {last['webhooks']:,} webhooks and {last['records']:,} meter records "
        f"delivered ({last['received']:,} requests received, {last['failed']} failed); "
        f"{last['delivered_during']:,} delivered while the worker ran, the rest "
        f"({last['backlog']:,} queued) drained in {last['drain']:.1f} s"
    )
    print(line)
    return 0


# -- issue 10's targets (PostgreSQL) ---------------------------------------------------
WORKER_TARGET = 10_000  # events/s, one tally worker over a large backlog
END_TO_END_TARGET = 8_000  # events/s, 1 API + 1 worker under batched load


def autovacuum_off(database_url: str) -> list[str]:
    """``autovacuum_enabled = false`` on every table of the database (the
    server-wide switch needs a restart; the per-table one has the same
    effect on tally's tables); returns the tables."""
    tables = [
        str(r[0])
        for r in query(
            database_url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    ]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in tables:
            conn.execute(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')
    return tables


def statistics_state(database_url: str) -> str:
    """How many tally tables have been analyzed, by whom, and the events'
    row estimate: what the planner knew during the run."""
    rows = query(
        database_url,
        "SELECT count(*), count(*) FILTER (WHERE last_analyze IS NOT NULL), "
        "count(*) FILTER (WHERE last_autoanalyze IS NOT NULL), "
        "max(CASE WHEN relname = 'events' THEN n_live_tup END) "
        "FROM pg_stat_user_tables WHERE schemaname = current_schema()",
    )
    tables, by_tally, by_autovacuum, events = rows[0]
    estimate = query(database_url, "SELECT reltuples FROM pg_class WHERE relname = 'events'")
    return (
        f"{by_tally}/{tables} tables analyzed by tally, {by_autovacuum} by autovacuum; "
        f"events: {int(events or 0):,} live, planner estimate {int(estimate[0][0]):,}"
    )


def targets_run(
    url: str, workdir: Path, env: dict[str, str], args: argparse.Namespace, *, vacuum: bool
) -> dict[str, Any]:
    """One fresh database: the worker over ``--events`` pending, then 1 + 1
    end to end. Statistics as tally leaves them: no ANALYZE here."""
    key = tally(url, "keys", "create", "--environment", "development", env=env)  # migrates
    key = key.strip().splitlines()[-1]
    env_id = query(url, "SELECT id FROM environments WHERE name = 'development'")[0][0]
    setting = query(url, "SHOW autovacuum")[0][0]
    if not vacuum:
        autovacuum_off(url)
    label = (
        f"the server's autovacuum setting ({setting})"
        if vacuum
        else "autovacuum off for every table (ALTER TABLE … SET (autovacuum_enabled = false))"
    )
    log(f"{label}: prefilling {args.events:,} pending events")
    prefill(url, env_id, args.events, seed=1)
    n, secs = burst(url, env)
    log(f"  one worker processed {n:,} in {secs:.1f} s = {n / secs:,.0f}/s")
    check_counters(url)
    worker_stats = statistics_state(url)
    log(f"  statistics after the worker: {worker_stats}")
    log(f"  1 API + 1 worker, batched load for {args.duration} s")
    e2e = scale(url, workdir, env, key, args.duration, 1)
    log(f"  {e2e}")
    check_counters(url)
    return {"label": label, "worker": (n, secs), "e2e": e2e, "stats": worker_stats}


def run_targets(args: argparse.Namespace, env: dict[str, str]) -> int:
    if args.database_url is None or not is_postgres(args.database_url):
        raise SystemExit("--targets measures PostgreSQL: pass --database-url postgresql://…")
    ensure_wrk()
    runs = []
    for vacuum in (True, False):
        workdir = Path(tempfile.mkdtemp(prefix="tally-targets-"))
        try:
            with fresh_database(args.database_url, workdir) as url:
                runs.append(targets_run(url, workdir, env, args, vacuum=vacuum))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    line = "-" * 78
    print(line)
    print(f"tally pipeline targets on PostgreSQL (issue 10) — {machine_line()}")
    print("statistics as tally migrate and start-up leave them; no ANALYZE by hand")
    print(line)
    for run in runs:
        n, secs = run["worker"]
        rate, e2e = n / secs, run["e2e"]
        print(f"  {run['label']}")
        print(
            f"    one worker, {n:,} backlog {rate:>14,.0f} events/s  target >= "
            f"{WORKER_TARGET:,}  {'met' if rate >= WORKER_TARGET else 'MISSED'}"
        )
        print(
            f"    1 API + 1 worker, end to end {e2e['end_to_end']:>12,.0f} events/s  target >= "
            f"{END_TO_END_TARGET:,}  {'met' if e2e['end_to_end'] >= END_TO_END_TARGET else 'MISSED'}"
        )
        print(
            f"      ({e2e['stored']:,.0f} events in {e2e['seconds']:.1f} s; ingest "
            f"{e2e['ingest']:,.0f}/s; drained {e2e['drain']:.1f} s after the load; CPU "
            f"{e2e['cpu']:.0%}; non-2xx {e2e['non2xx']:.0f})"
        )
        print(f"    {run['stats']}")
    print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", help="sqlite:///… (default: a temp file) or postgresql://…"
    )
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--scale", action="store_true", help="compare 1+1 with 2+2 processes")
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    parser.add_argument(
        "--effects",
        action="store_true",
        help="compare worker throughput without and with webhooks and a billing sink",
    )
    parser.add_argument(
        "--targets",
        action="store_true",
        help="PostgreSQL: issue 10's worker and end-to-end targets, autovacuum on and off",
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="the backlog of --targets' worker run"
    )
    parser.add_argument("--effects-events", type=int, default=20_000)
    parser.add_argument("--effects-rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.quick:
        args.small, args.large, args.duration = 2_000, 20_000, 3
        args.effects_events = min(args.effects_events, 5_000)
        args.effects_rounds = 1
    env = {**os.environ, "TALLY_LOG_LEVEL": "warning", "TALLY_KEY_CACHE_SECONDS": "5"}
    if args.effects:
        return run_effects(args, env)
    if args.targets:
        return run_targets(args, env)
    ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="tally-pipeline-"))
    results: dict[str, Any] = {}
    try:
        with fresh_database(args.database_url, workdir) as url:
            backend = "PostgreSQL" if is_postgres(url) else "SQLite"
            key = tally(url, "keys", "create", "--environment", "development", env=env)
            key = key.strip().splitlines()[-1]
            env_id = query(url, "SELECT id FROM environments WHERE name = 'development'")[0][0]

            log(f"{backend}: prefilling {args.small:,} pending events")
            prefill(url, env_id, args.small, seed=1)
            n, secs = burst(url, env)
            results["burst_small"] = (n, secs)
            log(f"  one worker processed {n:,} in {secs:.1f} s = {n / secs:,.0f}/s")
            check_counters(url)
            results["usage_small"] = usage_reads(url, workdir, env, key, args.duration)
            log(
                "  usage read: {:,.0f} req/s, p50 {:.2f} ms, p99 {:.2f} ms".format(
                    *results["usage_small"]
                )
            )

            log(f"prefilling {args.large - args.small:,} more pending events")
            prefill(url, env_id, args.large - args.small, seed=2)
            n, secs = burst(url, env)
            results["burst_large"] = (n, secs)
            log(f"  one worker processed {n:,} in {secs:.1f} s = {n / secs:,.0f}/s")
            check_counters(url)
            results["usage_large"] = usage_reads(url, workdir, env, key, args.duration)
            log(
                "  usage read: {:,.0f} req/s, p50 {:.2f} ms, p99 {:.2f} ms".format(
                    *results["usage_large"]
                )
            )

            log("event-to-processed latency at half the peak single-event rate")
            results["latency"] = latency_at_half(
                url, workdir, env, key, args.duration, args.connections
            )
            if args.scale:
                for apis in (1, 2):
                    log(f"end to end with {apis} API process(es) and {apis} worker(s)")
                    results[f"scale{apis}"] = scale(url, workdir, env, key, args.duration, apis)
                    log(f"  {results[f'scale{apis}']}")
            check_counters(url)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, backend, args)
    return 0


def report(results: dict[str, Any], backend: str, args: argparse.Namespace) -> None:
    line = "-" * 78
    print(line)
    print(f"tally pipeline benchmark on {backend} — {machine_line()}")
    print(line)
    for label, (n, secs) in (
        (f"one worker, {args.small:,} events", results["burst_small"]),
        (f"one worker, {args.large - args.small:,} more events", results["burst_large"]),
    ):
        print(f"  {label:<44}{n / secs:>10,.0f} events/s  ({n:,} in {secs:.1f} s)")
    small, large = results["usage_small"], results["usage_large"]
    print(
        f"  usage read p99 with {args.small:>9,} events   {small[2]:>8.2f} ms  (p50 {small[1]:.2f} ms, {small[0]:,.0f} req/s)"
    )
    print(
        f"  usage read p99 with {args.large:>9,} events   {large[2]:>8.2f} ms  (p50 {large[1]:.2f} ms, {large[0]:,.0f} req/s)"
    )
    ratio = large[2] / small[2] if small[2] else float("nan")
    print(
        f"  ratio large/small p99                       {ratio:>8.2f}x  target <= 2x  {'met' if ratio <= 2 else 'MISSED'}"
    )
    lat = results["latency"]
    print(
        f"  single-event peak {lat['peak']:,.0f}/s; paced at {lat['achieved']:,.0f}/s "
        f"(target {lat['target']:,.0f}/s)"
    )
    print(
        f"  event-to-processed latency p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms "
        f"over {lat['events']:,.0f} events (HTTP p99 {lat['http_p99']:.1f} ms)"
    )
    for apis in (1, 2):
        res = results.get(f"scale{apis}")
        if res:
            print(
                f"  {apis} API + {apis} worker: end to end {res['end_to_end']:,.0f} events/s "
                f"({res['stored']:,.0f} events in {res['seconds']:.1f} s; ingest "
                f"{res['ingest']:,.0f}/s; CPU {res['cpu']:.0%} of the machine; non-2xx "
                f"{res['non2xx']:.0f})"
            )
    if "scale1" in results and "scale2" in results:
        r = results["scale2"]["end_to_end"] / results["scale1"]["end_to_end"]
        print(
            f"  2+2 / 1+1 end-to-end throughput              {r:>8.2f}x  target >= 1x  {'met' if r >= 1 else 'MISSED'}"
        )
    print(line)


if __name__ == "__main__":
    raise SystemExit(main())
