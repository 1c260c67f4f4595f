"""What the parts above tally.observe record: the writer's group commits and
database errors, the worker's processing errors and set-aside events, the
delivery loop's attempts and switched-off endpoints, and the metrics port of
tally worker / tally deliver."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tally.effects.delivery import Deliverer, DeliveryConfig
from tally.effects.records import BILLING, WEBHOOK, AttemptResult, ClaimedDelivery
from tally.effects.schedule import RetrySchedule
from tally.effects.sender import make_client
from tally.model import ApiKey, PendingBacklog
from tally.observe.metrics import metrics
from tally.observe.metrics_server import MetricsServer
from tally.pipeline.worker import Worker
from tally.storage.sql.writer import WriterThread
from tests.support.metrics import parse, value
from tests.support.receiver import Receiver

KEY = ApiKey("key_t", "env_t", "secret", False, "sch_dev_", 0)


def sample(name: str, **labels: str) -> float:
    metrics().flush()
    return metrics().registry.get_sample_value(name, labels) or 0.0


def moved(names: list[tuple[str, dict[str, str]]], action: Callable[[], Any]) -> list[float]:
    """How much each sample moved while ``action`` ran."""
    before = [sample(name, **labels) for name, labels in names]
    action()
    return [sample(name, **labels) - b for (name, labels), b in zip(names, before, strict=True)]


def test_group_commits_and_database_errors_are_counted(tmp_path: Path) -> None:
    def batch_fn(conn: sqlite3.Connection, batches: list[Sequence[Any]]) -> list[Any]:
        if any("fail" in items for items in batches):
            raise sqlite3.OperationalError("database is locked")
        return [len(items) for items in batches]

    writer = WriterThread(lambda: sqlite3.connect(tmp_path / "w.db"), batch_fn, max_events=100)
    writer.start()

    def fail_call(err: Exception) -> Callable[[sqlite3.Connection], None]:
        def run(conn: sqlite3.Connection) -> None:
            raise err

        return run

    async def scenario() -> None:
        await asyncio.gather(*(writer.submit_batch(["e"] * n) for n in (1, 2, 3)))
        with pytest.raises(sqlite3.OperationalError):
            await writer.submit_batch(["fail"])
        with pytest.raises(sqlite3.OperationalError):
            await writer.call(fail_call(sqlite3.OperationalError("disk I/O error")))
        with pytest.raises(ValueError):  # not the database's: not counted
            await writer.call(fail_call(ValueError("a bug")))

    try:
        events, commits, group_errors, call_errors = moved(
            [
                ("tally_group_commit_events_sum", {}),
                ("tally_group_commit_duration_seconds_count", {}),
                ("tally_database_errors_total", {"operation": "group_commit"}),
                ("tally_database_errors_total", {"operation": "transaction"}),
            ],
            lambda: asyncio.run(scenario()),
        )
    finally:
        writer.stop()
    assert events == 6  # every event committed, whatever the commits' grouping
    assert 1 <= commits <= 3
    assert group_errors == 1
    assert call_errors == 1


class Poisoned:
    """Storage whose batches raise as a poison event makes them, once the
    oldest event is set aside; and then the database goes away once."""

    def __init__(self) -> None:
        self.poisoned = True
        self.unavailable = False

    async def process_pending(self, limit: int) -> int:
        if self.unavailable:
            self.unavailable = False
            raise ConnectionError("the database went away")
        if self.poisoned:
            raise KeyError("boom")
        return 0

    async def fail_next_pending(self, message: str) -> str | None:
        self.poisoned = False
        return "evt_poison"


def test_worker_counts_batch_errors_the_event_it_sets_aside_and_storage_retries() -> None:
    storage = Poisoned()
    worker = Worker(storage, batch_size=10)  # type: ignore[arg-type]

    async def run_forever_through_an_outage() -> None:
        storage.unavailable = True
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.1, stop.set)
        await worker.run_forever(stop)

    event_errors, failed, storage_errors, retries = moved(
        [
            ("tally_processing_errors_total", {"cause": "event"}),
            ("tally_events_processed_total", {"outcome": "failed"}),
            ("tally_processing_errors_total", {"cause": "storage"}),
            ("tally_database_retries_total", {"operation": "processing"}),
        ],
        lambda: (
            asyncio.run(worker.run_until_idle()),
            asyncio.run(run_forever_through_an_outage()),
        ),
    )
    assert event_errors == 1  # the batch raised; then one event at a time
    assert failed == 1  # the poison event, set aside
    assert storage_errors == 1
    assert retries == 1


def claimed(kind: str, attempt: int, url: str | None) -> ClaimedDelivery:
    return ClaimedDelivery(
        id=f"dlv_{kind}_{attempt}",
        kind=kind,
        environment_id="env_t",
        webhook_id="wh_t" if kind == WEBHOOK else None,
        url=url,
        secret="whsec_test" if url else None,
        request_type="company.created",
        ref="evt_t",
        payload=b"{}",
        attempt=attempt,
    )


class Recorder:
    """Storage as the delivery loop sees it: it switches one endpoint off."""

    single_writer = False

    async def record_attempts(self, results: Sequence[AttemptResult], now: int) -> list[str]:
        return ["wh_t"]


def test_deliveries_are_counted_by_kind_and_outcome(receiver: Receiver) -> None:
    config = DeliveryConfig(
        schedule=RetrySchedule(max_attempts=3), billing_url=None, allow_private=True
    )
    deliverer = Deliverer(Recorder(), config)  # type: ignore[arg-type]

    async def scenario() -> None:
        async with make_client(5, 4) as client:
            results = [
                await deliverer.attempt(client, claimed(WEBHOOK, 1, receiver.url)),
                await deliverer.attempt(client, claimed(WEBHOOK, 1, None)),  # endpoint gone
                await deliverer.attempt(client, claimed(WEBHOOK, 3, None)),  # and out of attempts
                await deliverer.attempt(client, claimed(BILLING, 3, None)),  # no sink
            ]
        await deliverer._record(results)

    labels = [
        {"kind": "webhook", "outcome": "delivered"},
        {"kind": "webhook", "outcome": "retry"},
        {"kind": "webhook", "outcome": "failed"},
        {"kind": "meter_record", "outcome": "failed"},
        {"kind": "meter_record", "outcome": "delivered"},
    ]
    figures = moved(
        [("tally_deliveries_total", x) for x in labels]
        + [
            ("tally_delivery_duration_seconds_count", {"kind": "webhook"}),
            ("tally_webhook_endpoints_disabled_total", {}),
        ],
        lambda: asyncio.run(scenario()),
    )
    assert figures == [1, 1, 1, 1, 0, 3, 1]
    assert len(receiver.requests) == 1


def test_metrics_port_serves_the_exposition_with_the_backlog() -> None:
    calls: list[int] = []

    def backlog() -> PendingBacklog:
        calls.append(1)
        if len(calls) > 1:
            raise ConnectionError("the database went away")
        return PendingBacklog(7, 1_000_000)

    server = MetricsServer("127.0.0.1", 0, "", lambda: 31_000_000, backlog).start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        found = parse(httpx.get(f"{url}/metrics").text)
        assert value(found, "tally_events_pending") == 7
        assert value(found, "tally_oldest_pending_event_age_seconds") == 30
        assert "tally_events_processed_total" in {name for name, _ in found}
        # the database away: the rest is still served
        response = httpx.get(f"{url}/metrics")
        assert response.status_code == 200
        assert "tally_events_pending" not in response.text
        assert "tally_deliveries_total" in response.text
        missing = httpx.get(f"{url}/other")
        assert missing.status_code == 404 and "error" in missing.json()
    finally:
        server.stop()
