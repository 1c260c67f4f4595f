"""The storage contract runs against every backend listed in ``BACKENDS``.

A backend is a factory of ``Storage`` objects that all see the same data (so
that a test can close one and open the next on what it wrote) plus the frozen
clock they share. PostgreSQL runs in a fresh schema of the run's fresh
database (``tests/support/postgres.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tally.clock import FrozenClock
from tally.effects.triggers import EffectRules
from tally.pipeline.processing import PIPELINE
from tally.storage.base import Storage
from tests.support.clock import NOW

T = TypeVar("T")

BACKENDS = ["sqlite", "postgres"]
START = NOW  # the contract tests' name for the fixed moment


@dataclass
class Backend:
    name: str
    clock: FrozenClock
    make: Callable[[], Storage]

    def run(self, scenario: Callable[[Storage], Awaitable[T]]) -> T:
        """Start a storage, run ``scenario`` on it in a fresh event loop, close it."""

        async def main() -> T:
            storage = self.make()
            await storage.start()
            try:
                return await scenario(storage)
            finally:
                await storage.close()

        return asyncio.run(main())


def _factory(
    name: str,
    tmp_path: Path,
    clock: FrozenClock,
    request: pytest.FixtureRequest,
    effects: EffectRules | None = None,
) -> Callable[[], Storage]:
    if name == "postgres":
        from tally.storage.postgres.storage import PostgresStorage

        url: str = request.getfixturevalue("postgres_url")
        return lambda: PostgresStorage(url, clock=clock, effects=effects, processing=PIPELINE)
    if name == "sqlite":
        from tally.storage.sqlite.storage import SqliteStorage

        path = str(tmp_path / "c.db")
        return lambda: SqliteStorage(path, clock=clock, effects=effects, processing=PIPELINE)
    raise AssertionError(f"no factory for storage backend {name!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    clock = FrozenClock(START)
    yield Backend(request.param, clock, _factory(request.param, tmp_path, clock, request))
