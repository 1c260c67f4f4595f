"""Around every HTTP request, in one ASGI layer: its id, its metrics, its
access line, and a screen that may answer it before any route runs.

The id is the client's ``X-Request-Id`` when that is 1 to 128 safe
characters (letters, digits, ``. _ : -``), else a new random one; the
response echoes it. While the request is handled, log lines carry it
(``logs.current_request``), and the routes add what the access line
reports: the environment (``note_environment``, from the API key) and the
events stored (``note_stored``).

The access line is one ``tally.access`` record at info level per request:
hidden at the default ``TALLY_LOG_LEVEL=warning``, shown at info or below.

The screen (``screen``, given by the app) looks at the request's scope and
returns an ASGI app that answers it instead of the routes (the app's refusal
of a NUL in the URL), or None. It sits here rather than in a middleware of
its own: every layer is a coroutine frame around every request, and
``POST /events`` is answered in a few dozen microseconds.

What this layer costs a request is counted in ``bench/observe.py``: a
request adds to plain counts (``Metrics.http_request``), written into the
Prometheus metrics once a second, not per request.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally.model import IngestResult
from tally.observe.logs import RequestInfo, current_request
from tally.observe.metrics import metrics

Screen = Callable[[Scope], ASGIApp | None]

HEADER = b"x-request-id"
MAX_REQUEST_ID = 128
_SAFE = re.compile(rb"[A-Za-z0-9._:\-]{1,%d}" % MAX_REQUEST_ID)
UNMATCHED = "unmatched"  # the route label of a request no route matched

access_log = logging.getLogger("tally.access")
_perf_counter = time.perf_counter


def request_id(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The client's request id when it is safe to keep, else a new one."""
    for name, value in headers:
        if name == HEADER:
            if _SAFE.fullmatch(value):
                return value.decode("ascii")
            break
    # not a secret, only unique enough to find a request's lines: the random
    # module's generator (re-seeded in a forked child) costs no system call
    return f"{random.getrandbits(64):016x}"


def note_environment(environment_id: str) -> None:
    info = current_request.get()
    if info is not None:
        info.environment_id = environment_id


def note_stored(results: Sequence[IngestResult]) -> None:
    info = current_request.get()
    if info is not None:
        info.stored = results


class _Exchange(RequestInfo):
    """One request: what the logs know of it, and its response side, which
    adds the id to the response head and keeps the status (one object a
    request)."""

    __slots__ = ("echo", "send", "status")

    def __init__(self, request_id: str, send: Send) -> None:
        super().__init__(request_id)
        self.send = send
        self.echo = (HEADER, request_id.encode("ascii"))
        self.status = 500  # unless a response starts

    async def send_with_id(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), self.echo]
        await self.send(message)


class ObserveRequests:
    """ASGI middleware: request id, HTTP metrics by route template, access
    line, and the app's ``screen``."""

    def __init__(self, app: ASGIApp, screen: Screen | None = None) -> None:
        self.app = app
        self.screen = screen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = _perf_counter()
        exchange = _Exchange(request_id(scope["headers"]), send)
        app = self.app
        if self.screen is not None:
            app = self.screen(scope) or app
        token = current_request.set(exchange)
        try:
            await app(scope, receive, exchange.send_with_id)
        finally:
            seconds = _perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            metrics().http_request(scope["method"], template, exchange.status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                _access_line(exchange, scope["method"], template, exchange.status, seconds)
            current_request.reset(token)


def _access_line(info: RequestInfo, method: str, route: str, status: int, seconds: float) -> None:
    extra: dict[str, Any] = {
        "request_id": info.request_id,
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "environment_id": info.environment_id,
    }
    if info.stored is not None:
        extra["event_ids"] = [r.event_id for r in info.stored if not r.duplicate]
        extra["duplicates"] = sum(1 for r in info.stored if r.duplicate)
    access_log.info("%s %s %d", method, route, status, extra=extra)
