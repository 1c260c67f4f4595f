from __future__ import annotations

import sys
from pathlib import Path

# tests.support is importable as a package from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collections.abc import Iterator

import pytest

from tests.support.receiver import Receiver


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run (fails under CI=true when
    PostgreSQL is unreachable, skips elsewhere)."""
    from tests.support.postgres import fresh_database, require_postgres

    require_postgres()
    with fresh_database() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    """A URL to a new, empty schema of the run's database."""
    from tests.support.postgres import fresh_schema

    with fresh_schema(postgres_database) as url:
        yield url


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local HTTP server that records what it receives (webhooks, meter records)."""
    with Receiver() as rx:
        yield rx
