"""Response shapes every resource uses: counts, deletions, the error body,
and times as RFC 3339 text."""

from __future__ import annotations

import msgspec

from tally.clock import format_micros


class CountResponse(msgspec.Struct):
    count: int


class DeleteResponse(msgspec.Struct):
    deleted: bool


DELETED = DeleteResponse(deleted=True)


class ErrorBody(msgspec.Struct):
    error: str


def opt_time(micros: int | None) -> str | None:
    """``format_micros`` of a time that may be absent."""
    return None if micros is None else format_micros(micros)
