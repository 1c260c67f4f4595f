"""The HTTP processes' side of the storage process (``server``): starting and
stopping it (``StorageProcess``, for ``tally serve``) and ``RemoteStorage``,
the ``Storage`` whose every call runs there: the events of the requests that
arrived during the previous commit travel in one frame, other calls as
pickled method calls (``frames``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tally.errors import TallyError
from tally.model import IngestResult, NewEvent
from tally.storage.process import frames as wire
from tally.storage.process.server import READY, remove_socket

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 60.0
START_TIMEOUT_SECONDS = 300.0  # migrations of a large database run first
# INGEST frames one HTTP process keeps on their way: with two, the storage
# process's writer finds the next one queued when a commit ends, instead of
# waiting for its answer to reach the HTTP process and the next frame to come
FRAMES_IN_FLIGHT = 2


class StorageProcessError(TallyError):
    """The storage process could not start."""

    category = "config"


class StorageProcess:
    """Starts the storage process and stops it (``tally serve``)."""

    def __init__(self, environ: dict[str, str]) -> None:
        self._dir = tempfile.mkdtemp(prefix="tally-")
        self.socket_path = str(Path(self._dir) / "storage.sock")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tally.storage.process", self.socket_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **environ},
        )
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], START_TIMEOUT_SECONDS)
        line = self._proc.stdout.readline().decode(errors="replace").strip() if ready else ""
        self._proc.stdout.close()  # all it had to say; it writes to stderr now
        if line != READY:
            self._proc.kill()
            self._proc.wait()
            self._close_pipes()
            remove_socket(self.socket_path)
            raise StorageProcessError(
                "the storage process did not start within "
                f"{START_TIMEOUT_SECONDS:g} s (exit code {self._proc.returncode}); "
                "its errors are above"
            )

    def stop(self) -> None:
        """Close its standard input and wait for it to finish its writes."""
        self._close_pipes()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        remove_socket(self.socket_path)

    def _close_pipes(self) -> None:
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class _Client(asyncio.Protocol):
    def __init__(self, on_lost: Callable[[], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._reader = wire.FrameReader()
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        for kind, request_id, payload in self._reader.feed(data):
            future = self.waiting.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result((kind, payload))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("the storage process went away"))
        self.waiting.clear()
        self._on_lost()


def stop_this_server(socket_path: str) -> None:
    """What an HTTP process does when its storage process is gone: nothing
    can be stored any more, so stop (uvicorn finishes what it can and exits)
    rather than answer every request with a 500."""
    log.error("the storage process went away; stopping")
    remove_socket(socket_path)  # it cannot any more
    os.kill(os.getpid(), signal.SIGTERM)


class RemoteStorage:
    """``Storage`` whose every call runs in the storage process.
    ``on_lost`` runs when the connection to it breaks."""

    def __init__(self, socket_path: str, on_lost: Callable[[], None] | None = None) -> None:
        self._path = socket_path
        self._on_lost = on_lost
        self._client: _Client | None = None
        self._next_id = 0
        self._held: list[tuple[Sequence[NewEvent], asyncio.Future[list[IngestResult]]]] = []
        self._in_flight = 0  # INGEST frames sent and not answered yet
        self._scheduled = False  # a send of the held events is scheduled
        self._closing = False

    def process_as_stored(self, enabled: bool) -> None:
        """The storage process decides (it runs the loops, with its settings)."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
        while True:
            try:
                _, client = await loop.create_unix_connection(
                    lambda: _Client(self._lost), self._path
                )
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        self._client = client

    async def close(self) -> None:
        self._closing = True
        if self._client is not None and self._client.transport is not None:
            self._client.transport.close()
        self._client = None

    def _lost(self) -> None:
        if self._closing:
            return
        log.warning("the connection to the storage process broke")
        if self._on_lost is not None:
            self._on_lost()

    def _send(self, kind: int, payload: bytes) -> asyncio.Future[tuple[int, bytes]]:
        client = self._client
        if client is None or client.transport is None:
            raise ConnectionError("the storage process is not connected")
        self._next_id += 1
        future = asyncio.get_running_loop().create_future()
        client.waiting[self._next_id] = future
        client.transport.write(wire.frame(kind, self._next_id, payload))
        return future

    # -- the hot path: events -------------------------------------------------
    async def ingest(self, events: Sequence[NewEvent]) -> list[IngestResult]:
        if not events:
            return []
        future: asyncio.Future[list[IngestResult]] = asyncio.get_running_loop().create_future()
        self._held.append((events, future))
        if not self._scheduled and self._in_flight < FRAMES_IN_FLIGHT:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._ingest_held)
        return await future

    def _ingest_held(self) -> None:
        """Send everything held back in one frame, unless ``FRAMES_IN_FLIGHT``
        frames are already on their way: then the next answer sends it."""
        self._scheduled = False
        if not self._held or self._in_flight >= FRAMES_IN_FLIGHT:
            return
        held, self._held = self._held, []
        try:
            sent = self._send(wire.INGEST, wire.encode_events([ev for ev, _ in held]))
        except Exception as err:
            for _, future in held:
                future.set_exception(err)
            return
        self._in_flight += 1
        sent.add_done_callback(lambda done: self._ingested(held, done))

    def _ingested(
        self,
        held: list[tuple[Sequence[NewEvent], asyncio.Future[list[IngestResult]]]],
        done: asyncio.Future[tuple[int, bytes]],
    ) -> None:
        self._in_flight -= 1
        self._ingest_held()  # what arrived meanwhile goes out before this is answered
        try:
            kind, payload = done.result()
            if kind == wire.ERROR:
                raise wire.decode_value(payload)
            results = wire.decode_results(payload)
        except BaseException as err:
            for _, future in held:
                if not future.done():
                    future.set_exception(err)
        else:
            for (_, future), result in zip(held, results, strict=True):
                if not future.done():
                    future.set_result(result)

    # -- everything else ------------------------------------------------------
    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        # iterables passed as generators (``preview_names``) travel as lists
        args = tuple(list(a) if isinstance(a, Iterator) else a for a in args)
        kind, payload = await self._send(wire.CALL, wire.encode_value((name, args, kwargs)))
        value = wire.decode_value(payload)
        if kind == wire.ERROR:
            raise value
        return value

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def remote(*args: Any, **kwargs: Any) -> Any:
            return await self.call(name, *args, **kwargs)

        remote.__name__ = name
        return remote
