"""Scale-out under faults on PostgreSQL (issue 4; SPEC §3 rules 4-5, §4).

Two ``tally serve`` processes (their in-process worker off) and three
``tally worker`` processes share one PostgreSQL schema. Client threads send
50,000 track events over both API processes through ``POST /events``,
``POST /event-batch`` (50 per request) and ``POST /batch`` (100 per request),
for several companies and users, with varied quantities (a few negative
corrections) and some trusted client clocks spread over the past month. About
10% of the events reuse an idempotency key that was already sent, to the
*other* API process; some of those pairs are sent to both processes at the same
moment, and a few batches hold one key twice.

Mid-run one API process and one worker are killed with SIGKILL and restarted
after a short pause on the same port and URL. A request to the dead API process
fails and is retried once on the other one (only when every event in it has an
idempotency key: a retry without one may store the event twice, by design).

When the clients are done and no event is pending any more, straight from
PostgreSQL:

- every event id a 2xx named exists, once, holding what was sent for it;
- no sent event (each carries a unique marker) is stored twice, and no two kept
  events share an (environment, type, idempotency key);
- every response for one idempotency key — the first, the duplicates sent to the
  other process, the racing pairs, the retries — names the kept event;
- every event is ``processed`` (none ``pending``, none ``failed``);
- every usage counter equals a recount of the processed track events (quantity
  and count per company, subtype, period and period start), no counter exists
  without events, and each company's ``all_time`` quantity equals the sum of the
  quantities sent in its stored events.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tally.clock import to_micros
from tally.metering.periods import period_starts_us
from tests.support.server import create_key, free_port, tally_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TOTAL_EVENTS = 50_000
THREADS = 8
EVENT_BATCH = 50  # events per POST /event-batch
CAPTURE_BATCH = 100  # events per POST /batch (its limit)
# Request kinds, weighted so that /events carries about 10% of the events (a
# fifth of them as racing pairs) and each batch route about 45%.
KINDS = ("single", "race", "event-batch", "batch")
KIND_WEIGHTS = (4000, 500, 450, 225)
KEYED_SHARE = 0.8  # requests whose new events carry an idempotency key
DUP_SLOT_SHARE = 0.095  # a slot that resends a key already sent (+ the racing pairs: ~10%)
IN_BATCH_DUP_SHARE = 0.2  # batches that hold one of their keys twice
TRUSTED_SHARE = 0.2  # events with trusted_client_clock and a sent_at in the past month
KILL_AT = 0.4  # share of the events sent when the kill happens
PAUSE_SECONDS = 0.5  # between the kill and the restart
DRAIN_SECONDS = 120.0
COMPANIES = tuple(f"c{i}" for i in range(8))
ANCHORED = "c0"
ANCHOR = "2026-01-31T10:30:00Z"
USERS = 60
SUBTYPES = ("api-call", "query_run", "export")
QUANTITIES = (1, 1, 1, 1, 2, 3, 10, 100, -1, -5)
NOW = datetime.now(UTC)


# -- processes -----------------------------------------------------------------


class Proc:
    """One tally process (``serve`` or ``worker``) that can be killed and restarted."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        assert self.process is not None and self.port is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()[-3000:]}")
            try:
                response = httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1.0)
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer /health within {timeout}s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no rollback but PostgreSQL's own."""
        assert self.process is not None and self.alive(), f"{self.name} is not running"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        assert self.process.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def api_process(name: str, url: str, env: dict[str, str], tmp: Path) -> Proc:
    port = free_port()
    proc = Proc(
        name,
        tally_command("serve", "--host", "127.0.0.1", "--port", str(port), "--database-url", url),
        {**env, "TALLY_WORKER": "off"},
        tmp / f"{name}.log",
    )
    proc.port = port
    return proc


def worker_process(name: str, url: str, env: dict[str, str], tmp: Path) -> Proc:
    return Proc(name, tally_command("worker", "--database-url", url), env, tmp / f"{name}.log")


# -- what the clients send ----------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One logical event; a duplicate submission resends the same Spec."""

    marker: str
    key: str | None
    company: str
    user: str
    subtype: str
    quantity: int
    sent_at: str | None  # trusted_client_clock when set

    def body(self) -> dict[str, Any]:
        return {
            "event": self.subtype,
            "company": {"id": self.company},
            "user": {"id": self.user},
            "quantity": self.quantity,
            "traits": {"marker": self.marker},
        }

    def envelope(self, path: str, api_key: str) -> dict[str, Any]:
        if path == "/batch":
            out: dict[str, Any] = {"api_key": api_key, "type": "track", "body": self.body()}
        else:
            out = {"event_type": "track", "body": self.body()}
        if self.key is not None:
            out["idempotency_key"] = self.key
        if self.sent_at is not None:
            out["sent_at"] = self.sent_at
            out["trusted_client_clock"] = True
        return out


@dataclass
class Submission:
    """One request (and its one retry on the other API process, if any)."""

    path: str
    specs: list[Spec]
    dup: list[bool]  # per event: its key was already sent (or sent at the same time)
    api: int  # the API process it went to first
    event_ids: list[str] | None = None  # from the 2xx, per event
    duplicate_flags: list[bool] | None = None  # /batch only
    answered_by: int | None = None
    # (transport | http | refused, what happened), per failed attempt
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def retryable(self) -> bool:
        return all(spec.key is not None for spec in self.specs)

    def payload(self, api_key: str) -> dict[str, Any]:
        if self.path == "/events":
            (spec,) = self.specs
            return spec.envelope(self.path, api_key)
        return {"events": [spec.envelope(self.path, api_key) for spec in self.specs]}


def _post(client: httpx.Client, sub: Submission, api_key: str, api: int) -> bool:
    """One attempt; records the outcome. True on a 2xx."""
    try:
        response = client.post(sub.path, json=sub.payload(api_key))
    except httpx.TransportError as err:
        sub.failures.append(("transport", f"api{api} {type(err).__name__}: {err}"))
        return False
    if not response.is_success:
        sub.failures.append(("http", f"api{api} {response.status_code}: {response.text[:300]}"))
        return False
    data = response.json()["data"]
    if sub.path == "/events":
        sub.event_ids = [data["event_id"]]
    else:
        results = data["events"]
        if len(results) != len(sub.specs):
            sub.failures.append(
                ("http", f"api{api} {sub.path}: {len(results)} results for {len(sub.specs)} events")
            )
            return False
        sub.event_ids = [r["event_id"] for r in results]
        if sub.path == "/batch":
            refused = [r for r in results if r.get("status") == "failed"]
            if refused:
                sub.failures.append(("refused", f"api{api} /batch refused: {refused[:3]}"))
            sub.duplicate_flags = [bool(r.get("duplicate")) for r in results]
    sub.answered_by = api
    return True


class Load:
    """The shared state of the client threads."""

    def __init__(self, api_key: str, ports: list[int]) -> None:
        self.api_key = api_key
        self.ports = ports
        self.lock = threading.Lock()
        self.budget = TOTAL_EVENTS
        self.sent = 0  # events whose request has been answered (or has failed)
        self.pool: list[list[Spec]] = [[], []]  # keyed specs sent to API 0 / API 1
        self.subs: list[Submission] = []
        self.errors: list[BaseException] = []

    def reserve(self, n: int) -> int:
        with self.lock:
            n = min(n, self.budget)
            self.budget -= n
            return n

    def done(self, subs: list[Submission]) -> None:
        with self.lock:
            self.subs.extend(subs)
            for sub in subs:
                self.sent += len(sub.specs)
                for spec, dup in zip(sub.specs, sub.dup, strict=True):
                    if spec.key is not None and not dup:
                        self.pool[sub.api].append(spec)

    def pick_dup(self, rng: random.Random, api: int) -> Spec | None:
        """A keyed event already sent to the other API process."""
        with self.lock:
            pool = self.pool[1 - api]
            return rng.choice(pool) if pool else None

    def client(self, api: int) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.ports[api]}",
            timeout=30.0,
            headers={"X-Schematic-Api-Key": self.api_key},
        )


class Client(threading.Thread):
    def __init__(self, load: Load, tid: int) -> None:
        super().__init__(name=f"client-{tid}", daemon=True)
        self.load = load
        self.tid = tid
        self.rng = random.Random(4_000 + tid)
        self.n = 0

    def new_spec(self, keyed: bool) -> Spec:
        self.n += 1
        marker = f"t{self.tid}-n{self.n}"
        rng = self.rng
        sent_at = None
        if rng.random() < TRUSTED_SHARE:
            at = NOW - timedelta(seconds=rng.randrange(60, 30 * 86_400))
            sent_at = at.isoformat().replace("+00:00", "Z")
        return Spec(
            marker=marker,
            key=f"key-{marker}" if keyed else None,
            company=rng.choice(COMPANIES),
            user=f"u{rng.randrange(USERS)}",
            subtype=rng.choice(SUBTYPES),
            quantity=rng.choice(QUANTITIES),
            sent_at=sent_at,
        )

    def build(self, path: str, size: int, api: int) -> Submission:
        keyed = self.rng.random() < KEYED_SHARE
        specs: list[Spec] = []
        dup: list[bool] = []
        for _ in range(size):
            old = self.load.pick_dup(self.rng, api) if self.rng.random() < DUP_SLOT_SHARE else None
            specs.append(old or self.new_spec(keyed))
            dup.append(old is not None)
        if size > 1 and keyed and self.rng.random() < IN_BATCH_DUP_SHARE:
            # one key twice in the same request (the last slot repeats an earlier one)
            specs[-1] = specs[self.rng.randrange(size - 1)]
            dup[-1] = True
        return Submission(path, specs, dup, api)

    def send(self, clients: list[httpx.Client], sub: Submission) -> None:
        if _post(clients[sub.api], sub, self.load.api_key, sub.api):
            return
        if sub.retryable and all(kind == "transport" for kind, _ in sub.failures):
            _post(clients[1 - sub.api], sub, self.load.api_key, 1 - sub.api)

    def run(self) -> None:
        try:
            with (
                self.load.client(0) as c0,
                self.load.client(1) as c1,
                self.load.client(0) as r0,
                self.load.client(1) as r1,
                ThreadPoolExecutor(max_workers=1) as helper,
            ):
                clients, racers = [c0, c1], [r0, r1]
                while True:
                    kind = self.rng.choices(KINDS, KIND_WEIGHTS)[0]
                    size = {"single": 1, "race": 2, "event-batch": EVENT_BATCH}.get(
                        kind, CAPTURE_BATCH
                    )
                    size = self.load.reserve(size)
                    if size == 0:
                        return
                    api = self.rng.randrange(2)
                    if kind == "race" and size == 2:
                        # the same new keyed event to both API processes at once
                        spec = self.new_spec(keyed=True)
                        first = Submission("/events", [spec], [False], api)
                        second = Submission("/events", [spec], [True], 1 - api)
                        other = helper.submit(self.send, racers, second)
                        self.send(clients, first)
                        other.result()
                        self.load.done([first, second])
                        continue
                    path = (
                        "/events"
                        if size == 1 or kind in ("single", "race")
                        else ("/event-batch" if kind == "event-batch" else "/batch")
                    )
                    sub = self.build(path, size, api)
                    self.send(clients, sub)
                    self.load.done([sub])
        except BaseException as err:  # surfaced by the test
            self.load.errors.append(err)


# -- PostgreSQL, read directly ---------------------------------------------------------


def pending_count(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE status = 'pending'").fetchone()
        assert row is not None
        return int(row[0])


@dataclass
class Stored:
    # id, env, type, key, status, marker, quantity, captured_at, company_id, subtype, error
    events: list[tuple[Any, ...]]
    company_ids: dict[str, str]  # company_id → external id
    anchors: dict[str, int | None]
    counters: dict[tuple[str, str, str, str, int], tuple[int, int]]


def read_store(url: str) -> Stored:
    with psycopg.connect(url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # one snapshot
        events = conn.execute(
            "SELECT id, environment_id, type, idempotency_key, status, "
            "body::jsonb #>> '{traits,marker}', quantity, captured_at, company_id, subtype, "
            "error_message FROM events"
        ).fetchall()
        company_ids = dict(
            conn.execute("SELECT entity_id, value FROM company_keys WHERE key = 'id'").fetchall()
        )
        anchors = dict(conn.execute("SELECT id, billing_anchor FROM companies").fetchall())
        counters = {
            (r[0], r[1], r[2], r[3], int(r[4])): (int(r[5]), int(r[6]))
            for r in conn.execute(
                "SELECT environment_id, company_id, subtype, period, period_start, quantity, "
                "events FROM usage_counters"
            ).fetchall()
        }
    return Stored(events, company_ids, anchors, counters)


# -- the test ----------------------------------------------------------------------


def _logs(procs: list[Proc]) -> str:
    return "\n".join(f"--- {p.name} ---\n{p.log()[-2000:]}" for p in procs)


def test_two_apis_three_workers_survive_sigkill(postgres_url: str, tmp_path: Path) -> None:
    url = postgres_url
    env = {**os.environ, "TALLY_KEY_CACHE_SECONDS": "0"}
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    migrated = subprocess.run(
        tally_command("migrate", "--database-url", url),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    api_key = create_key(url, "production", env=env)
    assert api_key.startswith("sch_"), api_key

    apis = [api_process(f"api{i}", url, env, tmp_path) for i in range(2)]
    workers = [worker_process(f"worker{i}", url, env, tmp_path) for i in range(3)]
    procs = apis + workers
    try:
        for proc in procs:
            proc.start()
        for api in apis:
            api.wait_healthy()

        # one company with a billing anchor (billing-cycle counters besides the month's)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{apis[0].port}",
            timeout=30.0,
            headers={"X-Schematic-Api-Key": api_key},
        ) as http:
            created = http.post("/companies", json={"keys": {"id": ANCHORED}, "name": "Anchored"})
            assert created.status_code in (200, 201), created.text
        anchored = subprocess.run(
            tally_command(
                "companies",
                "set-billing-anchor",
                "--company",
                f"id={ANCHORED}",
                "--anchor",
                ANCHOR,
                "--database-url",
                url,
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert anchored.returncode == 0, anchored.stdout + anchored.stderr
        timings["setup"] = time.monotonic() - t0

        # -- the load, with a kill in the middle ------------------------------------
        t1 = time.monotonic()
        load = Load(api_key, [p.port for p in apis if p.port is not None])
        clients = [Client(load, tid) for tid in range(THREADS)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 120
        while load.sent < KILL_AT * TOTAL_EVENTS:
            assert time.monotonic() < deadline, f"only {load.sent} events sent in 120 s"
            assert not load.errors, f"a client crashed: {load.errors[0]!r}"
            time.sleep(0.01)
        pending_at_kill = pending_count(url)
        sent_at_kill = load.sent
        t_kill = time.monotonic()
        timings["until_kill"] = t_kill - t1
        apis[1].kill()
        workers[0].kill()
        time.sleep(PAUSE_SECONDS)
        workers[0].start()
        apis[1].start()
        apis[1].wait_healthy()
        timings["kill_to_healthy"] = time.monotonic() - t_kill
        for client in clients:
            client.join(timeout=150)
            assert not client.is_alive(), f"{client.name} did not finish"
        assert not load.errors, f"a client crashed: {load.errors[0]!r}"
        timings["load"] = time.monotonic() - t1

        # -- drain ---------------------------------------------------------------
        t2 = time.monotonic()
        deadline = time.monotonic() + DRAIN_SECONDS
        while (pending := pending_count(url)) > 0:
            assert time.monotonic() < deadline, (
                f"{pending} events still pending after {DRAIN_SECONDS}s\n{_logs(workers)}"
            )
            time.sleep(0.1)
        timings["drain"] = time.monotonic() - t2
        for proc in procs:
            assert proc.alive(), f"{proc.name} died during the run:\n{proc.log()[-3000:]}"
    finally:
        for proc in procs:
            proc.stop()

    t3 = time.monotonic()
    subs = load.subs
    logs = _logs(procs)
    submitted = sum(len(s.specs) for s in subs)
    assert submitted == TOTAL_EVENTS
    dup_events = sum(sum(s.dup) for s in subs)
    assert 0.08 * TOTAL_EVENTS <= dup_events <= 0.12 * TOTAL_EVENTS, dup_events
    by_path = Counter(s.path for s in subs)
    assert set(by_path) == {"/events", "/event-batch", "/batch"}, by_path

    # the kill interrupted the load; nothing but the kill failed a request
    failed = [s for s in subs if s.failures]
    http_failures = [f for s in subs for kind, f in s.failures if kind != "transport"]
    assert not http_failures, (
        f"{len(http_failures)} requests were refused or errored: {http_failures[:5]}\n{logs}"
    )
    assert failed, "the kill interrupted no request"
    assert pending_at_kill > 0, "the workers had nothing to do when one was killed"
    acked = [s for s in subs if s.event_ids is not None]
    assert len(acked) >= 0.9 * len(subs), f"only {len(acked)} of {len(subs)} requests succeeded"
    retried_ok = sum(1 for s in acked if s.failures)

    stored = read_store(url)
    rows = stored.events
    by_id = {row[0]: row for row in rows}
    assert len(by_id) == len(rows)

    # nothing pending, nothing failed
    statuses = Counter(row[4] for row in rows)
    assert statuses == {"processed": len(rows)}, (
        f"statuses {dict(statuses)}; failures: "
        f"{[row[10] for row in rows if row[4] == 'failed'][:3]}"
    )

    # every event named by a 2xx is stored, holding what was sent for it
    named: dict[str, Spec] = {}
    for sub in acked:
        assert sub.event_ids is not None
        for spec, event_id in zip(sub.specs, sub.event_ids, strict=True):
            previous = named.setdefault(event_id, spec)
            assert previous.marker == spec.marker, (
                f"{event_id} was named for two different events: {previous} and {spec}"
            )
    lost = [event_id for event_id in named if event_id not in by_id]
    assert not lost, f"{len(lost)} acknowledged events are not stored, e.g. {lost[:5]}"
    for event_id, spec in named.items():
        row = by_id[event_id]
        assert row[5] == spec.marker, f"{event_id}: sent {spec.marker}, stored {row[5]}"
        assert (row[2], row[3], row[6], row[9]) == ("track", spec.key, spec.quantity, spec.subtype)
        assert stored.company_ids.get(row[8]) == spec.company, (event_id, row[8], spec.company)
        if spec.sent_at is not None:
            sent = datetime.fromisoformat(spec.sent_at.replace("Z", "+00:00"))
            assert row[7] == to_micros(sent), f"{event_id}: captured_at is not sent_at"

    # no sent event is stored twice, nothing stored that nobody sent
    specs_by_marker = {spec.marker: spec for s in subs for spec in s.specs}
    markers = Counter(row[5] for row in rows)
    twice = {m: c for m, c in markers.items() if c > 1}
    assert not twice, f"{len(twice)} events are stored more than once: {list(twice.items())[:5]}"
    unknown = set(markers) - set(specs_by_marker)
    assert not unknown, f"stored events nobody sent: {list(unknown)[:5]}"
    acked_markers = {spec.marker for spec in named.values()}
    assert len(acked_markers) == len(named)
    assert len(acked_markers) <= len(rows) <= len(specs_by_marker)

    # idempotency: one kept event per key; every answer for a key names it
    kept: dict[tuple[str, str, str], str] = {}
    shared = []
    for row in rows:
        if row[3] is None or row[4] == "failed":
            continue
        ident = (row[1], row[2], row[3])
        if ident in kept:
            shared.append((ident, kept[ident], row[0]))
        kept[ident] = row[0]
    assert not shared, f"{len(shared)} idempotency keys are held by two kept events: {shared[:5]}"
    env_id = rows[0][1]
    answers: dict[str, set[str]] = defaultdict(set)
    wrong_dups = []
    for sub in acked:
        assert sub.event_ids is not None
        for spec, event_id, dup in zip(sub.specs, sub.event_ids, sub.dup, strict=True):
            if spec.key is None:
                continue
            answers[spec.key].add(event_id)
            kept_id = kept.get((env_id, "track", spec.key))
            if dup and event_id != kept_id:
                wrong_dups.append((sub.path, spec.key, event_id, kept_id))
    assert not wrong_dups, (
        f"{len(wrong_dups)} duplicate submissions named another event than the kept one "
        f"(path, key, answered, kept): {wrong_dups[:5]}"
    )
    split = {k: ids for k, ids in answers.items() if len(ids) > 1}
    assert not split, (
        f"{len(split)} keys were answered with several event ids: {list(split.items())[:5]}"
    )
    for key, ids in answers.items():
        (event_id,) = ids
        assert kept.get((env_id, "track", key)) == event_id, (key, event_id)
    # /batch says which answer stored the event: at most one per event
    firsts = Counter(
        event_id
        for sub in acked
        if sub.duplicate_flags is not None and sub.event_ids is not None
        for event_id, flag in zip(sub.event_ids, sub.duplicate_flags, strict=True)
        if not flag
    )
    assert all(c == 1 for c in firsts.values()), [e for e, c in firsts.items() if c > 1][:5]

    # counters equal a recount of the processed track events
    expected: dict[tuple[str, str, str, str, int], list[int]] = {}
    per_company: dict[str, int] = defaultdict(int)
    sent_per_company: dict[str, int] = defaultdict(int)
    for row in rows:
        event_id, env, kind, _, status, marker, qty, captured, company_id, subtype, _ = row
        if status != "processed" or kind != "track":
            continue
        assert company_id is not None, f"processed track event {event_id} has no company"
        for period, start in period_starts_us(captured, stored.anchors[company_id]):
            total = expected.setdefault((env, company_id, subtype, period, start), [0, 0])
            total[0] += qty
            total[1] += 1
        per_company[company_id] += qty
        sent_per_company[specs_by_marker[marker].company] += specs_by_marker[marker].quantity
    counters = stored.counters
    missing = sorted(set(expected) - set(counters))
    extra = sorted(set(counters) - set(expected))
    wrong = {
        k: (counters[k], tuple(v))
        for k, v in expected.items()
        if k in counters and counters[k] != tuple(v)
    }
    assert not missing, f"{len(missing)} counters missing, e.g. {missing[:3]}"
    assert not extra, f"{len(extra)} counters without processed events, e.g. {extra[:3]}"
    assert not wrong, (
        f"{len(wrong)} counters differ from a recount (stored, recount), e.g. "
        f"{list(wrong.items())[:3]}"
    )
    all_time: dict[str, int] = defaultdict(int)
    for (_, company_id, _, period, _), (qty, _) in counters.items():
        if period == "all_time":
            all_time[company_id] += qty
    assert dict(all_time) == dict(per_company)
    assert {stored.company_ids[c]: q for c, q in all_time.items()} == dict(sent_per_company)
    assert sorted(stored.company_ids.values()) == sorted(COMPANIES)
    assert any(k[3] == "billing" for k in counters), "the anchored company has no billing counter"
    timings["verify"] = time.monotonic() - t3
    errors = Counter(f.split(":")[0] for s in subs for _, f in s.failures)
    print(
        f"\n{len(subs)} requests {dict(by_path)}; {submitted} events sent ({dup_events} reusing "
        f"a key); {len(named)} acknowledged; {len(rows)} stored; {len(failed)} requests failed "
        f"a first attempt ({retried_ok} then succeeded on the other API; {dict(errors)}); "
        f"killed at "
        f"{sent_at_kill} sent, {pending_at_kill} pending; timings "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
    )
