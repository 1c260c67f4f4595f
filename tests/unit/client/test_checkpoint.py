"""``tally.client.checkpoint``: per-file state, saved atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tally.client.checkpoint import Checkpoint, Counts, FileState, default_path, write_atomically
from tally.errors import Invalid


def state(file_id: str = "a" * 64, line: int = 0, done: bool = False) -> FileState:
    return FileState(
        file_id,
        "/data/usage.ndjson",
        100,
        5,
        {"format": "ndjson"},
        "http://t",
        line=line,
        done=done,
    )


def test_a_missing_checkpoint_is_empty(tmp_path: Path) -> None:
    checkpoint = Checkpoint.load(tmp_path / "none.json")
    assert checkpoint.by_id("a" * 64) is None


def test_saved_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    checkpoint = Checkpoint(path)
    first = state(line=1200)
    first.offset, first.rejects_bytes = 99_000, 310
    first.counts = Counts(lines=1200, accepted=1190, duplicates=3, rejected=7)
    checkpoint.put(first)
    checkpoint.put(state("b" * 64, done=True))
    checkpoint.save()
    again = Checkpoint.load(path)
    assert again.by_id("a" * 64) == first
    assert again.by_stat("/data/usage.ndjson", 100, 5) == first
    assert again.by_stat("/data/usage.ndjson", 101, 5) is None
    assert again.unfinished_at("/data/usage.ndjson") == first
    # put replaces the entry of the same file
    moved = state(line=1500)
    again.put(moved)
    assert again.by_id("a" * 64) == moved
    assert len(again.document.files) == 2


def test_a_damaged_checkpoint_is_refused_not_ignored(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"version": 1, "files": [{"file_id": 3}]}')
    with pytest.raises(Invalid, match="cannot be read"):
        Checkpoint.load(path)


def test_write_atomically_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    write_atomically(path, b"old")
    write_atomically(path, b"new" * 10_000)
    assert path.read_bytes() == b"new" * 10_000
    assert os.listdir(tmp_path) == ["c.json"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_default_path_is_beside_the_input() -> None:
    assert default_path(Path("/d/usage.csv.gz")) == Path("/d/usage.csv.gz.checkpoint.json")
