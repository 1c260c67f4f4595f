"""The HTTP connections of ``tally serve``: uvicorn's httptools protocol with
two bounds a hostile client would otherwise get around.

- **Head timeout.** A connection must send a complete request head (request
  line and headers) within ``header_timeout`` seconds of being opened, or of
  the previous response on it, else it is closed (by a sweep over the
  process's connections every tenth of the timeout, at most every second). uvicorn's keep-alive
  timeout only closes connections that send nothing after a response; a
  connection that never finishes its head, or trickles it a byte at a time,
  would stay open for ever.
- **Connection cap.** A process keeps at most ``max_connections`` open
  connections; one over the cap is closed as soon as it is accepted, before
  it costs a request. (uvicorn's ``limit_concurrency`` answers 503 instead,
  which the SDKs retry, and still keeps the connections.)

Idle keep-alive connections close after uvicorn's ``timeout_keep_alive`` as
before. The settings arrive through ``functools.partial`` (``protocol``), so
``tally serve --workers N`` hands them to every process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tally.settings import Settings

log = logging.getLogger(__name__)


class GuardedHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, header_timeout: float, max_connections: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._max_connections = max_connections
        # since when (loop time) this connection owes a complete head; None
        # while a request is in hand. A sweep per process closes the late ones
        # (cheaper than a timer per request on the hot path).
        self.head_since: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            _warn_full(self._max_connections)
            transport.close()
            return
        self.head_since = self.loop.time()
        _sweep_soon(self.loop, self.server_state, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_since = None
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self.head_since = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        queued = bool(self.pipeline)  # a pipelined request whose head is in
        super().on_response_complete()
        if not queued and not self.transport.is_closing():
            self.head_since = self.loop.time()  # the next head must be complete in time


_swept: weakref.WeakSet[Any] = weakref.WeakSet()  # server states with a sweep scheduled


def _sweep_soon(loop: asyncio.AbstractEventLoop, state: Any, timeout: float) -> None:
    if state not in _swept:
        _swept.add(state)
        loop.call_later(_sweep_every(timeout), _sweep, loop, state, timeout)


def _sweep_every(timeout: float) -> float:
    """How often to look: a connection is closed at most a tenth late."""
    return min(1.0, max(0.02, timeout / 10))


def _sweep(loop: asyncio.AbstractEventLoop, state: Any, timeout: float) -> None:
    """Close every connection of ``state`` whose head is overdue; look again
    while any connection is open."""
    now = loop.time()
    for conn in list(state.connections):
        since = getattr(conn, "head_since", None)
        if since is not None and now - since >= timeout and not conn.transport.is_closing():
            conn.head_since = None
            conn.transport.close()
    if state.connections:
        loop.call_later(_sweep_every(timeout), _sweep, loop, state, timeout)
    else:
        _swept.discard(state)


_last_warning = float("-inf")


def _warn_full(cap: int) -> None:
    """Say that connections are being refused, at most once a minute."""
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= 60:
        _last_warning = now
        log.warning("closing new connections: %d are open (TALLY_HTTP_MAX_CONNECTIONS)", cap)


def protocol(settings: Settings) -> Any:
    """uvicorn's ``http`` option for ``settings`` (picklable: ``--workers``)."""
    return functools.partial(
        GuardedHttpProtocol,
        header_timeout=settings.http_header_timeout_seconds,
        max_connections=settings.http_max_connections,
    )
