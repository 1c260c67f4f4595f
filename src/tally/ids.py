"""Object ids: a prefix plus a time-sortable random part.

The part is 128 bits in 32 lower-case hex digits: a 48-bit millisecond
timestamp, then 80 random bits. Within one process ids are strictly
increasing (the random part counts up inside a millisecond), so the events
index grows at its end; across processes they sort by millisecond.
"""

from __future__ import annotations

import os
import secrets
import threading
import time

PART_LENGTH = 32


def decode(part: str) -> int:
    """The 128-bit value of an id's part."""
    return int(part, 16)


def _encode(value: int) -> str:
    return f"{value:032x}"


class IdGenerator:
    """Monotonic generator of id parts (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def next_raw(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                self._last_rand += 1
                if self._last_rand >= 1 << 80:  # pragma: no cover - 2^80 ids in one ms
                    ms += 1
                    self._last_rand = int.from_bytes(os.urandom(10), "big") >> 1
            else:
                self._last_rand = int.from_bytes(os.urandom(10), "big") >> 1
            self._last_ms = ms
            return _encode((ms << 80) | self._last_rand)

    def new(self, prefix: str) -> str:
        return f"{prefix}_{self.next_raw()}"


_default = IdGenerator()


def new_id(prefix: str) -> str:
    return _default.new(prefix)


def random_token(nbytes: int = 24) -> str:
    """A URL-safe random secret."""
    return secrets.token_urlsafe(nbytes).replace("-", "x").replace("_", "y")


def first_id_at(prefix: str, micros: int) -> str:
    """The smallest id made at or after ``micros`` (µs since the epoch): ids
    sort by time, so ``id >= first_id_at(…, t)`` selects what was made since ``t``."""
    ms = max(0, -(-micros // 1000))
    return f"{prefix}_{_encode(ms << 80)}"


def made_at_micros(object_id: str) -> int:
    """When an id was made (µs since the epoch, millisecond precision)."""
    return (decode(object_id.rsplit("_", 1)[-1]) >> 80) * 1000
