"""The worker's pauses between batches (``tally.pipeline.worker``): none after
a full batch, the linger after one at least a twentieth full (events arrive fast:
let a larger batch gather), the short idle poll after a smaller or empty one."""

from __future__ import annotations

import asyncio
import time

from tally.pipeline.worker import Worker


class _Claims:
    """A storage stand-in that hands out the claim sizes it is given and
    notes when each claim came (the unit under test is the loop's timing)."""

    def __init__(self, sizes: list[int], stop: asyncio.Event) -> None:
        self.sizes = sizes
        self.stop = stop
        self.times: list[float] = []

    async def process_pending(self, limit: int) -> int:
        self.times.append(time.monotonic())
        if not self.sizes:
            self.stop.set()
            return 0
        return min(self.sizes.pop(0), limit)


def _gaps(sizes: list[int], *, batch: int, idle: float, linger: float) -> list[float]:
    async def main() -> list[float]:
        stop = asyncio.Event()
        claims = _Claims(sizes, stop)
        worker = Worker(
            claims,  # type: ignore[arg-type]
            batch_size=batch,
            idle_seconds=idle,
            linger_seconds=linger,
        )
        await worker.run_forever(stop)
        return [b - a for a, b in zip(claims.times, claims.times[1:], strict=False)]

    return asyncio.run(main())


def test_full_batches_follow_each_other_at_once() -> None:
    gaps = _gaps([10, 10, 10], batch=10, idle=0.5, linger=0.5)
    assert all(g < 0.1 for g in gaps[:3])


def test_a_batch_a_twentieth_full_lets_the_next_gather_for_the_linger() -> None:
    gaps = _gaps([5, 0], batch=100, idle=0.01, linger=0.3)
    assert gaps[0] >= 0.3  # after the busy partial batch: the linger
    assert gaps[1] < 0.25  # after the empty one: the idle poll


def test_light_traffic_is_taken_at_the_idle_poll() -> None:
    gaps = _gaps([4, 3, 1], batch=100, idle=0.01, linger=0.5)
    assert all(g < 0.25 for g in gaps)


def test_without_linger_a_partly_full_batch_waits_only_the_idle_poll() -> None:
    gaps = _gaps([40, 40], batch=100, idle=0.01, linger=0.0)
    assert all(g < 0.25 for g in gaps)
