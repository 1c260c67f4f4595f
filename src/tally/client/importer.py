"""``tally import``: files of events into a tally through ``POST /event-batch``,
exactly once and resumably.

A file is read in chunks (up to 1,000 events, a few MiB); ``concurrency``
chunks are in flight at once. Chunks are acknowledged in any order but
committed in file order: a committed chunk's rejects are appended to the
rejects file and the checkpoint moves past its last line (saved at most every
``SAVE_INTERVAL`` seconds and at the end). After a crash the import resumes
after the checkpoint's line; the chunks sent after it are sent again, and
their derived idempotency keys make the events the server already holds
duplicates. The server keeps a key for 24 hours: resume within them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx
import msgspec

from tally.client import source as src
from tally.client.checkpoint import Checkpoint, Counts, FileState, default_path
from tally.client.chunks import Chunk, read_chunks
from tally.client.events import CsvMap, CsvRows, EventMaker, EventOptions, parse_map
from tally.client.progress import Reporter, Snapshot, counts_text, summary_line
from tally.client.sender import BatchPoster, Fatal, Outcome, send_all
from tally.clock import SystemClock
from tally.errors import Invalid

WINDOW = 4  # chunks read ahead of the first unacknowledged one, per request in flight
SAVE_INTERVAL = 0.5  # seconds between two checkpoint saves
NOTE_INTERVAL = 5.0  # seconds between two notes about retries
USER_AGENT = "tally-import/1"


@dataclass(frozen=True)
class ImportOptions:
    files: tuple[Path, ...]
    url: str = ""
    key: str = ""
    format: str | None = None  # ndjson | csv; None: by the file's name
    mapping: tuple[str, ...] = ()
    backfill: bool = False
    trusted_clock: bool = False
    concurrency: int = 4
    dry_run: bool = False
    checkpoint: Path | None = None
    give_up_after: float = 600.0


def file_format(path: Path, chosen: str | None) -> str:
    if chosen:
        return chosen
    name = path.name.lower().removesuffix(".gz")
    return "csv" if name.endswith(".csv") else "ndjson"


def rejects_path(path: Path, dry_run: bool) -> Path:
    return path.with_name(path.name + (".dry-run" if dry_run else "") + ".rejects.ndjson")


class RejectEntry(msgspec.Struct):
    line: int
    reason: str
    raw: str


class Mismatch(Fatal):
    """The checkpoint or the file does not fit the command: nothing was sent."""


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """One import of a file at a time: a second one would write the same
    checkpoint and rejects file. (A lock on the input itself, released by
    the system however the process ends.)"""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "rb") as held:
        try:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Mismatch(f"another tally import is importing {path} right now") from None
        yield


@dataclass
class FileResult:
    counts: Counts
    rejects: Path | None


class FileImport:
    """The import of one file (``run``), from its checkpoint on."""

    def __init__(
        self,
        path: Path,
        opts: ImportOptions,
        reporter: Reporter,
        checkpoint: Checkpoint | None,
        client: httpx.AsyncClient | None,
    ) -> None:
        self.path = path
        self.opts = opts
        self.reporter = reporter
        self.checkpoint = checkpoint
        self.client = client
        self.format = file_format(path, opts.format)
        self.mapping: CsvMap | None = parse_map(opts.mapping) if self.format == "csv" else None
        self.rejects_path = rejects_path(path, opts.dry_run)
        self.live = Counts()  # as answers come, for the progress display
        self.committed = Counts()
        self._results: dict[int, tuple[Chunk, Outcome]] = {}
        self._advanced = asyncio.Event()  # set when the committed prefix grows
        self._next_seq = 0
        self._saved_at = 0.0
        self._noted_at = -NOTE_INTERVAL
        self._rejects: BinaryIO | None = None
        self._state: FileState | None = None
        self._source: src.Source | None = None
        self._started = time.monotonic()
        self._start_position = 0

    # -- the checkpoint ---------------------------------------------------
    def _options(self) -> dict[str, object]:
        return {
            "format": self.format,
            "map": self.mapping.as_dict() if self.mapping else {},
            "backfill": self.opts.backfill,
            "trusted_clock": self.opts.trusted_clock,
        }

    def _find_state(self) -> FileState:
        assert self.checkpoint is not None
        where = str(self.path.resolve())
        st = self.path.stat()
        state = self.checkpoint.by_stat(where, st.st_size, st.st_mtime_ns)
        if state is None:
            file_id = src.file_identity(self.path)
            state = self.checkpoint.by_id(file_id)
            if state is None:
                stale = self.checkpoint.unfinished_at(where)
                if stale is not None:
                    raise Mismatch(
                        f"{self.path} changed since its import stopped at line {stale.line} "
                        f"(checkpoint {self.checkpoint.path}); importing it again would send "
                        "anew what was stored. Import what was added as a file of its own, "
                        "or remove the checkpoint to import the whole file again"
                    )
                state = FileState(file_id, where, st.st_size, st.st_mtime_ns, {}, self.opts.url)
            state.path, state.size, state.mtime_ns = where, st.st_size, st.st_mtime_ns
        options = self._options()
        started = state.line > 0 or state.done
        if started and state.options != options:
            raise Mismatch(
                f"{self.path} was being imported with other options ({state.options}), "
                f"see {self.checkpoint.path}: run again with those, or remove the checkpoint"
            )
        if started and state.url != self.opts.url:
            raise Mismatch(
                f"{self.path} was being imported into {state.url} "
                f"(checkpoint {self.checkpoint.path}), not {self.opts.url}"
            )
        state.options, state.url = options, self.opts.url
        return state

    def _save(self) -> None:
        if self.checkpoint is None or self._state is None or self._rejects is None:
            return
        self._rejects.flush()
        os.fsync(self._rejects.fileno())  # the rejects first: the checkpoint counts them
        self._state.rejects_bytes = self._rejects.tell()
        self._state.counts = msgspec.structs.replace(self.committed)
        self.checkpoint.put(self._state)
        self.checkpoint.save()
        self._saved_at = time.monotonic()

    # -- reading ------------------------------------------------------------
    def _maker(self, file_id: str) -> EventMaker:
        opts = self.opts
        options = EventOptions(
            backfill=opts.backfill,
            trusted_clock=opts.trusted_clock,
            publishable=opts.key.startswith("api_"),
            dry_run=opts.dry_run,
        )
        return EventMaker(file_id, options, SystemClock().now)

    # -- sending and committing ---------------------------------------------
    async def _send(self, chunk: Chunk, poster: BatchPoster | None) -> Outcome:
        if poster is None:  # a dry run: every valid event would be sent
            return Outcome(accepted=len(chunk.events))
        return await send_all(chunk.events, poster)

    def _acknowledged(self, chunk: Chunk, outcome: Outcome) -> None:
        # keep only what the commit needs: a chunk answered before an
        # earlier one waits for it, and must not hold its events meanwhile
        chunk.rejects += [
            (chunk.event_lines[p], reason, chunk.event_raws[p]) for p, reason in outcome.rejected
        ]
        chunk.events, chunk.event_lines, chunk.event_raws = [], [], []
        live = self.live
        live.accepted += outcome.accepted
        live.duplicates += outcome.duplicates
        live.rejected += len(chunk.rejects)
        self._results[chunk.seq] = (chunk, outcome)
        while self._next_seq in self._results:
            done, result = self._results.pop(self._next_seq)
            self._commit(done, result)
            self._next_seq += 1
        self._advanced.set()
        if time.monotonic() - self._saved_at >= SAVE_INTERVAL:
            self._save()
        # each httpx response is a reference cycle (response ↔ its stream)
        # holding the request body and the answer; collected now, not
        # whenever the collector gets to them, memory stays flat. Cheap:
        # run_import froze what was alive before the import started.
        gc.collect()

    def _commit(self, chunk: Chunk, outcome: Outcome) -> None:
        assert self._rejects is not None
        for line, reason, raw in sorted(chunk.rejects, key=lambda r: r[0]):
            entry = RejectEntry(line=line, reason=reason, raw=src.text(raw))
            self._rejects.write(msgspec.json.encode(entry) + b"\n")
        c = self.committed
        c.lines += chunk.lines
        c.accepted += outcome.accepted
        c.duplicates += outcome.duplicates
        c.rejected += len(chunk.rejects)
        if self._state is not None:
            self._state.line, self._state.offset = chunk.line, chunk.end

    def _snapshot(self) -> Snapshot:
        assert self._source is not None
        position = self._source.position
        elapsed = max(time.monotonic() - self._started, 1e-6)
        sent = self.live.accepted + self.live.duplicates - self._base_sent
        byte_rate = (position - self._start_position) / elapsed
        remaining = self._source.size - position
        eta = remaining / byte_rate if byte_rate > 0 else None
        counts = msgspec.structs.replace(self.live, lines=self._source.line)
        return Snapshot(self.path.name, position, self._source.size, counts, sent / elapsed, eta)

    def note_retry(self, problem: str) -> None:
        if time.monotonic() - self._noted_at >= NOTE_INTERVAL:
            self._noted_at = time.monotonic()
            self.reporter.note(
                f"{self.path.name}: the server did not take a batch ({problem}); retrying"
            )

    # -- the run ------------------------------------------------------------
    async def run(self) -> FileResult:
        if self.opts.dry_run:
            return await self._run()
        with exclusive(self.path):
            return await self._run()

    async def _run(self) -> FileResult:
        dry = self.opts.dry_run
        state = FileState("", "", 0, 0, {}, "") if dry else self._find_state()
        self._state = None if dry else state
        if state.done:
            self.reporter.note(
                f"{self.path}: already imported ({counts_text(state.counts)}); "
                f"remove {self.checkpoint.path if self.checkpoint else 'its checkpoint'} "
                "to import it again"
            )
            rejects = self.rejects_path if state.counts.rejected else None
            return FileResult(state.counts, rejects)
        file_id = state.file_id  # empty in a dry run: its events are not sent
        maker = self._maker(file_id)
        rows, header_lines, header_end = self._csv_rows()
        resuming = state.line > 0
        self.committed = msgspec.structs.replace(state.counts)
        self.live = msgspec.structs.replace(state.counts)
        self._base_sent = self.live.accepted + self.live.duplicates
        self._rejects = rejects_file = self._open_rejects(state, resuming)
        try:
            with src.Source(self.path) as source:
                self._source = source
                if resuming:
                    source.skip_to(state.line, state.offset)
                    self.reporter.note(
                        f"{self.path}: resuming after line {state.line:,} "
                        f"({counts_text(state.counts)} so far)"
                    )
                elif header_lines:
                    source.skip_to(header_lines, header_end)
                    self.committed.lines = self.live.lines = header_lines
                    state.line, state.offset = header_lines, header_end
                self._start_position = source.position
                self._started = time.monotonic()
                self.reporter.start(self.path.name, source.size)
                await self._pump(read_chunks(source, maker, rows))
                self.reporter.update(self._snapshot())
            state.done = True
        finally:
            self._save()
            rejects_file.close()
        return self._finish(time.monotonic() - self._started, resuming)

    def _csv_rows(self) -> tuple[CsvRows | None, int, int]:
        """(the CSV mapping over the file's header, the header's lines, where
        it ends); ``(None, 0, 0)`` for NDJSON."""
        if self.mapping is None:
            return None, 0, 0
        try:
            header, header_lines, header_end = src.read_header(self.path)
        except ValueError as err:
            raise Mismatch(str(err)) from None
        return CsvRows(self.mapping, header), header_lines, header_end

    def _open_rejects(self, state: FileState, resuming: bool) -> BinaryIO:
        """The rejects file: resumed as the checkpoint left it, else new."""
        if not resuming:
            return open(self.rejects_path, "w+b")
        file = open(self.rejects_path, "r+b" if self.rejects_path.exists() else "w+b")  # noqa: SIM115
        file.truncate(state.rejects_bytes)
        file.seek(0, os.SEEK_END)
        return file

    def _finish(self, seconds: float, resuming: bool) -> FileResult:
        """Drop an empty rejects file and say how the file went."""
        rejects: Path | None = self.rejects_path
        if self.committed.rejected == 0:
            self.rejects_path.unlink(missing_ok=True)
            rejects = None
        name = str(self.path)
        if self.opts.dry_run:
            self.reporter.note(
                f"{name}: dry run, nothing sent: {self.committed.lines:,} lines, "
                f"{self.committed.accepted:,} events valid, {self.committed.rejected:,} rejected"
                + (f"; rejected lines are in {rejects}" if rejects else "")
            )
        else:
            self.reporter.note(
                summary_line(
                    name,
                    self.committed,
                    seconds,
                    self.committed.accepted + self.committed.duplicates - self._base_sent,
                    str(rejects) if rejects else None,
                    resuming,
                )
            )
        return FileResult(self.committed, rejects)

    async def _pump(self, chunks: Iterator[Chunk]) -> None:
        """Feed ``chunks`` to ``concurrency`` senders; commit in order."""
        poster = None
        if self.client is not None:
            poster = BatchPoster(self.client, self.opts.give_up_after, on_retry=self.note_retry)
        queue: asyncio.Queue[Chunk | None] = asyncio.Queue(maxsize=1)

        async def sender() -> None:
            while (chunk := await queue.get()) is not None:
                self._acknowledged(chunk, await self._send(chunk, poster))
                self.reporter.update(self._snapshot())

        window = WINDOW * self.opts.concurrency

        async def feed() -> None:
            for chunk in chunks:
                while chunk.seq - self._next_seq >= window:  # a chunk is slow: wait for it
                    self._advanced.clear()
                    await self._advanced.wait()
                await queue.put(chunk)
                self.reporter.update(self._snapshot())
            for _ in range(self.opts.concurrency):
                await queue.put(None)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(feed())
                for _ in range(self.opts.concurrency):
                    group.create_task(sender())
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None


async def run_import(opts: ImportOptions, reporter: Reporter) -> int:
    """Import every file in turn; the exit status: 0, 1 when a line was
    rejected, 2 when an import could not go on."""
    if not opts.dry_run and (not opts.url or not opts.key):
        raise Invalid("--url and --key (or TALLY_URL and TALLY_API_KEY) are required")
    gc.freeze()  # what lives now lives on: the collections of _acknowledged skip it
    shared = Checkpoint.load(opts.checkpoint) if opts.checkpoint else None
    client = None
    if not opts.dry_run:
        client = httpx.AsyncClient(
            base_url=opts.url.rstrip("/"),
            headers={
                "X-Schematic-Api-Key": opts.key,
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            },
            timeout=httpx.Timeout(120.0, connect=10.0),
            limits=httpx.Limits(max_connections=opts.concurrency),
        )
    total = Counts()
    status = 0
    try:
        for path in opts.files:
            checkpoint = None
            if not opts.dry_run:
                checkpoint = shared or Checkpoint.load(default_path(path))
            result = await FileImport(path, opts, reporter, checkpoint, client).run()
            total.add(result.counts)
            if result.counts.rejected:
                status = 1
    except Mismatch as err:
        reporter.note(f"tally import: {err}")
        return 2
    except (Fatal, OSError) as err:
        reporter.note(
            f"tally import: {err}. What the server acknowledged is in the checkpoint: "
            "run the same command again to go on from there"
        )
        return 2
    finally:
        reporter.stop()
        if client is not None:
            await client.aclose()
    if len(opts.files) > 1:
        reporter.note(f"all {len(opts.files)} files: {total.lines:,} lines, {counts_text(total)}")
    return status
