"""``tally.retention.loop.Pruner`` as the serving processes run it: started
with the worker or the delivery loop, stopped with them, and never ended
by a database error."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tally.background import start_loops
from tally.pipeline.processing import PIPELINE
from tally.retention.loop import Pruner
from tally.retention.policy import Cutoffs, Pruned, RetentionPolicy
from tally.settings import Settings
from tally.storage.sqlite.storage import SqliteStorage


@pytest.mark.parametrize(
    ("worker", "deliver", "prune", "named"),
    [
        (True, True, True, True),
        (True, False, True, True),
        (False, True, True, True),
        (True, True, False, False),
        (False, False, True, False),  # an API process only: pruning is for the loops' process
    ],
)
def test_the_pruning_loop_runs_beside_the_worker_or_the_delivery_loop(
    tmp_path: Path, worker: bool, deliver: bool, prune: bool, named: bool
) -> None:
    async def run() -> list[str]:
        storage = SqliteStorage(str(tmp_path / "l.db"), processing=PIPELINE)
        await storage.start()
        stop = asyncio.Event()
        settings = Settings(worker=worker, deliver=deliver, prune=prune)
        tasks = start_loops(settings, storage, stop)
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        await storage.close()
        return [t.get_name() for t in tasks]

    assert ("tally-prune" in asyncio.run(run())) is named


class Flaky:
    """A storage whose first prune fails as a locked database does."""

    def __init__(self) -> None:
        self.calls = 0
        self.passed = asyncio.Event()

    async def prune_chunk(
        self, kind: str, cutoffs: Cutoffs, limit: int, after: tuple[Any, ...] | None = None
    ) -> Pruned:
        self.calls += 1
        if self.calls == 1:
            raise sqlite3.OperationalError("database is locked")
        return Pruned(0)

    async def count_prunable(self, cutoffs: Cutoffs) -> dict[str, int]:
        return {}

    async def vacuum_dead_rows(self) -> list[str]:
        self.passed.set()
        return []


def test_a_database_error_is_logged_and_the_next_pass_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run() -> int:
        storage = Flaky()
        stop = asyncio.Event()
        pruner = Pruner(storage, RetentionPolicy(), every_seconds=0.01)
        task = asyncio.create_task(pruner.run_forever(stop))
        await asyncio.wait_for(storage.passed.wait(), 5)
        stop.set()
        await asyncio.wait_for(task, 5)
        return storage.calls

    assert asyncio.run(run()) >= 3  # the failed pass, then both kinds of the next
    assert "pruning failed; trying again later" in caplog.text
