"""When a failed delivery is tried again (pure): exponential backoff with
jitter, a cap, and a last attempt.

With the defaults a delivery is tried 8 times (the first attempt and 7
retries) over about 9 hours: 30 s, 1.5 min, 4.5 min, 13.5 min, 40.5 min,
about 2 h, then 6 h (the cap) after the previous attempt, each ±20%.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SECOND_US = 1_000_000


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    max_attempts: int = 8
    base_seconds: float = 30.0
    factor: float = 3.0
    cap_seconds: float = 6 * 3600.0
    jitter: float = 0.2  # each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter]

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("a delivery needs at least one attempt")
        if self.base_seconds <= 0 or self.cap_seconds <= 0 or self.factor < 1:
            raise ValueError("retry delays must be positive and must not shrink")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def base_delay(self, attempts_made: int) -> float:
        """Seconds between attempt ``attempts_made`` and the next, before jitter."""
        if attempts_made < 1:
            raise ValueError("no attempt was made yet")
        delay = self.base_seconds * self.factor ** (attempts_made - 1)
        return float(min(delay, self.cap_seconds))

    def delay(self, attempts_made: int, rng: random.Random) -> float:
        spread = self.jitter
        return self.base_delay(attempts_made) * rng.uniform(1.0 - spread, 1.0 + spread)

    def next_attempt_at(self, now_us: int, attempts_made: int, rng: random.Random) -> int | None:
        """When to try again after ``attempts_made`` failed attempts; ``None``
        when that was the last one."""
        if attempts_made >= self.max_attempts:
            return None
        return now_us + round(self.delay(attempts_made, rng) * SECOND_US)
