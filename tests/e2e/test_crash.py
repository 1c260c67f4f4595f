"""Durability under SIGKILL (SPEC §3 rules 4 and 5).

Client threads hammer ``POST /events``, ``POST /event-batch`` and ``POST /batch``
(half of the requests with idempotency keys, some of them deliberate retries
and some racing between threads) while the server is killed with SIGKILL. After
a restart on the same database:

- every event that was acknowledged with a 2xx is stored, exactly once, with
  the type, key and body it was sent with;
- every acknowledgement for one (type, idempotency key) names the same event;
- nothing is stored twice: each event carries a unique marker in its body, and
  no marker (and no pending idempotency key) appears on two rows;
- a request that died with the server can be retried safely: the retry answers
  with the event that was committed before the crash, if there was one.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import Server, running_server

pytestmark = pytest.mark.slow

THREADS = 8
LOAD_SECONDS = 2.0
BATCH_SIZE = 5
ROUNDS = 2  # load, kill, restart, verify — twice on the same database
# A valid event is stored `pending`; the in-process worker may have moved it on.
STORED = ("pending", "processed")


@dataclass
class Submission:
    """One HTTP request a client thread sent (or tried to)."""

    path: str
    payload: dict[str, Any]
    # (type, idempotency key or None, marker) per event, in request order
    events: list[tuple[str, str | None, str]]
    acked: bool = False
    event_ids: list[str] = field(default_factory=list)
    failure: str | None = None

    @property
    def keyed(self) -> bool:
        return all(key is not None for _, key, _ in self.events)


def _body(event_type: str, marker: str) -> dict[str, Any]:
    if event_type == "track":
        return {
            "event": "crash-test",
            "company": {"external_id": "acme"},
            "quantity": 2,
            "traits": {"marker": marker},
        }
    return {
        "keys": {"user_id": f"user-{marker}"},
        "name": "Crash Test",
        "traits": {"marker": marker},
    }


def _event(
    path: str, api_key: str, event_type: str, key: str | None, marker: str
) -> dict[str, Any]:
    if path == "/batch":
        out: dict[str, Any] = {
            "api_key": api_key,
            "type": event_type,
            "body": _body(event_type, marker),
        }
    else:
        out = {"event_type": event_type, "body": _body(event_type, marker)}
    if key is not None:
        out["idempotency_key"] = key
    return out


def _build(path: str, api_key: str, specs: list[tuple[str, str | None, str]]) -> Submission:
    if path == "/events":
        ((event_type, key, marker),) = specs
        payload = _event(path, api_key, event_type, key, marker)
    else:
        payload = {"events": [_event(path, api_key, t, k, m) for t, k, m in specs]}
    return Submission(path, payload, specs)


def _ids_from(sub: Submission, response: httpx.Response) -> list[str]:
    data = response.json()["data"]
    if sub.path == "/events":
        return [data["event_id"]]
    results = data["events"]
    assert len(results) == len(sub.events), (
        f"{sub.path} answered {len(results)} results for {len(sub.events)} events"
    )
    if sub.path == "/batch":
        for result in results:
            assert result.get("status") != "failed", f"a valid event was refused: {result}"
    return [r["event_id"] for r in results]


def send(client: httpx.Client, sub: Submission) -> None:
    try:
        response = client.post(sub.path, json=sub.payload)
    except httpx.HTTPError as err:
        sub.failure = f"{type(err).__name__}: {err}"
        return
    if response.is_success:
        sub.event_ids = _ids_from(sub, response)
        assert all(i.startswith("evt_") for i in sub.event_ids), sub.event_ids
        sub.acked = True
    else:
        sub.failure = f"HTTP {response.status_code}: {response.text[:200]}"


class Loader(threading.Thread):
    """Sends a fixed cycle of request shapes until told to stop."""

    def __init__(self, server: Server, round_no: int, tid: int, stop: threading.Event) -> None:
        super().__init__(name=f"loader-{round_no}-{tid}", daemon=True)
        self.server = server
        self.round_no = round_no
        self.tid = tid
        self.stop_flag = stop
        self.subs: list[Submission] = []
        self.rng = random.Random(round_no * 1000 + tid)
        self.error: BaseException | None = None

    def marker(self, n: int, i: int = 0) -> str:
        return f"r{self.round_no}-t{self.tid}-n{n}-e{i}"

    def specs(self, n: int, count: int, keyed: bool) -> list[tuple[str, str | None, str]]:
        out = []
        for i in range(count):
            marker = self.marker(n, i)
            event_type = "track" if (n + i) % 3 else "identify"
            out.append((event_type, f"key-{marker}" if keyed else None, marker))
        return out

    def next_submission(self, n: int) -> Submission:
        api_key = self.server.secret_key
        slot = n % 8
        if slot == 0:
            # Racing duplicates: every thread sends the same key (and the same
            # body) during the same 50 ms window.
            race = f"race-r{self.round_no}-{int(time.monotonic() * 20)}"
            return _build("/events", api_key, [("track", race, race)])
        if slot == 1:
            return _build("/events", api_key, self.specs(n, 1, keyed=True))
        if slot == 2:
            return _build("/events", api_key, self.specs(n, 1, keyed=False))
        if slot == 3:
            return _build("/event-batch", api_key, self.specs(n, BATCH_SIZE, keyed=True))
        if slot == 4:
            return _build("/event-batch", api_key, self.specs(n, BATCH_SIZE, keyed=False))
        if slot == 5:
            return _build("/batch", api_key, self.specs(n, BATCH_SIZE, keyed=True))
        if slot == 6:
            return _build("/batch", api_key, self.specs(n, BATCH_SIZE, keyed=False))
        # A client retrying an earlier keyed request (acknowledged or not).
        earlier = [s for s in self.subs if s.keyed]
        if not earlier:
            return _build("/events", api_key, self.specs(n, 1, keyed=True))
        original = self.rng.choice(earlier)
        return Submission(original.path, original.payload, original.events)

    def run(self) -> None:
        try:
            with httpx.Client(
                base_url=self.server.base_url,
                timeout=10.0,
                headers={"X-Schematic-Api-Key": self.server.secret_key},
            ) as client:
                n = 0
                while not self.stop_flag.is_set():
                    sub = self.next_submission(n)
                    self.subs.append(sub)
                    send(client, sub)
                    if sub.failure is not None:
                        time.sleep(0.01)  # the server is down: don't spin
                    n += 1
        except BaseException as err:  # surfaced by the test
            self.error = err


def run_load_and_kill(server: Server, round_no: int) -> list[Submission]:
    stop = threading.Event()
    loaders = [Loader(server, round_no, tid, stop) for tid in range(THREADS)]
    for loader in loaders:
        loader.start()
    # at least LOAD_SECONDS, and on a slow (or busy) machine until 150
    # requests were acknowledged: the kill must find a store worth checking
    deadline = time.monotonic() + 30.0
    time.sleep(LOAD_SECONDS)
    while time.monotonic() < deadline:
        if sum(1 for loader in loaders for sub in list(loader.subs) if sub.acked) >= 150:
            break
        time.sleep(0.1)
    server.kill()  # SIGKILL while every loader is mid-stream
    time.sleep(0.3)  # let the in-flight requests fail
    stop.set()
    for loader in loaders:
        loader.join(timeout=30)
        assert not loader.is_alive(), f"{loader.name} did not stop"
        assert loader.error is None, f"{loader.name} crashed: {loader.error!r}"
    return [sub for loader in loaders for sub in loader.subs]


def db_rows(db_path: Path) -> list[tuple[str, str, str, str | None, str, str | None]]:
    conn = sqlite3.connect(str(db_path), timeout=30.0)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute(
            "SELECT id, environment_id, type, idempotency_key, status, "
            "json_extract(body, '$.traits.marker') FROM events"
        ).fetchall()
    finally:
        conn.close()


def _read_back(server: Server, todo: list[tuple[str, tuple[str, str | None, str]]]) -> list[str]:
    """GET /events/{id} for each acknowledged event; the problems found."""
    with httpx.Client(
        base_url=server.base_url, timeout=10.0, headers={"X-Schematic-Api-Key": server.secret_key}
    ) as client:
        problems = [_get_problem(client, event_id, sent) for event_id, sent in todo]
    return [p for p in problems if p is not None]


def _get_problem(
    client: httpx.Client, event_id: str, sent: tuple[str, str | None, str]
) -> str | None:
    """What is wrong with the stored event ``event_id``, or None."""
    response = client.get(f"/events/{event_id}")
    if response.status_code != 200:
        return f"{event_id} is lost: {response.status_code} {response.text}"
    data = response.json()["data"]
    event_type, key, marker = sent
    got = (data["id"], data["type"], data.get("idempotency_key"), data["body"]["traits"]["marker"])
    if got != (event_id, event_type, key, marker):
        return f"{event_id}: sent {sent}, stored {got}"
    if data["status"] not in STORED:
        return f"{event_id} is {data['status']}: {data.get('error_message')}"
    if not data.get("loaded_at", "").endswith("Z"):
        return f"{event_id} has no loaded_at: {data}"
    return None


def check_store(server: Server, subs: list[Submission], context: str, verified: set[str]) -> None:
    """Every acknowledged event stored once; nothing stored twice. Event ids in
    ``verified`` were already read back through the API."""
    expected: dict[str, tuple[str, str | None, str]] = {}
    by_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    keyless_ids: list[str] = []
    for sub in subs:
        if not sub.acked:
            continue
        for (event_type, key, marker), event_id in zip(sub.events, sub.event_ids, strict=True):
            previous = expected.setdefault(event_id, (event_type, key, marker))
            assert previous == (event_type, key, marker), (
                f"{context}: {event_id} acknowledged for two different events: {previous} and "
                f"{(event_type, key, marker)}"
            )
            if key is None:
                keyless_ids.append(event_id)
            else:
                by_key[(event_type, key)].add(event_id)
    assert len(keyless_ids) == len(set(keyless_ids)), f"{context}: two keyless events got one id"
    for ident, ids in by_key.items():
        assert len(ids) == 1, (
            f"{context}: acknowledgements for {ident} name different events: {ids}"
        )

    # Every acknowledged event answers GET /events/{id} with what was sent.
    todo = [(i, e) for i, e in expected.items() if i not in verified]
    with ThreadPoolExecutor(max_workers=4) as pool:
        chunks = pool.map(lambda part: _read_back(server, part), [todo[i::4] for i in range(4)])
        problems = [p for chunk in chunks for p in chunk]
    assert not problems, f"{context}: {len(problems)} acknowledged events are wrong: {problems[:5]}"
    verified.update(i for i, _ in todo)

    # And straight from the database file.
    rows = db_rows(server.db_path)
    stored = {row[0]: row for row in rows}
    assert len(stored) == len(rows)
    for event_id, (event_type, key, marker) in expected.items():
        row = stored.get(event_id)
        assert row is not None, f"{context}: acknowledged event {event_id} is not in the database"
        assert (row[2], row[3], row[5]) == (event_type, key, marker)
        assert row[4] in STORED, f"{context}: {event_id} is {row[4]}"

    markers = Counter(row[5] for row in rows)
    twice = {m: c for m, c in markers.items() if c > 1}
    assert not twice, f"{context}: events stored more than once (marker: count): {twice}"
    assert None not in markers, f"{context}: a stored event has no marker"

    keys = Counter(
        (row[1], row[2], row[3]) for row in rows if row[3] is not None and row[4] != "failed"
    )
    dup_keys = {k: c for k, c in keys.items() if c > 1}
    assert not dup_keys, f"{context}: idempotency keys stored on several kept events: {dup_keys}"
    assert all(row[4] in STORED for row in rows), f"{context}: {Counter(row[4] for row in rows)}"

    sent_markers = {marker for sub in subs for _, _, marker in sub.events}
    assert set(markers) <= sent_markers, (
        f"{context}: stored events nobody sent: {set(markers) - sent_markers}"
    )
    acked_markers = {marker for _, _, marker in expected.values()}
    # Each acknowledged event is one row; unacknowledged ones may or may not be there.
    assert len(expected) == len(acked_markers)
    assert len(acked_markers) <= len(rows) <= len(sent_markers)
    assert sum(markers[m] for m in acked_markers) == len(acked_markers)


def retry_after_restart(server: Server, subs: list[Submission], context: str) -> list[Submission]:
    """Resend every keyed request (acknowledged or not) as a client whose
    request died with the server would: each must succeed and name the event
    that was committed first, if there was one."""
    rows = db_rows(server.db_path)
    committed = {(row[2], row[3]): row[0] for row in rows if row[3] is not None}
    seen: set[int] = set()
    retries: list[Submission] = []
    with httpx.Client(
        base_url=server.base_url, timeout=10.0, headers={"X-Schematic-Api-Key": server.secret_key}
    ) as client:
        for sub in subs:
            if not sub.keyed or id(sub.payload) in seen:
                continue
            seen.add(id(sub.payload))
            retry = Submission(sub.path, sub.payload, sub.events)
            send(client, retry)
            assert retry.acked, (
                f"{context}: retry of a keyed {sub.path} request failed: {retry.failure}"
            )
            for (event_type, key, _), event_id in zip(retry.events, retry.event_ids, strict=True):
                assert key is not None
                first = committed.get((event_type, key))
                if first is not None:
                    assert event_id == first, (
                        f"{context}: retry of ({event_type}, {key}) answered {event_id}, but "
                        f"{first} was committed before the crash"
                    )
            retries.append(retry)
    return retries


def test_acknowledged_events_survive_sigkill_exactly_once(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        history: list[Submission] = []
        verified: set[str] = set()
        for round_no in range(ROUNDS):
            context = f"round {round_no}"
            subs = run_load_and_kill(server, round_no)
            acked = [s for s in subs if s.acked]
            failed = [s for s in subs if not s.acked]
            assert len(acked) >= 100, (
                f"{context}: only {len(acked)} requests were acknowledged before the kill:\n"
                f"{[s.failure for s in failed[:5]]}\n{server.log()[-3000:]}"
            )
            assert failed, f"{context}: the kill did not interrupt the load"
            for sub in failed:
                # Only the kill may fail a request: any HTTP answer but a 2xx is a refusal
                # (4xx) or a server error (5xx) of a valid request.
                assert sub.failure is not None
                assert not sub.failure.startswith("HTTP"), f"{context}: {sub.failure}"
            assert {s.path for s in acked} == {"/events", "/event-batch", "/batch"}

            server.start()  # same database, same port
            history.extend(subs)
            check_store(server, history, context, verified)
            history.extend(retry_after_restart(server, history, context))
            check_store(server, history, f"{context}, after retries", verified)
