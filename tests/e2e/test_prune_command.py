"""``tally prune [--dry-run]``: one pass of the pruning loop from the command
line, on a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from tally.cli import main
from tally.clock import FrozenClock, SystemClock
from tally.pipeline.processing import PIPELINE
from tally.storage.sqlite.storage import SqliteStorage
from tests.support.drain import drain
from tests.support.usage import make_world, track_event


def stored(path: str, processed: int, pending: int) -> None:
    async def run() -> None:
        s = SqliteStorage(path, processing=PIPELINE)
        await s.start()
        try:
            w = await make_world(s, [])
            at = 1_700_000_000_000_000
            await s.ingest([track_event(w.env, 1, at) for _ in range(processed)])
            assert await drain(s) == processed
            await s.ingest([track_event(w.env, 1, at) for _ in range(pending)])
        finally:
            await s.close()

    asyncio.run(run())


def count(path: str) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def test_prune_counts_then_prunes_old_events_and_leaves_pending_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "p.db")
    stored(path, processed=7, pending=2)
    url = f"sqlite:///{path}"
    # three days on, with events kept for two
    later = SystemClock().now() + timedelta(days=3)
    monkeypatch.setattr("tally.cli.prune.SystemClock", lambda: FrozenClock(later))
    monkeypatch.setattr("tally.retention.loop.SystemClock", lambda: FrozenClock(later))
    monkeypatch.setenv("TALLY_EVENT_RETENTION_DAYS", "2")

    assert main(["prune", "--dry-run", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "events: 7 would be pruned" in out
    assert "deliveries: 0 would be pruned" in out
    assert count(path) == 9

    assert main(["prune", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "events: 7 pruned" in out and "longest transaction took" in out
    assert count(path) == 2  # the pending ones

    monkeypatch.delenv("TALLY_EVENT_RETENTION_DAYS")
    assert main(["prune", "--dry-run", "--database-url", url]) == 0
    assert "events: kept forever" in capsys.readouterr().out


def test_a_retention_setting_out_of_range_is_refused_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TALLY_LIMIT_TRIGGER_RETENTION_DAYS", "10")
    assert main(["prune", "--database-url", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tally: TALLY_LIMIT_TRIGGER_RETENTION_DAYS must be at least 35")
