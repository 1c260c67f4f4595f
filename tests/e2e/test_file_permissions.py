"""The SQLite database and its -wal/-shm files are readable by their owner
only (0600), whatever the umask: they hold webhook secrets and every event."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tally.clock import to_micros
from tally.pipeline.processing import PIPELINE
from tally.storage.sqlite.storage import SqliteStorage
from tests.support.drain import drain
from tests.support.server import tally_command
from tests.support.usage import make_world, track_event

SUFFIXES = ("", "-wal", "-shm")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away: files would be 0644 or wider."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def use(path: Path) -> None:
    """Open storage on ``path``, write and process an event, leave it open
    while the modes are read (the WAL and shared memory exist then)."""

    async def main() -> None:
        storage = SqliteStorage(str(path), processing=PIPELINE)
        await storage.start()
        try:
            world = await make_world(storage, ["http://127.0.0.1:9/hook"])
            await storage.ingest([track_event(world.env, 1, to_micros(datetime.now(UTC)))])
            await drain(storage)
            modes = {s: mode(Path(f"{path}{s}")) for s in SUFFIXES}
            assert modes == dict.fromkeys(SUFFIXES, 0o600), {s: oct(m) for s, m in modes.items()}
        finally:
            await storage.close()

    asyncio.run(main())


def test_a_new_database_and_its_wal_and_shm_are_owner_only(
    tmp_path: Path, open_umask: None
) -> None:
    use(tmp_path / "new.db")


def test_an_existing_readable_database_is_tightened(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "old.db"
    use(path)
    for suffix in SUFFIXES:
        candidate = Path(f"{path}{suffix}")
        if candidate.exists():
            candidate.chmod(0o644)
    use(path)


def test_the_cli_creates_an_owner_only_database(tmp_path: Path) -> None:
    path = tmp_path / "cli.db"
    done = subprocess.run(
        tally_command("keys", "create", "--environment", "production"),
        env={**os.environ, "TALLY_DATABASE_URL": f"sqlite:///{path}"},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0o002),  # group- and world-readable files by default
    )
    assert done.returncode == 0, done.stderr
    assert mode(path) == 0o600
