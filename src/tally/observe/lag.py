"""How far processing is behind: the figures of ``GET /health`` and the lag
warning of ``tally serve``.

- **Backlog**: how many events are pending, counted up to ``PENDING_CAP``
  (past it, ``pending`` says the cap and ``pending_capped`` is true: counting
  a backlog of millions would cost as many index entries), and the age of
  the oldest pending event; both off the pending-events index, the same
  query the metrics and the console's pipeline health use
  (``tally.storage.sql.backlog``).
- **Processing rate**: events that left pending (processed or failed) per
  second over the last minute, by this ``tally serve``'s processing (its
  storage process on SQLite, its worker loops on PostgreSQL): the counter
  ``tally_events_processed`` sampled against time. Separate ``tally worker``
  processes count their own (their ``--metrics-port``); a ``tally serve``
  with ``TALLY_WORKER=off`` reports 0 here while they drain the backlog.

The figures of a process are read at most once a second (``FRESH_SECONDS``)
however often ``/health`` is asked; ``watch`` reads them every
``CHECK_SECONDS`` (or a quarter of a threshold under 20 s) and, in the one process of a ``tally serve`` that holds the
warning lock, logs a warning when the oldest pending event is older than
``TALLY_LAG_WARNING_SECONDS`` (at most once a minute while it lasts) and an
info line when it is back under.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any

from tally.model import PendingBacklog
from tally.observe.metrics import processed_total

log = logging.getLogger("tally.lag")

PENDING_CAP = 100_000  # most pending events /health counts
FRESH_SECONDS = 1.0  # how long a process reuses the figures it read
RATE_WINDOW_SECONDS = 60.0  # the processing rate is over this long
CHECK_SECONDS = 5.0  # how often the watch reads the figures (more often under a low threshold)
REPEAT_SECONDS = 60.0  # a lasting lag (or a failing read) is logged at most this often
READ_TIMEOUT_SECONDS = 2.0  # /health answers without figures rather than wait longer
LOCK_NAME = "lag-warning.lock"  # in tally serve's metrics directory


@dataclass(frozen=True, slots=True)
class Lag:
    pending: int
    pending_capped: bool
    oldest_pending_age_seconds: float  # 0 when none is pending
    processing_rate: float  # events/s over the last minute

    def as_json(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "pending_capped": self.pending_capped,
            "oldest_pending_age_seconds": round(self.oldest_pending_age_seconds, 3),
            "processing_rate": round(self.processing_rate, 1),
        }


class Unknown(Exception):
    """The lag figures could not be read."""


class _Rate:
    """Events per second of a growing total, over the last ``window`` seconds."""

    def __init__(self, total: float, now: float, window: float = RATE_WINDOW_SECONDS) -> None:
        self._window = window
        self._samples: collections.deque[tuple[float, float]] = collections.deque([(now, total)])

    def add(self, total: float, now: float) -> float:
        samples = self._samples
        samples.append((now, total))
        # keep one sample at least ``window`` old as the start
        while len(samples) > 2 and now - samples[1][0] >= self._window:
            samples.popleft()
        start_at, start = samples[0]
        if now - start_at <= 0 or total < start:
            return 0.0
        return (total - start) / (now - start_at)


class LagWatch:
    """The lag figures of one process (``current``) and the warning loop (``watch``)."""

    def __init__(
        self,
        backlog: Callable[[int], Awaitable[PendingBacklog]],
        now_us: Callable[[], int],
        warning_seconds: float,
        processed: Callable[[], float] = processed_total,
    ) -> None:
        self._backlog = backlog
        self._now_us = now_us
        self._processed = processed
        self.warning_seconds = warning_seconds
        self._rate = _Rate(processed(), time.monotonic())
        self._read_at = float("-inf")
        self._last: Lag | None = None
        self._reading = asyncio.Lock()
        self._warned_at: float | None = None  # monotonic time of the last warning
        self._failed_at = float("-inf")  # when a failed read was last logged

    async def current(self) -> Lag:
        """The figures, read again when the last reading is over a second old.
        Raises ``Unknown`` when the database could not be read within
        ``READ_TIMEOUT_SECONDS`` (the log says why, at most once a minute),
        for a second too: concurrent askers never queue behind a slow read."""
        async with self._reading:  # concurrent askers share one reading
            if time.monotonic() - self._read_at >= FRESH_SECONDS:
                self._last = await self._read()
                self._read_at = time.monotonic()
            if self._last is None:
                raise Unknown("could not read the pending backlog")
            return self._last

    async def _read(self) -> Lag | None:
        try:
            backlog = await asyncio.wait_for(
                self._backlog(PENDING_CAP), timeout=READ_TIMEOUT_SECONDS
            )
        except Exception:
            if time.monotonic() - self._failed_at >= REPEAT_SECONDS:
                self._failed_at = time.monotonic()
                log.warning("could not read the pending backlog", exc_info=True)
            return None
        rate = self._rate.add(self._processed(), time.monotonic())
        return Lag(backlog.count, backlog.capped, backlog.age_seconds(self._now_us()), rate)

    @property
    def check_seconds(self) -> float:
        """How often ``watch`` looks: every ``CHECK_SECONDS``, or a quarter of
        a lower threshold (not under half a second)."""
        if self.warning_seconds <= 0:
            return CHECK_SECONDS
        return min(CHECK_SECONDS, max(0.5, self.warning_seconds / 4))

    async def watch(self, stop: asyncio.Event, lock_directory: str) -> None:
        """Read the figures every ``CHECK_SECONDS`` until ``stop``; warn of a
        lag when this process holds the warning lock in ``lock_directory``."""
        held: IO[bytes] | None = None
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.check_seconds)
                if stop.is_set():
                    break
                try:
                    lag = await self.current()
                except Unknown:  # logged by current()
                    continue
                if held is None:
                    held = _take_lock(os.path.join(lock_directory, LOCK_NAME))
                if held is not None:
                    self.judge(lag, time.monotonic())
        finally:
            if held is not None:
                held.close()

    def judge(self, lag: Lag, now: float) -> None:
        """Log a warning (at most every ``REPEAT_SECONDS``) while the oldest
        pending event is older than the threshold, and an info line once it
        is no longer."""
        if self.warning_seconds <= 0:
            return
        age = lag.oldest_pending_age_seconds
        if age > self.warning_seconds:
            if self._warned_at is None or now - self._warned_at >= REPEAT_SECONDS:
                self._warned_at = now
                log.warning(
                    "processing is behind: the oldest pending event was stored %.0f s ago "
                    "(TALLY_LAG_WARNING_SECONDS=%g); %s%d events pending, %.1f processed a second",
                    age,
                    self.warning_seconds,
                    "at least " if lag.pending_capped else "",
                    lag.pending,
                    lag.processing_rate,
                )
        elif self._warned_at is not None:
            self._warned_at = None
            log.info(
                "processing has caught up: the oldest pending event is %.0f s old "
                "(TALLY_LAG_WARNING_SECONDS=%g); %d events pending",
                age,
                self.warning_seconds,
                lag.pending,
            )


def _take_lock(path: str) -> IO[bytes] | None:
    """The open lock file when this process took the lock, else None (another
    process of this tally serve holds it, until it exits)."""
    handle = open(path, "ab")  # noqa: SIM115 - held open for the process's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle
