"""Revoking a key with the CLI on the server's host stops it at once, in
every HTTP process of a real ``tally serve --workers 2``, however long keys
are cached (TALLY_KEY_CACHE_SECONDS); on both backends."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.server import running_server, tally_command

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_key_revoked_with_the_cli_stops_working_at_once(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    env = {"TALLY_KEY_CACHE_SECONDS": "3600", "TALLY_HTTP_WORKERS": "2"}
    with running_server(tmp_path, env, database_url=url) as srv:
        key = srv.create_key()

        def status() -> int:  # a new connection each time: either HTTP process
            headers = {"X-Schematic-Api-Key": key}
            return httpx.get(f"{srv.base_url}/events", headers=headers, timeout=10).status_code

        assert [status() for _ in range(20)] == [200] * 20  # cached by both processes
        done = subprocess.run(
            tally_command("keys", "revoke", key[:14], "--database-url", srv.database_url),
            env=srv.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert [status() for _ in range(20)] == [401] * 20
