"""The delivery HTTP client (asyncio + h11) against a real local server:
2xx and other answers, keep-alive reuse, a kept-alive connection the
receiver closed meanwhile, chunked answers, timeouts and refused
connections."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tally.effects.sender import make_client, post
from tests.support.server import free_port

Answer = Callable[[bytes], Awaitable[bytes | None]]


CONNECTIONS = b"connection"


async def serve(answer: Answer, *, close_after: bool = False) -> tuple[asyncio.Server, list[bytes]]:
    """A server that reads one request at a time (Content-Length bodies) and
    writes ``answer(request)``; ``None`` hangs up without answering. The list
    holds each request, and ``CONNECTIONS`` for each connection accepted."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(CONNECTIONS)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                requests.append(head + body)
                reply = await answer(head + body)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", free_port())
    return server, requests


def url(server: asyncio.Server, path: str = "/hook") -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"http://{host}:{port}{path}"


async def ok(_: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_a_2xx_is_success_and_the_request_is_what_was_asked() -> None:
    async def main() -> None:
        server, requests = await serve(ok)
        async with server, make_client(5) as client:
            sent = await post(client, url(server, "/a?b=1"), b'{"x":1}', {"X-Test": "yes"})
        assert (sent.ok, sent.response_code, sent.error) == (True, 200, None)
        (_, request) = requests
        assert request.startswith(b"POST /a?b=1 HTTP/1.1\r\n")
        assert b"x-test: yes" in request.lower() and request.endswith(b'{"x":1}')
        assert b"content-length: 7" in request.lower()

    run(main())


@pytest.mark.parametrize("status", [301, 404, 500, 503])
def test_other_answers_fail_with_their_status_and_words(status: int) -> None:
    async def answer(_: bytes) -> bytes:
        return f"HTTP/1.1 {status} Nope\r\nContent-Length: 9\r\n\r\nno thanks".encode()

    async def main() -> None:
        server, _ = await serve(answer)
        async with server, make_client(5) as client:
            sent = await post(client, url(server), b"{}", {})
        assert not sent.ok and sent.response_code == status
        assert sent.error == f"the receiver answered {status}: no thanks"

    run(main())


def test_connections_are_kept_alive_and_reused() -> None:
    async def main() -> None:
        server, requests = await serve(ok)
        async with server, make_client(5) as client:
            for _ in range(5):
                assert (await post(client, url(server), b"{}", {})).ok
        assert requests.count(CONNECTIONS) == 1 and len(requests) == 6

    run(main())


def test_a_kept_alive_connection_closed_by_the_receiver_is_replaced() -> None:
    async def main() -> None:
        server, requests = await serve(ok, close_after=True)  # closes after each answer
        async with server, make_client(5) as client:
            for _ in range(3):
                sent = await post(client, url(server), b"{}", {})
                assert sent.ok, sent.error
                await asyncio.sleep(0.05)  # the close reaches the client
        assert len(requests) == 6  # three connections, one request each

    run(main())


def test_chunked_and_http_1_0_answers() -> None:
    async def chunked(_: bytes) -> bytes:
        return b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"

    async def old(_: bytes) -> bytes | None:
        return b"HTTP/1.0 204 No Content\r\n\r\n"

    async def main() -> None:
        for answer in (chunked, old):
            server, _ = await serve(answer, close_after=answer is old)
            async with server, make_client(5) as client:
                for _ in range(2):
                    sent = await post(client, url(server), b"{}", {})
                    assert sent.ok, sent.error

    run(main())


def test_a_receiver_that_does_not_answer_times_out() -> None:
    async def never(_: bytes) -> bytes:
        await asyncio.sleep(30)
        return b""

    async def main() -> None:
        server, _ = await serve(never)
        async with server, make_client(0.2) as client:
            sent = await post(client, url(server), b"{}", {})
        assert (sent.ok, sent.response_code) == (False, None)
        assert sent.error == "the receiver did not answer within the timeout"

    run(main())


def test_a_receiver_that_hangs_up_or_is_not_there_fails() -> None:
    async def hang_up(_: bytes) -> bytes | None:
        return None

    async def main() -> None:
        server, _ = await serve(hang_up)
        async with server, make_client(2) as client:
            sent = await post(client, url(server), b"{}", {})
            assert not sent.ok and sent.response_code is None and sent.error
            refused = await post(client, f"http://127.0.0.1:{free_port()}/x", b"{}", {})
            assert not refused.ok and refused.error and "request failed" in refused.error
            bad = await post(client, "ftp://example.com/x", b"{}", {})
            assert not bad.ok and bad.error and "not an http(s) URL" in bad.error

    run(main())
