"""What observing costs on the hot path (tally.observe), in microseconds.

In the multiprocess mode of a ``tally serve`` (a temporary directory), it
times: the request middleware around a trivial ASGI app against the bare
app, counting one request's events (1 and 100), a flush, and a scrape's
rendering. Compare the middleware's figure with a single ``POST /events``
(about 70 µs of an HTTP process per request in docs/deployment.md) to see
its share. Run it on a quiet machine:

    .venv/bin/python bench/observe.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import timeit
from typing import Any

from tally.model import IngestResult, NewEvent
from tally.observe.exposition import render
from tally.observe.metrics import metrics, share_through
from tally.observe.requests import ObserveRequests

SCOPE = {
    "type": "http",
    "method": "POST",
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

    started = time.perf_counter()
    asyncio.run(run())
    return (time.perf_counter() - started) / n * 1e6


def per_call(fn: Any, n: int) -> float:
    return timeit.timeit(fn, number=n) / n * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tally-bench-metrics-") as directory:
        share_through(directory)
        m = metrics()
        n = 100_000
        wrapped, bare = per_request(ObserveRequests(app), n), per_request(app, n)
        print(f"middleware: {wrapped - bare:6.2f} µs a request (bare app {bare:.2f} µs)")
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


if __name__ == "__main__":
    main()
