"""``tally import`` against a real ``tally serve`` (issue 13, part 1).

Each test runs the real command (``python -m tally import``) as a process and
reads what the server stored from its SQLite database: the events, their
idempotency keys and quantities. "Exactly once" is checked as: every good
line of the file is one stored event (its own key, or the key derived from
the file and its line), no key is stored twice, and the quantities add up to
the file's total.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tally.client.events import derived_key
from tally.client.source import file_identity
from tally.clock import to_micros
from tally.ingest import rules
from tally.ingest.timeparse import parse_timestamp
from tests.support.server import Server, running_server

pytestmark = pytest.mark.slow

NOW = datetime.now(UTC)


def command(server: Server, *args: str) -> list[str]:
    return [sys.executable, "-m", "tally", "import", "--url", server.base_url, *args]


def run_import(
    server: Server, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TALLY_API_KEY": server.secret_key}
    return subprocess.run(
        command(server, *args), capture_output=True, text=True, env=env, timeout=timeout
    )


def start_import(server: Server, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TALLY_API_KEY": server.secret_key}
    return subprocess.Popen(
        command(server, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def stored(server: Server) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT type, subtype, idempotency_key, quantity, body, captured_at, backfill, status "
            "FROM events"
        ).fetchall()
    finally:
        conn.close()
    return [dict(r) for r in rows]


def track(i: int, days: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "event_type": "track",
        "body": {
            "event": "api-call",
            "company": {"id": f"co-{i % 20}"},
            "user": {"id": f"u-{i % 97}"},
            "quantity": i % 5 + 1,
        },
        "sent_at": (NOW - timedelta(days=days, seconds=i)).isoformat(),
        **extra,
    }


def write_lines(path: Path, lines: list[bytes]) -> Path:
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.name.endswith(".gz") else data)
    return path


def usage_file(path: Path, count: int, bad_every: int = 0) -> tuple[Path, dict[int, int], set[int]]:
    """``count`` backfill track lines (every ``bad_every``-th one garbage);
    returns the file, line → quantity of the good ones, and the bad lines."""
    rng = random.Random(count)
    lines, good, bad = [], {}, set()
    for n in range(1, count + 1):
        if bad_every and n % bad_every == 0:
            lines.append(f"garbage {n}".encode())
            bad.add(n)
            continue
        event = track(n, days=rng.randint(0, 300))
        good[n] = event["body"]["quantity"]
        lines.append(json.dumps(event).encode())
    return write_lines(path, lines), good, bad


def assert_exactly_once(server: Server, path: Path, good: dict[int, int]) -> None:
    file_id = file_identity(path)
    rows = stored(server)
    keys = Counter(r["idempotency_key"] for r in rows)
    assert [k for k, n in keys.items() if n > 1] == []
    assert set(keys) == {derived_key(file_id, n) for n in good}
    assert len(rows) == len(good)
    assert sum(r["quantity"] for r in rows) == sum(good.values())


def rejects_of(path: Path) -> list[dict[str, Any]]:
    rejects = path.with_name(path.name + ".rejects.ndjson")
    return [json.loads(line) for line in rejects.read_text().splitlines()]


def checkpoint_line(path: Path) -> int:
    checkpoint = path.with_name(path.name + ".checkpoint.json")
    if not checkpoint.exists():
        return 0
    return int(json.loads(checkpoint.read_text())["files"][0]["line"])


def start_and_wait(server: Server, path: Path, *args: str) -> subprocess.Popen[str]:
    """Start an import of ``path`` and return once its checkpoint moved on
    (the server acknowledged something in this run)."""
    before = checkpoint_line(path)
    proc = start_import(server, str(path), *args)
    deadline = time.monotonic() + 60
    while checkpoint_line(path) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint_line(path) > before, "the import made no progress in 60 s"
    return proc


# -- NDJSON ---------------------------------------------------------------------
def test_ndjson_import_stores_each_line_once(tmp_path: Path) -> None:
    lines = []
    for n in range(1, 2501):
        if n % 10 == 0:
            event: dict[str, Any] = {
                "event_type": "identify",
                "body": {"keys": {"id": f"u-{n}"}, "company": {"keys": {"id": "co-1"}}},
                "sent_at": NOW.isoformat(),
            }
        else:
            event = track(n, days=n % 300)
        if n % 7 == 0:
            event["idempotency_key"] = f"own-{n}"
        lines.append(json.dumps(event).encode())
    path = write_lines(tmp_path / "events.ndjson", lines)
    with running_server(tmp_path) as server:
        done = run_import(server, str(path), "--backfill")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2,500 accepted, 0 duplicates, 0 rejected" in done.stdout
        file_id = file_identity(path)
        rows = stored(server)
        expected = {f"own-{n}" if n % 7 == 0 else derived_key(file_id, n) for n in range(1, 2501)}
        assert Counter(r["idempotency_key"] for r in rows) == Counter(expected)
        tracks = [r for r in rows if r["type"] == "track"]
        assert len(tracks) == 2250 and all(r["backfill"] for r in tracks)
        by_key = {r["idempotency_key"]: r for r in rows}
        first = by_key[derived_key(file_id, 1)]
        assert first["captured_at"] == to_micros(parse_timestamp(json.loads(lines[0])["sent_at"]))
        assert not (tmp_path / "events.ndjson.rejects.ndjson").exists()

        again = run_import(server, str(path), "--backfill")
        assert again.returncode == 0 and "already imported" in again.stdout
        # without its checkpoint the file is sent again: every event is a duplicate
        (tmp_path / "events.ndjson.checkpoint.json").unlink()
        third = run_import(server, str(path), "--backfill", "--concurrency", "2")
        assert third.returncode == 0, third.stdout + third.stderr
        assert len(stored(server)) == 2500


def test_options_of_an_unfinished_import_must_not_change(tmp_path: Path) -> None:
    path, _, _ = usage_file(tmp_path / "u.ndjson", 10)
    checkpoint = tmp_path / "shared.json"
    with running_server(tmp_path) as server:
        done = run_import(server, str(path), "--backfill", "--checkpoint", str(checkpoint))
        assert done.returncode == 0
        state = json.loads(checkpoint.read_text())
        state["files"][0]["done"] = False
        checkpoint.write_text(json.dumps(state))
        other = run_import(server, str(path), "--trusted-clock", "--checkpoint", str(checkpoint))
        assert other.returncode == 2
        assert "other options" in other.stdout
        wrong_key = subprocess.run(
            [
                *command(server, str(path), "--backfill"),
                "--key",
                "sch_dev_nope",
                "--checkpoint",
                str(tmp_path / "c2.json"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert wrong_key.returncode == 2 and "401" in wrong_key.stdout


# -- CSV and gzip -------------------------------------------------------------
def test_csv_gzip_with_map(tmp_path: Path) -> None:
    rows = ["ts,name,org,uid,units,plan,junk"]
    expected = {}
    for n in range(2, 1502):
        ts = (NOW - timedelta(days=n % 200, minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
        name = ("api-call", "export", "search")[n % 3]
        rows.append(
            f"{ts},{name},org-{n % 9},user-{n % 31},{n % 4 + 1},{'pro' if n % 2 else 'free'},x{n}"
        )
        expected[n] = (
            ts,
            name,
            f"org-{n % 9}",
            f"user-{n % 31}",
            n % 4 + 1,
            "pro" if n % 2 else "free",
        )
    rows.append("2026-01-01T00:00:00Z,api-call,org-1,user-1,lots,pro,x")  # a bad quantity
    rows.append("too,few")
    path = tmp_path / "usage.csv.gz"
    path.write_bytes(gzip.compress(("\r\n".join(rows) + "\r\n").encode()))
    with running_server(tmp_path) as server:
        done = run_import(
            server, str(path), "--backfill",
            "--map", "sent_at=ts", "--map", "event=name", "--map", "company.id=org",
            "--map", "user.id=uid", "--map", "quantity=units", "--map", "traits.plan=plan",
        )  # fmt: skip
        assert done.returncode == 1, done.stdout + done.stderr
        assert "1,500 accepted, 0 duplicates, 2 rejected" in done.stdout
        file_id = file_identity(path)
        got = {r["idempotency_key"]: r for r in stored(server)}
        assert len(got) == 1500
        for n, (ts, name, org, user, units, plan) in expected.items():
            row = got[derived_key(file_id, n)]
            body = json.loads(row["body"])
            assert body == {
                "event": name,
                "company": {"id": org},
                "user": {"id": user},
                "traits": {"plan": plan},
                "quantity": units,
            }
            assert (row["subtype"], row["quantity"]) == (name, units)
            assert row["captured_at"] == to_micros(parse_timestamp(ts))
        rejects = rejects_of(path)
        assert [(r["line"], r["raw"]) for r in rejects] == [
            (1502, "2026-01-01T00:00:00Z,api-call,org-1,user-1,lots,pro,x"),
            (1503, "too,few"),
        ]
        assert "quantity (column 'units') must be an integer" in rejects[0]["reason"]
        assert rejects[1]["reason"] == "the row has 2 cells, the header 7"


# -- bad lines ------------------------------------------------------------------
def test_bad_lines_of_every_kind_land_in_the_rejects_file(tmp_path: Path) -> None:
    good = json.dumps(track(1, days=3)).encode()
    pad = {"pad": "x" * 40_000}
    bad: dict[str, tuple[bytes, str]] = {
        "not json": (b"not json", "event is not valid JSON"),
        "array": (b"[1, 2]", "event is invalid: Expected `object`"),
        "no type": (json.dumps({"body": {"event": "x"}}).encode(), "event_type is required"),
        "unknown type": (
            json.dumps({"event_type": "click", "body": {}}).encode(),
            "event_type must be one of",
        ),
        "no body": (
            json.dumps({"event_type": "track", "sent_at": NOW.isoformat()}).encode(),
            "body is required for track events",
        ),
        "body shape": (
            json.dumps({**track(2), "body": {"quantity": 2}}).encode(),
            "body is invalid: Object missing required field `event`",
        ),
        "zero": (
            json.dumps({**track(3), "body": {"event": "x", "quantity": 0}}).encode(),
            "quantity must be a non-zero integer",
        ),
        "long key": (
            json.dumps({**track(4), "idempotency_key": "k" * 256}).encode(),
            "idempotency_key must be at most 255 characters",
        ),
        "bad utf-8": (b'{"event_type": "track", "body": {"event": "\xff"}}', "not valid JSON"),
        "huge line": (b"x" * (1024 * 1024 + 10), "the line is longer than 1,048,576 bytes"),
        "bad sent_at": (
            json.dumps({**track(5), "sent_at": "last tuesday"}).encode(),
            "sent_at is not an ISO-8601 timestamp",
        ),
        "no sent_at": (
            json.dumps({k: v for k, v in track(6).items() if k != "sent_at"}).encode(),
            rules.MSG_NEEDS_SENT_AT,
        ),
        # the server's rules: its clock, its size limit
        "too old": (json.dumps(track(7, days=366)).encode(), rules.MSG_PAST_BACKFILL),
        "future": (
            json.dumps({**track(8), "sent_at": (NOW + timedelta(hours=1)).isoformat()}).encode(),
            rules.MSG_FUTURE,
        ),
        "big body": (
            json.dumps({**track(9), "body": {"event": "x", "traits": pad}}).encode(),
            "more than the limit of 32768 bytes",
        ),
    }
    lines: list[bytes] = []
    expected: dict[int, tuple[str, bytes, str]] = {}
    good_lines = 0
    for name, (line, reason) in bad.items():
        for _ in range(3):
            lines.append(good)
            good_lines += 1
        lines.append(b"")  # blank lines are skipped, not rejected
        lines.append(line)
        expected[len(lines)] = (name, line, reason)
    lines.append(good)
    good_lines += 1
    path = write_lines(tmp_path / "mixed.ndjson", lines)
    with running_server(tmp_path) as server:
        done = run_import(server, str(path), "--backfill")
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"{len(bad)} rejected" in done.stdout
        assert f"rejected lines are in {path}.rejects.ndjson" in done.stdout
        rejects = rejects_of(path)
        assert [r["line"] for r in rejects] == sorted(expected)
        for entry in rejects:
            name, line, reason = expected[entry["line"]]
            assert reason in entry["reason"], (name, entry["reason"])
            shown = line[:1024] if name == "huge line" else line
            assert entry["raw"] == shown.decode("utf-8", "backslashreplace"), name
        for name in ("too old", "future"):  # the server's own words, not a prefix of them
            line_no = next(n for n, v in expected.items() if v[0] == name)
            assert next(r for r in rejects if r["line"] == line_no)["reason"] == bad[name][1]
        rows = stored(server)
        assert len(rows) == good_lines
        assert {r["idempotency_key"] for r in rows} == {
            derived_key(file_identity(path), n) for n, line in enumerate(lines, 1) if line == good
        }


def test_a_dry_run_sends_nothing(tmp_path: Path) -> None:
    path, good, bad = usage_file(tmp_path / "u.ndjson", 300, bad_every=50)
    old = write_lines(tmp_path / "old.ndjson", [json.dumps(track(1, days=400)).encode()])
    with running_server(tmp_path) as server:
        done = run_import(server, str(path), str(old), "--backfill", "--dry-run")
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"{len(good)} events valid, {len(bad)} rejected" in done.stdout
        assert stored(server) == []
        assert not (tmp_path / "u.ndjson.checkpoint.json").exists()
        dry = tmp_path / "old.ndjson.dry-run.rejects.ndjson"
        assert json.loads(dry.read_text())["reason"] == rules.MSG_PAST_BACKFILL


# -- crashes --------------------------------------------------------------------
def test_sigkill_at_random_points_then_resume(tmp_path: Path) -> None:
    """The importer is killed (SIGKILL) several times at random points of a
    gzip file; each run resumes from the checkpoint; in the end each line's
    event is stored once and each bad line is in the rejects file once."""
    # large enough that four runs of up to a second each cannot finish it (a
    # quiet machine imported 22,000 lines in two of them)
    path, good, bad = usage_file(tmp_path / "big.ndjson.gz", 100_000, bad_every=997)
    rng = random.Random()
    with running_server(tmp_path) as server:
        progress: list[int] = []
        for _ in range(4):
            proc = start_and_wait(server, path, "--backfill")
            time.sleep(rng.uniform(0.0, 1.0))
            if proc.poll() is not None:
                proc.communicate()
                break
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            progress.append(checkpoint_line(path))
        assert len(progress) >= 3 and all(0 < line < 100_000 for line in progress), progress
        assert progress == sorted(progress)
        done = run_import(server, str(path), "--backfill")
        assert done.returncode == 1, done.stdout + done.stderr
        assert "resuming after line" in done.stdout
        assert_exactly_once(server, path, good)
        assert [r["line"] for r in rejects_of(path)] == sorted(bad)


def test_ctrl_c_saves_what_was_acknowledged_then_resume(tmp_path: Path) -> None:
    # large enough to be still sending at the signal (a quiet machine
    # imported 12,000 lines in 1.0 s, before the signal came)
    path, good, _ = usage_file(tmp_path / "u.ndjson", 100_000)
    with running_server(tmp_path) as server:
        proc = start_and_wait(server, path, "--backfill")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out
        assert "interrupted" in out
        stopped_at = checkpoint_line(path)
        assert 0 < stopped_at < 100_000
        # everything the checkpoint counts is stored
        assert len(stored(server)) >= stopped_at
        done = run_import(server, str(path), "--backfill")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"resuming after line {stopped_at:,}" in done.stdout
        assert_exactly_once(server, path, good)


def test_one_import_of_a_file_at_a_time(tmp_path: Path) -> None:
    # large enough that the first import is still sending when the server
    # is killed: a fast server took 8,000 lines in well under a second
    path, good, _ = usage_file(tmp_path / "u.ndjson", 80_000)
    with running_server(tmp_path) as server:
        first = start_and_wait(server, path, "--backfill")
        try:
            # the server goes away: the first import waits for it, retrying,
            # and still holds the file (however fast it would have finished)
            server.kill()
            second = run_import(server, str(path), "--backfill")
            assert second.returncode == 2, second.stdout
            assert "another tally import is importing" in second.stdout
            server.start()
            out, _ = first.communicate(timeout=180)
        finally:
            if first.poll() is None:
                first.kill()
            first.communicate()  # reaped and its pipes closed, whatever happened
        assert first.returncode == 0, out
        assert_exactly_once(server, path, good)


def test_server_restart_mid_import(tmp_path: Path) -> None:
    path, good, _ = usage_file(tmp_path / "u.ndjson", 100_000)  # still sending at the kill
    with running_server(tmp_path) as server:
        proc = start_and_wait(server, path, "--backfill")
        server.kill()
        time.sleep(1.5)
        server.start()
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out
        assert "retrying" in out
        assert_exactly_once(server, path, good)


# -- memory -----------------------------------------------------------------------
def peak_rss_kib(server: Server, path: Path) -> int:
    """The importer's peak resident memory (``VmHWM``, read from /proc while
    it runs: ``wait4``'s ``ru_maxrss`` would count the pytest process it was
    forked from)."""
    proc = start_import(server, str(path))
    status = Path(f"/proc/{proc.pid}/status")
    peak = 0
    while proc.poll() is None:
        try:
            text = status.read_text()
        except OSError:
            break
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return peak


def test_memory_stays_flat_whatever_the_file_size(tmp_path: Path) -> None:
    """Peak RSS of the importer on an 8 MB and on a 33 MB file (1 KB lines):
    the same within what the allocator varies, though the larger file holds
    25 MB more. (Before the importer collected httpx's reference cycles at
    each chunk, the peak grew with the number of requests.)"""
    pad = "p" * 900

    def padded(path: Path, count: int) -> Path:
        return write_lines(
            path,
            [
                json.dumps(
                    {"event_type": "track", "body": {"event": "e", "traits": {"pad": pad}},
                     "idempotency_key": f"{path.name}-{n}"}
                ).encode()
                for n in range(count)
            ],
        )  # fmt: skip

    small = padded(tmp_path / "small.ndjson", 8_000)
    large = padded(tmp_path / "large.ndjson", 32_000)
    grown = large.stat().st_size - small.stat().st_size
    with running_server(tmp_path) as server:
        small_peak = peak_rss_kib(server, small)
        large_peak = peak_rss_kib(server, large)
    print(f"peak RSS: {small_peak} KiB (8,000 lines), {large_peak} KiB (32,000 lines)")
    assert (large_peak - small_peak) * 1024 < grown / 3, (small_peak, large_peak, grown)
