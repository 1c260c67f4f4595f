"""``tally.client.source``: file identity, gzip, bounded lines, CSV records,
and resuming at a recorded line and offset."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tally.client import source as src
from tally.client.source import CsvRecords, Source, file_identity, read_header


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def test_identity_is_the_content_not_the_name(tmp_path: Path) -> None:
    a = write(tmp_path, "a.ndjson", b'{"x":1}\n')
    b = write(tmp_path, "b.ndjson", b'{"x":1}\n')
    c = write(tmp_path, "c.ndjson", b'{"x":2}\n')
    assert file_identity(a) == file_identity(b) != file_identity(c)


@pytest.mark.parametrize("name", ["f.ndjson", "f.ndjson.gz"])
def test_lines_ends_and_resume(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, b"one\r\ntwo\n\nfour")
    with Source(path) as source:
        lines = list(source.lines())
    assert [(x.number, x.data) for x in lines] == [(1, b"one"), (2, b"two"), (3, b""), (4, b"four")]
    assert [x.end for x in lines] == [5, 9, 10, 14]
    with Source(path) as source:
        source.skip_to(2, 9)
        assert [(x.number, x.data) for x in source.lines()] == [(3, b""), (4, b"four")]


def test_an_over_long_line_is_cut_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(src, "MAX_LINE_BYTES", 16)
    monkeypatch.setattr(src, "SHOWN_BYTES", 4)
    path = write(tmp_path, "f.ndjson", b"short\n" + b"x" * 50 + b"\nafter\n")
    with Source(path) as source:
        lines = list(source.lines())
    assert [(x.number, x.data, x.too_long) for x in lines] == [
        (1, b"short", False),
        (2, b"xxxx", True),
        (3, b"after", False),
    ]
    assert lines[1].end == 57


def test_csv_records_span_lines_and_broken_ones_are_reported(tmp_path: Path) -> None:
    data = b'h1,h2\na,1\n"multi\nline",2\n\xff,3\nb,"open\n'
    path = write(tmp_path, "f.csv", data)
    with Source(path) as source:
        records = list(CsvRecords(source).records())
    got = [(r.number, r.cells, r.raw) for r in records]
    assert got[:3] == [
        (1, ["h1", "h2"], b"h1,h2"),
        (2, ["a", "1"], b"a,1"),
        (3, ["multi\nline", "2"], b'"multi\nline",2'),
    ]
    assert (records[3].number, records[3].cells, records[3].error) == (
        5,
        None,
        "the row is not valid UTF-8",
    )
    assert records[4].number == 6 and records[4].cells is None
    assert "not valid CSV" in records[4].error
    assert records[2].end == len(b'h1,h2\na,1\n"multi\nline",2\n')


def test_csv_header_and_resume_after_it(tmp_path: Path) -> None:
    path = write(tmp_path, "f.csv.gz", b"a,b\n1,2\n3,4\n")
    header, lines, end = read_header(path)
    assert (header, lines, end) == (["a", "b"], 1, 4)
    with Source(path) as source:
        source.skip_to(2, 8)
        assert [r.cells for r in CsvRecords(source).records()] == [["3", "4"]]


def test_an_empty_csv_has_no_header(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a header row"):
        read_header(write(tmp_path, "f.csv", b"\n\n"))


@pytest.mark.parametrize("name", ["f.csv", "f.csv.gz"])
def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, b"\xef\xbb\xbfts,name\n1,2\n")
    header, _, end = read_header(path)
    assert (header, end) == (["ts", "name"], 11)
