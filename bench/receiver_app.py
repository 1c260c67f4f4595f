"""The delivery receivers of ``bench/pipeline.py --effects``: one process
answering ``200 {}`` to every POST (any path: each webhook endpoint and the
billing sink get a path of their own) and counting them by path; ``GET
/stats`` returns the counts.

It stands in for receivers that would run on other machines, so it is kept
as cheap as possible (a bare asyncio protocol reading HTTP/1.1 requests with
``Content-Length`` bodies, keep-alive), to take little CPU from the tally
processes being measured.

    python bench/receiver_app.py --port 8124
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter

COUNTS: Counter[str] = Counter()
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Receiver(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            if method == "POST":
                COUNTS[path] += 1
                self.transport.write(OK)
            else:
                body = json.dumps(dict(COUNTS)).encode()
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Receiver, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
