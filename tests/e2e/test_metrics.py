"""GET /metrics of a real ``tally serve`` (HTTP processes and storage process
added up), the metrics port of a real ``tally worker``, and who may scrape."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.metrics import Samples, ingested, scrape, value
from tests.support.server import Server, free_port, running_server, tally_command

pytestmark = pytest.mark.slow

TRACK = {"event": "api-call", "company": {"id": "acme"}, "user": {"id": "u1"}}


def post(server: Server, path: str, payload: Any, key: str) -> httpx.Response:
    """One request on a connection of its own (so that any HTTP process may take it)."""
    return httpx.post(
        f"{server.base_url}{path}",
        json=payload,
        headers={"X-Schematic-Api-Key": key},
        timeout=30,
    )


def send_round(server: Server) -> dict[tuple[str, str, str], int]:
    """Events of every kind, 4 requests at a time; returns what each counter
    must have moved by: (type, key kind, outcome) -> events."""
    track = {"event_type": "track", "body": TRACK}
    identify = {"event_type": "identify", "body": {"keys": {"id": "u1"}, "name": "U"}}
    calls: list[tuple[str, Any, str]] = [("/events", track, server.secret_key)] * 5
    stamp = f"idem-{time.monotonic_ns()}"
    calls.append(("/event-batch", {"events": [track] * 3}, server.publishable_key))
    with ThreadPoolExecutor(4) as pool:
        for response in pool.map(lambda c: post(server, *c), calls):
            assert response.status_code == 201, response.text
    for _ in range(2):  # the second is a duplicate
        response = post(
            server, "/events", {**identify, "idempotency_key": stamp}, server.secret_key
        )
        assert response.status_code == 201, response.text
    capture = {"events": [{"type": "track", "body": TRACK}, {"type": "track", "body": {}}]}
    response = post(server, "/batch", capture, server.secret_key)
    assert response.status_code == 200, response.text
    return {
        ("track", "secret", "accepted"): 5 + 1,
        ("track", "publishable", "accepted"): 3,
        ("identify", "secret", "accepted"): 1,
        ("identify", "secret", "duplicate"): 1,
        ("track", "secret", "failed"): 1,
    }


def metrics_dir(root: Path) -> Path:
    (found,) = root.glob("tally-metrics-*")
    return found


def http_requests_by_process(directory: Path) -> dict[str, float]:
    """Requests each process's own file holds (``histogram_<pid>.db``)."""
    out = {}
    for path in directory.glob("histogram_*.db"):
        total = 0.0
        for family in MultiProcessCollector.merge([str(path)]):
            for s in family.samples:
                if s.name == "tally_http_request_duration_seconds_count":
                    total += s.value
        out[path.stem.split("_")[-1]] = total
    return out


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Server]:
    """A tally serve with --workers 2; its temporary files go under tmp_path/tmp."""
    (tmp_path / "tmp").mkdir()
    env = {"TALLY_HTTP_WORKERS": "2", "TMPDIR": str(tmp_path / "tmp")}
    with running_server(tmp_path, env) as server:
        yield server


def test_counters_move_by_exactly_the_events_sent_across_two_http_processes(
    two_workers: Server, tmp_path: Path
) -> None:
    server = two_workers
    url = f"{server.base_url}/metrics"
    directory = metrics_dir(tmp_path / "tmp")
    before = scrape(url)
    expected: dict[tuple[str, str, str], int] = {}
    rounds = 0
    # until both HTTP processes have served requests (the kernel picks)
    while sum(1 for n in http_requests_by_process(directory).values() if n > 0) < 2:
        assert rounds < 30, http_requests_by_process(directory)
        for labels, n in send_round(server).items():
            expected[labels] = expected.get(labels, 0) + n
        rounds += 1
    # 2 HTTP processes and the storage process record into the shared directory
    assert len(list(directory.glob("counter_*.db"))) >= 3

    def check(after: Samples) -> None:
        for (kind, key_kind, outcome), n in expected.items():
            moved = ingested(after, kind, key_kind, outcome) - ingested(
                before, kind, key_kind, outcome
            )
            assert moved == n, (kind, key_kind, outcome)
        assert ingested(after, "flag_check", "secret", "accepted") == 0
        name = "tally_http_request_duration_seconds_count"
        labels = {"method": "POST", "route": "/events", "status": "201"}
        assert value(after, name, **labels) - value(before, name, **labels) == 7 * rounds

    # each process writes what it counted within FLUSH_SECONDS
    deadline = time.monotonic() + 10
    while True:
        try:
            check(scrape(url))
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    for _ in range(6):  # whichever process answers, the figures are the sums
        after = scrape(url)
        check(after)
    # the storage process's group commits hold every stored event
    stored = sum(n for (_, _, outcome), n in expected.items() if outcome != "duplicate")
    commits = value(after, "tally_group_commit_events_sum") - value(
        before, "tally_group_commit_events_sum"
    )
    assert commits >= stored
    # off loopback (as a proxy on this host forwards another host's request): refused
    response = httpx.get(url, headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 403
    server.stop()
    assert list((tmp_path / "tmp").glob("tally-metrics-*")) == []


def test_a_killed_server_leaves_no_metrics_directory(tmp_path: Path) -> None:
    """SIGKILL gives tally serve no chance to clean up: its storage process,
    which outlives it, removes the directory as it stops."""
    (tmp_path / "tmp").mkdir()
    with running_server(tmp_path, {"TMPDIR": str(tmp_path / "tmp")}) as server:
        assert metrics_dir(tmp_path / "tmp").is_dir()
        server.kill()
        deadline = time.monotonic() + 30
        while list((tmp_path / "tmp").glob("tally-metrics-*")):
            assert time.monotonic() < deadline, "the metrics directory outlived the server"
            time.sleep(0.1)


def test_off_loopback_scrapes_need_the_bearer_token(tmp_path: Path) -> None:
    with running_server(tmp_path, {"TALLY_METRICS_TOKEN": "tok-5e1f"}) as server:
        url = f"{server.base_url}/metrics"
        far = {"X-Forwarded-For": "203.0.113.9"}
        assert httpx.get(url).status_code == 200  # loopback: no token needed
        for auth in (None, "Bearer wrong", "Basic tok-5e1f", "Bearer"):
            headers = far if auth is None else {**far, "Authorization": auth}
            response = httpx.get(url, headers=headers)
            assert response.status_code == 401, auth
            assert response.headers["www-authenticate"] == "Bearer"
            assert "TALLY_METRICS_TOKEN" in response.json()["error"]
        good = httpx.get(url, headers={**far, "Authorization": "Bearer tok-5e1f"})
        assert good.status_code == 200
        assert "tally_events_pending" in good.text
        assert "tok-5e1f" not in server.log()


def pending(found: Samples) -> tuple[float, float]:
    return value(found, "tally_events_pending"), value(
        found, "tally_oldest_pending_event_age_seconds"
    )


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None: the server's own SQLite file."""
    url: str | None = (
        request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    )
    return url


def test_pending_gauge_and_lag_follow_a_stopped_and_started_worker(
    tmp_path: Path, database_url: str | None
) -> None:
    with running_server(tmp_path, {"TALLY_WORKER": "off"}, database_url) as server:
        url = f"{server.base_url}/metrics"
        for _ in range(4):
            response = post(
                server, "/events", {"event_type": "track", "body": TRACK}, server.secret_key
            )
            assert response.status_code == 201
        time.sleep(1.5)
        found = scrape(url)
        count, age = pending(found)
        assert count == 4 and age >= 1.5
        assert value(found, "tally_events_processed_total", outcome="processed") == 0

        port = free_port()
        log = tmp_path / "worker.log"
        with open(log, "wb") as out:
            worker = subprocess.Popen(
                tally_command(
                    "worker", "--database-url", server.database_url, "--metrics-port", str(port)
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=server.env,
            )
        try:
            deadline = time.monotonic() + 60
            while pending(scrape(url))[0] > 0:
                assert worker.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the worker processed nothing in 60 s"
                time.sleep(0.1)
            assert pending(scrape(url)) == (0, 0)
            own = scrape(f"http://127.0.0.1:{port}/metrics")
            assert value(own, "tally_events_processed_total", outcome="processed") == 4
            assert value(own, "tally_processing_lag_seconds_count") == 4
            assert value(own, "tally_processing_lag_seconds_sum") >= 4 * 1.5
            assert value(own, "tally_processing_lag_seconds_bucket", le="1.0") == 0
            assert pending(own) == (0, 0)
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, log.read_text()

        # stopped again: what arrives now waits
        response = post(
            server, "/events", {"event_type": "track", "body": TRACK}, server.secret_key
        )
        assert response.status_code == 201
        assert pending(scrape(url))[0] == 1
        # the serve's own processing metrics saw none of it (its worker is off)
        assert value(scrape(url), "tally_processing_lag_seconds_count") == 0


def test_tally_deliver_serves_its_delivery_metrics(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "deliver.log"
    database_url = f"sqlite:///{tmp_path / 'd.db'}"
    with open(log, "wb") as out:
        deliver = subprocess.Popen(
            tally_command("deliver", "--database-url", database_url, "--metrics-port", str(port)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert deliver.poll() is None, log.read_text()
            try:
                found = scrape(f"http://127.0.0.1:{port}/metrics")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert ("tally_deliveries_total", (("kind", "webhook"), ("outcome", "failed"))) in found
        assert "tally_events_pending" not in {name for name, _ in found}  # the worker's figure
    finally:
        deliver.send_signal(signal.SIGTERM)
        assert deliver.wait(timeout=30) == 0, log.read_text()
