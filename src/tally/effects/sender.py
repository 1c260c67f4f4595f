"""One HTTP POST of a delivery attempt, on a small HTTP/1.1 client made of
asyncio streams and h11 (the protocol state machine httpx itself uses),
with keep-alive connections per origin.

Delivery posts many small bodies to few receivers: this client costs about
a tenth of the CPU of httpx's async connection pool per request, which
matters because deliveries share the machine with event processing. It
does one thing: POST a body and read the status; redirects are not
followed, proxies are not used. Any 2xx is success; another status, a
timeout or a connection error is a failure described in one short sentence
that quotes nothing the receiver sent (its body is read and dropped).

A webhook is posted through a ``Guard`` (``tally.effects.targets``): the
host is resolved and checked right before a connection is opened, and the
socket goes to an address just checked (the ``Host`` header and TLS's SNI
still name the host). The billing sink, the operator's own, is posted
without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from urllib.parse import urlsplit

import h11

from tally.effects.targets import BlockedTarget, Resolver, SystemResolver, addresses

USER_AGENT = "tally-webhooks/0.1"
MAX_ERROR = 300
READ_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class Sent:
    ok: bool
    response_code: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Guard:
    """How a webhook's host is resolved and which addresses it may reach."""

    allow_private: bool = False
    resolver: Resolver = field(default_factory=SystemResolver)


Origin = tuple[str, str, int, bool]  # scheme, host, port, guarded


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _Stale(Exception):
    """A kept-alive connection was closed by the receiver before it answered."""


class Client:
    """Keep-alive connections per origin, at most ``max_idle`` idle each."""

    def __init__(self, timeout_seconds: float, max_idle: int = 64) -> None:
        self.timeout = timeout_seconds
        self._max_idle = max_idle
        self._idle: dict[Origin, list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    async def _open(self, origin: Origin, guard: Guard | None) -> _Connection:
        scheme, host, port, _ = origin
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        sni = host if tls else None
        if guard is None:
            reader, writer = await asyncio.open_connection(host, port, ssl=tls, server_hostname=sni)
            return _Connection(reader, writer)
        checked = await addresses(host, port, guard.resolver, allow_private=guard.allow_private)
        failure: OSError | None = None
        for ip in checked:  # the addresses just checked, in the resolver's order
            try:
                reader, writer = await asyncio.open_connection(
                    str(ip), port, ssl=tls, server_hostname=sni
                )
            except OSError as err:
                failure = err
                continue
            return _Connection(reader, writer)
        assert failure is not None
        raise failure

    def _release(self, origin: Origin, conn: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], guard: Guard | None = None
    ) -> int:
        """The answer's status; raises on transport errors (and ``BlockedTarget``
        when ``guard`` refuses the host)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url[:100]!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, parts.hostname, port, guard is not None)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]  # as written (brackets of IPv6 kept)
        request = h11.Request(
            method="POST",
            target=target,
            headers=[
                ("Host", host),
                ("User-Agent", USER_AGENT),
                ("Content-Length", str(len(body))),
                *headers.items(),
            ],
        )
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            try:
                return await self._exchange(origin, conn, request, body, reused=True)
            except _Stale:
                continue  # the receiver closed it while it was idle: try another
        conn = await self._open(origin, guard)
        return await self._exchange(origin, conn, request, body, reused=False)

    async def _exchange(
        self, origin: Origin, conn: _Connection, request: h11.Request, body: bytes, *, reused: bool
    ) -> int:
        state = conn.h11
        answered = False
        try:
            conn.writer.write(
                state.send(request)
                + state.send(h11.Data(data=body))
                + state.send(h11.EndOfMessage())
            )
            await conn.writer.drain()
            status = 0
            while True:
                event = state.next_event()
                if event is h11.NEED_DATA:
                    data = await conn.reader.read(READ_CHUNK)
                    if not data and reused and not answered:
                        raise _Stale()
                    state.receive_data(data)
                    continue
                if isinstance(event, h11.Response):
                    status, answered = event.status_code, True
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        except (_Stale, ConnectionError, OSError) as err:
            conn.close()
            if reused and not answered:
                raise _Stale() from err
            raise
        except BaseException:
            conn.close()
            raise
        if state.our_state is h11.DONE and state.their_state is h11.DONE:
            state.start_next_cycle()
            self._release(origin, conn)
        else:
            conn.close()
        return status


def make_client(timeout_seconds: float, concurrency: int = 64) -> Client:
    return Client(timeout_seconds, max_idle=concurrency)


async def post(
    client: Client, url: str, body: bytes, headers: dict[str, str], guard: Guard | None = None
) -> Sent:
    """POST ``body``; a webhook passes its ``guard``."""
    try:
        async with asyncio.timeout(client.timeout):
            status = await client.post(url, body, headers, guard)
    except TimeoutError:
        return Sent(False, None, "the receiver did not answer within the timeout")
    except BlockedTarget as err:
        return Sent(False, None, f"not sent: {err.message}"[:MAX_ERROR])
    except h11.ProtocolError:  # its message may quote what the receiver sent
        return Sent(False, None, "the receiver's answer is not valid HTTP/1.1")
    except (OSError, ValueError) as err:
        reason = str(err) or type(err).__name__
        return Sent(False, None, f"the request failed: {reason}"[:MAX_ERROR])
    if 200 <= status < 300:
        return Sent(True, status, None)
    return Sent(False, status, f"the receiver answered {status} {_phrase(status)}".rstrip())


def _phrase(status: int) -> str:
    """The standard reason phrase of ``status`` (never the receiver's own)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
