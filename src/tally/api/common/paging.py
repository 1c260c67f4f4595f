"""Paging of every list: ``limit`` (100 unless said, at most ``MAX_LIMIT``)
and ``offset``, echoed in the answer's ``params``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from tally.api.common.params import query_int

MAX_LIMIT = 250
DEFAULT_LIMIT = 100
MAX_OFFSET = 2**31


def page(request: Request, params: dict[str, Any]) -> tuple[int, int]:
    """``(limit, offset)`` of the request, also set in ``params``."""
    limit = query_int(request, "limit", DEFAULT_LIMIT, 0, MAX_LIMIT)
    offset = query_int(request, "offset", 0, 0, MAX_OFFSET)
    params["limit"] = limit
    params["offset"] = offset
    return limit, offset
