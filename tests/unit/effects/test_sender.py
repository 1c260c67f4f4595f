"""The delivery HTTP client (asyncio + h11) against a real local server:
2xx and other answers, keep-alive reuse, a kept-alive connection the
receiver closed meanwhile, chunked answers, timeouts and refused
connections."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tally.effects.sender import Guard, make_client, post
from tally.effects.targets import SETTING, TableResolver, addresses
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


@pytest.mark.parametrize(
    ("status", "phrase"),
    [(301, "Moved Permanently"), (404, "Not Found"), (500, "Internal Server Error"), (599, "")],
)
def test_other_answers_fail_with_their_status_and_no_word_of_theirs(
    status: int, phrase: str
) -> None:
    """The failure names the status and its standard phrase, never the
    receiver's body or reason phrase (an internal service's answer must not
    be readable through the delivery log)."""

    async def answer(_: bytes) -> bytes:
        return f"HTTP/1.1 {status} Secret\r\nContent-Length: 11\r\n\r\ntop-secret!".encode()

    async def main() -> None:
        server, _ = await serve(answer)
        async with server, make_client(5) as client:
            sent = await post(client, url(server), b"{}", {})
        assert not sent.ok and sent.response_code == status
        assert sent.error == f"the receiver answered {status} {phrase}".rstrip()

    run(main())


def test_an_answer_that_is_not_http_is_not_quoted() -> None:
    async def banner(_: bytes) -> bytes:
        return b"SSH-2.0-OpenSSH_9.6 secret-banner\r\n\r\n"

    async def main() -> None:
        server, _ = await serve(banner)
        async with server, make_client(5) as client:
            sent = await post(client, url(server), b"{}", {})
        assert (sent.ok, sent.response_code) == (False, None)
        assert sent.error == "the receiver's answer is not valid HTTP/1.1"

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


# -- webhooks: the guard against private targets -------------------------------
def test_a_guarded_post_connects_to_the_address_it_checked_and_names_the_host() -> None:
    """The name is resolved through the guard's resolver (a table: the system
    resolver does not know ``hook.test``), the socket goes to that address,
    and the Host header still names the host."""

    async def main() -> None:
        server, requests = await serve(ok)
        port = server.sockets[0].getsockname()[1]
        guard = Guard(allow_private=True, resolver=TableResolver({"hook.test": ["127.0.0.1"]}))
        async with server, make_client(5) as client:
            sent = await post(client, f"http://hook.test:{port}/h", b"{}", {}, guard)
        assert sent.ok, sent.error
        assert f"host: hook.test:{port}\r\n".encode() in requests[1].lower()

    run(main())


class Rebinding:
    """A name whose answer changes: public first, then loopback."""

    def __init__(self) -> None:
        self.answers = [["93.184.216.34"], ["127.0.0.1"]]

    async def resolve(self, host: str, port: int) -> list[str]:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_a_name_that_turns_private_after_registration_is_not_connected_to() -> None:
    async def main() -> None:
        server, requests = await serve(ok)
        port = server.sockets[0].getsockname()[1]
        resolver = Rebinding()
        # what registration saw
        assert [
            str(a) for a in await addresses("rebind.test", port, resolver, allow_private=False)
        ] == ["93.184.216.34"]
        async with server, make_client(5) as client:
            sent = await post(
                client, f"http://rebind.test:{port}/h", b"{}", {}, Guard(resolver=resolver)
            )
        assert (sent.ok, sent.response_code) == (False, None)
        assert sent.error and "127.0.0.1" in sent.error and SETTING in sent.error
        assert requests == []  # no connection was made

    run(main())


def test_a_guarded_post_never_reuses_an_unguarded_connection() -> None:
    """The billing sink (unguarded) and a webhook on the same origin do not
    share kept-alive connections: the webhook is checked."""

    async def main() -> None:
        server, requests = await serve(ok)
        async with server, make_client(5) as client:
            assert (await post(client, url(server), b"{}", {})).ok
            blocked = await post(client, url(server), b"{}", {}, Guard())
        assert not blocked.ok and blocked.error and "loopback" in blocked.error
        assert requests.count(CONNECTIONS) == 1 and len(requests) == 2

    run(main())
