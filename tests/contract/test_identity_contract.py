"""Billing identity and retries, on every backend (issue 9, items 1-3):

- an event never changes the value of a key its entity holds; identify may
  add a key name, track adds keys only to what it creates; only a secret
  key's event may set a company's ``stripe_customer_id``;
- a retry whose idempotency key is held is a duplicate before any rule;
- an event that fails in processing lets its key go.

Spoken through the storage interface, plus the API-key kinds of
``tally.keys`` (what ingestion records with each event)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tally.clock import to_micros
from tally.effects.billing import STRIPE_CUSTOMER_KEY
from tally.jsontext import read_object
from tally.keys import create_key
from tally.model import (
    FAILING,
    NOT_STORED,
    REFUSED,
    EventFilter,
    IngestResult,
    NewEvent,
    StoredEvent,
)
from tally.pipeline.processing import PIPELINE
from tally.storage.base import Storage
from tally.storage.base_entities import EntityFilter, EntityUpsert
from tests.support.drain import drain

from .conftest import START, Backend

T0 = to_micros(START)


def new_event(
    env: str,
    type: str,
    body: dict[str, Any],
    *,
    api_key_id: str | None = None,
    key: str | None = None,
    status: str = "pending",
    at: int = T0,
) -> NewEvent:
    return NewEvent(
        environment_id=env,
        type=type,
        status=status,
        body=json.dumps(body),
        quantity=1,
        captured_at=at,
        received_at=at,
        subtype=body.get("event") if type == "track" else None,
        idempotency_key=key,
        error_message="refused by a rule" if status != "pending" else None,
        api_key_id=api_key_id,
    )


class World:
    """An environment with a secret and a publishable key, and ``acme``
    (id=acme, stripe_customer_id=cus_1) made by a secret-key upsert."""

    def __init__(self, env: str, secret: str, publishable: str, acme: str) -> None:
        self.env, self.secret, self.publishable, self.acme = env, secret, publishable, acme

    def event(
        self, type: str, body: dict[str, Any], *, publishable: bool = False, **kw: Any
    ) -> NewEvent:
        key_id = self.publishable if publishable else self.secret
        return new_event(self.env, type, body, api_key_id=key_id, **kw)


async def world(s: Storage) -> World:
    secret, _, _ = await create_key(s, "development")
    publishable, _, _ = await create_key(s, "development", publishable=True)
    acme = await s.upsert_company(
        secret.environment_id,
        EntityUpsert(keys={"id": "acme", STRIPE_CUSTOMER_KEY: "cus_1"}, name="Acme"),
    )
    return World(secret.environment_id, secret.id, publishable.id, acme.id)


async def run(s: Storage, *events: NewEvent) -> list[StoredEvent]:
    """Ingest ``events``, process everything, return them as stored."""
    results = await s.ingest(list(events))
    await drain(s)
    stored = []
    for result in results:
        event = await s.get_event(events[0].environment_id, result.event_id)
        assert event is not None
        stored.append(event)
    return stored


async def company_keys(s: Storage, env: str, company_id: str) -> dict[str, str]:
    company = await s.get_company(env, company_id)
    assert company is not None
    return {k.key: k.value for k in company.keys}


async def company_count(s: Storage, env: str) -> int:
    return await s.count_companies(env, EntityFilter())


# -- item 1: keys ---------------------------------------------------------------------


def test_track_with_another_billing_key_fails_and_changes_nothing(backend: Backend) -> None:
    """The reported attack: a publishable key's track names acme with another
    customer id. It fails naming the key; acme keeps cus_1, nothing is
    counted, no second company appears; the old value still finds acme."""

    async def scenario(s: Storage) -> None:
        w = await world(s)
        body = {"event": "api-call", "company": {"id": "acme", STRIPE_CUSTOMER_KEY: "cus_other"}}
        (ev,) = await run(s, w.event("track", body, publishable=True))
        assert ev.status == "failed"
        assert "'stripe_customer_id'" in (ev.error_message or "")
        assert "another value" in (ev.error_message or "")
        assert ev.company_id is None
        assert await company_keys(s, w.env, w.acme) == {"id": "acme", STRIPE_CUSTOMER_KEY: "cus_1"}
        assert await company_count(s, w.env) == 1
        company = await s.get_company(w.env, w.acme)
        assert company is not None and company.counters == ()
        # the same with a secret key: events never change keys, whoever sends them
        (again,) = await run(s, w.event("track", body))
        assert again.status == "failed"
        old = {"event": "api-call", "company": {STRIPE_CUSTOMER_KEY: "cus_1"}}
        (ok,) = await run(s, w.event("track", old, publishable=True))
        assert (ok.status, ok.company_id) == ("processed", w.acme)

    backend.run(scenario)


def test_identify_conflict_fails_with_no_partial_write(backend: Backend) -> None:
    """An identify whose company holds another value for a key fails whole:
    no name, trait, key, user or membership of it is written."""

    async def scenario(s: Storage) -> None:
        w = await world(s)
        body = {
            "keys": {"id": "u1"},
            "name": "Wile",
            "company": {
                "keys": {"id": "acme", "domain": "acme.com", STRIPE_CUSTOMER_KEY: "cus_2"},
                "name": "Renamed",
                "traits": {"plan": "gold"},
            },
        }
        (ev,) = await run(s, w.event("identify", body))
        assert ev.status == "failed"
        assert "'stripe_customer_id'" in (ev.error_message or "")
        company = await s.get_company(w.env, w.acme)
        assert company is not None
        assert (company.name, read_object(company.traits)) == ("Acme", {})
        assert await company_keys(s, w.env, w.acme) == {"id": "acme", STRIPE_CUSTOMER_KEY: "cus_1"}
        assert await s.lookup_user(w.env, {"id": "u1"}) is None
        assert await s.count_users(w.env, EntityFilter()) == 0

    backend.run(scenario)


def test_identify_adds_a_key_name_track_does_not(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s)
        track = {"event": "api-call", "company": {"id": "acme", "domain": "acme.com"}}
        (tracked,) = await run(s, w.event("track", track))
        assert (tracked.status, tracked.company_id) == ("processed", w.acme)
        assert "domain" not in await company_keys(s, w.env, w.acme)

        identify = {"keys": {"id": "u1"}, "company": {"keys": {"id": "acme", "domain": "acme.com"}}}
        (identified,) = await run(s, w.event("identify", identify, publishable=True))
        assert identified.status == "processed"
        assert (await company_keys(s, w.env, w.acme))["domain"] == "acme.com"

        # a track event that creates a company writes all its keys
        new = {"event": "api-call", "company": {"id": "globex", "domain": "globex.com"}}
        (created,) = await run(s, w.event("track", new, publishable=True))
        assert created.status == "processed" and created.company_id is not None
        assert await company_keys(s, w.env, created.company_id) == {
            "id": "globex",
            "domain": "globex.com",
        }

    backend.run(scenario)


def test_only_a_secret_key_sets_the_billing_key(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s)
        await s.upsert_company(w.env, EntityUpsert(keys={"id": "beta"}, name="Beta"))
        add = {
            "keys": {"id": "u1"},
            "company": {"keys": {"id": "beta", STRIPE_CUSTOMER_KEY: "cus_b"}},
        }
        create = {"event": "api-call", "company": {"id": "new", STRIPE_CUSTOMER_KEY: "cus_n"}}
        added, created = await run(
            s,
            w.event("identify", add, publishable=True),
            w.event("track", create, publishable=True),
        )
        for ev in (added, created):
            assert ev.status == "failed"
            assert ev.error_message == (
                "only a secret API key may set the billing key 'stripe_customer_id'; "
                "this event was sent with a publishable key"
            )
        beta = await s.lookup_company(w.env, {"id": "beta"})
        assert beta is not None and STRIPE_CUSTOMER_KEY not in {k.key for k in beta.keys}
        assert await s.lookup_company(w.env, {"id": "new"}) is None
        # naming the value acme already holds adds nothing: allowed
        same = {
            "keys": {"id": "u2"},
            "company": {"keys": {"id": "acme", STRIPE_CUSTOMER_KEY: "cus_1"}},
        }
        # and a secret key's identify may add it
        (same_ev, secret_add) = await run(
            s, w.event("identify", same, publishable=True), w.event("identify", add)
        )
        assert same_ev.status == "processed"
        assert secret_add.status == "processed"
        beta = await s.lookup_company(w.env, {"id": "beta"})
        assert (
            beta is not None and {k.key: k.value for k in beta.keys}[STRIPE_CUSTOMER_KEY] == "cus_b"
        )

    backend.run(scenario)


def test_rest_upsert_still_changes_a_key_value(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s)
        changed = await s.upsert_company(
            w.env, EntityUpsert(keys={"id": "acme", STRIPE_CUSTOMER_KEY: "cus_9"})
        )
        assert changed.id == w.acme
        assert await company_keys(s, w.env, w.acme) == {"id": "acme", STRIPE_CUSTOMER_KEY: "cus_9"}
        body = {"event": "api-call", "company": {STRIPE_CUSTOMER_KEY: "cus_9"}}
        (ev,) = await run(s, w.event("track", body))
        assert (ev.status, ev.company_id) == ("processed", w.acme)

    backend.run(scenario)


def test_one_value_per_key_name_is_a_database_rule(backend: Backend) -> None:
    """Two workers adding different values of one key name to one company
    cannot both win: the database refuses the second row."""

    async def scenario(s: Storage) -> None:
        w = await world(s)

        def second_value(conn: Any) -> None:
            conn.execute(
                "INSERT INTO company_keys (environment_id, key, value, entity_id, created_at) "
                "VALUES (?,?,?,?,?)",
                (w.env, STRIPE_CUSTOMER_KEY, "cus_race", w.acme, T0),
            )

        with pytest.raises(Exception, match=r"(?i)unique"):
            await s._writer.call(second_value)  # type: ignore[attr-defined]
        assert await company_keys(s, w.env, w.acme) == {"id": "acme", STRIPE_CUSTOMER_KEY: "cus_1"}

    backend.run(scenario)


# -- item 2: a held key before any rule -------------------------------------------------


def test_a_refused_retry_of_a_held_key_is_its_duplicate(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s)
        body = {"event": "api-call", "company": {"id": "acme"}}
        (kept,) = await s.ingest([w.event("track", body, key="k1")])
        later = T0 + 3_000_000
        for status in (REFUSED, FAILING):
            retry = w.event("track", body, key="k1", status=status, at=later)
            assert await s.ingest([retry]) == [IngestResult(kept.event_id, T0, True)]
        # inside one call too: the accepted event, then its refused retry
        both = await s.ingest(
            [
                w.event("identify", {"keys": {"id": "u"}}, key="k2"),
                w.event("identify", {"keys": {"id": "u"}}, key="k2", status=FAILING),
            ]
        )
        assert both[1] == IngestResult(both[0].event_id, T0, True)
        stored = await s.list_events(w.env, EventFilter())
        assert sorted(e.id for e in stored) == sorted([kept.event_id, both[0].event_id])

    backend.run(scenario)


def test_a_refused_event_whose_key_is_free_is_ruled_on(backend: Backend) -> None:
    """``refused`` (REST): its request stores nothing, not even its valid
    neighbours' keys; ``failing`` (/batch): stored as failed, holding nothing."""

    async def scenario(s: Storage) -> None:
        w = await world(s)
        body = {"event": "api-call", "company": {"id": "acme"}}
        results = await s.ingest(
            [w.event("track", body, key="ok"), w.event("track", body, key="bad", status=REFUSED)]
        )
        assert results == [NOT_STORED, NOT_STORED]
        assert not any(r.stored for r in results)
        assert await s.list_events(w.env, EventFilter()) == []
        (failing,) = await s.ingest([w.event("track", body, key="bad", status=FAILING)])
        assert failing.stored and not failing.duplicate
        (stored,) = await s.list_events(w.env, EventFilter())
        assert (stored.id, stored.status, stored.idempotency_key) == (
            failing.event_id,
            "failed",
            "bad",
        )
        # neither claimed its key: both are stored now
        fresh = await s.ingest(
            [w.event("track", body, key="ok"), w.event("track", body, key="bad")]
        )
        assert [r.duplicate for r in fresh] == [False, False]
        assert len(await s.list_events(w.env, EventFilter())) == 3

    backend.run(scenario)


# -- item 3: a failure lets the key go --------------------------------------------------


def test_failing_in_processing_releases_the_key(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s)
        await s.upsert_company(w.env, EntityUpsert(keys={"id": "beta", "domain": "beta.com"}))
        # keys of two companies: fails in processing
        bad = {"event": "api-call", "company": {"id": "acme", "domain": "beta.com"}}
        (failed,) = await run(s, w.event("track", bad, key="order-1"))
        assert failed.status == "failed" and "2 different company" in (failed.error_message or "")
        good = {"event": "api-call", "company": {"id": "acme"}}
        (resent,) = await s.ingest([w.event("track", good, key="order-1", at=T0 + 1)])
        assert not resent.duplicate and resent.event_id != failed.id
        await drain(s)
        stored = await s.get_event(w.env, resent.event_id)
        assert stored is not None and stored.status == "processed"
        # the resend now holds the key
        (again,) = await s.ingest([w.event("track", good, key="order-1", at=T0 + 2)])
        assert again == IngestResult(resent.event_id, T0 + 1, True)

    backend.run(scenario)


def test_an_event_set_aside_as_failed_releases_its_key(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s)
        body = {"event": "api-call", "company": {"id": "acme"}}
        (first,) = await s.ingest([w.event("track", body, key="k")])
        assert await s.fail_next_pending("the worker crashed on it") == first.event_id
        (resent,) = await s.ingest([w.event("track", body, key="k", at=T0 + 1)])
        assert not resent.duplicate

    backend.run(scenario)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_migration_keeps_the_first_value_of_a_key_name(
    kind: str, tmp_path: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database of schema 3 where an old race left two values of one key
    name: migration 6 keeps the value added first, then the unique index holds."""
    if kind == "sqlite":
        from tally.storage.sqlite import schema

        conn: Any = schema.connect(str(tmp_path / "m.db"))
    else:
        from tally.storage.postgres import schema
        from tally.storage.postgres.adapter import PgConnection

        conn = PgConnection.connect(request.getfixturevalue("postgres_url"))
    try:
        full = list(schema.MIGRATIONS)
        monkeypatch.setattr(schema, "MIGRATIONS", full[:3])
        assert schema.migrate(conn) == 3
        conn.execute(
            "INSERT INTO companies (id, environment_id, name, traits, created_at, updated_at) "
            "VALUES ('comp_1', 'env_1', 'Acme', '{}', 1, 1)"
        )
        for value, created in (("cus_late", 3), ("cus_first", 2), ("cus_tie_b", 2)):
            conn.execute(
                "INSERT INTO company_keys (environment_id, key, value, entity_id, created_at) "
                "VALUES ('env_1', 'stripe_customer_id', ?, 'comp_1', ?)",
                (value, created),
            )
        monkeypatch.setattr(schema, "MIGRATIONS", full)
        assert schema.migrate(conn) == len(full)
        rows = conn.execute("SELECT key, value FROM company_keys").fetchall()
        assert [tuple(r) for r in rows] == [("stripe_customer_id", "cus_first")]
        with pytest.raises(Exception, match=r"(?i)unique"):
            conn.execute(
                "INSERT INTO company_keys (environment_id, key, value, entity_id, created_at) "
                "VALUES ('env_1', 'stripe_customer_id', 'cus_again', 'comp_1', 4)"
            )
    finally:
        conn.close()


def test_two_workers_adding_one_key_name_cannot_both_win(postgres_url: str) -> None:
    """PostgreSQL workers process at once. Worker A adds acme's billing key
    (not committed yet); worker B's event adds another value of it: B waits
    on the unique index, then reads again and fails as a conflict."""
    import threading

    from tally.storage.postgres.adapter import PgConnection
    from tally.storage.postgres.storage import PgUnitOfWork, PostgresStorage

    async def setup() -> tuple[str, str]:
        s = PostgresStorage(postgres_url, processing=PIPELINE)
        await s.start()
        try:
            secret, _, _ = await create_key(s, "development")
            env = secret.environment_id
            acme = await s.upsert_company(env, EntityUpsert(keys={"id": "acme"}))
            events = [
                new_event(
                    env,
                    "identify",
                    {
                        "keys": {"id": user},
                        "company": {"keys": {"id": "acme", STRIPE_CUSTOMER_KEY: cus}},
                    },
                    api_key_id=secret.id,
                )
                for user, cus in (("u1", "cus_a"), ("u2", "cus_b"))
            ]
            for ev in events:
                await s.ingest([ev])
            return env, acme.id
        finally:
            await s.close()

    import asyncio

    _env, acme = asyncio.run(setup())
    a, b = PgConnection.connect(postgres_url), PgConnection.connect(postgres_url)
    try:
        a.execute("BEGIN")
        assert PIPELINE.process_pending(PgUnitOfWork(a), 1, T0) == 1  # u1, cus_a: not committed
        done: list[int] = []

        def worker_b() -> None:
            b.execute("BEGIN")
            done.append(PIPELINE.process_pending(PgUnitOfWork(b), 1, T0))
            b.execute("COMMIT")

        thread = threading.Thread(target=worker_b)
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive(), "worker B should wait for A's key"
        a.execute("COMMIT")
        thread.join(timeout=30)
        assert done == [1]
        rows = a.execute(
            "SELECT body, status, error_message FROM events WHERE type = 'identify' ORDER BY id"
        ).fetchall()
        assert [(r[1], "'stripe_customer_id'" in (r[2] or "")) for r in rows] == [
            ("processed", False),
            ("failed", True),
        ]
        keys = a.execute(
            "SELECT key, value FROM company_keys WHERE entity_id = ? ORDER BY key", (acme,)
        ).fetchall()
        assert [tuple(k) for k in keys] == [("id", "acme"), (STRIPE_CUSTOMER_KEY, "cus_a")]
    finally:
        a.close()
        b.close()
