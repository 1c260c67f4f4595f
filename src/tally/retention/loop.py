"""The pruning loop: every ``EVERY_SECONDS``, prune each kind of row the
policy lets go in chunks of at most ``CHUNK_ROWS`` (one transaction each)
with a ``PAUSE_SECONDS`` pause between two, then let storage vacuum what
needs it. A chunk that takes longer than ``TARGET_CHUNK_SECONDS`` halves the
next (the database is busy: ingest goes first), a quick one doubles it.
It runs where the worker and the delivery loop run (``tally.background``,
``tally worker``); ``tally prune`` runs one pass."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from tally.clock import Clock, SystemClock, to_micros
from tally.retention.policy import (
    CHUNK_ROWS,
    EVERY_SECONDS,
    MIN_CHUNK_ROWS,
    PAUSE_SECONDS,
    TARGET_CHUNK_SECONDS,
    RetentionPolicy,
)
from tally.storage.base_retention import RetentionStore
from tally.storage.sql.writer import DRIVER_ERRORS

log = logging.getLogger(__name__)


class Pruner:
    def __init__(
        self,
        storage: RetentionStore,
        policy: RetentionPolicy,
        clock: Clock | None = None,
        *,
        chunk: int = CHUNK_ROWS,
        pause_seconds: float = PAUSE_SECONDS,
        every_seconds: float = EVERY_SECONDS,
    ) -> None:
        self._storage = storage
        self._policy = policy
        self._clock = clock or SystemClock()
        self._chunk = chunk
        self._pause = pause_seconds
        self._every = every_seconds
        self._size = chunk  # the next chunk's size
        self.longest_chunk_seconds = 0.0  # the longest prune call so far
        self.pruned: dict[str, int] = {}  # rows pruned so far, by kind

    async def prune_once(self, stop: asyncio.Event | None = None) -> dict[str, int]:
        """One pass over every kind; returns how many rows of each it pruned.
        Ends early (between two chunks) once ``stop`` is set."""
        cutoffs = self._policy.cutoffs(to_micros(self._clock.now()))
        totals: dict[str, int] = {}
        for kind in self._policy.kinds():
            total = 0
            after = None
            while stop is None or not stop.is_set():
                size = self._size
                started = time.perf_counter()
                pruned = await self._storage.prune_chunk(kind, cutoffs, size, after)
                self._adapt(time.perf_counter() - started)
                total += pruned.rows
                after = pruned.resume_after
                if pruned.rows < size:
                    break
                await asyncio.sleep(self._pause)  # the writer takes the next commit
            totals[kind] = total
            self.pruned[kind] = self.pruned.get(kind, 0) + total
        return totals

    def _adapt(self, seconds: float) -> None:
        self.longest_chunk_seconds = max(self.longest_chunk_seconds, seconds)
        if seconds > TARGET_CHUNK_SECONDS:
            self._size = max(min(MIN_CHUNK_ROWS, self._chunk), self._size // 2)
        elif seconds < TARGET_CHUNK_SECONDS / 2:
            self._size = min(self._chunk, self._size * 2)

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                totals = await self.prune_once(stop)
                if any(totals.values()):
                    done = ", ".join(f"{n} {kind}" for kind, n in totals.items() if n)
                    log.info("pruned %s (longest chunk %.3f s)", done, self.longest_chunk_seconds)
                vacuumed = await self._storage.vacuum_dead_rows()
                if vacuumed:
                    log.info("vacuumed %s: their dead rows were piling up", ", ".join(vacuumed))
            except DRIVER_ERRORS:
                log.warning("pruning failed; trying again later", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._every)
