"""The notice that API keys changed: a small file beside the database that
``tally keys create`` and ``tally keys revoke`` replace, and that serving
processes on the same host look at (one ``stat`` at most every
``CHECK_EVERY_SECONDS``) to drop their key caches at once.

A revoked key then stops working on this host within a fraction of a
second instead of ``TALLY_KEY_CACHE_SECONDS``; processes the notice does
not reach (other hosts, or a revocation made another way) still stop
honouring it within ``TALLY_KEY_CACHE_SECONDS``. The file is replaced, not
written in place, so each notice is a new inode however coarse the clock;
only the database's owner can replace it (it is 0600, in the database's
directory for SQLite).

For SQLite the file is ``<database>-keys``; for PostgreSQL it lives in the
temporary directory, named after a hash of ``TALLY_DATABASE_URL`` (so the
CLI and the server must be given the same URL).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable

CHECK_EVERY_SECONDS = 0.05


def notice_path(database_url: str) -> str:
    if database_url.startswith("sqlite:///"):
        return os.path.abspath(database_url.removeprefix("sqlite:///")) + "-keys"
    digest = hashlib.sha256(database_url.encode("utf-8")).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), f"tally-keys-{digest}")


def announce(path: str) -> None:
    """Tell the serving processes that keys changed (best effort: a notice
    that cannot be written leaves them to their cache's expiry)."""
    temp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, str(time.time_ns()).encode("ascii"))
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)


class KeyNotice:
    """Whether the notice at ``path`` changed since it was last looked at."""

    def __init__(
        self,
        path: str,
        *,
        check_every: float = CHECK_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._check_every = check_every
        self._clock = clock
        self._next_check = 0.0
        self._seen = self._look()

    def _look(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self._path)
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size

    def changed(self) -> bool:
        now = self._clock()
        if now < self._next_check:
            return False
        self._next_check = now + self._check_every
        seen = self._look()
        if seen == self._seen:
            return False
        self._seen = seen
        return True
