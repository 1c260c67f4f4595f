"""What observing costs on the hot path (tally.observe).

By default, in one run: two ``tally serve`` on SQLite side by side (each on
a fresh database of its own, worker off, one HTTP process), one as shipped
and one with the per-request observation taken out (``bench/unobserved.py``:
no request id, no HTTP metrics, no access line, no ingested-event counts),
driven in turn by wrk with single ``POST /events`` (the same Lua script and
connections as ``bench/ingest.py``), alternating which goes first in each
round. It prints each round's rates and the ratio observed / unobserved
(issue 13's target: observation costs at most 5% of single-event ingest,
a ratio of at least 0.95). The machine may be shared: the ratios of a round
are taken minutes apart at most, and the others' CPU use is shown.

``--micro`` times the parts in-process instead (multiprocess mode in a
temporary directory): the request layer around a trivial ASGI app against
the unobserved build's (the NUL screen alone), counting one request's events (1 and 100), an HTTP request's
record and its share of a flush, and a scrape's rendering, in microseconds.

``--app`` sends ``POST /events`` through the whole app in-process (the real
routes, key look-up and ruling; storage's ``ingest`` answers at once), the
observed app and the unobserved one alternating, and prints the CPU time a
request of each: the observation's cost without uvicorn's and the storage
process's share, and without the noise of their batching.

    .venv/bin/python bench/observe.py                 # A/B of POST /events (about 2 minutes)
    .venv/bin/python bench/observe.py --rounds 6 --duration 10
    .venv/bin/python bench/observe.py --app
    .venv/bin/python bench/observe.py --micro
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    HOST,
    cpu_ticks,
    ensure_wrk,
    free_port,
    log,
    machine_line,
    process_tree,
    start_process,
    stop_process,
    wait_http,
)
from ingest import DUP_RATE, KEY_RATE, create_secret_key, run_wrk
from tally.model import IngestResult, NewEvent
from tally.observe.exposition import render
from tally.observe.metrics import Metrics, metrics, share_through
from tally.observe.requests import ObserveRequests
from tally.pipeline.processing import PIPELINE

BENCH = Path(__file__).resolve().parent

# -- in-process parts (--micro) -------------------------------------------------
SCOPE = {
    "type": "http",
    "method": "POST",
    "path": "/events",
    "query_string": b"",
    "headers": [(b"host", b"x"), (b"x-schematic-api-key", b"k"), (b"content-length", b"99")],
}


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": [(b"a", b"b")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def discard(message: Any) -> None:
    pass


def per_request(asgi: Any, n: int) -> float:
    async def run() -> None:
        for _ in range(n):
            await asgi(dict(SCOPE), None, discard)

    started = time.process_time()  # CPU time: the machine may be shared
    asyncio.run(run())
    return (time.process_time() - started) / n * 1e6


def per_call(fn: Any, n: int) -> float:
    return timeit.Timer(fn, timer=time.process_time).timeit(number=n) / n * 1e6


def micro() -> None:
    from tally.api.asgi import nul_screen
    from unobserved import Screened

    with tempfile.TemporaryDirectory(prefix="tally-bench-metrics-") as directory:
        share_through(directory)
        m = metrics()
        n = 100_000
        observed = per_request(ObserveRequests(app, nul_screen), n)
        screened = per_request(Screened(app, nul_screen), n)
        print(
            f"request layer: {observed - screened:6.2f} µs a request more than the "
            f"unobserved build's ({screened:.2f} µs with a trivial app)"
        )
        for size in (1, 100):
            events = [NewEvent("env", "track", "pending", "{}", 1, 1, 1)] * size
            results = [IngestResult("evt", 1, False)] * size
            cost = per_call(lambda ev=events, rs=results: m.ingested("secret", ev, rs), n // size)
            print(f"ingested({size:3d}): {cost:6.2f} µs")
        m.flush()  # the first flush makes the labelled series' entries in the files

        def thousand_then_flush() -> None:
            for _ in range(1000):
                m.http_request("POST", "/events", 201, 0.003)
            m.flush()

        cost = per_call(thousand_then_flush, 100) / 1000
        print(f"http_request + its share of a flush: {cost:6.2f} µs")
        print(f"render: {per_call(lambda: render(None, 0), 100):7.0f} µs a scrape")


# -- the whole app in-process (--app) ------------------------------------------
class _Stored:
    """Storage whose ``ingest`` answers at once (every other call is the real
    SQLite storage's): what is left is the HTTP process's own Python."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def ingest(self, events: Any) -> list[IngestResult]:
        return [IngestResult("evt_0123456789abcdef0123456789abcdef", 1, False) for _ in events]


async def _app_build(directory: str, observed: bool) -> tuple[Any, str]:
    import tally.api.app as app_module
    from tally.keys import create_key
    from tally.settings import Settings
    from tally.storage import open_storage
    from unobserved import Screened

    settings = Settings(database_url=f"sqlite:///{directory}/app-{observed}.db", console=False)
    store = open_storage(settings, processing=PIPELINE)
    await store.start()
    _, key, _ = await create_key(store, "development")
    layer = app_module.ObserveRequests
    if not observed:
        app_module.ObserveRequests = Screened  # type: ignore[misc,assignment]
    try:
        app = app_module.create_app(settings, storage=_Stored(store))  # type: ignore[arg-type]
        app.middleware_stack = app.build_middleware_stack()
    finally:
        app_module.ObserveRequests = layer  # type: ignore[misc]
    return app, key


async def _app_requests(app: Any, key: str, n: int, counting: bool) -> float:
    """CPU µs a ``POST /events`` through ``app`` (``counting``: its events counted)."""
    body = b'{"event_type":"track","body":{"event":"api-call","company":{"id":"acme"}}}'
    head = [
        (b"host", b"x"),
        (b"content-type", b"application/json"),
        (b"x-schematic-api-key", key.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"user-agent", b"bench"),
    ]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 201:
            raise RuntimeError(f"POST /events answered {message['status']}")

    saved = Metrics.ingested
    if not counting:
        Metrics.ingested = lambda self, *args: None  # type: ignore[method-assign]
    try:
        started = time.process_time()
        for _ in range(n):
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/events",
                "raw_path": b"/events",
                "query_string": b"",
                "root_path": "",
                "headers": list(head),
                "client": ("127.0.0.1", 50000),
                "server": ("127.0.0.1", 8000),
                "state": {},
            }
            await app(scope, receive, send)
        return (time.process_time() - started) / n * 1e6
    finally:
        Metrics.ingested = saved  # type: ignore[method-assign]


def whole_app(rounds: int) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory(prefix="tally-bench-app-") as directory:
            share_through(directory)
            apps = {
                True: await _app_build(directory, True),
                False: await _app_build(directory, False),
            }
            for observed, (app, key) in apps.items():
                await _app_requests(app, key, 2000, observed)
            cost: dict[bool, list[float]] = {True: [], False: []}
            for index in range(rounds):
                for observed in (True, False) if index % 2 == 0 else (False, True):
                    app, key = apps[observed]
                    cost[observed].append(await _app_requests(app, key, 4000, observed))
            on, off = statistics.median(cost[True]), statistics.median(cost[False])
            print(
                f"POST /events through the app in-process (storage answering at once), "
                f"{rounds} alternating rounds, CPU µs a request (median): observed {on:.1f}, "
                f"unobserved {off:.1f}: observation adds {on - off:.1f} µs "
                f"({(on / off - 1) * 100:.1f}% of the app's own work)\n"
                f"  observed rounds: {listed(cost[True])}\n  unobserved rounds: {listed(cost[False])}"
            )

    asyncio.run(run())


# -- over HTTP (the default) ----------------------------------------------------
@dataclass
class Target:
    base: str
    key: str
    pid: int  # the tally serve (its HTTP process); its storage process is a child

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time used so far by the HTTP process, and by it and its
        children (the storage process), from Linux /proc."""
        ticks = cpu_ticks()
        tree = process_tree(self.pid, ticks)
        tick = os.sysconf("SC_CLK_TCK")
        return ticks[self.pid][1] / tick, sum(ticks[p][1] for p in tree if p in ticks) / tick


@dataclass
class Run:
    rate: float  # requests/s
    http_us: float  # CPU time of the HTTP process per request, in µs
    cpu_us: float  # CPU time of the server's processes (HTTP and storage) per request, in µs
    others: float | None  # cores other processes used meanwhile


@contextlib.contextmanager
def server(workdir: Path, name: str, observed: bool) -> Iterator[Target]:
    """A ``tally serve`` (observed or not) on a fresh SQLite database."""
    database_url = f"sqlite:///{workdir / name}.db"
    env = {**os.environ, "TALLY_WORKER": "off", "TALLY_LOG_LEVEL": "warning"}
    key = create_secret_key(database_url, env)
    port = free_port()
    entry = ["-m", "tally"] if observed else [str(BENCH / "unobserved.py")]
    cmd = [sys.executable, *entry, "serve", "--host", HOST, "--port", str(port)]
    cmd += ["--database-url", database_url]
    log_path = workdir / f"{name}.log"
    proc = start_process(cmd, log_path, env)
    try:
        base = f"http://{HOST}:{port}"
        wait_http(f"{base}/health", proc, log_path, timeout=60)
        yield Target(base, key, proc.pid)
    finally:
        stop_process(proc)


def drive(target: Target, seconds: int, connections: int, tag: str) -> Run:
    seed = str(int.from_bytes(os.urandom(3), "big"))
    args = ["single", "1", target.key, f"{tag}-{seed}", str(KEY_RATE), str(DUP_RATE), seed]
    http, cpu = target.cpu_seconds()
    res = run_wrk(
        target.base + "/events",
        threads=1,
        connections=connections,
        duration=seconds,
        script_args=args,
    )
    http_after, cpu_after = target.cpu_seconds()
    if res.non2xx or res.socket_error_total:
        log(f"  {tag}: {res.non2xx} non-2xx, socket errors {res.socket_errors}")
    per_request = 1e6 / max(res.requests, 1)
    return Run(
        res.rps, (http_after - http) * per_request, (cpu_after - cpu) * per_request, res.others
    )


def ab(rounds: int, seconds: int, warmup: int, connections: int) -> None:
    ensure_wrk()
    print(machine_line(), flush=True)
    names = ("observed", "unobserved")
    runs: dict[str, list[Run]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(
        prefix="tally-bench-observe-", ignore_cleanup_errors=True
    ) as tmp:
        workdir = Path(tmp)
        with server(workdir, "on", True) as on, server(workdir, "off", False) as off:
            targets = {"observed": on, "unobserved": off}
            for name, target in targets.items():
                drive(target, warmup, connections, f"warm-{name}")
            for index in range(rounds):
                order = list(names) if index % 2 == 0 else list(reversed(names))
                for name in order:
                    run = drive(targets[name], seconds, connections, name)
                    runs[name].append(run)
                    others = "?" if run.others is None else f"{run.others:.2f}"
                    log(
                        f"round {index + 1} {name:>10}: {run.rate:8,.0f} requests/s, "
                        f"CPU a request {run.http_us:6.1f} µs HTTP, {run.cpu_us:6.1f} µs in all "
                        f"(others {others} cores)"
                    )
    on_runs, off_runs = runs["observed"], runs["unobserved"]
    rate_ratios = [a.rate / b.rate for a, b in zip(on_runs, off_runs, strict=True)]
    # what observation adds to the HTTP process's CPU, as a share of all the
    # CPU a request costs the unobserved server (HTTP and storage)
    shares = [(a.http_us - b.http_us) / b.cpu_us for a, b in zip(on_runs, off_runs, strict=True)]
    rate = sum(r.rate for r in on_runs) / sum(r.rate for r in off_runs)
    share = (mean(on_runs, "http_us") - mean(off_runs, "http_us")) / mean(off_runs, "cpu_us")
    print(
        f"\nsingle POST /events, {rounds} alternating rounds of {seconds} s, "
        f"{connections} connections, worker off:\n"
        f"  requests/s  observed {mean(on_runs, 'rate'):8,.0f}, unobserved "
        f"{mean(off_runs, 'rate'):8,.0f}; ratio observed/unobserved {rate:.3f} overall, "
        f"{statistics.median(rate_ratios):.3f} median (rounds: {listed(rate_ratios)})\n"
        f"  CPU a request (µs, mean)  HTTP process: observed {mean(on_runs, 'http_us'):6.1f}, "
        f"unobserved {mean(off_runs, 'http_us'):6.1f}; HTTP and storage: observed "
        f"{mean(on_runs, 'cpu_us'):6.1f}, unobserved {mean(off_runs, 'cpu_us'):6.1f}\n"
        f"  observation's share of a single event's CPU: {share * 100:.1f}% "
        f"(median of rounds {statistics.median(shares) * 100:.1f}%; rounds: "
        f"{', '.join(f'{x * 100:.1f}%' for x in shares)}); target: at most 5%",
        flush=True,
    )


def mean(runs: list[Run], field: str) -> float:
    return statistics.fmean(getattr(r, field) for r in runs)


def listed(ratios: list[float]) -> str:
    return ", ".join(f"{r:.3f}" for r in ratios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="what observing costs on the hot path")
    parser.add_argument("--micro", action="store_true", help="time the parts in-process instead")
    parser.add_argument(
        "--app",
        action="store_true",
        help="POST /events through the whole app in-process, observed vs not (CPU a request)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="A/B rounds (default 4)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up (default 3)")
    parser.add_argument(
        "--connections", type=int, default=256, help="wrk connections (default 256, as ingest.py)"
    )
    args = parser.parse_args(argv)
    if args.micro:
        micro()
    elif args.app:
        whole_app(args.rounds * 2)
    else:
        ab(args.rounds, args.duration, args.warmup, args.connections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
