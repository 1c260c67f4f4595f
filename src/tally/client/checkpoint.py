"""The checkpoint of an import: what the server acknowledged, per file.

One JSON document (``FILE.checkpoint.json`` beside the input, or the
``--checkpoint`` path, which may hold several files), replaced atomically:
written to a temporary file, fsync'd, renamed over the old one, and the
directory fsync'd. A crash leaves the old checkpoint or the new one, never a
torn one.

For each file (known by its content hash) it records the acknowledged prefix:
every line up to ``line`` was stored, found a duplicate or rejected, and the
rejects file held ``rejects_bytes`` bytes for them. Lines after it are sent
again on resume; their derived idempotency keys make the ones the server
already stored duplicates.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from tally.errors import Invalid

VERSION = 1


class Counts(msgspec.Struct):
    lines: int = 0  # lines read (the header, blank lines and rejects included)
    accepted: int = 0  # events the server stored
    duplicates: int = 0  # events the server answered as duplicates
    rejected: int = 0  # lines refused (here, or by the server)

    def add(self, other: Counts) -> None:
        self.lines += other.lines
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected += other.rejected


class FileState(msgspec.Struct):
    file_id: str  # SHA-256 of the file's bytes
    path: str  # absolute path when it was last imported
    size: int
    mtime_ns: int
    options: dict[str, object]  # what the events were made with (format, map, flags)
    url: str
    line: int = 0  # every line up to this one is acknowledged
    offset: int = 0  # where that line ends in the (decompressed) stream
    rejects_bytes: int = 0
    counts: Counts = msgspec.field(default_factory=Counts)
    done: bool = False


class Document(msgspec.Struct):
    version: int = VERSION
    files: list[FileState] = msgspec.field(default_factory=list)


_DECODER = msgspec.json.Decoder(Document)


def default_path(input_path: Path) -> Path:
    return input_path.with_name(input_path.name + ".checkpoint.json")


class Checkpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.document = Document()

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        checkpoint = cls(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return checkpoint
        try:
            checkpoint.document = _DECODER.decode(data)
        except msgspec.DecodeError as err:
            raise Invalid(f"the checkpoint {path} cannot be read ({err}); remove it") from None
        if checkpoint.document.version != VERSION:
            raise Invalid(f"the checkpoint {path} has version {checkpoint.document.version}")
        return checkpoint

    def by_stat(self, path: str, size: int, mtime_ns: int) -> FileState | None:
        """The entry of an unchanged file (same path, size and mtime): its
        content hash need not be computed again."""
        for state in self.document.files:
            if (state.path, state.size, state.mtime_ns) == (path, size, mtime_ns):
                return state
        return None

    def by_id(self, file_id: str) -> FileState | None:
        for state in self.document.files:
            if state.file_id == file_id:
                return state
        return None

    def unfinished_at(self, path: str) -> FileState | None:
        for state in self.document.files:
            if state.path == path and not state.done:
                return state
        return None

    def put(self, state: FileState) -> None:
        files = self.document.files
        files[:] = [s for s in files if s.file_id != state.file_id] + [state]

    def save(self) -> None:
        write_atomically(self.path, msgspec.json.format(msgspec.json.encode(self.document)))


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data``: durable once this returns, never torn."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
