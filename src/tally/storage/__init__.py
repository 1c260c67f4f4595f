"""Storage: one small interface (``base.Storage``) and its implementations."""

from __future__ import annotations

from tally.clock import Clock, SystemClock
from tally.errors import ConfigError
from tally.settings import Settings
from tally.storage.base import Storage
from tally.storage.base_batch import Processing


def sqlite_path(database_url: str) -> str:
    """``sqlite:///relative/path`` or ``sqlite:////absolute/path`` → a file path."""
    prefix = "sqlite:///"
    if not database_url.startswith(prefix):
        raise ConfigError(
            "the database URL must be sqlite:///path (for example sqlite:///./tally.db) or "
            f"postgresql://user@host:port/database, not {database_url!r}"
        )
    path = database_url[len(prefix) :]
    if not path:
        raise ConfigError("the sqlite database URL names no file (sqlite:///./tally.db)")
    return path


def is_postgres(database_url: str) -> bool:
    return database_url.startswith(("postgresql://", "postgres://"))


def open_storage(
    settings: Settings, clock: Clock | None = None, *, processing: Processing | None = None
) -> Storage:
    """The storage backend the settings' database URL names (not yet started),
    running ``processing`` (the pipeline's: ``tally.storage.base_batch``) on its
    transactions; an HTTP process of ``tally serve`` reaches the storage
    process instead, which runs it."""
    if settings.storage_socket:
        from tally.storage.process.client import RemoteStorage, stop_this_server

        # an HTTP process of tally serve: its storage runs in another process
        path = settings.storage_socket
        return RemoteStorage(path, lambda: stop_this_server(path))  # type: ignore[return-value]
    if is_postgres(settings.database_url):
        from tally.storage.postgres.storage import PostgresStorage

        return PostgresStorage(
            settings.database_url,
            commit_max_events=settings.commit_max_events,
            clock=clock or SystemClock(),
            effects=settings.effect_rules,
            processing=processing,
        )
    from tally.storage.sqlite.storage import SqliteStorage

    return SqliteStorage(
        sqlite_path(settings.database_url),
        synchronous=settings.sqlite_synchronous,
        commit_max_events=settings.commit_max_events,
        clock=clock or SystemClock(),
        effects=settings.effect_rules,
        processing=processing,
    )
