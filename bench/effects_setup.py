"""The side-effect configuration of ``bench/pipeline.py --effects``.

Both runs (without and with side effects) hold the same catalog: the four
subtypes are event features, the 1,000 companies exist (every other one with
a ``stripe_customer_id`` key) and each has a numeric monthly allocation of
``api-call`` small enough that usage crosses its warning share and its limit.
The run *with* side effects adds 10 webhook endpoints subscribed to every
notice tally sends (limit warnings and reached, companies and users created
and updated) and a billing sink, so processing writes one meter record per
event, an outbox notice per new user and per crossing; a ``tally deliver``
process delivers them to local receivers while the worker runs.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

from tally.effects.endpoints import EMITTED, WebhookChanges
from tally.metering.catalog import AllocationChanges, FeatureChanges
from tally.pipeline.processing import PIPELINE
from tally.settings import Settings
from tally.storage import open_storage
from tally.storage.base_entities import EntityUpsert

SUBTYPES = ("api-call", "page-view", "search", "export")
COMPANIES = 1000
ENDPOINTS = 10
ALLOCATION = 20


def configure(
    database_url: str,
    env_id: str,
    receiver: str | None,
    *,
    companies: int = COMPANIES,
    allocation: int = ALLOCATION,
) -> None:
    """The shared catalog; with a receiver base URL, the 10 endpoints too."""

    async def run() -> None:
        storage = open_storage(Settings(database_url=database_url), processing=PIPELINE)
        await storage.start()
        try:
            features = {}
            for subtype in SUBTYPES:
                feature = await storage.create_feature(
                    env_id,
                    FeatureChanges(name=subtype, feature_type="event", event_subtype=subtype),
                )
                features[subtype] = feature.id
            for n in range(1, companies + 1):
                keys = {"id": f"co-{n}"}
                if n % 2:
                    keys["stripe_customer_id"] = f"cus_{n:05d}"
                company = await storage.upsert_company(env_id, EntityUpsert(keys=keys))
                await storage.upsert_allocation(
                    env_id,
                    company.id,
                    features["api-call"],
                    AllocationChanges(
                        value_type="numeric",
                        value_numeric=allocation,
                        metric_period="current_month",
                    ),
                    None,
                    "bench",
                )
            if receiver is not None:
                types = tuple(t for t in EMITTED if t != "test.send")
                for n in range(ENDPOINTS):
                    await storage.create_webhook(
                        env_id,
                        WebhookChanges(
                            name=f"bench {n}", url=f"{receiver}/hook/{n}", request_types=types
                        ),
                    )
        finally:
            await storage.close()

    asyncio.run(run())


def receiver_counts(receiver: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{receiver}/stats", timeout=10) as resp:
        counts: dict[str, Any] = json.loads(resp.read())
    return {k: int(v) for k, v in counts.items()}
