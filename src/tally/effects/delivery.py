"""The delivery loop: claim due deliveries, POST them, record every attempt.

It runs apart from event processing (inside ``tally serve`` by default, or as
``tally deliver``) and only talks to storage through short transactions, so
a slow or dead receiver never slows processing. Any number of loops may run
on one database: a claim is a lease, and a loop that dies mid-delivery
leaves its deliveries to be claimed again when the lease runs out — they are
delivered at least once, and logged as successful once.

Up to ``concurrency`` deliveries are in flight at a time. On SQLite, where
deliveries and processing share one write lock, the loop takes at most
``busy_share`` of the writer's time while events wait to be processed: after
each of its transactions it pauses for long enough (in-flight requests go
on meanwhile). It catches up at full speed once processing is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field

from tally.clock import Clock, SystemClock, to_micros
from tally.effects import billing
from tally.effects.records import WEBHOOK, AttemptResult, ClaimedDelivery
from tally.effects.schedule import RetrySchedule
from tally.effects.sender import Client, Guard, Sent, make_client, post
from tally.effects.signing import signed_headers
from tally.effects.targets import Resolver, SystemResolver
from tally.observe.metrics import metrics
from tally.settings import Settings
from tally.storage.base import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    schedule: RetrySchedule = field(default_factory=RetrySchedule)
    timeout_seconds: float = 10.0
    concurrency: int = 64
    billing_url: str | None = None
    idle_seconds: float = 0.2  # how often an idle loop looks for due deliveries
    flush_seconds: float = 0.1  # how long finished attempts may wait to be recorded
    busy_share: float = 0.1  # SQLite: the writer's time deliveries take while events wait
    allow_private: bool = False  # webhooks to non-global addresses (TALLY_WEBHOOK_ALLOW_PRIVATE)

    @property
    def lease_us(self) -> int:
        """How long a claim holds a delivery: an attempt plus ample margin."""
        return round((2 * self.timeout_seconds + 5) * 1_000_000)

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        return cls(
            schedule=settings.retry_schedule,
            timeout_seconds=settings.delivery_timeout_seconds,
            concurrency=settings.delivery_concurrency,
            billing_url=settings.billing_sink_url or None,
            allow_private=settings.webhook_allow_private,
        )


class Deliverer:
    def __init__(
        self,
        storage: Storage,
        config: DeliveryConfig,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self._storage = storage
        self._config = config
        # webhooks are checked against private targets; the billing sink is not
        self._guard = Guard(config.allow_private, resolver or SystemResolver())
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self.attempts = 0
        self.delivered = 0
        self._last_write = 0.0  # seconds the last storage write took

    def _now(self) -> int:
        return to_micros(self._clock.now())

    async def _yield_to_processing(self) -> None:
        """On a single writer, keep out of processing's way while it has work."""
        share = self._config.busy_share
        if self._last_write <= 0 or share >= 1 or not self._storage.single_writer:
            return
        if await self._storage.has_pending_events():
            await asyncio.sleep(self._last_write * (1 - share) / share)

    async def _claim(self, limit: int) -> list[ClaimedDelivery]:
        await self._yield_to_processing()
        started = time.monotonic()
        claimed = await self._storage.claim_deliveries(
            self._now(),
            limit,
            self._config.lease_us,
            billing=self._config.billing_url is not None,
        )
        self._last_write = time.monotonic() - started
        return claimed

    async def attempt(self, client: Client, item: ClaimedDelivery) -> AttemptResult:
        """One attempt; never raises (an unexpected error is a failed attempt)."""
        started = self._now()
        try:
            sent = await self._send(client, item, started)
        except Exception as err:
            log.exception("delivery %s failed unexpectedly", item.id)
            sent = Sent(False, None, f"internal error: {type(err).__name__}: {err}"[:300])
        finished = self._now()
        retry_at = None
        if not sent.ok:
            retry_at = self._config.schedule.next_attempt_at(finished, item.attempt, self._rng)
        outcome = "delivered" if sent.ok else ("retry" if retry_at is not None else "failed")
        kind = "webhook" if item.kind == WEBHOOK else "meter_record"
        metrics().delivery(kind, outcome, max(0, finished - started) / 1_000_000)
        return AttemptResult(
            item.id,
            item.attempt,
            sent.ok,
            sent.response_code,
            sent.error,
            started,
            finished,
            retry_at,
        )

    async def _send(self, client: Client, item: ClaimedDelivery, started: int) -> Sent:
        if item.kind == WEBHOOK:
            if item.url is None or item.secret is None:
                sent = Sent(False, None, "the webhook endpoint no longer exists")
            else:
                headers = signed_headers(item.payload, item.secret, started // 1_000_000)
                sent = await post(client, item.url, item.payload, headers, self._guard)
        else:
            url = self._config.billing_url
            headers = billing.record_headers(item.ref or item.id, item.request_type)
            if url is None:
                sent = Sent(False, None, "no billing sink is configured")
            else:
                sent = await post(client, url, item.payload, headers)
        return sent

    async def _record(self, results: list[AttemptResult]) -> None:
        await self._yield_to_processing()
        started = time.monotonic()
        disabled = await self._storage.record_attempts(results, self._now())
        self._last_write = time.monotonic() - started
        self.attempts += len(results)
        self.delivered += sum(1 for r in results if r.ok)
        for hook_id in disabled:
            metrics().endpoints_disabled.inc()
            log.warning("switched webhook endpoint %s off: most of its deliveries fail", hook_id)

    async def step(self, client: Client) -> int:
        """Claim what is due (up to ``concurrency``), deliver it all, record
        the outcomes; returns how many attempts were made."""
        claimed = await self._claim(self._config.concurrency)
        if not claimed:
            return 0
        results = await asyncio.gather(*(self.attempt(client, c) for c in claimed))
        await self._record(list(results))
        return len(results)

    async def run_until_idle(self) -> int:
        """Deliver until nothing is due now (later retries are left for
        later); returns how many attempts were made."""
        total = 0
        async with make_client(self._config.timeout_seconds, self._config.concurrency) as client:
            while True:
                made = await self.step(client)
                total += made
                if made == 0:
                    return total

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, then finish what is in flight.

        Claims and outcomes are batched (a claim when half the slots are free,
        outcomes when half of them are done or ``flush_seconds`` after the first
        one), so that the loop takes the database's write lock seldom: on
        SQLite processing shares it.
        """
        cfg = self._config
        in_flight: set[asyncio.Task[AttemptResult]] = set()
        results: list[AttemptResult] = []
        first_result = 0.0
        last_poll = float("-inf")
        full = False  # the last claim filled every slot it asked for: more may be due
        claim_min = max(1, cfg.concurrency // 2)
        async with make_client(cfg.timeout_seconds, cfg.concurrency) as client:
            while not stop.is_set() or in_flight or results:
                free = cfg.concurrency - len(in_flight)
                now = time.monotonic()
                due = full or now - last_poll >= cfg.idle_seconds
                if not stop.is_set() and due and (free >= claim_min or not in_flight):
                    try:
                        claimed = await self._claim(free)
                    except Exception:
                        metrics().database_retry("delivery")
                        log.exception("claiming deliveries failed (storage unavailable?)")
                        claimed = []
                        await _sleep_or_stop(stop, 1.0)
                    last_poll = time.monotonic()
                    full = len(claimed) == free
                    for item in claimed:
                        in_flight.add(asyncio.create_task(self.attempt(client, item)))
                if in_flight:
                    wait = cfg.idle_seconds
                    if results:
                        wait = max(0.0, first_result + cfg.flush_seconds - time.monotonic())
                    done, _ = await asyncio.wait(
                        in_flight, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                    )
                    if done and not results:
                        first_result = time.monotonic()
                    in_flight -= done
                    results.extend(t.result() for t in done)
                elif not results:
                    await _sleep_or_stop(stop, cfg.idle_seconds)
                flush = (
                    not in_flight
                    or len(results) >= claim_min
                    or time.monotonic() - first_result >= cfg.flush_seconds
                )
                if results and flush:
                    try:
                        await self._record(results)
                        results = []
                    except Exception:
                        metrics().database_retry("delivery")
                        log.exception("recording deliveries failed; retrying")
                        if stop.is_set():
                            return  # the leases run out: they are delivered again
                        await _sleep_or_stop(stop, 1.0)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
