from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import Server, running_server


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """The real server on each backend (PostgreSQL: a fresh schema of the run's database)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    with running_server(tmp_path, database_url=url) as srv:
        yield srv
