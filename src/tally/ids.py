"""Object ids: a prefix plus a time-sortable random part.

The random part is a ULID (48-bit millisecond timestamp + 80 random bits in
Crockford base32). Within one process ids are strictly increasing, so the
events index grows at its end.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
import time

# RFC 4648 base32 (in C), re-lettered to Crockford's alphabet, whose ASCII
# order follows the digits' values: text order is numeric order.
_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789abcdefghjkmnpqrstvwxyz")


ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def decode(part: str) -> int:
    """The 128-bit value of a 26-character id part (inverse of ``_encode``)."""
    value = 0
    for ch in part:
        value = value * 32 + ALPHABET.index(ch)
    return value >> 2  # 26 characters carry 130 bits, the last two are padding


def _encode(value: int) -> str:
    """128 bits → 26 base32 characters, most significant first."""
    return base64.b32encode(value.to_bytes(16, "big")).decode("ascii")[:26].translate(_CROCKFORD)


class IdGenerator:
    """Monotonic ULID generator (thread-safe)."""

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
