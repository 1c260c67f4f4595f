"""Storage: one small interface (``base.Storage``) and its implementations."""

from __future__ import annotations

from tally.clock import Clock, SystemClock
from tally.errors import ConfigError
from tally.settings import Settings
from tally.storage.base import Storage


def sqlite_path(database_url: str) -> str:
    """``sqlite:///relative/path`` or ``sqlite:////absolute/path`` → a file path."""
    prefix = "sqlite:///"
    if not database_url.startswith(prefix):
        raise ConfigError(
            f"database URL must start with {prefix!r} (for example sqlite:///./tally.db), "
            f"not {database_url!r}"
        )
    path = database_url[len(prefix) :]
    if not path:
        raise ConfigError("the sqlite database URL names no file (sqlite:///./tally.db)")
    return path


def open_storage(settings: Settings, clock: Clock | None = None) -> Storage:
    """The storage backend the settings' database URL names (not yet started)."""
    from tally.storage.sqlite import SqliteStorage

    return SqliteStorage(
        sqlite_path(settings.database_url),
        synchronous=settings.sqlite_synchronous,
        commit_max_events=settings.commit_max_events,
        clock=clock or SystemClock(),
    )
