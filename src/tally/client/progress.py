"""How an import shows its progress: a ``rich`` progress bar on a terminal,
plain periodic lines otherwise (a log, a CI job), and a summary per file."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO

from tally.client.checkpoint import Counts

PLAIN_INTERVAL = 5.0  # seconds between two plain progress lines


@dataclass
class Snapshot:
    """Where the import of one file stands."""

    name: str
    position: int  # bytes of the file (as stored) read so far
    total: int  # the file's size
    counts: Counts
    events_per_s: float
    eta_s: float | None


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover - the loop returns


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def counts_text(c: Counts) -> str:
    return f"{c.accepted:,} accepted, {c.duplicates:,} duplicates, {c.rejected:,} rejected"


def progress_line(s: Snapshot) -> str:
    share = s.position / s.total if s.total else 1.0
    return (
        f"{s.name}: {s.counts.lines:,} lines, {_size(s.position)} of {_size(s.total)} "
        f"({share:.0%}), {s.events_per_s:,.0f} events/s, {counts_text(s.counts)}, "
        f"ETA {_duration(s.eta_s)}"
    )


def summary_line(
    name: str, counts: Counts, seconds: float, sent: int, rejects: str | None, resumed: bool
) -> str:
    """The last word on a file: ``counts`` over every run, ``sent`` events
    acknowledged in ``seconds`` by this one."""
    rate = sent / seconds if seconds > 0 else 0.0
    text = (
        f"{name}: {counts.lines:,} lines, {counts_text(counts)}"
        f"{' (over every run)' if resumed else ''}; this run {seconds:.1f} s, {rate:,.0f} events/s"
    )
    if counts.rejected and rejects:
        text += f"; rejected lines are in {rejects}"
    return text


class Reporter(Protocol):
    def start(self, name: str, total: int) -> None: ...

    def update(self, snapshot: Snapshot) -> None: ...

    def note(self, message: str) -> None: ...

    def stop(self) -> None: ...


class PlainReporter:
    """A progress line every ``interval`` seconds (not a terminal)."""

    def __init__(
        self,
        out: TextIO | None = None,
        interval: float = PLAIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out or sys.stdout
        self._interval = interval
        self._clock = clock
        self._next = 0.0

    def start(self, name: str, total: int) -> None:
        self._next = self._clock() + self._interval

    def update(self, snapshot: Snapshot) -> None:
        if self._clock() >= self._next:
            self._next = self._clock() + self._interval
            self.note(progress_line(snapshot))

    def note(self, message: str) -> None:
        print(message, file=self._out, flush=True)

    def stop(self) -> None:
        pass


class BarReporter:
    """A ``rich`` progress bar: lines, bytes, events/s, accepted /
    duplicates / rejected and the time left."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self._console = Console()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[lines]:,} lines"),
            TextColumn("{task.fields[rate]:,.0f} events/s"),
            TextColumn(
                "[green]{task.fields[accepted]:,} accepted[/] "
                "{task.fields[duplicates]:,} dup "
                "[red]{task.fields[rejected]:,} rejected[/]"
            ),
            TimeRemainingColumn(),
            console=self._console,
            transient=False,
        )
        self._task: object | None = None

    def start(self, name: str, total: int) -> None:
        if self._task is None:
            self._progress.start()
        self._task = self._progress.add_task(
            name, total=total, lines=0, rate=0.0, accepted=0, duplicates=0, rejected=0
        )

    def update(self, snapshot: Snapshot) -> None:
        c = snapshot.counts
        self._progress.update(
            self._task,  # type: ignore[arg-type]
            completed=snapshot.position,
            lines=c.lines,
            rate=snapshot.events_per_s,
            accepted=c.accepted,
            duplicates=c.duplicates,
            rejected=c.rejected,
        )

    def note(self, message: str) -> None:
        self._progress.console.print(message, markup=False, highlight=False)

    def stop(self) -> None:
        if self._task is not None:
            self._progress.stop()


def reporter_for(out: TextIO) -> Reporter:
    return BarReporter() if out.isatty() else PlainReporter(out)
