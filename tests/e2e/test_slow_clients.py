"""Slow and greedy clients against a real ``tally serve`` over real sockets:
a connection that does not finish its request head in time is closed (even
one that trickles bytes), an idle keep-alive connection still closes as
before, a slow but timely request is served, and a process keeps at most
TALLY_HTTP_MAX_CONNECTIONS connections open."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import Server, running_server

pytestmark = pytest.mark.slow

HEAD_TIMEOUT = 1.0
KEEP_ALIVE = 5.0  # uvicorn's timeout_keep_alive, as tally serve leaves it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"TALLY_HTTP_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT)}
    with running_server(tmp_path_factory.mktemp("slow"), env) as srv:
        yield srv


def connect(srv: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes ``sock`` (reading, not writing);
    fails if it is still open after ``limit``."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        raise AssertionError(f"still open after {limit}s") from None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def request(srv: Server, path: str = "/health") -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n"
    return head.encode()


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with connect(server) as sock:
        assert closed_after(sock, 5 * HEAD_TIMEOUT) >= HEAD_TIMEOUT * 0.8


def test_an_unfinished_head_is_closed_without_a_key(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        assert closed_after(sock, 5 * HEAD_TIMEOUT) < 5 * HEAD_TIMEOUT


def test_a_head_trickled_a_byte_at_a_time_is_closed_in_time(server: Server) -> None:
    started = time.monotonic()
    with connect(server) as sock:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
        with contextlib.suppress(OSError):
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
                if time.monotonic() - started > 5 * HEAD_TIMEOUT:
                    raise AssertionError("the trickling connection was never closed")
        closed_after(sock, 5 * HEAD_TIMEOUT)
    assert time.monotonic() - started < 5 * HEAD_TIMEOUT


def test_a_slow_but_timely_request_is_served_and_kept_alive(server: Server) -> None:
    with connect(server) as sock:
        head = request(server)
        sock.sendall(head[:10])
        time.sleep(HEAD_TIMEOUT / 2)
        sock.sendall(head[10:])
        assert read_answer(sock).startswith(b"HTTP/1.1 200")
        time.sleep(HEAD_TIMEOUT / 2)  # the head timer starts again after the answer
        sock.sendall(head)
        assert read_answer(sock).startswith(b"HTTP/1.1 200")


def test_an_idle_keep_alive_connection_closes_as_before(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(request(server))
        assert read_answer(sock).startswith(b"HTTP/1.1 200")
        # closed by the head timeout (1 s here) or keep-alive (5 s), whichever first
        assert closed_after(sock, KEEP_ALIVE + 2) < KEEP_ALIVE + 2


def test_connections_over_the_cap_are_closed_at_once(tmp_path: Path) -> None:
    cap = 8
    env = {"TALLY_HTTP_MAX_CONNECTIONS": str(cap), "TALLY_HTTP_HEADER_TIMEOUT_SECONDS": "30"}
    with running_server(tmp_path, env) as srv:
        time.sleep(0.5)  # the start-up probes' connections are gone
        held = [connect(srv) for _ in range(cap)]
        try:
            time.sleep(0.3)
            with connect(srv) as extra:
                assert closed_after(extra, 3) < 3  # closed without a request
            held[0].sendall(request(srv))  # the held ones still work
            assert read_answer(held[0]).startswith(b"HTTP/1.1 200")
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        with connect(srv) as again:  # room again
            again.sendall(request(srv))
            assert read_answer(again).startswith(b"HTTP/1.1 200")


def test_every_process_of_workers_2_closes_unfinished_heads(tmp_path: Path) -> None:
    env = {"TALLY_HTTP_WORKERS": "2", "TALLY_HTTP_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT)}
    with running_server(tmp_path, env) as srv:
        socks = [connect(srv) for _ in range(6)]  # spread over both processes
        try:
            for sock in socks:
                sock.sendall(b"GET /health HTTP/1.1\r\n")
            for sock in socks:
                closed_after(sock, 5 * HEAD_TIMEOUT)
        finally:
            for sock in socks:
                sock.close()
