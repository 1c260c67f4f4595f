"""A real local HTTP receiver for deliveries: a threaded ``http.server`` on a
free 127.0.0.1 port that keeps every request it gets.

    with Receiver() as rx:               # answers 200
        rx.url                            # http://127.0.0.1:PORT/hook
        rx.fail_first = 3                 # the first 3 requests of each body id get 503
        rx.delay = 1.0                    # wait before answering
        rx.stop(); rx.start()             # down, then up again on the same port
        rx.requests                       # [Received(path, headers, body), ...]
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.server import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return ""


class Receiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.requests: list[Received] = []
        self.fail_first = 0  # per delivery (the body's "id", else "identifier")
        self.status = 200
        self.delay = 0.0
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the client hung up mid-request: nothing arrived
                status = receiver._answer(body)
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.path, dict(self.headers.items()), body, status)
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up (a killed delivery loop) is not an error here

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- behaviour ----------------------------------------------------------
    def _answer(self, body: bytes) -> int:
        try:
            data = json.loads(body)
            ident = str(data.get("id") or data.get("identifier"))
        except ValueError:
            ident = ""
        with self._lock:
            self._seen[ident] += 1
            if self._seen[ident] <= self.fail_first:
                return 503
        return self.status

    # -- what arrived ---------------------------------------------------------
    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def succeeded(self) -> list[Received]:
        return [r for r in self.received() if 200 <= r.status < 300]

    def wait_for(self, count: int, timeout: float = 30.0, *, ok_only: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.succeeded() if ok_only else self.received()
            if len(got) >= count:
                return
            time.sleep(0.02)
        raise AssertionError(f"the receiver got {len(got)} requests, not {count}, in {timeout}s")
