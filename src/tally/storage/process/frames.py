"""Frames between HTTP processes and the storage process (a Unix socket).

A frame is a header (payload length, kind, request id) and a payload:

- ``INGEST``: the events of one or more requests, msgpack
  ``list[list[NewEvent]]``; answered by ``INGESTED``, msgpack
  ``list[list[IngestResult]]`` in the same order. This is the hot path: an
  HTTP process sends one such frame at a time, holding back what arrives
  meanwhile for the next one, so that a frame carries every request that
  came in during the previous commit.
- ``CALL``: any other storage method, pickled ``(name, args, kwargs)``;
  answered by ``RESULT`` (the pickled value) or ``ERROR`` (the pickled
  exception).

Stored JSON (event bodies, traits, payloads) travels as text inside the
values, never parsed: pickle recurses once per level of nesting, and a value
stored before the 32-level limit (``tally.jsontext``) could nest deeper than
pickle can go. Arguments that carry client JSON (trait values) were bounded
to 32 levels by the API before they got here.

Both ends are on one machine and trust each other (the socket lives in a
directory only the server's user can open).
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from tally.model import IngestResult, NewEvent

HEADER = struct.Struct("<IBQ")  # payload length, kind, request id
INGEST, INGESTED, CALL, RESULT, ERROR = 1, 2, 3, 4, 5

_encoder = msgspec.msgpack.Encoder()
_events = msgspec.msgpack.Decoder(list[list[NewEvent]])
_results = msgspec.msgpack.Decoder(list[list[IngestResult]])


def frame(kind: int, request_id: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), kind, request_id) + payload


def encode_events(batches: Sequence[Sequence[NewEvent]]) -> bytes:
    return _encoder.encode(batches)


def decode_events(payload: bytes) -> list[list[NewEvent]]:
    return _events.decode(payload)


def encode_results(results: list[list[IngestResult]]) -> bytes:
    return _encoder.encode(results)


def decode_results(payload: bytes) -> list[list[IngestResult]]:
    return _results.decode(payload)


def encode_error(err: BaseException) -> bytes:
    """The exception, pickled; one that does not pickle becomes a
    ``RuntimeError`` that names it."""
    try:
        data = pickle.dumps(err)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(err).__name__}: {err}"))


def encode_value(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def decode_value(payload: bytes) -> Any:
    return pickle.loads(payload)


class FrameReader:
    """Splits a byte stream into (kind, request id, payload) frames."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, int, bytes]]:
        buf = self._buffer
        buf += data
        start = 0
        size = HEADER.size
        while len(buf) - start >= size:
            length, kind, request_id = HEADER.unpack_from(buf, start)
            end = start + size + length
            if len(buf) < end:
                break
            yield kind, request_id, bytes(buf[start + size : end])
            start = end
        if start:
            del buf[:start]
