"""A small usage world for side-effect tests: an environment, an event
feature (``api-call``), a company (``acme``, with a ``stripe_customer_id``
key) with a numeric monthly allocation, and webhook endpoints; plus track
events and processing, all through the storage interface."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tally.effects.endpoints import Webhook, WebhookChanges
from tally.metering.catalog import AllocationChanges, FeatureChanges
from tally.model import NewEvent
from tally.storage.base import Storage
from tally.storage.base_entities import EntityUpsert

LIMITS = ("entitlement.limit.warning", "entitlement.limit.reached")


@dataclass
class World:
    env: str
    feature: str
    company: str
    hooks: list[Webhook] = field(default_factory=list)


async def make_world(
    s: Storage,
    urls: list[str],
    *,
    allocation: int = 10,
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
        AllocationChanges(
            value_type="numeric", value_numeric=allocation, metric_period="current_month"
        ),
        None,
        "key_test",
    )
    world = World(env.id, feature.id, company.id)
    for n, url in enumerate(urls):
        world.hooks.append(
            await s.create_webhook(
                env.id, WebhookChanges(name=f"hook {n}", url=url, request_types=types)
            )
        )
    return world


def track_event(
    env: str, quantity: int, at: int, *, backfill: bool = False, user: str = "u1"
) -> NewEvent:
    body = {"event": "api-call", "company": {"id": "acme"}, "user": {"id": user}}
    body["quantity"] = quantity  # type: ignore[assignment]
    return NewEvent(
        environment_id=env,
        type="track",
        status="pending",
        body=json.dumps(body),
        quantity=quantity,
        captured_at=at,
        received_at=at,
        subtype="api-call",
        sent_at=at if backfill else None,
        trusted_client_clock=backfill,
        backfill=backfill,
    )


def identify_event(env: str, user: str, at: int) -> NewEvent:
    return NewEvent(
        environment_id=env,
        type="identify",
        status="pending",
        body=json.dumps({"keys": {"id": user}, "company": {"keys": {"id": "acme"}}}),
        quantity=1,
        captured_at=at,
        received_at=at,
        subtype=None,
    )


async def process_all(s: Storage) -> int:
    total = 0
    while n := await s.process_pending(500):
        total += n
    return total
