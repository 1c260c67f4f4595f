"""``tally.client.chunks``: a file read as the chunks an import sends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tally.client import chunks as chunking
from tally.client.chunks import read_chunks
from tally.client.events import CsvRows, EventMaker, EventOptions, derived_key, parse_map
from tally.client.source import Source
from tests.support.clock import NOW

MAKER = EventMaker("c" * 64, EventOptions(), lambda: NOW)
GOOD = json.dumps({"event_type": "track", "body": {"event": "e"}}).encode()


def chunks_of(
    path: Path, rows: CsvRows | None = None, start: tuple[int, int] = (0, 0)
) -> list[chunking.Chunk]:
    with Source(path) as source:
        if start != (0, 0):
            source.skip_to(*start)
        return list(read_chunks(source, MAKER, rows))


def test_chunks_hold_at_most_a_batch_and_cover_every_line(tmp_path: Path) -> None:
    lines = [GOOD] * 2500
    lines[10] = b"oops"
    lines[20] = b""
    path = tmp_path / "f.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    chunks = chunks_of(path)
    assert [len(c.events) for c in chunks] == [1000, 1000, 498]
    assert [c.seq for c in chunks] == [0, 1, 2]
    assert [c.line for c in chunks] == [1002, 2002, 2500]
    assert sum(c.lines for c in chunks) == 2500
    assert chunks[-1].end == path.stat().st_size
    assert chunks[0].rejects == [
        (11, "event is not valid JSON: invalid character (byte 0)", b"oops")
    ]
    assert json.loads(chunks[1].events[0])["idempotency_key"] == derived_key("c" * 64, 1003)
    assert chunks[1].event_lines[0] == 1003


def test_a_chunk_stays_under_the_request_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunking, "MAX_REQUEST_BYTES", 1000)
    path = tmp_path / "f.ndjson"
    path.write_bytes((GOOD + b"\n") * 50)
    chunks = chunks_of(path)
    assert all(c.size <= 1000 + 200 for c in chunks) and len(chunks) > 5
    assert sum(len(c.events) for c in chunks) == 50


def test_a_run_of_bad_lines_is_cut_into_chunks_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunking, "MAX_CHUNK_LINES", 100)
    path = tmp_path / "f.ndjson"
    path.write_bytes(b"bad\n" * 250)
    chunks = chunks_of(path)
    assert [len(c.rejects) for c in chunks] == [100, 100, 50]


def test_resumed_chunks_start_after_the_recorded_line(tmp_path: Path) -> None:
    path = tmp_path / "f.ndjson"
    path.write_bytes((GOOD + b"\n") * 30)
    chunks = chunks_of(path, start=(20, 20 * (len(GOOD) + 1)))
    assert chunks[0].event_lines == list(range(21, 31))


def test_csv_rows_become_events(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("name,n\napi,2\n,3\n")
    rows = CsvRows(parse_map(["event=name", "quantity=n"]), ["name", "n"])
    (chunk,) = chunks_of(path, rows, start=(1, 7))
    assert [json.loads(e)["body"] for e in chunk.events] == [{"event": "api", "quantity": 2}]
    assert chunk.rejects == [(3, "the event name (column 'name') is empty", b",3")]
