"""Start the real tally server as a subprocess, for end-to-end tests and benches.

with running_server(tmp_path) as srv:
    srv.base_url, srv.secret_key, srv.publishable_key, srv.read_only_key
    srv.kill()      # SIGKILL
    srv.start()     # start again on the same database and port
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tally_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tally", *args]


def create_key(
    database_url: str,
    environment: str = "development",
    *,
    publishable: bool = False,
    read_only: bool = False,
    env: dict[str, str] | None = None,
) -> str:
    """Create a key with the real CLI; returns the key (the last stdout line)."""
    args = ["keys", "create", "--environment", environment, "--database-url", database_url]
    if publishable:
        args.append("--publishable")
    if read_only:
        args.append("--read-only")
    done = subprocess.run(
        tally_command(*args), capture_output=True, text=True, check=True, env=env, timeout=60
    )
    return done.stdout.strip().splitlines()[-1]


class Server:
    def __init__(
        self,
        db_path: Path,
        port: int,
        extra_env: dict[str, str] | None = None,
        database_url: str | None = None,
    ) -> None:
        self.db_path = db_path  # the SQLite file (unused when database_url is PostgreSQL)
        self.database_url = database_url or f"sqlite:///{db_path}"
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "TALLY_KEY_CACHE_SECONDS": "0",
            "TALLY_WEBHOOK_ALLOW_PRIVATE": "true",  # receivers of tests are on 127.0.0.1
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = db_path.with_suffix(".log")
        self.secret_key = create_key(self.database_url, env=self.env)
        self.publishable_key = create_key(self.database_url, publishable=True, env=self.env)
        self.read_only_key = create_key(self.database_url, read_only=True, env=self.env)

    def create_key(self, environment: str = "development", **kwargs: bool) -> str:
        return create_key(self.database_url, environment, env=self.env, **kwargs)

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            tally_command(
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database-url",
                self.database_url,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tally serve exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"tally serve did not answer /health within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@contextlib.contextmanager
def running_server(
    tmp_path: Path, extra_env: dict[str, str] | None = None, database_url: str | None = None
) -> Iterator[Server]:
    server = Server(tmp_path / "tally.db", free_port(), extra_env, database_url)
    server.start()
    try:
        yield server
    finally:
        server.stop()
