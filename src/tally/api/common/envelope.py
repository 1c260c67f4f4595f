"""The envelope of every answer (``{"data": …, "params": {…}}``), the error
body, and the one mapping from error category to HTTP status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

from tally.errors import TallyError
from tally.ingest.parse import BatchTooLarge

STATUS_BY_CATEGORY = {
    "invalid": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "too_large": 413,
}

_encoder = msgspec.json.Encoder()


class JSONBytes(Response):
    media_type = "application/json"


def envelope(data: Any, params: dict[str, Any] | None = None) -> bytes:
    """The success body: ``{"data": …, "params": {…}}``."""
    return _encoder.encode({"data": data, "params": params or {}})


def ok(data: Any, params: dict[str, Any] | None = None, status: int = 200) -> Response:
    return JSONBytes(envelope(data, params), status_code=status)


def one_line(message: str) -> str:
    """An error is one sentence on one line, whatever client text it quotes."""
    if message.isprintable():
        return message
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)


def error_response(err: TallyError) -> Response:
    status = STATUS_BY_CATEGORY.get(err.category, 500)
    body: dict[str, Any] = {"error": one_line(err.message)}
    if isinstance(err, BatchTooLarge):
        body["max_size"] = err.max_size
    return JSONBytes(_encoder.encode(body), status_code=status)


def plain_error(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return JSONBytes(_encoder.encode({"error": message}), status_code=status, headers=headers)
