"""The worker loop: drain pending events in batches, then poll.

A batch that comes out full is followed at once by the next. One that comes
out at least a twentieth full (500 events at the default batch of 10,000, the
size of group commit that SQLite leaves to the worker) means events arrive
fast: the worker waits ``linger_seconds`` (``TALLY_WORKER_LINGER_MS``) before
the next, so that under load it takes fewer, larger batches, which cost less
per event (every counter, entity and index page a batch touches is written
once per batch).
After a smaller or an empty one it only waits ``idle_seconds`` (the poll), so
light traffic is processed within a poll. The lag the linger adds is at most
the linger, and only under load.

A batch that raises an unexpected error (a bug, or a value no counter can
hold) is retried one event at a time; the one event that still raises is set
aside as ``failed`` so that it never blocks the events behind it. Storage
errors (a locked or unreachable database) are retried, never blamed on an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3

import psycopg

from tally.observe.metrics import metrics
from tally.storage.base import Storage

log = logging.getLogger(__name__)

# Errors that come from an event's content or from processing code (a row
# the database refuses), not from the database being unavailable.
EVENT_ERRORS: tuple[type[BaseException], ...] = (
    ArithmeticError,
    AssertionError,
    AttributeError,
    IndexError,
    KeyError,
    TypeError,
    ValueError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    psycopg.errors.IntegrityError,
    psycopg.DataError,
)


class Worker:
    def __init__(
        self,
        storage: Storage,
        *,
        batch_size: int = 2000,
        idle_seconds: float = 0.02,
        linger_seconds: float = 0.0,
    ) -> None:
        self._storage = storage
        self._batch_size = batch_size
        self._idle = idle_seconds
        self._linger = linger_seconds
        self.processed = 0

    async def step(self) -> int:
        """Process one batch; returns how many events it claimed."""
        try:
            return await self._storage.process_pending(self._batch_size)
        except EVENT_ERRORS:
            metrics().processing_error("event")
            log.exception("a batch failed; processing one event at a time to find the cause")
        try:
            return await self._storage.process_pending(1)
        except EVENT_ERRORS as err:
            message = (
                f"internal error while processing this event ({type(err).__name__}: {err}); "
                "it was set aside so that the events behind it go on"
            )
            event_id = await self._storage.fail_next_pending(message[:1000])
            if event_id:
                metrics().set_aside()
            log.error("set event %s aside: %s", event_id, message)
            return 1 if event_id else 0

    async def run_until_idle(self) -> int:
        """Process until no event is pending; returns how many were processed."""
        total = 0
        while True:
            claimed = await self.step()
            total += claimed
            if claimed == 0:
                self.processed += total
                return total

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                claimed = await self.step()
            except Exception:
                metrics().processing_error("storage")
                metrics().database_retry("processing")
                log.exception("processing failed (storage unavailable?); retrying in 1 s")
                claimed = 0
                await asyncio.sleep(1.0)
            self.processed += claimed
            if claimed:
                log.debug("processed a batch of %d events", claimed)
            if claimed < self._batch_size:
                # a twentieth of a batch or more: events arrive fast, let the next
                # gather into a larger batch (cheaper per event); else poll soon
                busy = claimed * 20 >= self._batch_size
                pause = max(self._idle, self._linger) if busy else self._idle
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
