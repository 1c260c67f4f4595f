"""Fixtures of the end-to-end tests: the real server (``tally serve`` in its
own process) on each backend, and clients of the official Python SDK on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from schematic import Schematic, SchematicConfig

from tests.support.server import Server, running_server

ClientFactory = Callable[[str], Schematic]


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """The real server on each backend (PostgreSQL: a fresh schema of the run's database)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    with running_server(tmp_path, database_url=url) as srv:
        yield srv


@pytest.fixture
def make_client(server: Server) -> Iterator[ClientFactory]:
    """SDK clients on the server, both URLs pointed at it (buffered
    ``identify()``/``track()`` go to ``POST /batch``). Each gets an
    ``httpx.Client`` that is closed afterwards: the SDK never closes one it
    makes itself, which surfaces as an unclosed-socket ``ResourceWarning`` (an
    error under ``filterwarnings=error``)."""
    made: list[tuple[Schematic, httpx.Client]] = []

    def make(api_key: str) -> Schematic:
        http = httpx.Client(timeout=10.0)
        client = Schematic(
            api_key,
            SchematicConfig(
                base_url=server.base_url,
                event_capture_url=server.base_url,
                httpx_client=http,
                timeout=10.0,
            ),
        )
        made.append((client, http))
        return client

    yield make
    for client, http in made:
        client.shutdown()
        http.close()


@pytest.fixture
def sdk(server: Server, make_client: ClientFactory) -> Schematic:
    """A client with the development environment's secret key."""
    return make_client(server.secret_key)
