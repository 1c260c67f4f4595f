"""One HTTP POST of a delivery attempt, on a small HTTP/1.1 client made of
asyncio streams and h11 (the protocol state machine httpx itself uses),
with keep-alive connections per origin.

Delivery posts many small bodies to few receivers: this client costs about
a tenth of the CPU of httpx's async connection pool per request, which
matters because deliveries share the machine with event processing. It
does one thing: POST a body and read the status; redirects are not
followed, proxies are not used. Any 2xx is success; another status, a
timeout or a connection error is a failure described in one short sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import h11

USER_AGENT = "tally-webhooks/0.1"
MAX_ERROR = 300
READ_CHUNK = 65536
KEEP_BODY = 200  # bytes of a failed answer kept for the log


@dataclass(frozen=True, slots=True)
class Sent:
    ok: bool
    response_code: int | None
    error: str | None


Origin = tuple[str, str, int]  # scheme, host, port


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

    async def _open(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=host if tls else None
        )
        return _Connection(reader, writer)

    def _release(self, origin: Origin, conn: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """(status, start of the answer's body); raises on transport errors."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url[:100]!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
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
        conn = await self._open(origin)
        return await self._exchange(origin, conn, request, body, reused=False)

    async def _exchange(
        self, origin: Origin, conn: _Connection, request: h11.Request, body: bytes, *, reused: bool
    ) -> tuple[int, bytes]:
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
            kept = b""
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
                elif isinstance(event, h11.Data) and len(kept) < KEEP_BODY:
                    kept += bytes(event.data[: KEEP_BODY - len(kept)])
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
        return status, kept


def make_client(timeout_seconds: float, concurrency: int = 64) -> Client:
    return Client(timeout_seconds, max_idle=concurrency)


async def post(client: Client, url: str, body: bytes, headers: dict[str, str]) -> Sent:
    try:
        async with asyncio.timeout(client.timeout):
            status, answer = await client.post(url, body, headers)
    except TimeoutError:
        return Sent(False, None, "the receiver did not answer within the timeout")
    except (OSError, h11.ProtocolError, ValueError) as err:
        reason = str(err) or type(err).__name__
        return Sent(False, None, f"the request failed: {reason}"[:MAX_ERROR])
    if 200 <= status < 300:
        return Sent(True, status, None)
    text = answer.decode("utf-8", "replace")
    return Sent(False, status, f"the receiver answered {status}: {text}"[:MAX_ERROR])
