"""Delivery against real local HTTP receivers (SPEC §5, issue 5 acceptance).

Processing writes outbox notices and billing meter records; the delivery loop
(``tally.effects.delivery``) posts them to receivers on free 127.0.0.1 ports:

- a receiver that fails its first three attempts still gets each delivery,
  and accepts it once; every attempt is logged;
- a receiver down for a minute gets everything queued once it is back (the
  real default schedule on a simulated clock, and a compressed schedule in
  real time);
- every webhook verifies with the official SDK's ``schematic.webhook_utils``;
- a backfill over the limit yields no webhook and no meter record;
- meter records made while no billing sink was set wait, and go out once a
  ``tally deliver`` has one;
- ``entitlement.limit.reached`` fires once per period, not once per event;
- ``tally deliver`` killed with SIGKILL mid-delivery: every delivery still
  arrives at least once and is logged once as successful.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar

import pytest
from schematic.webhook_utils import verify_webhook_signature

from tally.clock import Clock, FrozenClock, SystemClock, to_micros
from tally.effects.delivery import Deliverer, DeliveryConfig
from tally.effects.endpoints import EMITTED
from tally.effects.records import WebhookEvent, WebhookEventFilter
from tally.effects.schedule import RetrySchedule
from tally.effects.triggers import EffectRules
from tally.pipeline.processing import PIPELINE
from tally.storage.base import Storage
from tests.support.clock import NOW as START
from tests.support.drain import drain
from tests.support.receiver import Received, Receiver
from tests.support.server import free_port, tally_command
from tests.support.usage import (
    World,
    identify_event,
    make_world,
    track_event,
)

pytestmark = pytest.mark.slow

T = TypeVar("T")
FAST = RetrySchedule(max_attempts=8, base_seconds=0.05, cap_seconds=0.2)
EVERYTHING = tuple(t for t in EMITTED if t != "test.send")

Factory = Callable[[Clock], Storage]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'd.db'}"


def open_storage(url: str, clock: Clock) -> Storage:
    rules = EffectRules()
    if url.startswith("postgresql"):
        from tally.storage.postgres.storage import PostgresStorage

        return PostgresStorage(url, clock=clock, effects=rules, processing=PIPELINE)
    from tally.storage.sqlite.storage import SqliteStorage

    return SqliteStorage(
        url.removeprefix("sqlite:///"), clock=clock, effects=rules, processing=PIPELINE
    )


def run(url: str, clock: Clock, scenario: Callable[[Storage], Awaitable[T]]) -> T:
    async def main() -> T:
        storage = open_storage(url, clock)
        await storage.start()
        try:
            return await scenario(storage)
        finally:
            await storage.close()

    return asyncio.run(main())


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


@pytest.fixture
def sink() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def assert_signed(received: list[Received], world: World) -> None:
    """Every webhook verifies with the SDK's helper, as a web framework's request."""
    secrets = {h.url: h.secret for h in world.hooks}
    secret = next(iter(secrets.values()))
    for r in received:
        request = SimpleNamespace(headers=r.headers, body=r.body)
        verify_webhook_signature(request, secret)
        assert r.header("X-Schematic-Webhook-Signature-Version") == "v1"


async def log_by_notice(s: Storage, world: World) -> dict[str, WebhookEvent]:
    """The delivery log by the envelope id its payload carries (the notice's
    id; each test's one endpoint gets one delivery per notice)."""
    events = await s.list_webhook_events(world.env, WebhookEventFilter(limit=250))
    return {json.loads(e.payload)["id"]: e for e in events}


def by_id(received: list[Received], field: str = "id") -> dict[str, list[Received]]:
    out: dict[str, list[Received]] = defaultdict(list)
    for r in received:
        out[r.json()[field]].append(r)
    return out


async def deliver_until_done(storage: Storage, config: DeliveryConfig, timeout: float = 30) -> None:
    """Run the real loop until nothing is pending, then stop it."""
    stop = asyncio.Event()
    loop = asyncio.create_task(Deliverer(storage, config).run_forever(stop))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            counts = await storage.delivery_counts()
            pending = sum(n for (kind, status), n in counts.items() if status == "pending")
            if pending == 0:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"deliveries still pending after {timeout}s: {counts}")
    finally:
        stop.set()
        await loop


# -- failing receivers -------------------------------------------------------------------
def test_a_receiver_failing_its_first_three_attempts_gets_each_delivery_once(
    database_url: str, hooks: Receiver, sink: Receiver
) -> None:
    hooks.fail_first = 3
    sink.fail_first = 3
    now = to_micros(datetime.now(UTC))

    async def scenario(s: Storage) -> None:
        world = await make_world(s, [hooks.url], allocation=3)
        results = await s.ingest([track_event(world.env, 1, now) for _ in range(3)])
        await drain(s)
        config = DeliveryConfig(
            schedule=FAST, timeout_seconds=5, billing_url=sink.url, allow_private=True
        )
        await deliver_until_done(s, config)

        sent = by_id(hooks.received())
        assert len(sent) == 2  # warning and reached, both at the third event
        logged = await log_by_notice(s, world)
        for notice_id, tries in sent.items():
            assert [r.status for r in tries] == [503, 503, 503, 200]
            assert len({r.body for r in tries}) == 1  # the same body on every attempt
            event = await s.get_webhook_event(world.env, logged[notice_id].id)
            assert event is not None and event.status == "success" and event.attempt_count == 4
            assert [a.outcome for a in event.attempts] == ["failure"] * 3 + ["success"]
            assert [a.response_code for a in event.attempts] == [503, 503, 503, 200]
        assert_signed(hooks.received(), world)
        assert sorted(r.json()["action"] for r in hooks.succeeded()) == [
            "entitlement.limit.reached",
            "entitlement.limit.warning",
        ]

        records = by_id(sink.received(), "identifier")
        assert sorted(records) == sorted(r.event_id for r in results)
        for identifier, tries in records.items():
            assert [r.status for r in tries] == [503, 503, 503, 200]
            assert len({r.body for r in tries}) == 1
            assert {r.header("Idempotency-Key") for r in tries} == {identifier}
        assert len(sink.succeeded()) == 3  # each record accepted once

    run(database_url, SystemClock(), scenario)


def test_a_receiver_down_for_a_minute_gets_everything_queued(
    tmp_path: Path,
) -> None:
    """The real default schedule on a simulated clock: attempts at 0 s and
    about 30 s fail; the next, about two minutes in, finds the receivers back."""
    hooks, sink = Receiver(), Receiver()  # not started: connections are refused
    clock = FrozenClock(START)
    t0 = to_micros(START)
    url = f"sqlite:///{tmp_path / 'down.db'}"

    async def scenario(s: Storage) -> None:
        world = await make_world(s, [hooks.url], types=EVERYTHING)
        await s.ingest([identify_event(world.env, f"user-{n}", t0) for n in range(15)])
        await s.ingest([track_event(world.env, 1, t0) for _ in range(12)])
        await drain(s)
        deliverer = Deliverer(
            s, DeliveryConfig(timeout_seconds=5, billing_url=sink.url, allow_private=True), clock
        )
        elapsed = 0
        while elapsed <= 600:
            if elapsed == 60:
                hooks.start()
                sink.start()
            await deliverer.run_until_idle()
            counts = await s.delivery_counts()
            if elapsed > 60 and not any(st == "pending" for _, st in counts):
                break
            elapsed += 1
            clock.advance(timedelta(seconds=1))
        assert hooks.received() and sink.received()
        assert all(r.status == 200 for r in hooks.received() + sink.received())
        counts = await s.delivery_counts()
        assert counts[("webhook", "success")] == len(hooks.received()) == 16 + 2
        assert counts[("billing", "success")] == len(sink.received()) == 12
        assert len(by_id(hooks.received())) == 18  # each once
        events = await s.list_webhook_events(world.env, WebhookEventFilter(limit=250))
        assert {e.attempt_count for e in events} == {3}
        for e in events[:3]:
            detail = await s.get_webhook_event(world.env, e.id)
            assert detail is not None
            starts = [(a.started_at - t0) / 1e6 for a in detail.attempts]
            assert starts[0] == 0 and 24 <= starts[1] <= 36 and starts[2] >= 60
            assert [a.outcome for a in detail.attempts] == ["failure", "failure", "success"]
        assert_signed(hooks.received(), world)

    try:
        run(url, clock, scenario)
    finally:
        hooks.stop()
        sink.stop()


def test_a_receiver_down_then_back_gets_everything_queued_in_real_time(
    database_url: str,
) -> None:
    port = free_port()
    hooks = Receiver(port)  # down
    now = to_micros(datetime.now(UTC))
    schedule = RetrySchedule(max_attempts=10, base_seconds=0.2, cap_seconds=1.0)

    async def scenario(s: Storage) -> None:
        world = await make_world(s, [hooks.url], types=EVERYTHING)
        stop = asyncio.Event()
        loop = asyncio.create_task(
            Deliverer(
                s, DeliveryConfig(schedule=schedule, timeout_seconds=2, allow_private=True)
            ).run_forever(stop)
        )
        try:
            for n in range(10):  # queued while the receiver is down
                await s.ingest([identify_event(world.env, f"user-{n}", now)])
                await drain(s)
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)
            failed_before = await s.list_webhook_events(world.env, WebhookEventFilter())
            assert failed_before and all(e.attempt_count >= 1 for e in failed_before)
            assert all(e.status == "pending" for e in failed_before)
            hooks.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if (await s.delivery_counts()).get(("webhook", "pending"), 0) == 0:
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await loop
        events = await s.list_webhook_events(world.env, WebhookEventFilter())
        assert len(events) == 10 and {e.status for e in events} == {"success"}
        assert sorted(by_id(hooks.received())) == sorted(await log_by_notice(s, world))
        assert_signed(hooks.received(), world)

    try:
        run(database_url, SystemClock(), scenario)
    finally:
        hooks.stop()


# -- what fires ------------------------------------------------------------------------------
def test_a_backfill_over_the_limit_yields_no_webhook_and_no_meter_record(
    database_url: str, hooks: Receiver, sink: Receiver
) -> None:
    now = to_micros(datetime.now(UTC))
    week = 7 * 86_400 * 1_000_000

    async def scenario(s: Storage) -> None:
        world = await make_world(s, [hooks.url], types=EVERYTHING)
        events = [
            track_event(world.env, 5, now - week, backfill=True, user=f"b{n}") for n in range(8)
        ]
        events += [track_event(world.env, 5, now - 1, backfill=True) for _ in range(8)]
        await s.ingest(events)
        assert await drain(s) == 16
        config = DeliveryConfig(
            schedule=FAST, timeout_seconds=5, billing_url=sink.url, allow_private=True
        )
        assert await Deliverer(s, config).run_until_idle() == 0
        assert hooks.received() == [] and sink.received() == []
        assert await s.delivery_counts() == {("outbox", "pending"): 0}

    run(database_url, SystemClock(), scenario)


def test_webhooks_to_private_targets_are_not_sent_but_the_billing_sink_is(
    database_url: str, hooks: Receiver, sink: Receiver
) -> None:
    """By default (TALLY_WEBHOOK_ALLOW_PRIVATE off) the loop checks each
    webhook's host before connecting: a loopback receiver gets nothing and the
    log says why; the billing sink, the operator's own, is not restricted."""
    now = to_micros(datetime.now(UTC))

    async def scenario(s: Storage) -> None:
        world = await make_world(s, [hooks.url], types=("user.created",))
        await s.ingest([track_event(world.env, 1, now, user="u1")])
        await drain(s)
        config = DeliveryConfig(
            schedule=RetrySchedule(max_attempts=1), timeout_seconds=5, billing_url=sink.url
        )
        await Deliverer(s, config).run_until_idle()
        assert hooks.received() == [] and len(sink.succeeded()) == 1
        (logged,) = (await log_by_notice(s, world)).values()
        assert logged.status == "failure" and logged.last_error is not None
        assert "loopback" in logged.last_error
        assert "TALLY_WEBHOOK_ALLOW_PRIVATE" in logged.last_error

    run(database_url, SystemClock(), scenario)


def test_limit_reached_fires_once_per_period_not_once_per_event(
    database_url: str, hooks: Receiver
) -> None:
    clock = FrozenClock(START)
    t0 = to_micros(START)

    async def scenario(s: Storage) -> None:
        world = await make_world(s, [hooks.url])
        config = DeliveryConfig(schedule=FAST, timeout_seconds=5, allow_private=True)
        for _ in range(10):  # 50 events, each past the limit after the tenth
            await s.ingest([track_event(world.env, 1, t0) for _ in range(5)])
            await drain(s)
            await Deliverer(s, config, clock).run_until_idle()
        actions = Counter(r.json()["action"] for r in hooks.received())
        assert actions == {"entitlement.limit.warning": 1, "entitlement.limit.reached": 1}

        clock.set(START + timedelta(days=20))  # April
        april = to_micros(clock.now())
        await s.ingest([track_event(world.env, 1, april) for _ in range(30)])
        await drain(s)
        await Deliverer(s, config, clock).run_until_idle()
        periods = Counter(
            (r.json()["action"], r.json()["body"]["period_start"][:7]) for r in hooks.received()
        )
        assert periods == {
            ("entitlement.limit.warning", "2026-03"): 1,
            ("entitlement.limit.reached", "2026-03"): 1,
            ("entitlement.limit.warning", "2026-04"): 1,
            ("entitlement.limit.reached", "2026-04"): 1,
        }
        assert_signed(hooks.received(), world)

    run(database_url, clock, scenario)


# -- a delivery loop killed mid-delivery ---------------------------------------------------------
def _deliver_process(url: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TALLY_DELIVERY_TIMEOUT_SECONDS": "1",  # a lease is 2 * 1 + 5 = 7 s
        "TALLY_DELIVERY_CONCURRENCY": "4",
        "TALLY_WEBHOOK_ALLOW_PRIVATE": "true",  # the receivers are on 127.0.0.1
        "TALLY_DELIVERY_RETRY_BASE_SECONDS": "0.05",
        "TALLY_DELIVERY_RETRY_MAX_SECONDS": "0.2",
    }
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            tally_command("deliver", "--database-url", url),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def test_a_delivery_loop_killed_mid_delivery_loses_nothing(
    database_url: str, hooks: Receiver, tmp_path: Path
) -> None:
    hooks.delay = 0.25  # requests are in flight most of the time
    now = to_micros(datetime.now(UTC))
    total = 40

    async def fill(s: Storage) -> World:
        world = await make_world(s, [hooks.url], types=("user.created",))
        await s.ingest([identify_event(world.env, f"user-{n}", now) for n in range(total)])
        await drain(s)
        return world

    world = run(database_url, SystemClock(), fill)
    log_path = tmp_path / "deliver.log"
    first = _deliver_process(database_url, log_path)
    try:
        deadline = time.monotonic() + 60
        while len(hooks.received()) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(hooks.received()) >= 10, log_path.read_text()
        first.send_signal(signal.SIGKILL)  # with requests in flight
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = len(hooks.received())
    assert killed_at < total

    async def pending(s: Storage) -> int:
        await s.claim_deliveries(0, 0, 0, billing=False)  # the outbox is fanned out
        counts = await s.delivery_counts()
        return counts.get(("webhook", "pending"), 0)

    assert run(database_url, SystemClock(), pending) > 0
    # two loops pick up the rest, and what the dead one held once its leases run out
    again = [_deliver_process(database_url, log_path) for _ in range(2)]
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if run(database_url, SystemClock(), pending) == 0:
                break
            time.sleep(0.5)
    finally:
        for proc in again:
            proc.send_signal(signal.SIGTERM)
        for proc in again:
            proc.wait(timeout=30)

    async def check(s: Storage) -> None:
        logged = await log_by_notice(s, world)
        assert len(logged) == total
        received = by_id(hooks.received())
        outcomes: Counter[str] = Counter()
        for notice_id, e in logged.items():
            assert e.status == "success", log_path.read_text()
            assert received[notice_id], f"{e.id} never arrived"  # at least once
            detail = await s.get_webhook_event(world.env, e.id)
            assert detail is not None
            made = [a.outcome for a in detail.attempts]
            assert made.count("success") == 1, made  # logged once as successful
            outcomes.update(made)
        assert outcomes["interrupted"] >= 1  # the kill cut attempts short, and they are logged
        assert sum(len(v) for v in received.values()) >= total

    run(database_url, SystemClock(), check)
    assert "Traceback" not in log_path.read_text()
    assert sys.executable  # the loops ran with this interpreter (tally_command)


def test_tally_deliver_burst_delivers_what_is_due_and_exits(
    tmp_path: Path, hooks: Receiver, sink: Receiver
) -> None:
    url = f"sqlite:///{tmp_path / 'burst.db'}"
    now = to_micros(datetime.now(UTC))

    async def fill(s: Storage) -> World:
        world = await make_world(s, [hooks.url], types=("user.created",))
        await s.ingest([track_event(world.env, 1, now, user=f"u{n}") for n in range(5)])
        await drain(s)
        return world

    world = run(url, SystemClock(), fill)
    done = subprocess.run(
        tally_command("deliver", "--burst", "--database-url", url),
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "TALLY_BILLING_SINK_URL": sink.url,
            "TALLY_WEBHOOK_ALLOW_PRIVATE": "true",
        },
    )
    assert done.returncode == 0, done.stderr
    assert "made 10 delivery attempts (10 delivered)" in done.stdout
    assert len(hooks.succeeded()) == 5 and len(sink.succeeded()) == 5
    assert_signed(hooks.received(), world)


def test_meter_records_made_without_a_sink_are_sent_once_one_is_set(
    database_url: str, sink: Receiver
) -> None:
    """Item 6 of issue 9: a worker with no ``TALLY_BILLING_SINK_URL`` still
    writes the records; ``tally deliver`` without a sink says they wait and
    sends nothing; with the sink set it sends each one."""
    now = to_micros(datetime.now(UTC))

    async def fill(s: Storage) -> list[str]:
        world = await make_world(s, [])
        results = await s.ingest([track_event(world.env, n + 1, now) for n in range(4)])
        return [r.event_id for r in results]

    event_ids = run(database_url, SystemClock(), fill)
    unset = {k: v for k, v in os.environ.items() if k != "TALLY_BILLING_SINK_URL"}

    def tally(*args: str, env: dict[str, str]) -> str:
        done = subprocess.run(
            tally_command(*args, "--burst", "--database-url", database_url),
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    tally("worker", env=unset)
    waiting = tally("deliver", env=unset)
    assert "made 0 delivery attempts" in waiting
    assert "4 billing meter records wait for TALLY_BILLING_SINK_URL" in waiting
    assert sink.received() == []
    sent = tally("deliver", env={**unset, "TALLY_BILLING_SINK_URL": sink.url})
    assert "made 4 delivery attempts (4 delivered)" in sent
    assert "wait for" not in sent
    bodies = [r.json() for r in sink.succeeded()]
    assert {b["identifier"]: b["payload"] for b in bodies} == {
        event_id: {"stripe_customer_id": "cus_42", "value": str(n + 1)}
        for n, event_id in enumerate(event_ids)
    }
