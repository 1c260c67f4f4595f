"""Storage in a process of its own, beside the HTTP process(es).

A writer thread inside the HTTP process shares the GIL with the event loop:
every statement the writer runs hands the GIL back and forth with the loop,
and on a busy server those hand-offs cost more than the inserts. So ``tally
serve`` starts this storage process, which holds the database connections:
the group-committing writer(s), the reader threads, the processing worker
and the delivery loop run here, and the HTTP processes reach it through a
Unix socket (``frames``) as a ``client.RemoteStorage``, sending the events of
many requests in one frame. On SQLite it is also the one writer of the database, however many
HTTP processes ``--workers`` starts. Nothing else changes: a request is
answered only once the commit that holds its events returned here.

The process stops when its standard input closes (the ``tally serve`` that
started it stopped, or was killed), after the writes in flight.

    python -m tally.storage.process SOCKET_PATH   # settings from TALLY_… variables
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Sequence
from dataclasses import replace

from tally.observe.logs import configure as configure_logging
from tally.observe.metrics import share_through
from tally.settings import Settings
from tally.storage.base import Storage
from tally.storage.process import frames as wire

log = logging.getLogger(__name__)

READY = "tally-storage-ready"


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
    from tally.gc_pause import freeze_startup

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
    freeze_startup()  # what start-up made stays out of the collector's passes
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
        print("usage: python -m tally.storage.process SOCKET_PATH", file=sys.stderr)
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


def remove_socket(socket_path: str) -> None:
    """Remove the socket and the directory ``StorageProcess`` made for it."""
    with contextlib.suppress(OSError):
        os.unlink(socket_path)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(socket_path))
