"""Small HTTP helpers shared by the routes: JSON envelopes, bounded body
reads, query parameters, and the one mapping from error category to status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from tally.api import asgi
from tally.errors import Invalid, TallyError
from tally.ingest.parse import BatchTooLarge, check_no_nul, decode_json
from tally.jsontext import nesting_message, nests_deeper

STATUS_BY_CATEGORY = {
    "invalid": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "too_large": 413,
}

_encoder = msgspec.json.Encoder()
_STRING_MAP = msgspec.json.Decoder(dict[str, str])


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


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (without reading it all) one over ``limit``."""
    return await asgi.read_body(request.receive, request.headers.get("content-length"), limit)


def check_json(data: bytes, what: str) -> None:
    """Refuse JSON text that nests deeper than ``tally.jsontext.MAX_NESTING``
    or holds the NUL character."""
    if nests_deeper(data):
        raise Invalid(nesting_message(what))
    check_no_nul(data, what)


async def read_json(request: Request, decoder: msgspec.json.Decoder[Any], what: str) -> Any:
    """An admin call's JSON body, bounded in size and nesting, decoded."""
    data = await read_body(request, request.app.state.tally.settings.max_request_bytes)
    check_json(data, what)
    return decode_json(data, decoder, what)


def json_query_map(name: str, value: str) -> dict[str, str]:
    """A map query parameter sent as JSON text (``keys={"id":"acme"}``)."""
    data = value.encode()
    check_json(data, name)
    try:
        return _STRING_MAP.decode(data)
    except msgspec.ValidationError:
        raise Invalid(f'{name} must be a JSON object of strings, such as {{"id":"acme"}}') from None
    except (msgspec.DecodeError, RecursionError):
        raise Invalid(
            f'{name} must be sent as {name}[id]=acme or as JSON text {name}={{"id":"acme"}}'
        ) from None


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(f"{name} must be an integer, not {raw[:32]!r}") from None
    if not low <= value <= high:
        raise Invalid(f"{name} must be between {low} and {high}, not {value}")
    return value


def query_list(request: Request, name: str) -> list[str]:
    """A repeated parameter (``a=1&a=2``), also accepted as ``a[]=1``."""
    values = request.query_params.getlist(name) + request.query_params.getlist(f"{name}[]")
    return [v for v in values if v != ""]


def query_str(request: Request, name: str, max_length: int) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length:
        raise Invalid(f"{name} must be at most {max_length} characters, not {len(raw)}")
    return raw
