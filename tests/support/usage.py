"""A small usage world for side-effect tests: an environment, an event
feature (``api-call``), a company (``acme``, with a ``stripe_customer_id``
key) with a numeric monthly allocation, and webhook endpoints; plus track
events and processing, all through the storage interface.

And the recount every counter test checks against (``recount``,
``read_counters``, ``assert_counters_match``): a counter holds the processed
track events of a company that exists. Deleting a company deletes its
counters; its events keep their ``company_id`` (the record of what was
billed to whom) and count nowhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tally.effects.endpoints import Webhook, WebhookChanges
from tally.metering.catalog import AllocationChanges, FeatureChanges
from tally.metering.periods import period_starts_us
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


# -- the recount ---------------------------------------------------------------------
CounterKey = tuple[str, str, str, str, int]  # env, company, subtype, period kind, start µs
# (environment, company id, subtype, quantity, effective time µs) of a processed track event
CountedEvent = tuple[str, str, str, int, int]


def recount(
    events: Iterable[CountedEvent], anchors: Mapping[str, int | None]
) -> dict[CounterKey, tuple[int, int]]:
    """(quantity, events) every counter must hold: each processed track event
    of a company in ``anchors`` (the companies that exist, with their billing
    anchors in µs) in every period holding its effective time. Events of a
    deleted company are skipped: its counters went with it."""
    out: dict[CounterKey, tuple[int, int]] = {}
    for env, company, subtype, quantity, captured in events:
        if company not in anchors:
            continue
        for kind, start in period_starts_us(captured, anchors[company]):
            key = (env, company, subtype, kind, start)
            qty, count = out.get(key, (0, 0))
            out[key] = (qty + quantity, count + 1)
    return out


COUNTED_EVENTS = (
    "SELECT environment_id, company_id, subtype, quantity, captured_at FROM events "
    "WHERE status = 'processed' AND type = 'track' AND company_id IS NOT NULL"
)


def read_counters(
    conn: Any,
) -> tuple[dict[CounterKey, tuple[int, int]], dict[CounterKey, tuple[int, int]], set[str]]:
    """(stored counters, their recount, companies named by processed track
    events that do not exist) read on ``conn`` (sqlite3 or psycopg: the SQL
    has no parameters); the caller holds one snapshot if it needs one."""
    anchors = {cid: a for cid, a in conn.execute("SELECT id, billing_anchor FROM companies")}
    events = [(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in conn.execute(COUNTED_EVENTS)]
    stored = {
        (r[0], r[1], r[2], r[3], int(r[4])): (int(r[5]), int(r[6]))
        for r in conn.execute(
            "SELECT environment_id, company_id, subtype, period, period_start, quantity, events "
            "FROM usage_counters"
        )
    }
    gone = {e[1] for e in events} - set(anchors)
    return stored, recount(events, anchors), gone


def assert_counters_match(
    stored: Mapping[CounterKey, tuple[int, int]], expected: Mapping[CounterKey, tuple[int, int]]
) -> None:
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    wrong = {k: (stored[k], v) for k, v in expected.items() if k in stored and stored[k] != v}
    assert not missing, f"{len(missing)} counters missing, e.g. {missing[:3]}"
    assert not extra, f"{len(extra)} counters without processed events, e.g. {extra[:3]}"
    assert not wrong, (
        f"{len(wrong)} counters differ from a recount (stored, recount), "
        f"e.g. {list(wrong.items())[:3]}"
    )
