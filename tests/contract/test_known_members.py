"""A processing batch sends only the event-type members its storage does
not know to be stored (``sql_summaries.KnownMembers``), on every backend:
the summaries still equal a recount, a member is known only once its batch
committed, and a batch that rolled back leaves nothing known."""

from __future__ import annotations

from typing import Any

import pytest

from tally.pipeline.processing import PIPELINE, Pipeline
from tally.storage.base import Storage
from tally.storage.base_batch import BatchTransaction
from tally.storage.sql import summaries as sql_summaries
from tests.support.drain import drain

from .conftest import Backend
from .records import track, world
from .test_summaries_contract import _tables, assert_tables_equal_a_recount


def _members(s: Storage) -> Any:
    async def read() -> set[tuple[Any, ...]]:
        _, members, _ = await s._writer.call(_tables)  # type: ignore[attr-defined]
        return set(members)

    return read()


def _known(s: Storage) -> sql_summaries.KnownMembers:
    return s._known_members  # type: ignore[attr-defined,no-any-return]


class FailsAfterTheBatch(Pipeline):
    """Processes a batch, then raises: the storage rolls the batch back."""

    def process_pending(self, tx: BatchTransaction, limit: int, now: int) -> int:
        super().process_pending(tx, limit, now)
        raise RuntimeError("the batch failed after recording its summaries")


def test_known_members_are_not_sent_again_and_counts_stay_exact(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s)
        await s.ingest([track(w, 1, subtype="api-call", company=f"co-{i % 3}") for i in range(9)])
        await drain(s, 4)
        stored = await _members(s)
        assert {m[3] for m in stored if m[2] == "company"} and len(_known(s)) == len(stored)
        await assert_tables_equal_a_recount(s)

        # members deleted behind the storage's back are not written again by
        # a batch of those members: the batch skipped them (a recount has them)
        gone = {m for m in stored if m[2] == "company"}
        await s._writer.call(  # type: ignore[attr-defined]
            lambda conn: conn.execute("DELETE FROM event_subtype_members WHERE kind = 'company'")
        )
        await s.ingest([track(w, 2, subtype="api-call", company=f"co-{i}") for i in range(3)])
        await s.ingest([track(w, 1, subtype="api-call", company="co-new")])
        await drain(s)
        now = await _members(s)
        assert not gone & now
        assert len([m for m in now if m[2] == "company"]) == 1  # co-new's
        assert len(_known(s)) == len(now) + len(gone)

    backend.run(scenario)


def test_a_batch_that_rolled_back_leaves_no_member_known(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        w = await world(s)
        await s.ingest([track(w, 1, subtype="export", company=f"co-{i}") for i in range(4)])
        s._processing = FailsAfterTheBatch()  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError, match="after recording"):
            await s.process_pending(100)
        assert len(_known(s)) == 0 and await _members(s) == set()
        s._processing = PIPELINE  # type: ignore[attr-defined]
        await drain(s)
        stored = await _members(s)
        assert len({m[3] for m in stored if m[2] == "company"}) == 4
        assert len(_known(s)) == len(stored)
        await assert_tables_equal_a_recount(s)

    backend.run(scenario)


def test_known_members_are_bounded() -> None:
    known = sql_summaries.KnownMembers(limit=3)
    a = {("e", "s", "user", f"u{i}") for i in range(3)}
    known.remember(a)
    assert known.unknown(a | {("e", "s", "user", "u9")}) == {("e", "s", "user", "u9")}
    known.remember({("e", "s", "user", "u9")})  # past the limit: starts again
    assert len(known) == 1 and known.unknown(a) == a
