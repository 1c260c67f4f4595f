"""Read benchmark of tally (issue 10, "flat reads"): p50/p99 of every read
endpoint at a small and a large number of stored events, on one backend.

For each size, in one run:

1. a fresh database (SQLite in the work directory, or a new database on the
   PostgreSQL server of ``--database-url``, dropped at the end), a secret key
   from the CLI, and the real server on it (``python -m tally serve``,
   worker on, delivery off);
2. through the API: one event feature, ``--companies`` companies,
   ``--users`` users (each in one company) and an allocation for every tenth
   company; then ``SIZE`` events of history stored straight through
   ``insert_events`` and marked processed, as the pipeline would have left
   them: track events of eight subtypes tied to those companies and users,
   1% identify events (a rare type), half with an idempotency key, spread
   over the last 30 days; the event summaries recounted from them (as the
   pipeline would have kept them: ``sql_summaries.rebuild``); and one webhook
   endpoint with ``SIZE / 4`` finished deliveries in its delivery log
   (inserted straight into ``deliveries``: the count triggers count them;
   on PostgreSQL then analyzed, as tally's stale-statistics check would
   within 30 s);
3. ``--requests`` sequential requests per endpoint on one keep-alive
   connection (after 3 unmeasured ones), each endpoint asking what a client
   would: the first page, filters by company, user, subtype, a rare event
   type and an idempotency key, a deep offset (the same page again, and
   paging on from there with ``offset`` as the SDK does), one event, the
   event summaries, the entity lists, look-ups and counts, usage, and the
   delivery log and its count.

It prints p50/p99 per endpoint and size, the ratio of the large p99 to the
small one, and the targets (every pair within 2x, p99 <= 50 ms at the large
size). It reports; it does not assert (exit 0).

    .venv/bin/python bench/reads.py                         # SQLite, 10,000 and 1,000,000 events
    .venv/bin/python bench/reads.py --quick                 # 2,000 and 20,000 events
    .venv/bin/python bench/reads.py --database-url postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import pg_bench
from harness import (
    HOST,
    OtherLoad,
    free_port,
    log,
    machine_line,
    serve_command,
    start_process,
    stop_process,
    wait_http,
)
from ingest import (
    SUBTYPES,
    count_events,
    create_secret_key,
    key_record,
    read,
    remove_db,
    store_chunks,
    write_connection,
)
from tally import ids
from tally.model import NewEvent
from tally.storage import is_postgres
from tally.storage.sql import summaries as sql_summaries

FLAT_RATIO = 2.0  # large p99 within 2x of small p99
P99_TARGET_MS = 50.0
DAY_US = 86_400_000_000
CHUNK = 10_000
PAGE_ON = "page on"  # an endpoint's params: each request asks for the next page


@dataclass
class World:
    """What the reads ask about: ids the API handed out while seeding."""

    key: str
    feature_id: str
    company_ids: list[str]
    user_ids: list[str]
    sample_event_id: str = ""
    sample_idempotency_key: str = ""


@dataclass
class Timing:
    samples_ms: list[float] = field(default_factory=list)
    statuses: set[int] = field(default_factory=set)

    def pct(self, p: int) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, len(ordered) * p // 100)]


# -- seeding ------------------------------------------------------------------
def seed_entities(
    client: httpx.Client, companies: int, users: int
) -> tuple[str, list[str], list[str]]:
    feature = client.post(
        "/features",
        json={
            "name": "API calls",
            "description": "",
            "feature_type": "event",
            "event_subtype": SUBTYPES[0],
        },
    )
    feature.raise_for_status()
    feature_id = feature.json()["data"]["id"]
    company_ids = []
    for i in range(companies):
        made = client.post(
            "/companies",
            json={"keys": {"id": f"co-{i}"}, "name": f"Company {i}", "traits": {"plan": "pro"}},
        )
        made.raise_for_status()
        company_ids.append(made.json()["data"]["id"])
        if i % 10 == 0:
            client.post(
                "/company-overrides",
                json={
                    "company_id": company_ids[-1],
                    "feature_id": feature_id,
                    "value_type": "numeric",
                    "value_numeric": 1000,
                    "metric_period": "current_month",
                },
            ).raise_for_status()
    user_ids = []
    for i in range(users):
        made = client.post(
            "/users",
            json={
                "keys": {"id": f"user-{i}"},
                "name": f"User {i}",
                "company": {"id": f"co-{i % companies}"},
            },
        )
        made.raise_for_status()
        user_ids.append(made.json()["data"]["id"])
    return feature_id, company_ids, user_ids


def history(count: int, env_id: str, key_id: str, world: World) -> Iterator[list[NewEvent]]:
    """``count`` events over the last 30 days, in chunks, oldest first."""
    rng = random.Random(20261203)
    now_us = time.time_ns() // 1000
    first_us = now_us - 30 * DAY_US
    step = (now_us - 60_000_000 - first_us) / max(count, 1)
    done = 0
    while done < count:
        events = []
        for i in range(done, min(count, done + CHUNK)):
            at = first_us + int(i * step)
            u = rng.randrange(len(world.user_ids))
            company = world.company_ids[u % len(world.company_ids)]
            identify = rng.random() < 0.01
            subtype = None if identify else rng.choice(SUBTYPES)
            quantity = 0 if identify else rng.randint(1, 5)
            body = (
                f'{{"company":{{"id":"co-{u % len(world.company_ids)}"}},'
                f'"user":{{"id":"user-{u}"}},"event":"{subtype or ""}","quantity":{quantity}}}'
            )
            key = f"hist-{rng.getrandbits(64):016x}" if rng.random() < 0.5 else None
            events.append(
                NewEvent(
                    environment_id=env_id,
                    type="identify" if identify else "track",
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
                    user_agent="tally-bench/reads",
                    company_id=company,
                    user_id=world.user_ids[u],
                )
            )
        yield events
        done += len(events)


# -- the reads ----------------------------------------------------------------
def endpoints(world: World, size: int) -> list[tuple[str, str, dict[str, Any]]]:
    company, user = world.company_ids[0], world.user_ids[0]
    deep = min(100_000, max(size // 2, 0))
    return [
        ("events, first page", "/events", {}),
        ("events by company", "/events", {"company_id": company}),
        ("events by user", "/events", {"user_id": user}),
        ("events by subtype", "/events", {"event_subtype": SUBTYPES[3]}),
        ("events of a rare type", "/events", {"event_types": "identify"}),
        ("events by idempotency key", "/events", {"idempotency_key": world.sample_idempotency_key}),
        ("events at a deep offset", "/events", {"offset": deep, "limit": 100}),
        ("paging on from deep", "/events", {"offset": deep, "limit": 100, PAGE_ON: True}),
        ("one event", f"/events/{world.sample_event_id}", {}),
        ("event summaries", "/event-types", {}),
        ("companies", "/companies", {}),
        ("companies by name", "/companies", {"q": "Company 7"}),
        ("company count", "/companies/count", {}),
        ("one company", f"/companies/{company}", {}),
        ("company lookup", "/companies/lookup", {"keys[id]": "co-0"}),
        ("users of a company", "/users", {"company_id": company}),
        ("user count", "/users/count", {}),
        ("feature usage", "/feature-usage", {"company_id": company}),
        ("usage by company", "/usage-by-company", {"keys[id]": "co-0"}),
        ("delivery log", "/webhook-events", {}),
        ("delivery count", "/webhook-events/count", {}),
    ]


def measure(client: httpx.Client, path: str, params: dict[str, Any], requests: int) -> Timing:
    """``requests`` timed GETs (after 3 untimed); with ``PAGE_ON`` in
    ``params``, each asks for the next page (``offset`` + ``limit``)."""
    timing = Timing()
    page_on = bool(params.pop(PAGE_ON, False))
    for i in range(requests + 3):
        if page_on and i:
            params = {**params, "offset": params["offset"] + params["limit"]}
        start = time.perf_counter()
        response = client.get(path, params=params)
        elapsed = (time.perf_counter() - start) * 1000
        timing.statuses.add(response.status_code)
        if i >= 3:
            timing.samples_ms.append(elapsed)
    return timing


# -- one size -----------------------------------------------------------------
@dataclass
class Config:
    sizes: tuple[int, ...]
    companies: int
    users: int
    requests: int
    workdir: Path
    keep: bool
    database_url: str | None


@contextmanager
def fresh_database(cfg: Config, tag: str) -> Iterator[str]:
    if cfg.database_url is not None:
        with pg_bench.fresh_database(cfg.database_url) as url:
            yield url
        return
    path = cfg.workdir / f"reads-{tag}.db"
    remove_db(path)
    try:
        yield f"sqlite:///{path}"
    finally:
        if not cfg.keep:
            remove_db(path)


def run_size(cfg: Config, size: int) -> tuple[dict[str, Timing], float, float]:
    """Timings per endpoint label, seconds of seeding, others' cores."""
    with fresh_database(cfg, str(size)) as database_url:
        env = {
            **os.environ,
            "TALLY_LOG_LEVEL": "warning",
            "TALLY_WORKER": "on",
            "TALLY_DELIVER": "off",
            "TALLY_WEBHOOK_ALLOW_PRIVATE": "true",  # the endpoint is a local address
        }
        key = create_secret_key(database_url, env)
        key_id, env_id = key_record(database_url, key)
        port = free_port()
        log_path = cfg.workdir / f"server-{size}.log"
        server = start_process(serve_command(port, database_url), log_path, env)
        try:
            base = f"http://{HOST}:{port}"
            wait_http(f"{base}/health", server, log_path, timeout=60)
            with httpx.Client(
                base_url=base, headers={"X-Schematic-Api-Key": key}, timeout=60
            ) as client:
                started = time.perf_counter()
                log(f"{size:,} events: seeding {cfg.companies:,} companies, {cfg.users:,} users")
                feature_id, companies, users = seed_entities(client, cfg.companies, cfg.users)
                world = World(key, feature_id, companies, users)
                log(f"  storing {size:,} events of history")
                store_chunks(database_url, history(size, env_id, key_id, world))
                log("  recounting the event summaries; seeding the delivery log")
                hook = client.post(
                    "/webhooks",
                    json={
                        "name": "bench",
                        "url": "http://127.0.0.1:9/hook",
                        "request_types": ["company.updated"],
                    },
                )
                hook.raise_for_status()
                with write_connection(database_url) as conn:
                    conn.execute("BEGIN")
                    sql_summaries.rebuild(conn)
                    conn.execute("COMMIT")
                    seed_deliveries(conn, env_id, hook.json()["data"]["id"], size // 4)
                    if is_postgres(database_url):
                        # what tally's stale-statistics check does within 30 s
                        # (CHECK_EVERY_SECONDS) of rows it did not write itself;
                        # the events' statistics come from the prefill's ANALYZE
                        conn.execute("ANALYZE deliveries")
                seeded = time.perf_counter() - started
                log(f"  seeded in {seeded:.0f} s ({count_events(database_url):,} events)")
                listed = client.get("/events", params={"limit": 1, "offset": size // 3}).json()
                world.sample_event_id = listed["data"][0]["id"]
                world.sample_idempotency_key = first_idempotency_key(database_url)
                timings: dict[str, Timing] = {}
                others = OtherLoad()
                for label, path, params in endpoints(world, size):
                    t = timings[label] = measure(client, path, params, cfg.requests)
                    log(f"  {label:<30} p50 {t.pct(50):7.2f} ms  p99 {t.pct(99):7.2f} ms")
                return timings, seeded, others.cores() or 0.0
        finally:
            stop_process(server)


def seed_deliveries(conn: Any, env_id: str, webhook_id: str, count: int) -> None:
    """``count`` finished webhook deliveries over the last 30 days, as the
    delivery loop leaves them, in transactions of ``CHUNK``."""
    now_us = time.time_ns() // 1000
    step = 30 * DAY_US // max(count, 1)
    payload = '{"action":"company.updated","body":{}}'
    for start in range(0, count, CHUNK):
        rows = []
        for i in range(start, min(count, start + CHUNK)):
            at = now_us - 30 * DAY_US + i * step
            rows.append(
                (ids.new_id("whd"), env_id, webhook_id, "company.updated", payload) + (at,) * 5
            )
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO deliveries (id, environment_id, kind, webhook_id, request_type, "
            "payload, status, attempt_count, response_code, next_attempt_at, sent_at, "
            "finished_at, created_at, updated_at) "
            "VALUES (?,?,'webhook',?,?,?,'success',1,200,?,?,?,?,?)",
            rows,
        )
        conn.execute("COMMIT")


def first_idempotency_key(database_url: str) -> str:
    rows = read(
        database_url,
        "SELECT idempotency_key FROM events WHERE idempotency_key IS NOT NULL ORDER BY id LIMIT 1",
    )
    return str(rows[0][0]) if rows else "none"


# -- report -------------------------------------------------------------------
def report(
    cfg: Config, machine: str, runs: list[tuple[int, dict[str, Timing], float, float]]
) -> None:
    line = "-" * 110
    database = "PostgreSQL (a fresh database)" if cfg.database_url else "SQLite, WAL"
    print()
    print("tally read benchmark")
    print(line)
    print(f"machine : {machine}")
    print(f"database: {database}; server: python -m tally serve, worker on, delivery off")
    print(
        f"data    : {cfg.companies:,} companies, {cfg.users:,} users, events over 30 days "
        f"(1% identify, 50% keyed); {cfg.requests} sequential requests per endpoint"
    )
    print(line)
    small, large = runs[0], runs[-1]
    header = f"{'endpoint':<28}"
    for size, _, _, _ in runs:
        header += f"{f'{size:,}: p50':>16}{'p99':>10}"
    header += f"{'p99 ratio':>11}{'verdict':>10}"
    print(header)
    flat = fast = 0
    labels = list(small[1])
    for label in labels:
        row = f"{label:<28}"
        for _, timings, _, _ in runs:
            t = timings[label]
            bad = "" if t.statuses <= {200} else f" ({sorted(t.statuses)})"
            row += f"{t.pct(50):>13.2f} ms{t.pct(99):>7.2f} ms{bad}"
        ratio = large[1][label].pct(99) / max(small[1][label].pct(99), 1e-9)
        ok_flat = ratio <= FLAT_RATIO
        ok_fast = large[1][label].pct(99) <= P99_TARGET_MS
        flat += ok_flat
        fast += ok_fast
        verdict = "met" if ok_flat and ok_fast else ("SLOW" if ok_flat else "GROWS")
        row += f"{ratio:>10.1f}x{verdict:>10}"
        print(row)
    print(line)
    print(
        f"targets: p99 at {large[0]:,} within {FLAT_RATIO:g}x of p99 at {small[0]:,}: "
        f"{flat}/{len(labels)} endpoints; p99 <= {P99_TARGET_MS:g} ms at {large[0]:,}: "
        f"{fast}/{len(labels)} endpoints"
    )
    print(
        "  seeding: "
        + ", ".join(f"{size:,} events in {seeded:.0f} s" for size, _, seeded, _ in runs)
        + "; others (cores used by other processes while measuring): "
        + ", ".join(f"{others:.2f}" for _, _, _, others in runs)
    )
    print(line)


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description="tally read benchmark: p50/p99 per endpoint")
    parser.add_argument("--database-url", help="a postgresql:// URL (default: SQLite)")
    parser.add_argument("--small", type=int, help="events at the small size (default 10,000)")
    parser.add_argument("--large", type=int, help="events at the large size (default 1,000,000)")
    parser.add_argument("--companies", type=int, default=1000, help="companies (default 1,000)")
    parser.add_argument("--users", type=int, default=5000, help="users (default 5,000)")
    parser.add_argument(
        "--requests", type=int, default=50, help="requests per endpoint (default 50)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2,000 and 20,000 events, fewer entities"
    )
    parser.add_argument("--workdir", type=Path, help="directory for databases and logs")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.database_url is not None and not is_postgres(args.database_url):
        parser.error("--database-url must be a postgresql:// URL (SQLite is the default)")
    small = args.small if args.small is not None else (2_000 if args.quick else 10_000)
    large = args.large if args.large is not None else (20_000 if args.quick else 1_000_000)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tally-reads-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return Config(
        sizes=(small, large),
        companies=100 if args.quick else args.companies,
        users=300 if args.quick else args.users,
        requests=20 if args.quick else args.requests,
        workdir=workdir,
        keep=args.keep or args.workdir is not None,
        database_url=args.database_url,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    machine = machine_line()
    runs = []
    try:
        for size in cfg.sizes:
            timings, seeded, others = run_size(cfg, size)
            runs.append((size, timings, seeded, others))
        report(cfg, machine, runs)
    finally:
        if not cfg.keep:
            shutil.rmtree(cfg.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
