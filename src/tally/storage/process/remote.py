"""Storage in a process of its own, beside the HTTP process(es).

A writer thread inside the HTTP process shares the GIL with the event loop:
every statement the writer runs hands the GIL back and forth with the loop,
and on a busy server those hand-offs cost more than the inserts. So ``tally
serve`` starts this storage process, which holds the database connections:
the group-committing writer(s), the reader threads, the processing worker
and the delivery loop run here, and the HTTP processes reach it through a
Unix socket (``process_wire``), sending the events of many requests in one
frame. On SQLite it is also the one writer of the database, however many
HTTP processes ``--workers`` starts. Nothing else changes: a request is
answered only once the commit that holds its events returned here.

The process stops when its standard input closes (the ``tally serve`` that
started it stopped, or was killed), after the writes in flight.

    python -m tally.storage.process.remote SOCKET_PATH   # settings from TALLY_… variables
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tally.errors import TallyError
from tally.model import IngestResult, NewEvent
from tally.observe.logs import configure as configure_logging
from tally.observe.metrics import share_through
from tally.settings import Settings
from tally.storage.base import Storage
from tally.storage.process import frames as wire

log = logging.getLogger(__name__)

READY = "tally-storage-ready"
CONNECT_TIMEOUT_SECONDS = 60.0
START_TIMEOUT_SECONDS = 300.0  # migrations of a large database run first
# INGEST frames one HTTP process keeps on their way: with two, the storage
# process's writer finds the next one queued when a commit ends, instead of
# waiting for its answer to reach the HTTP process and the next frame to come
FRAMES_IN_FLIGHT = 2


# -- the storage process --------------------------------------------------------
class _Serve(asyncio.Protocol):
    """One HTTP process's connection, served from ``storage``."""

    def __init__(self, storage: Storage, tasks: set[asyncio.Task[None]]) -> None:
        self._storage = storage
        self._tasks = tasks
        self._reader = wire.FrameReader()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        for kind, request_id, payload in self._reader.feed(data):
            work = self._ingest(payload) if kind == wire.INGEST else self._call(payload)
            task = asyncio.get_running_loop().create_task(self._answer(request_id, work))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _ingest(self, payload: bytes) -> tuple[int, bytes]:
        # one writer job per request, as in the HTTP process: the writer
        # groups them into commits of at most TALLY_COMMIT_MAX_EVENTS events
        batches = wire.decode_events(payload)
        results = await asyncio.gather(*(self._storage.ingest(batch) for batch in batches))
        return wire.INGESTED, wire.encode_results(list(results))

    async def _call(self, payload: bytes) -> tuple[int, bytes]:
        name, args, kwargs = wire.decode_value(payload)
        if name.startswith("_") or name in ("start", "close"):
            raise RuntimeError(f"the storage process does not take {name!r} calls")
        value = await getattr(self._storage, name)(*args, **kwargs)
        return wire.RESULT, wire.encode_value(value)

    async def _answer(self, request_id: int, work: Awaitable[tuple[int, bytes]]) -> None:
        try:
            kind, payload = await work
        except Exception as err:
            kind, payload = wire.ERROR, wire.encode_error(err)
        if self._transport is not None:
            self._transport.write(wire.frame(kind, request_id, payload))


async def serve(socket_path: str) -> None:
    """Run the storage process until standard input closes or a signal comes."""
    from tally.background import open_serving_storage, start_loops

    settings = replace(Settings.from_env(), storage_socket="")  # this is the storage
    if settings.metrics_dir:
        share_through(settings.metrics_dir)
    storage = open_serving_storage(settings)
    await storage.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Ctrl-C reaches the whole process group: the tally serve that started
    # this process finishes its requests first, then closes our stdin
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loops = start_loops(settings, storage, stop)
    answering: set[asyncio.Task[None]] = set()
    server = await loop.create_unix_server(lambda: _Serve(storage, answering), socket_path)
    os.chmod(socket_path, 0o600)

    class _Parent(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            stop.set()

    await loop.connect_read_pipe(_Parent, sys.stdin)
    log.info(
        "storage process ready on %s (worker %s, delivery %s)",
        settings.database_url,
        "on" if settings.worker else "off",
        "on" if settings.deliver else "off",
    )
    print(READY, flush=True)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nobody reads the pipe any more
    try:
        await stop.wait()
    finally:
        server.close()
        for task in loops:
            await task
        if answering:
            await asyncio.wait(answering, timeout=30)
        await storage.close()
        # tally serve may be gone without cleaning up: a uvicorn stopped by a
        # signal exits by raising it again
        remove_socket(socket_path)
        if settings.metrics_dir:  # the last of its processes to stop
            shutil.rmtree(settings.metrics_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m tally.storage.process.remote SOCKET_PATH", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format, "storage")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        pass
    asyncio.run(serve(args[0]))
    return 0


# -- the HTTP processes' side ---------------------------------------------------------
class StorageProcessError(TallyError):
    """The storage process could not start."""

    category = "config"


class StorageProcess:
    """Starts the storage process and stops it (``tally serve``)."""

    def __init__(self, environ: dict[str, str]) -> None:
        self._dir = tempfile.mkdtemp(prefix="tally-")
        self.socket_path = str(Path(self._dir) / "storage.sock")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tally.storage.process.remote", self.socket_path],
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


def remove_socket(socket_path: str) -> None:
    """Remove the socket and the directory ``StorageProcess`` made for it."""
    with contextlib.suppress(OSError):
        os.unlink(socket_path)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(socket_path))


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


if __name__ == "__main__":
    raise SystemExit(main())
