"""``/metrics`` of a ``tally worker`` or ``tally deliver`` (``--metrics-port``):
a small HTTP server on a thread of its own, with the same access rule and
exposition as ``tally serve``'s."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tally.clock import SystemClock, to_micros
from tally.model import PendingBacklog
from tally.observe.exposition import CONTENT_TYPE, access, render

log = logging.getLogger(__name__)

BacklogFn = Callable[[], PendingBacklog | None]


class MetricsServer:
    """Serves ``GET /metrics`` on ``host:port`` until ``stop()``."""

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        now_us: Callable[[], int],
        backlog: BacklogFn | None = None,
    ) -> None:
        outer = self
        self._token = token
        self._now = now_us
        self._backlog = backlog

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer._answer(self)

            def log_message(self, format: str, *args: object) -> None:
                pass  # no access lines from here: they would bypass tally's format

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="tally-metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path.split("?", 1)[0] != "/metrics":
            self._send(handler, 404, b'{"error": "no such endpoint; metrics are at /metrics"}')
            return
        refusal = access(
            handler.client_address[0], handler.headers.get("Authorization"), self._token
        )
        if refusal is not None:
            body = json.dumps({"error": refusal.message}).encode()
            self._send(handler, refusal.status, body)
            return
        backlog = None
        if self._backlog is not None:
            try:
                backlog = self._backlog()
            except Exception:
                log.warning("could not read the pending backlog for /metrics", exc_info=True)
        self._send(handler, 200, render(backlog, self._now()), CONTENT_TYPE)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        content_type: str = "application/json",
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        if status == 401:
            handler.send_header("WWW-Authenticate", "Bearer")
        handler.end_headers()
        handler.wfile.write(body)


def _on_loop(
    loop: asyncio.AbstractEventLoop, backlog: Callable[[], Awaitable[PendingBacklog]]
) -> PendingBacklog:
    """``await backlog()`` on ``loop``, from the server's thread."""
    return asyncio.run_coroutine_threadsafe(backlog(), loop).result(timeout=10)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving_metrics(
    host: str,
    port: int | None,
    token: str,
    backlog: Callable[[], Awaitable[PendingBacklog]] | None,
) -> AsyncIterator[None]:
    """Serve ``/metrics`` on ``host:port`` (nothing when ``port`` is None)
    while the body runs; ``backlog`` (storage's ``pending_backlog``) is
    awaited on the running loop for each scrape."""
    if port is None:
        yield
        return
    loop = asyncio.get_running_loop()
    read = None if backlog is None else functools.partial(_on_loop, loop, backlog)
    clock = SystemClock()
    server = MetricsServer(host, port, token, lambda: to_micros(clock.now()), read).start()
    print(f"metrics at http://{host}:{server.port}/metrics", flush=True)
    try:
        yield
    finally:
        await asyncio.to_thread(server.stop)
