"""A source read as chunks: the unit an import sends and commits.

A chunk covers consecutive lines of the file: up to 1,000 events (one
``/event-batch`` request), at most ``MAX_REQUEST_BYTES`` of them, and the
lines refused on the way (with their reasons) or blank. It records the last
line it covers and where that line ends, which is what the checkpoint keeps
once the chunk is committed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

from tally.client import source as src
from tally.client.events import CsvRows, EventMaker
from tally.client.sender import MAX_EVENTS
from tally.errors import TallyError

MAX_REQUEST_BYTES = 3 * 1024 * 1024  # under the server's default 4 MiB per request
MAX_CHUNK_LINES = 10_000  # bounds the rejects and blank lines a chunk holds

# (line, the event's JSON or None, the raw line, why it was refused or "")
Item = tuple[int, bytes | None, bytes, str]


@dataclass
class Chunk:
    seq: int
    line: int  # the last line it covers
    end: int  # where that line ends
    lines: int  # lines it covers
    events: list[bytes] = field(default_factory=list)
    event_lines: list[int] = field(default_factory=list)
    event_raws: list[bytes] = field(default_factory=list)
    rejects: list[tuple[int, str, bytes]] = field(default_factory=list)
    size: int = 0


def _made(number: int, raw: bytes, make: Callable[[], bytes]) -> Item:
    try:
        return number, make(), raw, ""
    except TallyError as err:
        return number, None, raw, err.message


def _from_record(maker: EventMaker, rows: CsvRows, record: src.Record) -> bytes:
    return maker.from_json(record.number, rows.to_json(record.cells or []))


def read_items(source: src.Source, maker: EventMaker, rows: CsvRows | None) -> Iterator[Item]:
    """Each line (NDJSON; ``rows`` None) or record (CSV) from here on; a
    blank one is ``(line, None, b"", "")``."""
    if rows is None:
        for line in source.lines():
            if line.too_long:
                reason = f"the line is longer than {src.MAX_LINE_BYTES:,} bytes"
                yield line.number, None, line.data, reason
            elif not line.data.strip():
                yield line.number, None, b"", ""
            else:
                yield _made(
                    line.number, line.data, partial(maker.from_json, line.number, line.data)
                )
        return
    for record in src.CsvRecords(source).records():
        if record.cells is None:
            yield record.number, None, record.raw, record.error
        elif not record.cells:
            yield record.number, None, b"", ""
        else:
            yield _made(record.number, record.raw, partial(_from_record, maker, rows, record))


def read_chunks(source: src.Source, maker: EventMaker, rows: CsvRows | None) -> Iterator[Chunk]:
    """The chunks of ``source`` from where it stands, numbered from 0."""
    seq, first_line = 0, source.line
    chunk = Chunk(seq, source.line, source.offset, 0)
    for number, event, raw, reason in read_items(source, maker, rows):
        if event is not None:
            chunk.events.append(event)
            chunk.event_lines.append(number)
            chunk.event_raws.append(raw)
            chunk.size += len(event) + 1
        elif reason:
            chunk.rejects.append((number, reason, raw))
        if (
            len(chunk.events) >= MAX_EVENTS
            or chunk.size >= MAX_REQUEST_BYTES
            or source.line - first_line >= MAX_CHUNK_LINES
        ):
            chunk.line, chunk.end = source.line, source.offset
            chunk.lines = source.line - first_line
            yield chunk
            seq, first_line = seq + 1, source.line
            chunk = Chunk(seq, source.line, source.offset, 0)
    chunk.line, chunk.end = source.line, source.offset
    chunk.lines = source.line - first_line
    if chunk.lines:
        yield chunk
