"""Admin upserts racing the worker on PostgreSQL (issue 11, item 7).

PostgreSQL workers and admin requests write at once, on connections of their
own. A company's traits written by ``POST /companies`` (or the traits
endpoint) and those an identify event sets must both survive when the two
write the same company at the same moment; an admin upsert that meets a
concurrent write of the same keys is retried, never answered with an error;
trait increments sent at once all count. (SQLite has one writer: its writes
never overlap.)

Spoken through the storage interface, as ``tally serve`` does."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tally.clock import FrozenClock, to_micros
from tally.keys import create_key
from tally.model import EventFilter, NewEvent
from tally.pipeline.processing import PIPELINE
from tally.storage.base import Storage
from tally.storage.base_entities import EntityFilter, EntityUpsert, TraitChange
from tests.support.drain import drain
from tests.support.locks import wait_for_a_lock_wait

from .conftest import START

if TYPE_CHECKING:
    from tally.storage.postgres.adapter import PgConnection
    from tally.storage.postgres.storage import PostgresStorage

T0 = to_micros(START)
ROUNDS = 40
INCREMENTS = 60


def identify(env: str, api_key_id: str, company: dict[str, Any]) -> NewEvent:
    body = json.dumps({"keys": {"id": "u1"}, "company": company})
    return NewEvent(
        environment_id=env,
        type="identify",
        status="pending",
        body=body,
        quantity=1,
        captured_at=T0,
        received_at=T0,
        api_key_id=api_key_id,
    )


Scenario = Callable[["PostgresStorage", "PgConnection", "PgConnection"], Awaitable[None]]


def on_postgres(url: str, scenario: Scenario) -> None:
    """Run ``scenario(storage, side, watching)``: ``side`` is a connection of
    its own for the transaction held open, ``watching`` sees lock waits."""
    from tally.storage.postgres.adapter import PgConnection
    from tally.storage.postgres.storage import PostgresStorage

    async def main() -> None:
        s = PostgresStorage(url, clock=FrozenClock(START), processing=PIPELINE)
        await s.start()
        side, watching = PgConnection.connect(url), PgConnection.connect(url)
        try:
            await scenario(s, side, watching)
        finally:
            side.close()
            watching.close()
            await s.close()

    asyncio.run(main())


async def acme_with_a_pending_plan(s: Storage) -> tuple[str, str]:
    """(environment, acme's id): acme is named Acme, and an identify that
    sets its ``plan`` waits to be processed."""
    secret, _, _ = await create_key(s, "development")
    env = secret.environment_id
    acme = await s.upsert_company(env, EntityUpsert(keys={"id": "acme"}, name="Acme"))
    await s.ingest([identify(env, secret.id, {"keys": {"id": "acme"}, "traits": {"plan": "pro"}})])
    return env, acme.id


async def assert_both_traits(s: Storage, env: str, acme: str) -> None:
    company = await s.get_company(env, acme)
    assert company is not None
    assert json.loads(company.traits) == {"plan": "pro", "seats": 5}
    assert company.name == "Acme"


def test_an_admin_upsert_waiting_on_a_batch_keeps_the_traits_the_batch_set(
    postgres_url: str,
) -> None:
    """The worker's batch sets acme's ``plan`` and holds the row, not yet
    committed; an admin upsert of acme's ``seats`` reads acme meanwhile and
    waits for the batch. Once the batch commits, acme has both traits: the
    upsert merged its change into the row as stored, it did not write back
    the row it had read."""
    from tally.storage.postgres.storage import PgUnitOfWork

    async def scenario(s: PostgresStorage, worker: PgConnection, watching: PgConnection) -> None:
        env, acme = await acme_with_a_pending_plan(s)
        worker.execute("BEGIN")
        assert PIPELINE.process_pending(PgUnitOfWork(worker), 10, T0) == 1  # not committed yet
        admin = asyncio.create_task(
            s.upsert_company(env, EntityUpsert(keys={"id": "acme"}, traits={"seats": 5}))
        )
        await asyncio.to_thread(wait_for_a_lock_wait, watching)
        worker.execute("COMMIT")
        await admin
        await assert_both_traits(s, env, acme)

    on_postgres(postgres_url, scenario)


def test_a_batch_waiting_on_an_admin_upsert_keeps_its_traits(postgres_url: str) -> None:
    """The other order: the admin upsert holds acme uncommitted while the
    worker's batch sets another trait; both are there afterwards."""
    from tally.storage.postgres.storage import PgUnitOfWork
    from tally.storage.sql import entity_writes as writes

    async def scenario(s: PostgresStorage, admin: PgConnection, watching: PgConnection) -> None:
        env, acme = await acme_with_a_pending_plan(s)
        admin.execute("BEGIN")
        change = EntityUpsert(keys={"id": "acme"}, traits={"seats": 5})
        writes.upsert(
            PIPELINE, PgUnitOfWork(admin), "company", env, change, T0
        )  # not committed yet
        batch = asyncio.create_task(s.process_pending(10))
        await asyncio.to_thread(wait_for_a_lock_wait, watching)
        admin.execute("COMMIT")
        assert await batch == 1
        await assert_both_traits(s, env, acme)

    on_postgres(postgres_url, scenario)


def test_admin_upserts_and_identify_events_racing_keep_every_trait(postgres_url: str) -> None:
    """Many rounds, each on a company of its own: an admin upsert (alternately
    ``POST /companies`` and the traits endpoint) sets trait ``a`` while the
    worker processes an identify that sets trait ``b``; in every other round
    neither has created the company yet, so both create it by the same key
    at once. Afterwards every company exists once and holds both traits, and
    no write failed."""
    from tally.storage.postgres.storage import PostgresStorage

    async def main() -> None:
        admin_side = PostgresStorage(postgres_url, clock=FrozenClock(START), processing=PIPELINE)
        worker_side = PostgresStorage(postgres_url, clock=FrozenClock(START), processing=PIPELINE)
        await admin_side.start()
        await worker_side.start()
        rng = random.Random(11)
        try:
            secret, _, _ = await create_key(admin_side, "development")
            env = secret.environment_id
            for i in range(ROUNDS):
                keys = {"id": f"c{i}"}
                if i % 2 == 0:  # an existing company; else both create it
                    await admin_side.upsert_company(env, EntityUpsert(keys=keys))
                company = {"keys": keys, "traits": {"b": i}}
                await worker_side.ingest([identify(env, secret.id, company)])

                async def admin_write(i: int = i, keys: dict[str, str] = keys) -> None:
                    await asyncio.sleep(rng.random() * 0.004)
                    if i % 4 < 2:
                        await admin_side.upsert_company(
                            env, EntityUpsert(keys=keys, traits={"a": i})
                        )
                    else:
                        change = TraitChange(keys=keys, trait="a", set=i)
                        await admin_side.upsert_company_trait(env, change)

                async def work() -> None:
                    await asyncio.sleep(rng.random() * 0.004)
                    await drain(worker_side)

                await asyncio.gather(admin_write(), work())
            for i in range(ROUNDS):
                found = await admin_side.lookup_company(env, {"id": f"c{i}"})
                assert found is not None, f"round {i}: no company"
                assert json.loads(found.traits) == {"a": i, "b": i}, f"round {i}: {found.traits}"
            assert await admin_side.count_companies(env, EntityFilter()) == ROUNDS
            statuses = await admin_side.count_events_by_status(env, EventFilter())
            assert statuses == {"processed": ROUNDS}
        finally:
            await admin_side.close()
            await worker_side.close()

    asyncio.run(main())


def test_concurrent_increments_of_one_trait_all_count(postgres_url: str) -> None:
    """Trait increments sent at once (two servers, each with several
    writer connections) add up: none reads a value another is changing."""
    from tally.storage.postgres.storage import PostgresStorage

    async def main() -> None:
        servers = [
            PostgresStorage(postgres_url, clock=FrozenClock(START), processing=PIPELINE)
            for _ in range(2)
        ]
        for s in servers:
            await s.start()
        try:
            secret, _, _ = await create_key(servers[0], "development")
            env = secret.environment_id
            acme = await servers[0].upsert_company(env, EntityUpsert(keys={"id": "acme"}))
            change = TraitChange(keys={"id": "acme"}, trait="seats", incr=1)
            await asyncio.gather(
                *(servers[i % 2].upsert_company_trait(env, change) for i in range(INCREMENTS))
            )
            company = await servers[0].get_company(env, acme.id)
            assert company is not None and json.loads(company.traits) == {"seats": INCREMENTS}
        finally:
            for s in servers:
                await s.close()

    asyncio.run(main())
