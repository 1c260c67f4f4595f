"""One suite for the ``tally.storage.base.Storage`` interface, run against every
backend of ``conftest.BACKENDS``. It speaks only the interface: no SQL, no
backend internals."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

from msgspec.structs import replace

from tally.model import Environment, EventFilter, IngestResult
from tally.storage.base import Storage

from .conftest import Backend
from .records import HOUR, MINUTE, SECOND, T0, advance_to, all_events, env_id, event

# -- environments ----------------------------------------------------------------------


def test_ensure_environment_is_idempotent(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        first, created = await s.ensure_environment("development", "development")
        assert created is True
        assert first.id.startswith("env_")
        assert (first.name, first.kind, first.created_at) == ("development", "development", T0)

        backend.clock.advance(timedelta(hours=1))
        again, created_again = await s.ensure_environment("development", "development")
        assert created_again is False
        assert again == first

        prod, created_prod = await s.ensure_environment("production", "production")
        assert created_prod is True
        assert prod.id != first.id
        assert prod.kind == "production"

        listed = await s.list_environments()
        assert sorted(e.name for e in listed) == ["development", "production"]
        assert all(isinstance(e, Environment) for e in listed)

    backend.run(scenario)


def test_racing_ensure_environment_creates_one(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        results = await asyncio.gather(
            *(s.ensure_environment("staging", "staging") for _ in range(20))
        )
        assert len({env.id for env, _ in results}) == 1
        assert sum(created for _, created in results) == 1
        assert [e.name for e in await s.list_environments()] == ["staging"]

    backend.run(scenario)


# -- api keys ----------------------------------------------------------------------------


def test_api_keys_create_find_and_list(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        dev = await env_id(s, "development")
        prod = await env_id(s, "production")
        secret = await s.create_api_key(dev, "secret", False, "hash-secret", "sch_dev_aaaaaa")
        assert secret.id
        assert secret.environment_id == dev
        assert secret.environment_name == "development"
        assert secret.kind == "secret"
        assert secret.read_only is False
        assert secret.prefix == "sch_dev_aaaaaa"
        assert secret.created_at == T0
        assert secret.revoked_at is None

        publishable = await s.create_api_key(
            dev, "publishable", False, "hash-pub", "api_bbbbbbbbbb"
        )
        read_only = await s.create_api_key(prod, "secret", True, "hash-ro", "sch_prod_cccccc")
        assert publishable.kind == "publishable"
        assert read_only.read_only is True
        assert read_only.environment_name == "production"

        assert await s.find_api_key("hash-secret") == secret
        assert await s.find_api_key("hash-pub") == publishable
        assert await s.find_api_key("hash-ro") == read_only
        assert await s.find_api_key("no-such-hash") is None

        everything = await s.list_api_keys()
        assert {k.id for k in everything} == {secret.id, publishable.id, read_only.id}
        dev_keys = await s.list_api_keys("development")
        assert {k.id for k in dev_keys} == {secret.id, publishable.id}
        assert [k.id for k in await s.list_api_keys("production")] == [read_only.id]
        assert await s.list_api_keys("staging") == []

    backend.run(scenario)


def test_revoked_key_is_not_found(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        dev = await env_id(s)
        by_id = await s.create_api_key(dev, "secret", False, "hash-1", "sch_dev_111111")
        by_prefix = await s.create_api_key(dev, "secret", False, "hash-2", "sch_dev_222222")
        keep = await s.create_api_key(dev, "secret", False, "hash-3", "sch_dev_333333")

        backend.clock.advance(timedelta(minutes=3))
        revoked = await s.revoke_api_key(by_id.id)
        assert revoked is not None
        assert revoked.id == by_id.id
        assert revoked.revoked_at == T0 + 3 * MINUTE
        assert await s.find_api_key("hash-1") is None

        revoked2 = await s.revoke_api_key("sch_dev_222222")
        assert revoked2 is not None
        assert revoked2.id == by_prefix.id
        assert await s.find_api_key("hash-2") is None

        # Revoking twice, or an unknown key, revokes nothing.
        assert await s.revoke_api_key(by_id.id) is None
        assert await s.revoke_api_key("sch_dev_nope") is None
        assert await s.find_api_key("hash-3") == keep

        listed = {k.id: k for k in await s.list_api_keys("development")}
        assert listed[by_id.id].revoked_at == T0 + 3 * MINUTE
        assert listed[keep.id].revoked_at is None

    backend.run(scenario)


def test_ambiguous_prefix_revokes_nothing(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        dev = await env_id(s)
        await s.create_api_key(dev, "secret", False, "hash-a", "sch_dev_same")
        await s.create_api_key(dev, "secret", False, "hash-b", "sch_dev_same")
        assert await s.revoke_api_key("sch_dev_same") is None
        assert await s.find_api_key("hash-a") is not None
        assert await s.find_api_key("hash-b") is not None

    backend.run(scenario)


# -- ingest --------------------------------------------------------------------------------


def test_ingest_returns_one_result_per_input_in_order(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        inputs = [
            event(env, "identify", body='{"keys":{"id":"u1"}}'),
            event(env, captured=T0 - HOUR, sent_at=T0 - HOUR, trusted=True, quantity=5, key="k1"),
            event(env, "flag_check", flag_id="flag_1", company_id="comp_1", user_id="user_1"),
            event(env, status="failed", error="quantity must be a non-zero integer", body="{}"),
            event(env, "inference", body='{"provider":"openai"}'),
        ]
        results = await s.ingest(inputs)
        assert len(results) == len(inputs)
        assert all(isinstance(r, IngestResult) for r in results)
        assert [r.duplicate for r in results] == [False] * 5
        assert [r.captured_at for r in results] == [e.captured_at for e in inputs]
        assert len({r.event_id for r in results}) == 5
        assert all(r.event_id.startswith("evt_") for r in results)

        for result, sent in zip(results, inputs, strict=True):
            stored = await s.get_event(env, result.event_id)
            assert stored is not None
            assert stored.id == result.event_id
            assert stored.environment_id == env
            assert stored.type == sent.type
            assert stored.status == sent.status
            assert stored.body == sent.body
            assert stored.quantity == sent.quantity
            assert stored.captured_at == sent.captured_at
            assert stored.loaded_at == T0
            assert stored.updated_at == T0
            assert stored.subtype == sent.subtype
            assert stored.idempotency_key == sent.idempotency_key
            assert stored.sent_at == sent.sent_at
            assert stored.trusted_client_clock == sent.trusted_client_clock
            assert stored.backfill == sent.backfill
            assert stored.error_message == sent.error_message
            assert stored.enriched_at is None
            assert stored.company_id == sent.company_id
            assert stored.user_id == sent.user_id
            assert stored.flag_id == sent.flag_id
            assert stored.feature_ids == ()

    backend.run(scenario)


def test_ingest_of_nothing_returns_nothing(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        assert await s.ingest([]) == []
        assert await all_events(s, env) == []

    backend.run(scenario)


def test_int64_quantities_round_trip(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        results = await s.ingest([event(env, quantity=2**63 - 1), event(env, quantity=-(2**63))])
        top = await s.get_event(env, results[0].event_id)
        bottom = await s.get_event(env, results[1].event_id)
        assert top is not None and top.quantity == 2**63 - 1
        assert bottom is not None and bottom.quantity == -(2**63)

    backend.run(scenario)


# -- idempotency -------------------------------------------------------------------------------


def test_duplicate_within_one_ingest_call(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        results = await s.ingest(
            [
                event(env, key="k", captured=T0 - 2 * HOUR, body='{"event":"first"}'),
                event(env, key="other"),
                event(env, key="k", captured=T0 - HOUR, body='{"event":"second"}'),
            ]
        )
        first, other, dup = results
        assert (first.duplicate, other.duplicate) == (False, False)
        assert dup == IngestResult(first.event_id, T0 - 2 * HOUR, True)
        stored = await all_events(s, env)
        assert len(stored) == 2
        kept = await s.get_event(env, first.event_id)
        assert kept is not None
        assert kept.body == '{"event":"first"}'

    backend.run(scenario)


def test_duplicate_across_calls_within_24_hours(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        # The kept event took the client's clock: duplicates report its captured_at.
        kept_at = T0 - HOUR
        (first,) = await s.ingest(
            [
                event(
                    env,
                    key="k",
                    captured=kept_at,
                    sent_at=kept_at,
                    trusted=True,
                    body='{"event":"first"}',
                )
            ]
        )
        assert first == IngestResult(first.event_id, kept_at, False)

        for later in (SECOND, HOUR, 23 * HOUR + 59 * MINUTE):
            advance_to(backend, T0 + later)
            (dup,) = await s.ingest(
                [event(env, key="k", received=T0 + later, body='{"event":"again"}', quantity=9)]
            )
            assert dup == IngestResult(first.event_id, kept_at, True)

        stored = await all_events(s, env)
        assert [e.id for e in stored] == [first.event_id]
        assert stored[0].body == '{"event":"first"}'
        assert stored[0].quantity == 1
        assert stored[0].updated_at == T0

    backend.run(scenario)


def test_key_is_free_again_after_24_hours(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        (first,) = await s.ingest([event(env, key="k")])

        later = T0 + 24 * HOUR + MINUTE
        advance_to(backend, later)
        (second,) = await s.ingest([event(env, key="k", received=later)])
        assert second.duplicate is False
        assert second.event_id != first.event_id
        assert second.captured_at == later

        # The key now names the new event for the next 24 hours.
        advance_to(backend, later + MINUTE)
        (third,) = await s.ingest([event(env, key="k", received=later + MINUTE)])
        assert third == IngestResult(second.event_id, later, True)

        stored = await all_events(s, env)
        assert [e.id for e in stored] == [second.event_id, first.event_id]

    backend.run(scenario)


def test_the_window_ends_exactly_24_hours_after_the_first_receipt(backend: Backend) -> None:
    """The edge to the microsecond, on every backend: a key still holds
    24 h - 1 µs after the kept event arrived, and is free at 24 h."""

    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        (first,) = await s.ingest([event(env, key="edge")])
        last_held = T0 + 24 * HOUR - 1
        advance_to(backend, last_held)
        (dup,) = await s.ingest([event(env, key="edge", received=last_held)])
        assert dup == IngestResult(first.event_id, T0, True)

        free_at = T0 + 24 * HOUR
        advance_to(backend, free_at)
        (renewed,) = await s.ingest([event(env, key="edge", received=free_at)])
        assert renewed.duplicate is False and renewed.event_id != first.event_id
        # the new event holds the key from its own receipt
        (again,) = await s.ingest([event(env, key="edge", received=free_at)])
        assert again == IngestResult(renewed.event_id, free_at, True)
        assert [e.id for e in await all_events(s, env)] == [renewed.event_id, first.event_id]

    backend.run(scenario)


def test_key_is_scoped_per_environment(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        dev = await env_id(s, "development")
        prod = await env_id(s, "production")
        in_dev, in_prod = await s.ingest([event(dev, key="shared"), event(prod, key="shared")])
        assert in_dev.duplicate is False
        assert in_prod.duplicate is False
        assert in_dev.event_id != in_prod.event_id
        (again,) = await s.ingest([event(prod, key="shared")])
        assert again.event_id == in_prod.event_id
        assert again.duplicate is True
        assert len(await all_events(s, dev)) == 1
        assert len(await all_events(s, prod)) == 1

    backend.run(scenario)


def test_key_is_scoped_per_event_type(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        results = await s.ingest(
            [
                event(env, "track", key="same"),
                event(env, "identify", key="same"),
                event(env, "flag_check", key="same"),
                event(env, "inference", key="same"),
            ]
        )
        assert [r.duplicate for r in results] == [False] * 4
        assert len({r.event_id for r in results}) == 4
        (dup,) = await s.ingest([event(env, "identify", key="same")])
        assert dup == IngestResult(results[1].event_id, T0, True)

    backend.run(scenario)


def test_failed_events_never_consume_a_key(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        failed_first, failed_again = await s.ingest(
            [
                event(env, key="k", status="failed", error="bad", body="{}"),
                event(env, key="k", status="failed", error="bad", body="{}"),
            ]
        )
        assert failed_first.duplicate is False
        assert failed_again.duplicate is False
        assert failed_again.event_id != failed_first.event_id

        (good,) = await s.ingest([event(env, key="k")])
        assert good.duplicate is False
        assert good.event_id not in {failed_first.event_id, failed_again.event_id}

        (dup,) = await s.ingest([event(env, key="k")])
        assert dup == IngestResult(good.event_id, T0, True)

        stored = await s.list_events(env, EventFilter(idempotency_key="k"))
        assert sorted(e.status for e in stored) == ["failed", "failed", "pending"]

    backend.run(scenario)


def test_racing_coroutines_store_exactly_one_event(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        results = await asyncio.gather(*(s.ingest([event(env, key="race")]) for _ in range(50)))
        flat = [r for (r,) in results]
        kept = {r.event_id for r in flat}
        assert len(kept) == 1
        assert sum(not r.duplicate for r in flat) == 1
        stored = await all_events(s, env)
        assert [e.id for e in stored] == list(kept)

    backend.run(scenario)


def test_racing_threads_store_exactly_one_event(backend: Backend) -> None:
    workers = 8
    per_worker = 10

    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        start = threading.Barrier(workers)
        results: list[IngestResult] = []
        lock = threading.Lock()

        def worker() -> None:
            start.wait()

            async def submit() -> list[list[IngestResult]]:
                return await asyncio.gather(
                    *(s.ingest([event(env, key="race")]) for _ in range(per_worker))
                )

            done = asyncio.run(submit())
            with lock:
                results.extend(r for (r,) in done)

        def run_all() -> None:
            threads = [threading.Thread(target=worker) for _ in range(workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        await asyncio.to_thread(run_all)
        assert len(results) == workers * per_worker
        assert len({r.event_id for r in results}) == 1
        assert sum(not r.duplicate for r in results) == 1
        stored = await all_events(s, env)
        assert len(stored) == 1
        assert stored[0].id == results[0].event_id

    backend.run(scenario)


# -- reading events ---------------------------------------------------------------------------


def test_get_event_is_scoped_by_environment(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        dev = await env_id(s, "development")
        prod = await env_id(s, "production")
        (res,) = await s.ingest([event(dev)])
        assert (await s.get_event(dev, res.event_id)) is not None
        assert await s.get_event(prod, res.event_id) is None
        assert await s.get_event(dev, "evt_doesnotexist") is None

    backend.run(scenario)


def test_list_events_newest_first(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        order: list[str] = []
        for i in range(3):
            advance_to(backend, T0 + i * SECOND)
            (r,) = await s.ingest([event(env, received=T0 + i * SECOND, body=f'{{"n":{i}}}')])
            order.append(r.event_id)
        advance_to(backend, T0 + 10 * SECOND)
        batch = await s.ingest(
            [event(env, received=T0 + 10 * SECOND, body=f'{{"n":{i}}}') for i in (3, 4)]
        )
        order.extend(r.event_id for r in batch)
        listed = await all_events(s, env)
        assert [e.id for e in listed] == list(reversed(order))
        assert [e.body for e in listed] == [f'{{"n":{i}}}' for i in (4, 3, 2, 1, 0)]

    backend.run(scenario)


def test_list_events_default_limit_is_100(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        await s.ingest([event(env) for _ in range(120)])
        assert len(await s.list_events(env, EventFilter())) == 100
        assert len(await s.list_events(env, EventFilter(limit=250))) == 120

    backend.run(scenario)


def test_list_events_filters(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s, "development")
        other = await env_id(s, "production")
        inputs = [
            event(env, subtype="alpha", key="k1"),  # 0
            event(env, subtype="beta"),  # 1
            event(env, "identify"),  # 2
            event(env, "flag_check", flag_id="flag_1", company_id="comp_1", user_id="user_1"),  # 3
            event(env, "flag_check", flag_id="flag_2", company_id="comp_2", user_id="user_1"),  # 4
            event(env, "inference"),  # 5
            event(env, subtype="alpha", status="failed", error="bad"),  # 6
            event(other, subtype="alpha", key="k1"),  # 7
            event(
                other, "flag_check", flag_id="flag_1", company_id="comp_1", user_id="user_1"
            ),  # 8
        ]
        ids = [r.event_id for r in await s.ingest(inputs)]

        async def listed(**where: object) -> list[str]:
            return [e.id for e in await s.list_events(env, EventFilter(**where))]  # type: ignore[arg-type]

        def pick(*indexes: int) -> list[str]:
            return [ids[i] for i in indexes]

        assert await listed() == pick(6, 5, 4, 3, 2, 1, 0)
        assert await listed(event_types=("identify", "inference")) == pick(5, 2)
        assert await listed(event_types=("flag_check",)) == pick(4, 3)
        assert await listed(event_types=("track", "flag_check")) == pick(6, 4, 3, 1, 0)
        assert await listed(event_subtype="alpha") == pick(6, 0)
        assert await listed(event_subtype="gamma") == []
        assert await listed(idempotency_key="k1") == pick(0)
        assert await listed(flag_id="flag_1") == pick(3)
        assert await listed(company_id="comp_2") == pick(4)
        assert await listed(user_id="user_1") == pick(4, 3)
        assert await listed(user_id="user_1", company_id="comp_1") == pick(3)
        assert await listed(event_types=("track",), event_subtype="alpha") == pick(6, 0)
        assert await listed(limit=2) == pick(6, 5)
        assert await listed(limit=3, offset=2) == pick(4, 3, 2)
        assert await listed(limit=10, offset=6) == pick(0)
        assert await listed(offset=7) == []
        assert [e.id for e in await s.list_events(other, EventFilter())] == pick(8, 7)
        assert [e.id for e in await s.list_events(other, EventFilter(flag_id="flag_1"))] == pick(8)

    backend.run(scenario)


# -- event summaries -----------------------------------------------------------------------------


def test_event_summaries(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s, "development")
        other = await env_id(s, "production")
        await s.ingest(
            [
                event(env, subtype="query_run", company_id="c1", user_id="u1", captured=T0),
                event(env, subtype="query_run", company_id="c2", user_id="u1", captured=T0 + 10),
                event(env, subtype="query_run", company_id="c1", captured=T0 + 5),
                event(env, subtype="query_run", status="failed", error="x", captured=T0 + 99),
                event(env, subtype="api-call", captured=T0 - HOUR),
                event(env, subtype="api_call", company_id="c3", user_id="u3", captured=T0 + 1),
                event(env, subtype="report%done", captured=T0 + 2),
                event(env, "identify"),
                event(other, subtype="query_run", company_id="c9", captured=T0 + 500),
            ]
        )

        rows = await s.event_summaries(env, None, [], 100, 0)
        by_subtype = {r.event_subtype: r for r in rows}
        assert set(by_subtype) == {"query_run", "api-call", "api_call", "report%done"}
        query_run = by_subtype["query_run"]
        assert (query_run.event_count, query_run.company_count, query_run.user_count) == (3, 2, 1)
        assert query_run.last_seen_at == T0 + 10
        api_dash = by_subtype["api-call"]
        assert (api_dash.event_count, api_dash.company_count, api_dash.user_count) == (1, 0, 0)
        assert api_dash.last_seen_at == T0 - HOUR
        api_under = by_subtype["api_call"]
        assert (api_under.event_count, api_under.company_count, api_under.user_count) == (1, 1, 1)

        async def names(q: str | None, subtypes: list[str]) -> set[str]:
            return {r.event_subtype for r in await s.event_summaries(env, q, subtypes, 100, 0)}

        assert await names("query", []) == {"query_run"}
        assert await names("_run", []) == {"query_run"}
        assert await names("api", []) == {"api-call", "api_call"}
        # q is a plain substring: LIKE wildcards in it match themselves only.
        assert await names("api_call", []) == {"api_call"}
        assert await names("%", []) == {"report%done"}
        assert await names("nothing", []) == set()
        assert await names(None, ["api-call", "query_run", "missing"]) == {"api-call", "query_run"}
        assert await names("api", ["api-call", "query_run"]) == {"api-call"}
        assert await names("", []) == set(by_subtype)

        first_page = await s.event_summaries(env, None, [], 2, 0)
        second_page = await s.event_summaries(env, None, [], 2, 2)
        assert len(first_page) == 2
        assert first_page + second_page == rows
        assert await s.event_summaries(env, None, [], 10, 4) == []

        other_rows = await s.event_summaries(other, None, [], 100, 0)
        assert [(r.event_subtype, r.event_count, r.last_seen_at) for r in other_rows] == [
            ("query_run", 1, T0 + 500)
        ]

    backend.run(scenario)


# -- pruning idempotency keys ------------------------------------------------------------------


def test_prune_removes_only_keys_older_than_the_cutoff(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        firsts = {}
        for name, at in (("k1", T0), ("k2", T0 + HOUR), ("k3", T0 + 2 * HOUR)):
            advance_to(backend, at)
            (r,) = await s.ingest([event(env, key=name, received=at)])
            firsts[name] = r.event_id

        assert await s.prune_idempotency_keys(T0) == 0
        assert await s.prune_idempotency_keys(T0 + HOUR) == 1  # k1 only; k2 is not older

        later = T0 + 3 * HOUR
        advance_to(backend, later)
        again = await s.ingest([event(env, key=k, received=later) for k in ("k1", "k2", "k3")])
        # k1 was forgotten, so it is stored anew; k2 and k3 are still held.
        assert again[0].duplicate is False
        assert again[0].event_id != firsts["k1"]
        assert again[1] == IngestResult(firsts["k2"], T0 + HOUR, True)
        assert again[2] == IngestResult(firsts["k3"], T0 + 2 * HOUR, True)

        # Pruning forgets keys, never events.
        assert len(await all_events(s, env)) == 4
        assert await s.prune_idempotency_keys(later + 1) == 3
        assert await s.prune_idempotency_keys(later + 1) == 0
        assert len(await all_events(s, env)) == 4

    backend.run(scenario)


# -- durability ----------------------------------------------------------------------------------


def test_data_survives_close_and_reopen(backend: Backend) -> None:
    async def write(s: Storage) -> tuple[str, str, str]:
        env = await env_id(s)
        key = await s.create_api_key(env, "secret", False, "hash-durable", "sch_dev_durabl")
        (res,) = await s.ingest([event(env, key="durable", body='{"event":"kept"}', quantity=7)])
        return env, key.id, res.event_id

    env, key_id, event_id = backend.run(write)
    backend.clock.advance(timedelta(minutes=5))

    async def read(s: Storage) -> None:
        again, created = await s.ensure_environment("development", "development")
        assert created is False
        assert again.id == env
        found = await s.find_api_key("hash-durable")
        assert found is not None and found.id == key_id
        stored = await s.get_event(env, event_id)
        assert stored is not None
        assert stored.body == '{"event":"kept"}'
        assert stored.quantity == 7
        assert stored.status == "pending"
        assert stored.loaded_at == T0
        # The idempotency key survives too.
        (dup,) = await s.ingest([replace(event(env, key="durable"), received_at=T0 + 5 * MINUTE)])
        assert dup == IngestResult(event_id, T0, True)
        assert len(await all_events(s, env)) == 1

    backend.run(read)
