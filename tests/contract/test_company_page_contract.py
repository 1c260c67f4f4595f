"""A page of companies is read in a fixed number of statements (issue 10,
"flat reads"), on every backend.

``GET /companies`` shows each company's keys, user count and counters of the
current periods. They are read for the whole page at once (one statement per
kind of detail), not once per company: 100 companies were 100 statements
more, 20 ms on PostgreSQL. The counters read for a page are those read for one
company alone: current periods only (day, week, month, all time and, with an
anchor, the billing period), in subtype and period order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tally.storage.base import Storage
from tally.storage.base_entities import Company, EntityFilter, EntityUpsert
from tally.storage.sql.entity_rows import current_starts

from .conftest import Backend
from .records import env_id

DAY_US = 86_400_000_000
ANCHOR = 1_767_916_800_000_000  # 2026-01-09: a billing period unlike the month
SUBTYPES = ("api-call", "query", "upload")


class Counting:
    """A connection that counts the statements run through it."""

    def __init__(self, conn: Any, counts: list[str]) -> None:
        self._conn = conn
        self._counts = counts

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._counts.append(sql)
        return self._conn.execute(sql, params)


def counting(s: Storage) -> list[str]:
    """Count the statements of every read of ``s`` from now on."""
    counts: list[str] = []
    read = s._read  # type: ignore[attr-defined]

    async def counted(fn: Callable[[Any], Any]) -> Any:
        return await read(lambda conn: fn(Counting(conn, counts)))

    s._read = counted  # type: ignore[attr-defined]
    return counts


async def seed(s: Storage, backend: Backend, env: str, n: int) -> list[str]:
    """``n`` companies (every third with a billing anchor) with counters of
    the current periods and of past ones."""
    ids = []
    for i in range(n):
        change = EntityUpsert(keys={"id": f"co-{i}", "crm": f"crm-{i}"}, name=f"Company {i}")
        ids.append((await s.upsert_company(env, change)).id)
        if i % 3 == 0:
            await s.set_billing_anchor(env, {"id": f"co-{i}"}, ANCHOR)
    rows = []
    for i, company_id in enumerate(ids):
        starts = current_starts(backend.clock.now(), ANCHOR if i % 3 == 0 else None)
        for j, subtype in enumerate(SUBTYPES[: 1 + i % 3]):
            rows.append((env, company_id, subtype, "all_time", 0, 100 + i, 50 + j))
            for kind in ("day", "week", "month", "billing"):
                if starts[kind] >= 0 and (i + j) % 4 != 1:  # not every period has a counter
                    rows.append((env, company_id, subtype, kind, starts[kind], i + j + 1, j + 1))
                    rows.append((env, company_id, subtype, kind, starts[kind] - 40 * DAY_US, 7, 7))

    def insert(conn: Any) -> None:
        conn.executemany("INSERT INTO usage_counters VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    await s._writer.call(insert)  # type: ignore[attr-defined]
    for u in range(n // 2):  # user counts from 0 to 19
        member_of = tuple({"id": f"co-{i}"} for i in range(n) if u % (1 + i % 4) == 0 and i < u)
        await s.upsert_user(env, EntityUpsert(keys={"id": f"u-{u}"}, companies=member_of))
    return ids


def expected_counters(backend: Backend, company: Company) -> list[tuple[str, str, int]]:
    """(subtype, kind, quantity) of the company's current counters, in order."""
    i = int({k.key: k.value for k in company.keys}["id"].removeprefix("co-"))
    starts = current_starts(backend.clock.now(), company.billing_anchor)
    out = []
    for j, subtype in enumerate(SUBTYPES[: 1 + i % 3]):
        out.append((subtype, "all_time", 100 + i))
        for kind in ("day", "week", "month", "billing"):
            if starts[kind] >= 0 and (i + j) % 4 != 1:
                out.append((subtype, kind, i + j + 1))
    return out


def test_a_page_of_companies_takes_the_same_statements_whatever_its_size(
    backend: Backend,
) -> None:
    async def scenario(s: Storage) -> None:
        env = await env_id(s)
        await seed(s, backend, env, 40)
        counts = counting(s)
        small = await s.list_companies(env, EntityFilter(limit=3))
        statements_small = len(counts)
        counts.clear()
        page = await s.list_companies(env, EntityFilter(limit=100))
        assert len(small) == 3 and len(page) == 40
        assert len(counts) == statements_small <= 3, counts
        counts.clear()
        named = await s.list_companies(env, EntityFilter(q="Company 1", limit=100))
        assert len(named) == 11 and len(counts) == statements_small

        for company in page:
            got = [(c.subtype, c.kind, c.quantity) for c in company.counters]
            assert got == expected_counters(backend, company), company.keys
            assert sorted(k.key for k in company.keys) == ["crm", "id"]
            alone = await s.get_company(env, company.id)
            assert alone == company
        assert len({c.user_count for c in page}) == 12  # 0 to 19 users (as get_company counts)
        anchored = [c for c in page if c.billing_anchor is not None]
        assert len(anchored) == 14
        assert any(c.kind == "billing" for a in anchored for c in a.counters)
        assert not any(c.kind == "billing" for a in page if a not in anchored for c in a.counters)

    backend.run(scenario)


def test_postgres_reads_are_not_jit_compiled(backend: Backend) -> None:
    """The planner's guess for a page's counters passes ``jit_above_cost``:
    compiled, the statement took 35 ms more than it ran. The readers turn
    JIT off (the writers' statements are short and well estimated)."""
    if backend.name != "postgres":
        return

    async def scenario(s: Storage) -> str:
        return str(await s._read(lambda conn: conn.execute("SHOW jit").fetchone()[0]))  # type: ignore[attr-defined]

    assert backend.run(scenario) == "off"
