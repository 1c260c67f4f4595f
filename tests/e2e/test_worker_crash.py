"""A worker killed with SIGKILL in the middle of a batch loses nothing and
counts nothing twice (SPEC §4: the counter update and the status change
commit together).

A database is filled with tens of thousands of pending track events for
several companies (one with a billing anchor) through ``SqliteStorage.ingest``.
``tally worker`` runs on it as a separate process with batches large enough to
take a noticeable time, and is killed with SIGKILL while events are still
pending. The worker has nothing to do but claim and process batches while any
event is pending, so the kill lands inside a batch. This happens twice; then
``tally worker --burst`` finishes the work. After every kill and at the end:

- the events processed so far are whole batches (a batch is all or nothing);
- every usage counter equals a recount of the processed events, and no counter
  exists without events;
- ``--burst`` processes exactly the events that were still pending;
- at the end every event is processed, and each company's ``all_time``
  counter equals the sum of the quantities that were sent for it (computed
  from the generated events, not from the database).
"""

from __future__ import annotations

import asyncio
import calendar
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from tally.clock import from_micros, to_micros
from tally.keys import create_key
from tally.model import NewEvent
from tally.pipeline.processing import PIPELINE
from tally.storage.base_entities import EntityUpsert
from tally.storage.sqlite.storage import SqliteStorage
from tests.support.usage import assert_counters_match, read_counters

pytestmark = pytest.mark.slow

TOTAL = 48_000
INGEST_CHUNK = 5_000
BATCH = 6_000  # events per worker transaction (about 0.2 s each)
KILLS = 2
COMPANIES = [f"c{i}" for i in range(6)]
ANCHORED = "c0"  # billing anchor on the 31st at 10:30 UTC
ANCHOR = datetime(2026, 1, 31, 10, 30, tzinfo=UTC)
SUBTYPES = ("api-call", "query_run", "export")
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Sent:
    company: str
    subtype: str
    quantity: int


def _events(environment_id: str, api_key_id: str) -> tuple[list[NewEvent], list[Sent]]:
    rng = random.Random(20260315)
    received = to_micros(NOW)
    events: list[NewEvent] = []
    sent: list[Sent] = []
    for n in range(TOTAL):
        company = rng.choice(COMPANIES)
        subtype = rng.choice(SUBTYPES)
        quantity = rng.choice((1, 1, 1, 2, 5, 100, -1, -3))
        body = {
            "event": subtype,
            "company": {"id": company},
            "user": {"id": f"u{rng.randrange(50)}"},
            "quantity": quantity,
            "traits": {"n": n},
        }
        # trusted clocks spread the effective times over a month of days,
        # weeks and billing cycles; a few backfills reach further back
        roll = rng.random()
        if roll < 0.6:
            captured, trusted, backfill = received, False, False
        elif roll < 0.95:
            captured = received - rng.randrange(0, 34 * 86_400 * 1_000_000)
            trusted, backfill = True, False
        else:
            captured = received - rng.randrange(0, 365 * 86_400 * 1_000_000)
            trusted, backfill = True, True
        events.append(
            NewEvent(
                environment_id=environment_id,
                type="track",
                status="pending",
                body=msgspec.json.encode(body).decode(),
                quantity=quantity,
                captured_at=captured,
                received_at=received,
                subtype=subtype,
                sent_at=captured if trusted else None,
                trusted_client_clock=trusted,
                backfill=backfill,
                api_key_id=api_key_id,
            )
        )
        sent.append(Sent(company, subtype, quantity))
    return events, sent


async def _fill(path: str) -> list[Sent]:
    storage = SqliteStorage(path, synchronous="NORMAL", processing=PIPELINE)
    await storage.start()
    try:
        key, _, _ = await create_key(storage, "development")
        env = key.environment_id
        await storage.upsert_company(env, EntityUpsert(keys={"id": ANCHORED}, name="Anchored"))
        await storage.set_billing_anchor(env, {"id": ANCHORED}, to_micros(ANCHOR))
        events, sent = _events(env, key.id)
        for start in range(0, len(events), INGEST_CHUNK):
            results = await storage.ingest(events[start : start + INGEST_CHUNK])
            assert not any(r.duplicate for r in results)
    finally:
        await storage.close()
    return sent


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _counts(path: str) -> dict[str, int]:
    conn = _connect(path)
    try:
        return dict(conn.execute("SELECT status, COUNT(*) FROM events GROUP BY status").fetchall())
    finally:
        conn.close()


def _check_counters(path: str) -> None:
    """Every counter equals a recount of the processed track events."""
    conn = _connect(path)
    try:
        conn.execute("BEGIN")  # one snapshot for both reads
        stored, expected, gone = read_counters(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert not gone, f"events name companies that do not exist: {sorted(gone)[:3]}"
    assert_counters_match(stored, expected)


def _worker(database_url: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TALLY_WORKER_BATCH_SIZE": str(BATCH)}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tally", "worker", "--database-url", database_url, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _kill_mid_batch(path: str, database_url: str, log: Path, processed_before: int) -> int:
    """Start a worker, wait until it has committed at least one batch and
    events are still pending, SIGKILL it; returns the processed count after
    the kill."""
    proc = _worker(database_url, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the worker exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, "the worker committed no batch in 120 s"
            processed = _counts(path).get("processed", 0)
            if processed > processed_before:
                break
            time.sleep(0.005)
        # the next batch is under way now: let it run a little, then kill it
        time.sleep(random.uniform(0.03, 0.2))
        counts = _counts(path)
        assert counts.get("pending", 0) > 0, (
            f"the worker finished before it could be killed ({counts}); "
            "raise TOTAL or BATCH so that a batch takes longer"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    return _counts(path).get("processed", 0)


def test_sigkill_mid_batch_neither_loses_nor_double_counts(tmp_path: Path) -> None:
    path = str(tmp_path / "tally.db")
    database_url = f"sqlite:///{path}"
    log = tmp_path / "worker.log"
    sent = asyncio.run(_fill(path))
    assert _counts(path) == {"pending": TOTAL}

    processed = 0
    for _ in range(KILLS):
        after = _kill_mid_batch(path, database_url, log, processed)
        counts = _counts(path)
        assert counts.get("failed", 0) == 0, counts
        assert 0 < after < TOTAL, counts
        assert after % BATCH == 0, (
            f"{after} events are processed after the kill: not a whole number of "
            f"{BATCH}-event batches, so a batch was committed in part"
        )
        assert counts["pending"] == TOTAL - after
        _check_counters(path)
        processed = after

    burst = subprocess.run(
        [sys.executable, "-m", "tally", "worker", "--burst", "--database-url", database_url],
        capture_output=True,
        text=True,
        env={**os.environ, "TALLY_WORKER_BATCH_SIZE": str(BATCH)},
        timeout=240,
        check=False,
    )
    assert burst.returncode == 0, burst.stdout + burst.stderr
    assert f"processed {TOTAL - processed} events" in burst.stdout, (
        f"--burst should process exactly the {TOTAL - processed} events left pending: "
        f"{burst.stdout!r}"
    )

    assert _counts(path) == {"processed": TOTAL}
    _check_counters(path)

    # each company's all_time counter equals the quantities that were sent for it
    want_qty: dict[tuple[str, str], int] = defaultdict(int)
    want_events: dict[tuple[str, str], int] = defaultdict(int)
    for s in sent:
        want_qty[(s.company, s.subtype)] += s.quantity
        want_events[(s.company, s.subtype)] += 1
    conn = _connect(path)
    try:
        company_of = dict(
            conn.execute("SELECT entity_id, value FROM company_keys WHERE key = 'id'").fetchall()
        )
        assert sorted(company_of.values()) == sorted(COMPANIES)
        got = {
            (company_of[company_id], subtype): (qty, count)
            for company_id, subtype, qty, count in conn.execute(
                "SELECT company_id, subtype, quantity, events FROM usage_counters "
                "WHERE period = 'all_time'"
            )
        }
        assert got == {k: (want_qty[k], want_events[k]) for k in want_qty}
        per_company = dict(
            conn.execute(
                "SELECT v.value, SUM(e.quantity) FROM events e JOIN company_keys v "
                "ON v.entity_id = e.company_id AND v.key = 'id' GROUP BY v.value"
            ).fetchall()
        )
        for company in COMPANIES:
            assert per_company[company] == sum(q for (c, _), q in want_qty.items() if c == company)
        # the anchored company has billing-cycle counters, the others none
        billing = dict(
            conn.execute(
                "SELECT v.value, COUNT(*) FROM usage_counters u JOIN company_keys v "
                "ON v.entity_id = u.company_id AND v.key = 'id' WHERE u.period = 'billing' "
                "GROUP BY v.value"
            ).fetchall()
        )
        assert set(billing) == {ANCHORED}
        assert billing[ANCHORED] >= 2  # the events span more than one cycle
        users = conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]
        assert users == 50
        # billing cycles start on the anchor day (capped at the month's end) and time
        for (start,) in conn.execute(
            "SELECT DISTINCT period_start FROM usage_counters WHERE period = 'billing'"
        ):
            at = from_micros(start)
            assert (at.hour, at.minute, at.second) == (10, 30, 0), at
            assert at.day == min(31, calendar.monthrange(at.year, at.month)[1]), at
    finally:
        conn.close()
