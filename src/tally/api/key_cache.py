"""The API-key cache of one HTTP process: valid keys and unknown ones apart.

Valid keys are kept (least recently used first out) for ``ttl`` seconds, so
a revoked key stops working within ``TALLY_KEY_CACHE_SECONDS``. Unknown keys
are kept for at most a second, in a bounded cache of their own: a stranger
sending any number of made-up keys only evicts other made-up keys, never a
valid one, and the cache's memory stays bounded. ``clear`` forgets
everything (the CLI created or revoked a key: ``tally.key_notice``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from tally.model import ApiKey

MAX_VALID = 10_000
MAX_UNKNOWN = 4096
UNKNOWN_TTL = 1.0
MAX_KEY_LENGTH = 128  # longer header values are never cached (keys are ~32 characters)


class KeyCache:
    def __init__(
        self,
        ttl_seconds: float,
        *,
        max_valid: int = MAX_VALID,
        max_unknown: int = MAX_UNKNOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._unknown_ttl = min(ttl_seconds, UNKNOWN_TTL)
        self._max_valid = max_valid
        self._max_unknown = max_unknown
        self._clock = clock
        self._valid: OrderedDict[str, tuple[ApiKey, float]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._valid) + len(self._unknown)

    @property
    def valid_count(self) -> int:
        return len(self._valid)

    def get(self, raw: str) -> tuple[bool, ApiKey | None]:
        """``(True, key)`` for a fresh valid key, ``(True, None)`` for a fresh
        unknown one, ``(False, None)`` when it must be looked up."""
        now = self._clock()
        hit = self._valid.get(raw)
        if hit is not None:
            if hit[1] > now:
                self._valid.move_to_end(raw)
                return True, hit[0]
            del self._valid[raw]
        until = self._unknown.get(raw)
        if until is not None:
            if until > now:
                return True, None
            del self._unknown[raw]
        return False, None

    def put(self, raw: str, key: ApiKey | None) -> None:
        """Keep what looking ``raw`` up found."""
        now = self._clock()
        if key is not None:
            if self._ttl <= 0:
                return
            self._unknown.pop(raw, None)
            self._valid[raw] = (key, now + self._ttl)
            self._valid.move_to_end(raw)
            while len(self._valid) > self._max_valid:
                self._valid.popitem(last=False)
            return
        if self._unknown_ttl <= 0 or len(raw) > MAX_KEY_LENGTH:
            return
        self._valid.pop(raw, None)
        self._unknown[raw] = now + self._unknown_ttl
        self._unknown.move_to_end(raw)
        while len(self._unknown) > self._max_unknown:
            self._unknown.popitem(last=False)

    def clear(self) -> None:
        self._valid.clear()
        self._unknown.clear()
