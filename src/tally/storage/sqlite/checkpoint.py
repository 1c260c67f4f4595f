"""WAL checkpoints off the write path.

SQLite's default copies the WAL back into the database inside whichever
commit crosses 1000 pages, so the single writer stalls on random writes. The
server's writer turns that off and this thread checkpoints instead
(``PASSIVE``: it never blocks the writer or readers), on the other core.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

from tally.storage.sqlite.schema import connect

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 0.2
CHECKPOINT_AT_BYTES = 16 * 1024 * 1024


class Checkpointer:
    def __init__(self, path: str) -> None:
        self._path = path
        self._wal = f"{path}-wal"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tally-checkpoint", daemon=True)
        self.checkpoints = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop, and fold the whole WAL back into the database file."""
        self._stop.set()
        self._thread.join()
        conn = connect(self._path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:  # another process holds the database
            log.warning("final checkpoint of %s skipped: the database is busy", self._path)
        finally:
            conn.close()

    def _wal_size(self) -> int:
        try:
            return os.path.getsize(self._wal)
        except OSError:
            return 0

    def _run(self) -> None:
        conn = connect(self._path)
        try:
            idle = 0
            while not self._stop.wait(CHECK_EVERY_SECONDS):
                size = self._wal_size()
                idle = idle + 1 if size else 0
                # checkpoint a big WAL at once, a small one after a quiet second
                if size >= CHECKPOINT_AT_BYTES or (size and idle >= 5):
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                        self.checkpoints += 1
                    except sqlite3.OperationalError as err:
                        log.warning("checkpoint failed, will retry: %s", err)
                    idle = 0
        finally:
            conn.close()
