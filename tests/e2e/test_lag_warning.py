"""Lag on a real ``tally serve``: GET /health's backlog and age grow while no
worker runs and fall back to 0 once one does, the processing rate follows
the serve's own worker, and one process of the serve logs the warning (at
most once a minute) and the recovery."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import Server, running_server, tally_command

pytestmark = pytest.mark.slow

TRACK = {"event_type": "track", "body": {"event": "api-call", "company": {"id": "acme"}}}
BEHIND = "processing is behind"
CAUGHT_UP = "processing has caught up"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None: the server's own SQLite file."""
    url: str | None = (
        request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    )
    return url


def health(server: Server) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}/health", timeout=30)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def send(server: Server, n: int) -> None:
    for _ in range(n):
        response = httpx.post(
            f"{server.base_url}/events",
            json=TRACK,
            headers={"X-Schematic-Api-Key": server.secret_key},
            timeout=30,
        )
        assert response.status_code == 201, response.text


def drained(found: dict[str, Any]) -> bool:
    return found["pending"] == 0 and found["oldest_pending_age_seconds"] == 0


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s"
        time.sleep(0.2)


def test_backlog_and_age_grow_without_a_worker_and_fall_to_zero_with_one(
    tmp_path: Path, database_url: str | None
) -> None:
    env = {
        "TALLY_WORKER": "off",
        "TALLY_HTTP_WORKERS": "2",  # two processes watch; one warns
        "TALLY_LAG_WARNING_SECONDS": "2",
        "TALLY_LOG_LEVEL": "info",
    }
    with running_server(tmp_path, env, database_url) as server:
        assert health(server)["pending"] == 0
        send(server, 3)
        time.sleep(1.1)  # a reading is at most a second old
        first = health(server)
        assert first["pending"] == 3 and first["pending_capped"] is False
        time.sleep(2.5)  # a reading may be a second older than the other
        later = health(server)
        assert later["pending"] == 3
        assert later["oldest_pending_age_seconds"] >= first["oldest_pending_age_seconds"] + 1
        wait_for(lambda: BEHIND in server.log(), "the lag warning")

        log = tmp_path / "worker.log"
        with open(log, "wb") as out:
            worker = subprocess.Popen(
                tally_command("worker", "--database-url", server.database_url),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=server.env,
            )
        try:
            # each HTTP process answers from its own reading, at most a second old
            wait_for(lambda: drained(health(server)), "the worker drained the backlog")
            time.sleep(1.1)
            assert drained(health(server)) and drained(health(server))
            wait_for(lambda: CAUGHT_UP in server.log(), "the recovery line")
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, log.read_text()
        text = server.log()
        assert text.count(BEHIND) == 1, text  # one process, and less than a minute late
        assert text.count(CAUGHT_UP) == 1, text
        warning = next(line for line in text.splitlines() if BEHIND in line)
        assert "WARNING" in warning and "3 events pending" in warning
        assert "TALLY_LAG_WARNING_SECONDS=2" in warning


def test_processing_rate_follows_the_serves_own_worker(
    tmp_path: Path, database_url: str | None
) -> None:
    with running_server(tmp_path, {}, database_url) as server:
        send(server, 20)
        wait_for(lambda: drained(health(server)), "the worker processed the events")
        time.sleep(1.1)
        found = health(server)
        assert drained(found) and found["processing_rate"] > 0, found
