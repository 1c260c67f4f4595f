"""The delivery loop's manners toward processing, with a stand-in storage:
on a single writer it takes at most ``busy_share`` of the writer's time
while events wait, and full speed otherwise; on PostgreSQL it never waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from tally.effects.delivery import Deliverer, DeliveryConfig
from tally.effects.records import AttemptResult, ClaimedDelivery

WRITE_SECONDS = 0.02


class StandIn:
    def __init__(self, *, single_writer: bool, pending: bool) -> None:
        self.single_writer = single_writer
        self.pending = pending
        self.claims: list[float] = []

    async def has_pending_events(self) -> bool:
        return self.pending

    async def claim_deliveries(
        self, now: int, limit: int, lease_us: int, *, billing: bool
    ) -> list[ClaimedDelivery]:
        self.claims.append(time.monotonic())
        await asyncio.sleep(WRITE_SECONDS)
        return []

    async def record_attempts(self, results: Sequence[AttemptResult], now: int) -> list[str]:
        return []


def gaps(single_writer: bool, pending: bool) -> list[float]:
    storage = StandIn(single_writer=single_writer, pending=pending)
    deliverer = Deliverer(storage, DeliveryConfig(busy_share=0.1))  # type: ignore[arg-type]

    async def main() -> None:
        for _ in range(3):
            await deliverer._claim(10)

    asyncio.run(main())
    return [b - a for a, b in zip(storage.claims, storage.claims[1:], strict=False)]


def test_a_single_writer_with_pending_events_gets_nine_tenths_of_the_time() -> None:
    # each claim takes 20 ms; the loop then stays away for 9 x 20 ms
    assert all(gap >= 0.15 for gap in gaps(single_writer=True, pending=True))


@pytest.mark.parametrize(("single_writer", "pending"), [(True, False), (False, True)])
def test_no_waiting_when_processing_is_idle_or_has_its_own_connection(
    single_writer: bool, pending: bool
) -> None:
    assert all(gap < 0.1 for gap in gaps(single_writer=single_writer, pending=pending))


def test_the_lease_outlasts_an_attempt() -> None:
    config = DeliveryConfig(timeout_seconds=10)
    assert config.lease_us == 25_000_000
    assert config.lease_us > config.timeout_seconds * 1_000_000
