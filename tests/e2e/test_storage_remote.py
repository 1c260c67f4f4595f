"""The SQLite storage process (``tally.storage.process``) for real: a child
process on a temporary database, reached through its Unix socket the way
``tally serve`` reaches it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tally.errors import NotFound, TallyError
from tally.model import NewEvent
from tally.storage.process.client import RemoteStorage, StorageProcess, StorageProcessError
from tests.support.server import Server, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "p.db"


@pytest.fixture
def process(db: Path) -> Iterator[StorageProcess]:
    proc = StorageProcess(
        {"TALLY_DATABASE_URL": f"sqlite:///{db}", "TALLY_WORKER": "off", "TALLY_DELIVER": "off"}
    )
    try:
        yield proc
    finally:
        proc.stop()


def event(env: str, n: int, key: str | None = None) -> NewEvent:
    now = time.time_ns() // 1000
    return NewEvent(
        environment_id=env,
        type="track",
        status="pending",
        body=json.dumps({"event": "api-call", "company": {"id": f"c{n}"}}),
        quantity=1,
        captured_at=now,
        received_at=now,
        subtype="api-call",
        idempotency_key=key,
    )


def stored(db: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id, idempotency_key FROM events ORDER BY id").fetchall()


def test_concurrent_requests_share_frames_and_each_gets_its_own_results(
    process: StorageProcess, db: Path
) -> None:
    async def main() -> list[list[tuple[str, bool]]]:
        remote = RemoteStorage(process.socket_path)
        await remote.start()
        try:
            env, _ = await remote.ensure_environment("development", "development")

            async def request(n: int) -> list[tuple[str, bool]]:
                # every third request repeats the key of request 0
                key = "same" if n % 3 == 0 else f"k{n}"
                results = await remote.ingest([event(env.id, n, key), event(env.id, n)])
                return [(r.event_id, r.duplicate) for r in results]

            return await asyncio.gather(*(request(n) for n in range(60)))
        finally:
            await remote.close()

    answers = asyncio.run(main())
    rows = stored(db)
    kept = {event_id for event_id, _ in rows}
    same = [a[0] for n, a in enumerate(answers) if n % 3 == 0]
    assert len({event_id for event_id, _ in same}) == 1  # one event holds the key
    assert sum(not duplicate for _, duplicate in same) == 1
    assert len(rows) == 60 * 2 - (len(same) - 1)
    for answer in answers:
        assert all(event_id in kept for event_id, _ in answer)


def test_other_calls_return_values_and_raise_the_storage_errors(process: StorageProcess) -> None:
    async def main() -> None:
        remote = RemoteStorage(process.socket_path)
        await remote.start()
        try:
            env, created = await remote.ensure_environment("staging", "staging")
            assert created
            assert [e.name for e in await remote.list_environments()] == ["staging"]
            # iterables passed as generators arrive as lists
            names = await remote.preview_names(env.id, iter(()), (c for c in ["x"]), iter(()))
            assert dict(names) == {}
            with pytest.raises(NotFound, match="no company has the keys"):
                await remote.set_billing_anchor(env.id, {"id": "nobody"}, None)
            with pytest.raises(AttributeError):
                remote._private  # noqa: B018
            with pytest.raises(RuntimeError, match="does not take 'close' calls"):
                await remote.call("close")
        finally:
            await remote.close()

    asyncio.run(main())


def test_closing_its_stdin_stops_it_after_the_writes_in_flight(db: Path) -> None:
    proc = StorageProcess(
        {"TALLY_DATABASE_URL": f"sqlite:///{db}", "TALLY_WORKER": "off", "TALLY_DELIVER": "off"}
    )

    async def main() -> tuple[int, list[str]]:
        remote = RemoteStorage(proc.socket_path)
        await remote.start()
        env, _ = await remote.ensure_environment("development", "development")
        first = await remote.ingest([event(env.id, 0)])
        sent = [asyncio.ensure_future(remote.ingest([event(env.id, n)])) for n in range(1, 2000)]
        await asyncio.sleep(0.02)  # frames on their way and in the writer
        proc._proc.stdin.close()  # type: ignore[union-attr]  # as when tally serve dies
        done = await asyncio.gather(*sent, return_exceptions=True)
        await remote.close()
        acked = [first[0].event_id] + [r[0].event_id for r in done if isinstance(r, list)]
        refused = sum(1 for r in done if isinstance(r, BaseException))
        return refused, acked

    refused, acknowledged = asyncio.run(main())
    assert proc._proc.wait(timeout=60) == 0
    assert not os.path.exists(os.path.dirname(proc.socket_path))  # it cleaned up itself
    proc.stop()
    # every acknowledged event is stored; what came too late was refused, not lost
    assert set(acknowledged) <= {event_id for event_id, _ in stored(db)}
    assert len(acknowledged) + refused == 2000


def test_it_ignores_ctrl_c_and_stops_on_sigterm(process: StorageProcess) -> None:
    child = process._proc
    child.send_signal(signal.SIGINT)  # the terminal's Ctrl-C: tally serve handles it
    time.sleep(0.5)
    assert child.poll() is None
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 0


def test_a_storage_process_that_cannot_start_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where its socket would be
    with pytest.raises(StorageProcessError, match="did not start"):
        StorageProcess({"TALLY_DATABASE_URL": "mysql://nowhere"})
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_a_server_whose_storage_process_dies_stops(tmp_path: Path) -> None:
    """Nothing can be stored any more: tally serve exits instead of answering 500s."""
    server = Server(tmp_path / "d.db", free_port(), {"TALLY_WORKER": "off", "TALLY_DELIVER": "off"})
    server.start()
    try:
        assert server.process is not None
        child = storage_child(server.process.pid)
        socket_dir = next(
            Path(arg).parent
            for arg in Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
            if arg.endswith("storage.sock")
        )
        os.kill(child, signal.SIGKILL)
        assert server.process.wait(timeout=60) != 0  # stopped, and says it failed
        assert not socket_dir.exists()
    finally:
        server.stop()
    assert "the storage process went away; stopping" in server.log()


def storage_child(pid: int) -> int:
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if b"tally.storage.process" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise AssertionError(f"tally serve ({pid}) has no storage process")


def test_errors_that_do_not_pickle_arrive_as_runtime_errors() -> None:
    from tally.storage.process import frames as wire

    class Odd(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(a)  # args do not rebuild it

    err = wire.decode_value(wire.encode_error(Odd(1, 2)))
    assert isinstance(err, RuntimeError) and "Odd" in str(err)
    again = wire.decode_value(wire.encode_error(NotFound("company 'x' was not found")))
    assert isinstance(again, TallyError) and again.message == "company 'x' was not found"


def test_http_processes_of_serve_workers_share_one_writer(tmp_path: Path) -> None:
    """``tally serve --workers 2`` on SQLite: two HTTP processes, one storage
    process; a key sent through both is stored once."""
    server = Server(
        tmp_path / "w.db",
        free_port(),
        {"TALLY_HTTP_WORKERS": "2", "TALLY_WORKER": "off", "TALLY_DELIVER": "off"},
    )
    server.start()
    try:
        assert server.process is not None
        storage_child(server.process.pid)  # exactly one, beside uvicorn's workers
        headers = {"X-Schematic-Api-Key": server.secret_key}

        def send(n: int) -> str:
            # a fresh connection each time: the kernel spreads them over both
            body = {
                "event_type": "track",
                "body": {"event": "api-call", "company": {"id": f"c{n}"}},
                "idempotency_key": "shared" if n % 2 else None,
            }
            answer = httpx.post(f"{server.base_url}/events", json=body, headers=headers)
            assert answer.status_code == 201, answer.text
            return str(answer.json()["data"]["event_id"])

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(send, range(200)))
    finally:
        server.stop()
    assert len({ids[n] for n in range(1, 200, 2)}) == 1
    rows = stored(tmp_path / "w.db")
    assert len(rows) == 100 + 1
    assert {event_id for event_id, _ in rows} == set(ids)
