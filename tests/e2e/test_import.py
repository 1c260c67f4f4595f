"""``tally import`` against a real ``tally serve`` (issue 13, part 1).

Each test runs the real command (``python -m tally import``) as a process and
reads what the server stored from its SQLite database: the events, their
idempotency keys and quantities. "Exactly once" is checked as: every good
line of the file is one stored event (its own key, or the key derived from
the file and its line), no key is stored twice, and the quantities add up to
the file's total.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tally.client.events import derived_key
from tally.client.importer import SAVE_INTERVAL
from tally.client.source import file_identity
from tally.clock import to_micros
from tally.ingest import rules
from tally.ingest.timeparse import parse_timestamp
from tests.support.pausing_proxy import PausingProxy
from tests.support.server import Server, running_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

NOW = datetime.now(UTC)


def command(server: Server, *args: str, url: str | None = None) -> list[str]:
    """The import of ``args`` into ``server``, at ``url`` (a proxy's) if given."""
    return [sys.executable, "-m", "tally", "import", "--url", url or server.base_url, *args]


def run_import(
    server: Server, *args: str, timeout: float = 180, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TALLY_API_KEY": server.secret_key}
    return subprocess.run(
        command(server, *args, url=url), capture_output=True, text=True, env=env, timeout=timeout
    )


@contextlib.contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """SIGINT handled (not ignored) in this process for a while: a process
    started from a shell's background job (``pytest &``, some CI steps)
    inherits SIGINT ignored, and an ignored signal stays ignored in the
    processes it starts: their Ctrl-C would be lost. A handled one is reset to
    the default in them."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_import(server: Server, *args: str, url: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "TALLY_API_KEY": server.secret_key}
    with sigint_not_ignored():  # the import must see the Ctrl-C of the tests
        return subprocess.Popen(
            command(server, *args, url=url),
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


HELD_TIMEOUT = 60.0  # generous: a loaded machine is slow, a held import waits anyway
# at most, for the checkpoint to move on (see held_import): the oldest held
# answer goes first, so the first chunk's, when not yet through, is at worst
# behind one answer per other connection of the importer (4)
EXTRA_ANSWERS = 4


@contextlib.contextmanager
def held_import(
    server: Server, proxy: PausingProxy, path: Path, answers: int, *args: str
) -> Iterator[subprocess.Popen[str]]:
    """An import of ``path`` through ``proxy``, once the proxy holds it:
    mid-file whatever the machine's speed, it has had ``answers`` answers (a
    few more if its checkpoint needed them to move on in this run) and gets
    no other until the proxy is released. Killed at the end if still running."""
    before, answered_before = checkpoint_line(path), proxy.responses
    proxy.hold_after(answers)
    proc = start_import(server, str(path), *args, url=proxy.url)
    try:
        assert proxy.wait_held(HELD_TIMEOUT), f"the import had no {answers} answers in 60 s"

        def moved() -> bool:
            return checkpoint_line(path) > before

        # The importer saves its checkpoint on an answer, then not again for
        # SAVE_INTERVAL s; the first answer may not be the first chunk's, so
        # the saved line may not have moved. An answer let through after that
        # interval saves all that is committed. (Waiting longer only spares an
        # answer when the importer is that slow to read one.)
        for extra in range(EXTRA_ANSWERS + 1):
            if wait_until(moved, SAVE_INTERVAL + 0.5):
                break
            assert extra < EXTRA_ANSWERS, f"the checkpoint stayed at line {before}"
            proxy.let_through(1)
            assert proxy.wait_held(HELD_TIMEOUT), "the import had no further answer in 60 s"
        assert proc.poll() is None, "the import ended while held"
        # shown with a failure: where the import was held
        answered = proxy.responses - answered_before
        print(f"held after {answered} answers, checkpoint at line {checkpoint_line(path):,}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaped and its pipes closed, whatever happened


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
def stop_after_signal(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The output of ``proc``, which was sent a signal that ends it (a held
    import that ignored it would wait for its answers: killed after ``timeout``)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"the import did not stop at the signal:\n{out}") from None
    return out


def test_sigkill_at_random_points_then_resume(tmp_path: Path) -> None:
    """The importer is killed (SIGKILL) several times at random points of a
    gzip file; each run resumes from the checkpoint; in the end each line's
    event is stored once and each bad line is in the rejects file once."""
    # each run is held after 1 to 3 answers (and at most EXTRA_ANSWERS more),
    # at a point that varies with them: four runs commit at most 28 chunks of
    # 1,000 events, short of the file's 30
    lines = 30_000
    path, good, bad = usage_file(tmp_path / "big.ndjson.gz", lines, bad_every=997)
    rng = random.Random()
    with running_server(tmp_path) as server, PausingProxy(server.port) as proxy:
        progress: list[int] = []
        for _ in range(4):
            with held_import(server, proxy, path, rng.randint(1, 3), "--backfill") as proc:
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=30)
            progress.append(checkpoint_line(path))
            # its connections gone, none of its held answers is the next run's
            assert proxy.wait_idle(HELD_TIMEOUT)
        assert len(progress) == 4 and all(0 < line < lines for line in progress), progress
        assert progress == sorted(progress)
        proxy.release()
        done = run_import(server, str(path), "--backfill", url=proxy.url)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "resuming after line" in done.stdout
        assert_exactly_once(server, path, good)
        assert [r["line"] for r in rejects_of(path)] == sorted(bad)


def test_ctrl_c_saves_what_was_acknowledged_then_resume(tmp_path: Path) -> None:
    lines = 20_000  # held after a few answers: mid-file at the signal
    path, good, _ = usage_file(tmp_path / "u.ndjson", lines)
    with running_server(tmp_path) as server, PausingProxy(server.port) as proxy:
        with held_import(server, proxy, path, 2, "--backfill") as proc:
            proc.send_signal(signal.SIGINT)
            out = stop_after_signal(proc)
        assert proc.returncode == 130, out
        assert "interrupted" in out
        stopped_at = checkpoint_line(path)
        assert 0 < stopped_at < lines
        # everything the checkpoint counts is stored
        assert len(stored(server)) >= stopped_at
        proxy.release()
        done = run_import(server, str(path), "--backfill", url=proxy.url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"resuming after line {stopped_at:,}" in done.stdout
        assert_exactly_once(server, path, good)


def test_one_import_of_a_file_at_a_time(tmp_path: Path) -> None:
    path, good, _ = usage_file(tmp_path / "u.ndjson", 20_000)
    with running_server(tmp_path) as server, PausingProxy(server.port) as proxy:
        # held, the first import is still importing the file (and holds it)
        with held_import(server, proxy, path, 2, "--backfill") as first:
            second = run_import(server, str(path), "--backfill", url=proxy.url)
            assert second.returncode == 2, second.stdout
            assert "another tally import is importing" in second.stdout
            proxy.release()
            out, _ = first.communicate(timeout=180)
        assert first.returncode == 0, out
        assert_exactly_once(server, path, good)


def test_server_restart_mid_import(tmp_path: Path) -> None:
    path, good, _ = usage_file(tmp_path / "u.ndjson", 20_000)
    with running_server(tmp_path) as server, PausingProxy(server.port) as proxy:
        with held_import(server, proxy, path, 2, "--backfill") as proc:  # mid-file at the kill
            server.kill()
            proxy.release()
            # the import finds the server gone (its connections closed, new
            # ones refused) and retries; the server comes back once it has
            assert proxy.wait_refused(1, HELD_TIMEOUT), "the import did not try the dead server"
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
