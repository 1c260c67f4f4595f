"""``tally.client.progress``: the plain progress lines and the summary."""

from __future__ import annotations

import io

from tally.client.checkpoint import Counts
from tally.client.progress import PlainReporter, Snapshot, progress_line, summary_line

COUNTS = Counts(lines=120_000, accepted=118_000, duplicates=1_500, rejected=3)


def test_a_progress_line_says_it_all() -> None:
    line = progress_line(Snapshot("usage.ndjson", 30_000_000, 120_000_000, COUNTS, 24_512.4, 75.0))
    assert line == (
        "usage.ndjson: 120,000 lines, 30.0 MB of 120.0 MB (25%), 24,512 events/s, "
        "118,000 accepted, 1,500 duplicates, 3 rejected, ETA 0:01:15"
    )


def test_the_summary_rates_this_run_and_names_the_rejects() -> None:
    line = summary_line("u.ndjson", COUNTS, 10.0, 50_000, "u.ndjson.rejects.ndjson", True)
    assert "118,000 accepted, 1,500 duplicates, 3 rejected (over every run)" in line
    assert "this run 10.0 s, 5,000 events/s" in line
    assert line.endswith("rejected lines are in u.ndjson.rejects.ndjson")
    clean = summary_line("u.ndjson", Counts(lines=2, accepted=2), 1.0, 2, None, False)
    assert "rejected lines" not in clean and "over every run" not in clean


def test_plain_lines_come_every_interval() -> None:
    out = io.StringIO()
    now = [0.0]
    reporter = PlainReporter(out, interval=5.0, clock=lambda: now[0])
    reporter.start("u", 100)
    snap = Snapshot("u", 10, 100, COUNTS, 1.0, None)
    for t in (1.0, 4.9, 5.0, 6.0, 10.5):
        now[0] = t
        reporter.update(snap)
    assert out.getvalue().count("\n") == 2
    assert "ETA -:--:--" in out.getvalue()
