"""The pausing proxy of the import tests (tests/support/pausing_proxy.py), on
real sockets: it forwards both ways byte for byte, counts the responses, and
holds after as many as it was told."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.support.pausing_proxy import PausingProxy, ResponseSplitter
from tests.support.server import free_port
from tests.support.waiting import wait_until


class Upstream(ThreadingHTTPServer):
    """An HTTP/1.1 keep-alive server: POST /echo answers the body it got,
    GET /chunked answers in chunks, GET /empty answers 204."""

    daemon_threads = True
    requests = 0
    lock = threading.Lock()

    def count(self) -> None:
        with self.lock:
            self.requests += 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Upstream

    def do_POST(self) -> None:
        self.server.count()
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.count()
        if self.path == "/empty":
            self.send_response(204)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in (b"hello ", b"chunked ", b"world"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[PausingProxy]:
    with PausingProxy(int(upstream.server_address[1])) as p:
        yield p


def test_the_splitter_cuts_where_each_response_ends_however_the_bytes_come() -> None:
    responses = [
        b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: t\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n",
    ]
    stream = b"".join(responses)
    ends = [sum(len(r) for r in responses[: i + 1]) for i in range(len(responses))]
    for step in (1, 2, 7, len(stream)):
        splitter = ResponseSplitter()
        seen, at = [], 0
        for i in range(0, len(stream), step):
            for segment, ended in splitter.feed(stream[i : i + step]):
                at += len(segment)
                if ended:
                    seen.append(at)
        assert (seen, at) == (ends, len(stream)), step


def test_what_is_not_http_is_forwarded_and_never_counted() -> None:
    splitter = ResponseSplitter()
    data = b"SSH-2.0-OpenSSH\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert splitter.feed(data) == [(data, False)]


def test_it_forwards_both_ways_byte_for_byte_on_concurrent_keep_alive_connections(
    proxy: PausingProxy, upstream: Upstream
) -> None:
    failures: list[str] = []

    def client(n: int) -> None:
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            for i in range(5):
                body = os.urandom(100_000 + 7919 * (n * 5 + i))
                got = http.post("/echo", content=body)
                if got.status_code != 201 or got.content != body:
                    failures.append(f"client {n}, request {i}: {got.status_code}")
            chunked = http.get("/chunked")
            if chunked.content != b"hello chunked world":
                failures.append(f"client {n}: {chunked.content!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    # the proxy counts an answer once it has sent it: the client may read it before
    assert wait_until(lambda: proxy.responses == 24, 30)
    assert upstream.requests == 24


def test_it_holds_after_as_many_responses_as_told_and_then_lets_through_what_it_is_told(
    proxy: PausingProxy, upstream: Upstream
) -> None:
    answered: list[int] = []

    def client() -> None:
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            for _ in range(6):
                answered.append(http.get("/empty").status_code)

    proxy.hold_after(2)
    thread = threading.Thread(target=client)
    thread.start()
    assert proxy.wait_held(timeout=30)
    # the third request reaches the server (requests are not held); its answer does not
    assert wait_until(lambda: upstream.requests == 3, 30)
    time.sleep(0.3)  # a while for what must not happen
    assert (proxy.responses, answered) == (2, [204, 204])
    proxy.let_through(1)
    assert proxy.wait_held(timeout=30)
    assert wait_until(lambda: upstream.requests == 4, 30)
    time.sleep(0.3)
    assert (proxy.responses, len(answered)) == (3, 3)
    proxy.release()
    thread.join(timeout=30)
    assert wait_until(lambda: proxy.responses == 6, 30)
    assert (upstream.requests, answered) == (6, [204] * 6)


def test_held_answers_are_let_through_oldest_first(proxy: PausingProxy, upstream: Upstream) -> None:
    got: list[str] = []

    def client(name: str) -> None:
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            got.append(f"{name} {http.get('/empty').status_code}")

    proxy.hold_after(0)
    first = threading.Thread(target=client, args=("first",))
    first.start()
    assert wait_until(lambda: proxy.pending == 1, 30)
    second = threading.Thread(target=client, args=("second",))
    second.start()
    assert wait_until(lambda: proxy.pending == 2, 30)
    proxy.let_through(1)
    first.join(timeout=30)
    assert proxy.wait_held(timeout=30)
    assert (got, proxy.responses, proxy.pending) == (["first 204"], 1, 1)
    proxy.release()
    second.join(timeout=30)
    assert got == ["first 204", "second 204"]


def test_a_killed_client_s_held_answer_is_dropped_not_counted(
    proxy: PausingProxy, upstream: Upstream
) -> None:
    http = httpx.Client(base_url=proxy.url, timeout=30)
    proxy.hold_after(0)
    with pytest.raises(httpx.ReadTimeout):
        http.get("/empty", timeout=0.5)  # held: no answer; httpx closes the connection
    assert proxy.wait_idle(timeout=10)
    proxy.hold_after(1)  # the dropped answer does not take this one's place
    assert http.get("/empty").status_code == 204
    assert proxy.wait_held(timeout=10) and proxy.responses == 1
    http.close()


def test_a_client_sees_a_failed_request_when_the_server_is_down() -> None:
    with PausingProxy(free_port()) as proxy, httpx.Client(base_url=proxy.url) as http:
        with pytest.raises(httpx.TransportError):
            http.get("/")
        assert proxy.wait_refused(1, timeout=10)
        assert proxy.responses == 0
