"""The worker loop: drain pending events in batches, then poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tally.storage.base import Storage

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self, storage: Storage, *, batch_size: int = 500, idle_seconds: float = 0.02
    ) -> None:
        self._storage = storage
        self._batch_size = batch_size
        self._idle = idle_seconds
        self.processed = 0

    async def run_until_idle(self) -> int:
        """Process until no event is pending; returns how many were processed."""
        total = 0
        while True:
            claimed = await self._storage.process_pending(self._batch_size)
            total += claimed
            if claimed == 0:
                self.processed += total
                return total

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                claimed = await self._storage.process_pending(self._batch_size)
            except Exception:
                log.exception("processing a batch failed; retrying shortly")
                claimed = 0
                await asyncio.sleep(1.0)
            self.processed += claimed
            if claimed < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._idle)
