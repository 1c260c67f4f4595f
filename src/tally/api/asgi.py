"""The write path's endpoints as plain ASGI apps inside Starlette's router.

``POST /events``, ``/event-batch`` and ``/batch`` are tally's hot path. They
are routed, and their errors handled, by Starlette like every other route,
but they read the three headers they need straight off the ASGI scope and
answer with two ASGI messages, without building a ``Request`` (whose header
map and body stream cost more than ruling on the event) or a ``Response``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from tally.api.auth import HEADER
from tally.errors import Invalid, TooLarge

API_KEY_HEADER = HEADER.encode("ascii")
_JSON = (b"content-type", b"application/json")


class WriteHeaders:
    """What the write path reads off a request's headers and connection."""

    __slots__ = ("api_key", "content_length", "remote_ip", "user_agent")

    def __init__(self, scope: Scope) -> None:
        api_key: str | None = None
        length: str | None = None
        agent: str | None = None
        for name, value in scope["headers"]:  # lower-case names (ASGI)
            if name == API_KEY_HEADER:
                if api_key is None:
                    api_key = value.decode("latin-1")
            elif name == b"content-length":
                if length is None:
                    length = value.decode("latin-1")
            elif name == b"user-agent" and agent is None:
                agent = value.decode("latin-1")
        client = scope.get("client")
        self.api_key = api_key
        self.content_length = length
        self.user_agent = agent or ""
        self.remote_ip: str = client[0] if client else ""


def size_text(limit: int) -> str:
    """``4 MiB``, ``32 KiB``, or bytes."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= size and limit % size == 0:
            return f"{limit // size} {unit}"
    return f"{limit} bytes"


def check_declared_length(declared: str | None, limit: int) -> None:
    """Refuse, before reading it, a body whose ``Content-Length`` is over
    ``limit`` or zero."""
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise Invalid("the Content-Length header is not a number") from None
    if size > limit:
        raise TooLarge(
            f"request body is {size} bytes, more than the limit of {limit} bytes ({size_text(limit)})"
        )
    if size == 0:
        raise Invalid("request body is empty; send a JSON object")


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The request body, refusing (without reading it all) one over ``limit``."""
    check_declared_length(declared, limit)
    chunks: list[bytes] = []
    total = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        total += len(chunk)
        if total > limit:
            raise TooLarge(
                f"request body is more than the limit of {limit} bytes ({size_text(limit)})"
            )
        if chunk:
            chunks.append(chunk)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not data:
        raise Invalid("request body is empty; send a JSON object")
    return data


async def send_json(send: Send, status: int, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(payload)).encode("ascii"))],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class Endpoint:
    """An ``async (scope, receive, send)`` function that Starlette's ``Route``
    calls as an ASGI app (it wraps plain functions as request handlers)."""

    __slots__ = ("__name__", "_fn")

    def __init__(self, fn: ASGIApp) -> None:
        self._fn = fn
        self.__name__ = fn.__name__

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return self._fn(scope, receive, send)


_NUL_IN_URL = (
    b'{"error":"the URL must not contain the NUL character (%00): '
    b'no value tally stores or looks up can hold it"}'
)


async def _refuse_nul(scope: Scope, receive: Receive, send: Send) -> None:
    await send_json(send, 400, _NUL_IN_URL)


def nul_screen(scope: Scope) -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
    """The refusal (400) of a request whose path or query string holds NUL
    (``%00``), else None: PostgreSQL text cannot hold it, so no lookup could
    use it. One check for every route, present and future, before any of
    them runs (``tally.observe.requests`` runs it)."""
    query: bytes = scope.get("query_string", b"")
    if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
        return _refuse_nul
    return None
