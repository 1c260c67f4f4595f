"""A TCP proxy on 127.0.0.1 that can stop the answers after N HTTP responses.

End-to-end tests that signal a client (or kill its server) "mid-way" need the
client to be still sending when the signal comes, whatever the machine's
speed. Between the client and the server this proxy forwards both directions
byte for byte, on as many concurrent (keep-alive) connections as the client
opens, and counts the HTTP responses it has forwarded back. Told to hold, it
lets a given number of further responses reach the client and then no
response byte more, until released:

    with PausingProxy(server.port) as proxy:
        proxy.hold_after(3)           # three more answers, then hold
        ... start the client against proxy.url ...
        assert proxy.wait_held(60)    # it has had exactly three answers: held
        ... signal the client, kill the server ...
        proxy.let_through(1)          # one more answer, then hold again
        proxy.release()               # forward everything again

Held, the proxy still forwards requests: an HTTP/1.1 client sends its next
request on a connection only once it has the answer to the last one, so the
held answers stop it; let through, the oldest waiting answer goes first. Closes pass too (the client killed, the server killed):
the other side of that connection is closed and its held bytes dropped —
``wait_idle`` says when every connection of a killed client is gone, so none
of its answers can count for the next one. ``refused`` counts the client
connections closed at once because the server did not take the proxy's
connection (it was down): what the client saw as a failed request.

Responses are delimited by ``Content-Length`` or chunked encoding (answers
to ``HEAD`` are not told apart: no client of the tests sends one); data that
is not HTTP is forwarded but never counted.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from collections.abc import Callable
from types import TracebackType

READ_SIZE = 64 * 1024
MAX_HEAD = 64 * 1024  # a longer "response head" is not HTTP: forwarded, never counted

# what the splitter is reading
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS, _UNTIL_CLOSE = range(6)


class ResponseSplitter:
    """Cuts a stream of HTTP/1.1 responses where each one ends.

    ``feed(data)`` returns ``data`` as consecutive segments, each with whether
    a response ends with it, so the proxy can forward exactly N responses."""

    def __init__(self) -> None:
        self._state = _HEAD
        self._pending = b""  # the head or line read so far
        self._remaining = 0  # bytes of the body, or of a chunk and its CRLF

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        segments: list[tuple[bytes, bool]] = []
        start = pos = 0
        while pos < len(data):
            pos, ended = self._step(data, pos)
            if ended:
                segments.append((data[start:pos], True))
                start = pos
        if start < len(data):
            segments.append((data[start:], False))
        return segments

    def _step(self, data: bytes, pos: int) -> tuple[int, bool]:
        """Consume from ``pos`` on; (where it stopped, whether a response ended there)."""
        if self._state == _UNTIL_CLOSE:
            return len(data), False
        if self._state in (_BODY, _CHUNK_DATA):
            taken = min(self._remaining, len(data) - pos)
            self._remaining -= taken
            if self._remaining:
                return pos + taken, False
            if self._state == _CHUNK_DATA:
                self._state = _CHUNK_SIZE
                return pos + taken, False
            self._state = _HEAD
            return pos + taken, True
        if self._state == _HEAD:
            return self._read_head(data, pos)
        return self._read_chunk_line(data, pos)

    def _read_head(self, data: bytes, pos: int) -> tuple[int, bool]:
        seen = len(self._pending)
        buffered = self._pending + data[pos:]
        end = buffered.find(b"\r\n\r\n")
        if end < 0:
            self._pending = buffered
            if len(buffered) > MAX_HEAD:
                self._state = _UNTIL_CLOSE
            return len(data), False
        self._pending = b""
        pos += end + 4 - seen
        return pos, self._start_body(buffered[: end + 4])

    def _start_body(self, head: bytes) -> bool:
        """Set the state for the body ``head`` announces; whether the response
        already ended (it has no body)."""
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            self._state = _UNTIL_CLOSE  # not HTTP
            return False
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if 100 <= status < 200:
            self._state = _UNTIL_CLOSE if status == 101 else _HEAD  # an interim answer
            return False
        if status in (204, 304):
            return True
        if "chunked" in headers.get("transfer-encoding", ""):
            self._state = _CHUNK_SIZE
            return False
        length = headers.get("content-length", "")
        if not length.isdigit():
            self._state = _UNTIL_CLOSE  # the body ends with the connection
            return False
        self._remaining = int(length)
        self._state = _BODY if self._remaining else _HEAD
        return not self._remaining

    def _read_chunk_line(self, data: bytes, pos: int) -> tuple[int, bool]:
        """A chunk's size line, or a line of the trailers after the last chunk."""
        newline = data.find(b"\n", pos)
        if newline < 0:
            self._pending += data[pos:]
            return len(data), False
        line = (self._pending + data[pos:newline]).strip()
        self._pending = b""
        pos = newline + 1
        if self._state == _TRAILERS:
            if line:
                return pos, False
            self._state = _HEAD  # the empty line after the trailers
            return pos, True
        try:
            size = int(line.split(b";")[0], 16)
        except ValueError:
            self._state = _UNTIL_CLOSE  # not HTTP
            return pos, False
        if size == 0:
            self._state = _TRAILERS
        else:
            self._state, self._remaining = _CHUNK_DATA, size + 2  # the data and its CRLF
        return pos, False


class _Link:
    """One client connection and the proxy's connection to the server."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.dead = False  # a side closed: the other is shut, held bytes dropped
        self.pumps_done = 0

    def shutdown(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()


class _Gate:
    """What may pass, and the counts: the response pumps ask before
    forwarding, and take a ticket for the bytes that end a response. They
    pass in the order they came: a response let through is the oldest one
    waiting (answers to later requests cannot keep overtaking it)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.limit: int | None = None  # responses that may pass in all; None: no limit
        self.started = 0  # responses whose last bytes were let through
        self.forwarded = 0  # responses the client has been sent in full
        self.refused = 0
        self.open_links = 0
        self.closing = False
        self.waiting: deque[object] = deque()  # a token per pump at the gate, oldest first

    def held(self) -> bool:
        return not self.closing and self.limit is not None and self.started >= self.limit

    def enter(self, link: _Link, ends_response: bool) -> bool:
        """Wait until response bytes may pass; False: the link died meanwhile
        (its bytes are dropped, and take no ticket)."""
        token = object()
        with self.cond:
            self.waiting.append(token)
            try:
                self.cond.wait_for(
                    lambda: link.dead or (self.waiting[0] is token and not self.held())
                )
                if link.dead:
                    return False
                if ends_response:
                    self.started += 1
                return True
            finally:
                self.waiting.remove(token)
                self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


class PausingProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._gate = _Gate()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._links: list[_Link] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._accepting = self._spawn(self._accept_loop)

    # -- what the tests use ---------------------------------------------------
    @property
    def responses(self) -> int:
        """Responses forwarded to the client in full."""
        return self._gate.forwarded

    @property
    def refused(self) -> int:
        return self._gate.refused

    @property
    def pending(self) -> int:
        """Connections whose server's bytes wait to be forwarded (held)."""
        return len(self._gate.waiting)

    def hold_after(self, responses: int) -> None:
        """Let ``responses`` more responses through, then hold."""
        with self._gate.cond:
            self._gate.limit = self._gate.started + responses
            self._gate.cond.notify_all()

    def let_through(self, responses: int) -> None:
        """Held: let ``responses`` more through, then hold again."""
        with self._gate.cond:
            assert self._gate.limit is not None, "not holding"
            self._gate.limit += responses
            self._gate.cond.notify_all()

    def release(self) -> None:
        with self._gate.cond:
            self._gate.limit = None
            self._gate.cond.notify_all()

    def wait_held(self, timeout: float) -> bool:
        """Whether, within ``timeout`` s, the responses let through have all
        been sent to the client and the proxy holds."""
        gate = self._gate
        return gate.wait(lambda: gate.limit is not None and gate.forwarded >= gate.limit, timeout)

    def wait_refused(self, count: int, timeout: float) -> bool:
        return self._gate.wait(lambda: self._gate.refused >= count, timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Whether, within ``timeout`` s, every connection is closed (after a
        client was killed: none of its held answers can go to the next one)."""
        return self._gate.wait(lambda: self._gate.open_links == 0, timeout)

    def close(self) -> None:
        """Stop: every connection is closed, every thread joined."""
        with self._gate.cond:
            self._gate.closing = True
            self._gate.cond.notify_all()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._accepting.join(timeout=10)
        self._listener.close()
        with self._lock:
            links, threads = list(self._links), list(self._threads)
        for link in links:
            link.shutdown()
        for thread in threads:
            thread.join(timeout=10)

    def __enter__(self) -> PausingProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the threads ------------------------------------------------------------
    def _spawn(self, target: Callable[..., None], *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def _accept_loop(self) -> None:
        while not self._gate.closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was shut down
            link = _Link(client)
            with self._lock:
                self._links.append(link)
            with self._gate.cond:
                self._gate.open_links += 1
            self._spawn(self._connect, link)

    def _connect(self, link: _Link) -> None:
        """Connect to the server for a new client; when it is down, close the
        client's connection at once: to the client, a failed request."""
        try:
            link.upstream = socket.create_connection(self.upstream, timeout=10)
            link.upstream.settimeout(None)
        except OSError:
            self._end(link, pumps=2)
            with self._gate.cond:
                self._gate.refused += 1
                self._gate.cond.notify_all()
            return
        if self._gate.closing:  # close() may have shut the links before this one had both
            self._end(link, pumps=2)
            return
        self._spawn(self._pump_requests, link)
        self._spawn(self._pump_responses, link)

    def _end(self, link: _Link, pumps: int = 1) -> None:
        """A direction is done (a close or a reset): the other stops too (HTTP
        needs no half-close); the sockets are closed once both are done."""
        with self._gate.cond:
            if not link.dead:
                link.dead = True
                self._gate.open_links -= 1
            link.pumps_done += pumps
            last = link.pumps_done == 2
            self._gate.cond.notify_all()
        link.shutdown()
        if last:
            link.close()

    def _pump_requests(self, link: _Link) -> None:
        """Client to server: never held (a client sends its next request on
        a connection once it has the answer to the last one, so with the
        answers held it has nothing to send)."""
        assert link.upstream is not None
        try:
            while data := link.client.recv(READ_SIZE):
                link.upstream.sendall(data)
        except OSError:
            pass  # a reset: the link is done
        finally:
            self._end(link)

    def _pump_responses(self, link: _Link) -> None:
        assert link.upstream is not None
        splitter = ResponseSplitter()
        try:
            while data := link.upstream.recv(READ_SIZE):
                for segment, ends in splitter.feed(data):
                    if not self._gate.enter(link, ends):
                        return
                    link.client.sendall(segment)
                    if ends:
                        with self._gate.cond:
                            self._gate.forwarded += 1
                            self._gate.cond.notify_all()
        except OSError:
            pass
        finally:
            self._end(link)
