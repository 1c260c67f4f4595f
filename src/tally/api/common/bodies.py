"""Reading a request body: bounded in size (refused before it is all read),
in nesting depth, free of NUL, and decoded into a msgspec struct with one
sentence for what is wrong. The write path's ASGI endpoints read theirs with
``tally.api.asgi.read_body`` and rule on it in ``tally.ingest``."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request

from tally.api import asgi
from tally.api.state import AppState
from tally.errors import Invalid
from tally.ingest.parse import check_no_nul, decode_json
from tally.jsontext import nesting_message, nests_deeper


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (without reading it all) one over ``limit``."""
    return await asgi.read_body(request.receive, request.headers.get("content-length"), limit)


def check_json(data: bytes, what: str) -> None:
    """Refuse JSON text that nests deeper than ``tally.jsontext.MAX_NESTING``
    or holds the NUL character."""
    if nests_deeper(data):
        raise Invalid(nesting_message(what))
    check_no_nul(data, what)


async def read_json(
    request: Request, decoder: msgspec.json.Decoder[Any], what: str, *, limit: int | None = None
) -> Any:
    """An admin call's JSON body, bounded in size (``limit``, by default
    ``max_request_bytes``) and nesting, decoded."""
    state: AppState = request.app.state.tally
    data = await read_body(request, state.settings.max_request_bytes if limit is None else limit)
    check_json(data, what)
    return decode_json(data, decoder, what)
