"""Reading an import file: its identity, gzip, bounded lines, and where each
record ends (so an import can resume there).

Memory stays flat whatever the file's size: lines are read one at a time and
none is held longer than ``MAX_LINE_BYTES`` (a longer line is skipped to its
end and reported by its first bytes).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAX_LINE_BYTES = 1024 * 1024
SHOWN_BYTES = 1024  # what a rejects entry keeps of an over-long line
_CHUNK = 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


def file_identity(path: Path) -> str:
    """The SHA-256 of the file's bytes as stored (compressed, for gzip): the
    same content gives the same identity whatever its name or place."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Line:
    number: int  # 1-based
    end: int  # offset just after the line in the (decompressed) stream
    data: bytes  # without its line ending; the first SHOWN_BYTES when too long
    too_long: bool = False


class Source:
    """One input file, read from a given line and offset on.

    ``position`` is how far into the file as stored (compressed bytes for
    gzip) reading has come: the progress bar's measure."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self._raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.gzip = self._raw.read(2) == _GZIP_MAGIC
        self._raw.seek(0)
        self._stream: BinaryIO = (
            gzip.GzipFile(fileobj=self._raw, mode="rb") if self.gzip else self._raw  # type: ignore[assignment]
        )
        self.line = 0
        self.offset = 0

    @property
    def position(self) -> int:
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self._stream.close()
        self._raw.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def skip_to(self, line: int, offset: int) -> None:
        """Continue after line ``line``, which ends at ``offset``."""
        if offset < self.offset:
            raise ValueError("a source only moves forward")
        if self.gzip:
            while self.offset < offset:  # a gzip stream is read forward to a place
                block = self._stream.read(min(_CHUNK, offset - self.offset))
                if not block:
                    raise EOFError(f"{self.path} ends before offset {offset}")
                self.offset += len(block)
        else:
            self._stream.seek(offset)
            self.offset = offset
        self.line = line

    def lines(self) -> Iterator[Line]:
        """The lines from here on, line endings (``\\n``, ``\\r\\n``) removed."""
        read = self._stream.readline
        while True:
            data = read(MAX_LINE_BYTES)
            if not data:
                return
            self.line += 1
            self.offset += len(data)
            if self.line == 1 and data.startswith(_BOM):  # as spreadsheets write UTF-8
                data = data[len(_BOM) :]
            if data.endswith(b"\n") or len(data) < MAX_LINE_BYTES:
                yield Line(self.line, self.offset, data.rstrip(b"\r\n"))
                continue
            shown = data[:SHOWN_BYTES]
            while data and not data.endswith(b"\n"):  # skip the rest of the line
                data = read(MAX_LINE_BYTES)
                self.offset += len(data)
            yield Line(self.line, self.offset, shown, too_long=True)


class LineTooLong(Exception):
    def __init__(self, line: Line) -> None:
        super().__init__(f"line {line.number} is longer than {MAX_LINE_BYTES} bytes")
        self.line = line


@dataclass
class Record:
    """One CSV record: its first line, where it ends, its cells (None when
    it could not be read: ``error`` says why) and its text as read."""

    number: int
    end: int
    cells: list[str] | None
    raw: bytes
    error: str = ""


class CsvRecords:
    """The records of a CSV source; a record may span lines (quoted newlines).
    A broken record (bad UTF-8, an over-long line or field) is reported and
    reading goes on with the next line."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._lines = source.lines()
        self._current: list[bytes] = []
        self._reader = csv.reader(self, strict=True)

    def __iter__(self) -> CsvRecords:
        return self

    def __next__(self) -> str:
        """The next line as text, for the csv reader (an iterator object, not
        a generator: it may raise and still be read on)."""
        line = next(self._lines)
        if line.too_long:
            raise LineTooLong(line)
        self._current.append(line.data)
        return (line.data + b"\n").decode("utf-8")

    def records(self) -> Iterator[Record]:
        while True:
            first = self._source.line + 1
            self._current = []
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except LineTooLong as err:
                raw = b"\n".join([*self._current, err.line.data])
                yield Record(first, err.line.end, None, raw, str(err))
                continue
            except (csv.Error, UnicodeDecodeError) as err:
                raw = b"\n".join(self._current)
                yield Record(first, self._source.offset, None, raw, _csv_error(err))
                continue
            yield Record(first, self._source.offset, cells, b"\n".join(self._current))


def _csv_error(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return "the row is not valid UTF-8"
    return f"the row is not valid CSV: {err}"


def read_header(path: Path) -> tuple[list[str], int, int]:
    """The header row of a CSV file: (its cells, the lines it spans, where it ends)."""
    with Source(path) as source:
        for record in CsvRecords(source).records():
            if record.cells is None:
                raise ValueError(f"the header row of {path} cannot be read: {record.error}")
            if record.cells:
                return record.cells, source.line, record.end
    raise ValueError(f"{path} is empty: a CSV file needs a header row")


def text(data: bytes) -> str:
    """Bytes of a line as text for a rejects entry (invalid UTF-8 escaped)."""
    return data.decode("utf-8", "backslashreplace")
