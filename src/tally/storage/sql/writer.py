"""The writer thread of both SQL backends: one thread, one connection, group
commit (SQLite's single writer; PostgreSQL's writers, processor and
delivery connection).

Requests hand their work to a queue and await a future. The thread takes
everything queued (up to ``max_events`` events), runs it in one transaction,
commits once, then resolves every future: concurrent requests share one fsync
instead of paying one each (datasette's write thread is the model).

SQLite has one such thread. A database that takes concurrent writers
(PostgreSQL) can have ``threads`` of them on one queue, each with its own
connection: while one waits for the database, the next takes what queued
up meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from tally.observe.metrics import metrics

log = logging.getLogger(__name__)

BatchFn = Callable[[sqlite3.Connection, list[Sequence[Any]]], list[Any]]
T = TypeVar("T")
# what a job's future settles with: its value, or the error it raised
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class _Job:
    __slots__ = ("future", "items", "loop", "size")

    def __init__(self, items: Any, size: int, loop: asyncio.AbstractEventLoop) -> None:
        self.items = items
        self.size = size
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()


class _CallJob(_Job):
    __slots__ = ()


_STOP = object()
# what the database drivers raise (the metrics count these as database errors)
DRIVER_ERRORS = (sqlite3.Error, psycopg.Error)


def _settle(pairs: list[Outcome]) -> None:
    for future, value, error in pairs:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class WriterThread:
    """Runs ``batch_fn`` over group-committed batches and ``call`` jobs alone
    (with ``threads`` > 1: alone on their connection)."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        batch_fn: BatchFn,
        *,
        max_events: int = 5000,
        begin: str = "BEGIN IMMEDIATE",
        name: str = "tally-writer",
        threads: int = 1,
    ) -> None:
        self._begin = begin
        self._connect = connect
        self._batch_fn = batch_fn
        self._max_events = max_events
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=name if i == 0 else f"{name}-{i}", daemon=True)
            for i in range(max(threads, 1))
        ]
        self._ready = threading.Semaphore(0)
        self._start_error: BaseException | None = None
        self._count_lock = threading.Lock()
        self.commits = 0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        for _ in self._threads:
            self._ready.acquire()
        if self._start_error is not None:
            self.stop()
            raise self._start_error

    def stop(self) -> None:
        alive = [thread for thread in self._threads if thread.is_alive()]
        for _ in alive:
            self._queue.put(_STOP)  # each thread takes one and ends
        for thread in alive:
            thread.join()

    async def submit_batch(self, items: Sequence[Any]) -> list[Any]:
        job = _Job(items, len(items), asyncio.get_running_loop())
        self._queue.put(job)
        results: list[Any] = await job.future
        return results

    async def call(self, fn: Callable[[Any], T]) -> T:
        """``fn(conn)`` alone in one transaction; ``conn`` is what ``connect``
        makes (``sqlite3.Connection``, or ``PgConnection`` on PostgreSQL)."""
        job = _CallJob(fn, 1, asyncio.get_running_loop())
        self._queue.put(job)
        result: T = await job.future
        return result

    # -- the thread ---------------------------------------------------------
    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as err:  # surfaced by start()
            self._start_error = err
            self._ready.release()
            return
        self._ready.release()
        held: Any = None
        try:
            while True:
                job = held if held is not None else self._queue.get()
                held = None
                if job is _STOP:
                    return
                if isinstance(job, _CallJob):
                    self._run_call(conn, job)
                    continue
                batch = [job]
                size = job.size
                while size < self._max_events:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP or isinstance(nxt, _CallJob):
                        held = nxt
                        break
                    batch.append(nxt)
                    size += nxt.size
                self._run_batch(conn, batch)
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        try:
            started = time.perf_counter()
            conn.execute(self._begin)
            try:
                results = self._batch_fn(conn, [job.items for job in batch])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            metrics().group_commit(sum(job.size for job in batch), time.perf_counter() - started)
            with self._count_lock:
                self.commits += 1
            outcome: list[Outcome] = [
                (job.future, res, None) for job, res in zip(batch, results, strict=True)
            ]
        except Exception as err:
            log.exception("group commit of %d jobs failed", len(batch))
            if isinstance(err, DRIVER_ERRORS):
                metrics().database_error("group_commit")
            outcome = [(job.future, None, err) for job in batch]
        self._deliver(batch, outcome)

    def _run_call(self, conn: sqlite3.Connection, job: _CallJob) -> None:
        try:
            conn.execute(self._begin)
            try:
                value = job.items(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            outcome: list[Outcome] = [(job.future, value, None)]
        except Exception as err:
            if isinstance(err, DRIVER_ERRORS):
                metrics().database_error("transaction")
            outcome = [(job.future, None, err)]
        self._deliver([job], outcome)

    @staticmethod
    def _deliver(batch: list[_Job], outcome: list[Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for job, pair in zip(batch, outcome, strict=True):
            by_loop.setdefault(job.loop, []).append(pair)
        for loop, pairs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed while we worked
                loop.call_soon_threadsafe(_settle, pairs)
