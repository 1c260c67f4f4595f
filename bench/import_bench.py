"""``tally import`` benchmark (issue 13, part 1): the import rate of a large
NDJSON file against the ``POST /event-batch`` rate of ``bench/ingest.py``'s
batch mode, in the same run, on the same server.

In one run, on this machine:

1. writes an NDJSON file of ``--lines`` track events (1,000,000 by default;
   bodies like ``bench/ingest.py``'s: 1,000 companies, 20,000 users, eight
   event names) in the work directory;
2. starts the real server on a fresh SQLite database (``python -m tally
   serve``, its processing worker on unless ``--worker off``, as
   ``bench/ingest.py`` runs it) with a secret key from the CLI;
3. measures ``POST /event-batch`` (100 events a request) with wrk exactly as
   ``bench/ingest.py`` does (its ``run_mode``: a warm-up, a measured run, the
   stored rows checked, the worker's backlog waited for);
4. runs ``python -m tally import FILE`` (``--concurrency``, default 4) and
   times it from start to exit — interpreter start, hashing the file and
   reading it included — then checks that the server stored one event per
   line;
5. measures ``POST /event-batch`` again (the higher of the two counts, so the
   ratio is not flattered by a database that grew);
6. prints both rates and their ratio against the target (≥ 80%).

It reports; it does not assert (exit 0). The machine may be shared: it says
how many cores other processes used during each measurement ("others").

    .venv/bin/python bench/import_bench.py                  # 1M lines (several minutes)
    .venv/bin/python bench/import_bench.py --lines 20000    # a smoke test
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ingest
from harness import (
    HOST,
    OtherLoad,
    ensure_wrk,
    free_port,
    log,
    machine_line,
    serve_command,
    start_process,
    stop_process,
    wait_http,
)

TARGET = 0.80  # import ≥ 80% of the POST /event-batch rate
EVENT_BATCH = next(m for m in ingest.MODES if m.name == "event-batch")


@dataclass
class ImportRun:
    lines: int
    seconds: float
    stored: int  # rows the import added
    others: float | None
    summary: str

    @property
    def events_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0


def write_file(path: Path, lines: int) -> float:
    """``lines`` track events, one per line; returns the seconds it took."""
    start = time.perf_counter()
    rng = random.Random(13)
    with open(path, "w", encoding="utf-8", buffering=1024 * 1024) as out:
        for _ in range(lines):
            body, _, _ = ingest.track_body(rng)
            out.write(f'{{"event_type":"track","body":{body}}}\n')
    return time.perf_counter() - start


def run_import(
    path: Path, lines: int, base: str, key: str, concurrency: int, env: dict[str, str], url: str
) -> ImportRun:
    """Run ``tally import`` to its end; the rows it added are counted after."""
    cmd = [
        sys.executable,
        "-m",
        "tally",
        "import",
        str(path),
        "--url",
        base,
        "--key",
        key,
        "--concurrency",
        str(concurrency),
    ]
    before = ingest.count_events(url)
    others = OtherLoad()
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=24 * 3600)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"tally import failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    summary = done.stdout.strip().splitlines()[-1]
    stored = ingest.count_events(url) - before
    return ImportRun(lines, seconds, stored, others.cores(), summary)


def measure_event_batch(cfg: ingest.Config, base: str, key: str, url: str, tag: str) -> float:
    log(f"{EVENT_BATCH.label}: {cfg.batch_connections} connections, {cfg.duration} s")
    worker = cfg.workers == (True,)
    result = ingest.run_mode(cfg, EVENT_BATCH, base, key, url, tag, worker)
    if result.wrk.non2xx or result.wrk.socket_error_total:
        log(
            f"  WARNING: {result.wrk.non2xx} non-2xx, {result.wrk.socket_error_total} socket errors"
        )
    if result.stored != result.expected:
        log(f"  WARNING: stored {result.stored:,} rows for {result.expected:,} events")
    return result.events_per_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tally import vs POST /event-batch")
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines of the file (1M)")
    parser.add_argument("--concurrency", type=int, default=4, help="tally import --concurrency")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk warm-up (2)")
    parser.add_argument(
        "--batch-connections", type=int, default=16, help="wrk connections (16, as ingest.py)"
    )
    parser.add_argument(
        "--worker", choices=("on", "off"), default="on", help="the server's processing worker"
    )
    parser.add_argument("--workdir", type=Path, help="default: a fresh temp dir, removed after")
    args = parser.parse_args(argv)
    if args.lines < 1 or args.concurrency < 1:
        parser.error("--lines and --concurrency must be at least 1")
    ensure_wrk()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tally-import-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = ingest.parse_args(
        [
            "--events", "0",
            "--duration", str(args.duration),
            "--warmup", str(args.warmup),
            "--batch-connections", str(args.batch_connections),
            "--worker", args.worker,
            "--quiet-wait", "0",
            "--retries", "0",
            "--workdir", str(workdir),
        ]
    )  # fmt: skip
    env = {**os.environ, "TALLY_LOG_LEVEL": "warning", "TALLY_WORKER": args.worker}
    server = None
    try:
        path = workdir / "import.ndjson"
        log(f"writing {args.lines:,} lines to {path}")
        wrote = write_file(path, args.lines)
        size = path.stat().st_size
        log(f"  {size / 1e6:,.1f} MB in {wrote:.1f} s")
        db = workdir / "tally.db"
        url = f"sqlite:///{db}"
        key = ingest.create_secret_key(url, env)
        port = free_port()
        base = f"http://{HOST}:{port}"
        server_log = workdir / "server.log"
        server = start_process(serve_command(port, url), server_log, env)
        wait_http(f"{base}/health", server, server_log, timeout=60)
        log(f"tally serving {base} (worker {args.worker})")
        tag = secrets.token_hex(4)

        first = measure_event_batch(cfg, base, key, url, tag)
        log(f"tally import {path.name} --concurrency {args.concurrency}")
        imported = run_import(path, args.lines, base, key, args.concurrency, env, url)
        log(f"  {imported.events_per_s:,.0f} events/s ({imported.seconds:.1f} s)")
        if args.worker == "on":
            ingest.wait_drained(url, cfg.drain_timeout)
        second = measure_event_batch(cfg, base, key, url, tag)
    finally:
        stop_process(server)
    batch = max(first, second)
    ratio = imported.events_per_s / batch if batch else 0.0
    line = "-" * 78
    print(line)
    print(f"tally import benchmark — {machine_line()}")
    print(f"  file          : {args.lines:,} NDJSON lines, {size / 1e6:,.1f} MB")
    print(
        f"  tally import  : {imported.events_per_s:>10,.0f} events/s  ({imported.seconds:.1f} s "
        f"start to exit, --concurrency {args.concurrency}, 1000 events a request; others "
        f"{ingest.fmt_others(imported.others)})"
    )
    print(f"                  {imported.summary}")
    check = "ok" if imported.stored == args.lines else "MISMATCH"
    print(f"  stored        : {imported.stored:,} events for {args.lines:,} lines ({check})")
    print(
        f"  /event-batch  : {first:>10,.0f} and {second:>,.0f} events/s (wrk, 100 events a "
        f"request, {args.batch_connections} connections; before and after the import)"
    )
    verdict = "met" if ratio >= TARGET else "MISSED"
    print(
        f"  ratio         : {imported.events_per_s:,.0f} / {batch:,.0f} = {ratio:.1%}   "
        f"target >= {TARGET:.0%}   {verdict}"
    )
    print(line)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
