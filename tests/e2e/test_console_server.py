"""The console on a real ``tally serve``, on both backends and with two HTTP
processes: a session opened in one process works in the other (sessions
live in the database), every page answers, a tracked event reaches the live
data, and signing out in one process ends the session in all."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import Server, running_server

TOKEN = re.compile(r'name="(sign_in_token|csrf_token)" value="([^"]+)"')
pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgres"])
def two_processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    env = {"TALLY_HTTP_WORKERS": "2"}
    with running_server(tmp_path, extra_env=env, database_url=url) as srv:
        yield srv


def fresh(server: Server, cookies: httpx.Cookies) -> httpx.Client:
    """A client on a new connection (so the kernel may hand it to either process)."""
    return httpx.Client(base_url=server.base_url, cookies=cookies, timeout=10)


def get(server: Server, cookies: httpx.Cookies, path: str) -> httpx.Response:
    with fresh(server, cookies) as client:
        return client.get(path)


def test_console_across_processes(two_processes: Server) -> None:
    server = two_processes
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        form = client.get("/console/sign-in")
        token = dict(TOKEN.findall(form.text))["sign_in_token"]
        answer = client.post(
            "/console/sign-in", data={"key": server.secret_key, "sign_in_token": token}
        )
        assert answer.status_code == 303
        cookies = client.cookies
    body = {"event": "api-call", "company": {"id": "acme"}, "quantity": 2}
    created = httpx.post(
        server.base_url + "/events",
        json={"event_type": "track", "body": body},
        headers={"X-Schematic-Api-Key": server.secret_key},
    )
    event_id = created.json()["data"]["event_id"]
    deadline = time.monotonic() + 20
    while True:  # the live data, from whichever process answers
        rows = get(server, cookies, "/console/data/events").json()["rows"]
        if rows and rows[0]["status"] == "processed":
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert rows[0]["id"] == event_id and rows[0]["company"] == "acme"
    company_id = rows[0]["company_id"]
    pages = [
        "/console/events",
        f"/console/events/{event_id}",
        "/console/failed",
        "/console/event-types",
        "/console/data/event-types/days",
        "/console/companies",
        f"/console/companies/{company_id}",
        "/console/users",
        "/console/webhooks",
        "/console/health",
        "/console/data/health",
    ]
    for _ in range(3):  # new connections: both processes answer each page
        for path in pages:
            answer = get(server, cookies, path)
            assert answer.status_code == 200, (path, answer.text[:300])
    # sign out through one connection; no process knows the session after
    page = get(server, cookies, "/console/events")
    csrf = dict(TOKEN.findall(page.text))["csrf_token"]
    with fresh(server, cookies) as client:
        assert client.post("/console/sign-out", data={"csrf_token": csrf}).status_code == 303
    for _ in range(6):
        assert get(server, cookies, "/console/data/events").status_code == 401
