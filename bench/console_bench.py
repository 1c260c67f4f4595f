"""Console benchmark (issue 12): how long each console page takes to render
its first content with ``--events`` stored events.

The console renders on the server, so a page's first content is its HTML
response: this measures, per page, the time from sending the request to
having the whole body (p50 and max of ``--runs`` requests, after a warm-up),
against a real ``tally serve`` holding ``--events`` track events (most of
them processed, 1% failed) over 1,000 companies. Also the live list's poll
(``/console/data/events``) and the health refresh. Target: under 300 ms for
every page at 1M events.

    .venv/bin/python bench/console_bench.py --events 10000           # a quick run
    .venv/bin/python bench/console_bench.py --events 1000000         # the target
    .venv/bin/python bench/console_bench.py --database-url postgresql://postgres@127.0.0.1/postgres

With a PostgreSQL URL the bench creates a fresh database (``tally_bench_…``)
and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import log, machine_line, stop_process
from pipeline import fresh_database, prefill, serve, tally
from tally.model import NewEvent
from tally.pipeline.processing import PIPELINE
from tally.settings import Settings
from tally.storage import open_storage

TOKEN = re.compile(r'name="sign_in_token" value="([^"]+)"')
FAILED_SHARE = 100  # one event in this many is stored failed


def add_failed(database_url: str, env_id: str, count: int) -> None:
    """Store ``count`` failed events with a handful of error messages."""

    async def run() -> None:
        storage = open_storage(Settings(database_url=database_url), processing=PIPELINE)
        await storage.start()
        try:
            now = time.time_ns() // 1000
            events = [
                NewEvent(
                    environment_id=env_id,
                    type="track",
                    status="failed",
                    body="{}",
                    quantity=1,
                    captured_at=now,
                    received_at=now,
                    subtype="api-call",
                    error_message=f"bench error {i % 7}",
                )
                for i in range(count)
            ]
            for start in range(0, len(events), 5000):
                await storage.ingest(events[start : start + 5000])
        finally:
            await storage.close()

    asyncio.run(run())


def environment_id(database_url: str, env: dict[str, str]) -> tuple[str, str]:
    """A secret key of the ``development`` environment and that environment's id."""
    key = tally(database_url, "keys", "create", "--environment", "development", env=env)
    key = key.strip().splitlines()[-1]

    async def find() -> str:
        storage = open_storage(Settings(database_url=database_url), processing=PIPELINE)
        await storage.start()
        try:
            return next(e.id for e in await storage.list_environments() if e.name == "development")
        finally:
            await storage.close()

    return key, asyncio.run(find())


def sign_in(client: httpx.Client, key: str) -> None:
    page = client.get("/console/sign-in")
    token = TOKEN.search(page.text)
    assert token, page.text
    answer = client.post("/console/sign-in", data={"key": key, "sign_in_token": token.group(1)})
    assert answer.status_code == 200 and "Events" in answer.text, answer.text[:500]


def measure(client: httpx.Client, path: str, runs: int) -> tuple[float, float, int]:
    """(p50 ms, max ms, bytes) of ``runs`` GETs of ``path``, after one warm-up."""
    client.get(path).raise_for_status()
    times = []
    size = 0
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.get(path)
        answer.raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
        size = len(answer.content)
    return statistics.median(times), max(times), size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tally-console-bench-"))
    env = {**os.environ, "TALLY_LOG_LEVEL": "warning"}
    with fresh_database(args.database_url, workdir) as database_url:
        key, env_id = environment_id(database_url, env)
        failed = args.events // FAILED_SHARE
        log(f"storing {args.events - failed:,} track events and {failed:,} failed ones")
        prefill(database_url, env_id, args.events - failed, seed=12)
        add_failed(database_url, env_id, failed)
        log("processing them (tally worker --burst)")
        tally(database_url, "worker", "--burst", env=env)
        server = serve(database_url, workdir, env, worker=True)
        try:
            with httpx.Client(base_url=server.base, timeout=60, follow_redirects=True) as client:
                sign_in(client, key)
                companies = client.get("/console/companies?q=co-1").text
                company = re.search(r'href="/console/companies/(comp_[0-9a-f]+)"', companies)
                event = re.search(
                    r'href="/console/events/(evt_[0-9a-f]+)"', client.get("/console/events").text
                )
                pages = [
                    "/console/events",
                    "/console/events?status=failed",
                    "/console/events?subtype=search&range=24h",
                    f"/console/events/{event.group(1) if event else 'evt_x'}",
                    "/console/failed",
                    "/console/event-types",
                    "/console/data/event-types/days",
                    "/console/companies",
                    "/console/companies?q=co-42",
                    f"/console/companies/{company.group(1) if company else 'x'}",
                    "/console/users",
                    "/console/webhooks",
                    "/console/health",
                    "/console/data/events?newer_than=evt_0",
                    "/console/data/events?counts=1&newer_than=evt_f",
                    "/console/data/health",
                ]
                print(f"\n{machine_line()}")
                print(f"console pages with {args.events:,} stored events ({args.runs} runs each)\n")
                print(f"{'page':<58} {'p50 ms':>8} {'max ms':>8} {'bytes':>9}")
                worst = 0.0
                for path in pages:
                    p50, top, size = measure(client, path, args.runs)
                    worst = max(worst, p50)
                    flag = "" if p50 < 300 else "  over 300 ms"
                    print(f"{path[:58]:<58} {p50:8.1f} {top:8.1f} {size:9,}{flag}")
                print(f"\nslowest p50: {worst:.1f} ms (target: under 300 ms at 1M events)")
        finally:
            stop_process(server.proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
