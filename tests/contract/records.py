"""Records and scenarios the storage contract tests share: events as
ingestion makes them, environments, and the small world of the side-effect
tests (a feature, a company with a numeric allocation, a webhook endpoint)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from tally.clock import to_micros
from tally.effects.endpoints import Webhook, WebhookChanges
from tally.metering.catalog import AllocationChanges, FeatureChanges
from tally.model import EventFilter, NewEvent, StoredEvent
from tally.storage.base import Storage
from tally.storage.base_entities import EntityUpsert

from .conftest import START, Backend

T0 = to_micros(START)
SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE


def now_us(backend: Backend) -> int:
    return to_micros(backend.clock.now())


def advance_to(backend: Backend, at_us: int) -> None:
    backend.clock.set(START + timedelta(microseconds=at_us - T0))


def event(
    env_id: str,
    type: str = "track",
    *,
    received: int = T0,
    captured: int | None = None,
    subtype: str | None = "query_run",
    key: str | None = None,
    status: str = "pending",
    body: str = '{"event":"query_run"}',
    quantity: int = 1,
    error: str | None = None,
    company_id: str | None = None,
    user_id: str | None = None,
    flag_id: str | None = None,
    sent_at: int | None = None,
    trusted: bool = False,
    backfill: bool = False,
) -> NewEvent:
    return NewEvent(
        environment_id=env_id,
        type=type,
        status=status,
        body=body,
        quantity=quantity,
        captured_at=received if captured is None else captured,
        received_at=received,
        subtype=subtype if type == "track" else None,
        idempotency_key=key,
        sent_at=sent_at,
        trusted_client_clock=trusted,
        backfill=backfill,
        error_message=error,
        api_key_id="key_test",
        remote_ip="198.51.100.1",
        user_agent="contract/1",
        company_id=company_id,
        user_id=user_id,
        flag_id=flag_id,
    )


async def env_id(storage: Storage, name: str = "development") -> str:
    env, _ = await storage.ensure_environment(name, "development")
    return env.id


async def all_events(storage: Storage, env: str) -> list[StoredEvent]:
    return await storage.list_events(env, EventFilter(limit=250))


# -- the side effects' world ----------------------------------------------------------
LEASE = 30 * SECOND
LIMITS = ("entitlement.limit.warning", "entitlement.limit.reached")


@dataclass
class World:
    env: str
    feature: str
    company: str
    hook: Webhook


async def world(
    s: Storage,
    *,
    allocation: int = 10,
    period: str = "current_month",
    types: tuple[str, ...] = LIMITS,
) -> World:
    env, _ = await s.ensure_environment("development", "development")
    feature = await s.create_feature(
        env.id, FeatureChanges(name="API calls", feature_type="event", event_subtype="api-call")
    )
    company = await s.upsert_company(
        env.id, EntityUpsert(keys={"id": "acme", "stripe_customer_id": "cus_42"}, name="Acme")
    )
    await s.upsert_allocation(
        env.id,
        company.id,
        feature.id,
        AllocationChanges(value_type="numeric", value_numeric=allocation, metric_period=period),
        None,
        "key_test",
    )
    hook = await s.create_webhook(
        env.id, WebhookChanges(name="limits", url="http://127.0.0.1:9/hook", request_types=types)
    )
    return World(env.id, feature.id, company.id, hook)


def track(
    w: World | str,
    quantity: int = 1,
    *,
    at: int | None = None,
    backfill: bool = False,
    subtype: str = "api-call",
    company: str = "acme",
) -> NewEvent:
    env = w if isinstance(w, str) else w.env
    body = {
        "event": subtype,
        "company": {"id": company},
        "user": {"id": "u1"},
        "quantity": quantity,
    }
    captured = T0 if at is None else at
    return NewEvent(
        environment_id=env,
        type="track",
        status="pending",
        body=json.dumps(body),
        quantity=quantity,
        captured_at=captured,
        received_at=T0,
        subtype=subtype,
        sent_at=captured if at is not None or backfill else None,
        trusted_client_clock=at is not None or backfill,
        backfill=backfill,
    )


async def fan_out(s: Storage, backend: Backend) -> None:
    await s.claim_deliveries(to_micros(backend.clock.now()), 0, LEASE, billing=False)
