"""Typed settings, read once at start-up from flags and ``TALLY_…`` variables.

Nothing reads the environment at import time: ``Settings.from_env`` takes the
mapping to read, so a test builds exactly the settings it needs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from tally.errors import ConfigError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
DEFAULT_DATABASE_URL = "sqlite:///./tally.db"

# Every setting: (field name, environment variable, one-line description).
# tests/unit/test_docs.py checks that each variable is documented in the README.
ENV_VARS: tuple[tuple[str, str, str], ...] = (
    ("database_url", "TALLY_DATABASE_URL", "where events live (sqlite:///path)"),
    ("host", "TALLY_HOST", "address the HTTP server binds"),
    ("port", "TALLY_PORT", "port the HTTP server binds"),
    (
        "key_cache_seconds",
        "TALLY_KEY_CACHE_SECONDS",
        "how long a looked-up API key is trusted before it is read again (revocation delay)",
    ),
    (
        "sqlite_synchronous",
        "TALLY_SQLITE_SYNCHRONOUS",
        "SQLite synchronous mode: FULL (fsync every commit, default) or NORMAL",
    ),
    ("commit_max_events", "TALLY_COMMIT_MAX_EVENTS", "most events one group commit holds"),
    ("log_level", "TALLY_LOG_LEVEL", "log level of the server (info, warning, …)"),
    ("http_workers", "TALLY_HTTP_WORKERS", "HTTP server processes of tally serve"),
    ("worker", "TALLY_WORKER", "run the processing worker inside tally serve (on/off)"),
    (
        "worker_batch_size",
        "TALLY_WORKER_BATCH_SIZE",
        "most events the worker processes in one transaction",
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    key_cache_seconds: float = 5.0
    sqlite_synchronous: str = "FULL"
    commit_max_events: int = 5000
    log_level: str = "warning"
    http_workers: int = 1
    worker: bool = True
    worker_batch_size: int = 500
    max_request_bytes: int = 4 * 1024 * 1024
    max_event_body_bytes: int = 32 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default: the process environment),
        then apply ``overrides`` whose value is not None (command-line flags)."""
        env = os.environ if environ is None else environ
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, var, _ in ENV_VARS:
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[name] = _coerce(var, raw, types[name])
        settings = cls(**values)
        flags = {k: v for k, v in overrides.items() if v is not None}
        settings = replace(settings, **flags)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.sqlite_synchronous.upper() not in {"FULL", "NORMAL", "EXTRA"}:
            raise ConfigError("TALLY_SQLITE_SYNCHRONOUS must be FULL, NORMAL or EXTRA")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be between 1 and 65535, not {self.port}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(
                f"TALLY_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}"
            )
        if not math.isfinite(self.key_cache_seconds) or self.key_cache_seconds < 0:
            raise ConfigError(
                "TALLY_KEY_CACHE_SECONDS must be a finite number of seconds, 0 or more"
            )
        if self.http_workers < 1:
            raise ConfigError("TALLY_HTTP_WORKERS must be at least 1")
        if self.worker_batch_size < 1:
            raise ConfigError("TALLY_WORKER_BATCH_SIZE must be at least 1")
        if self.commit_max_events < 1:
            raise ConfigError("TALLY_COMMIT_MAX_EVENTS must be at least 1")

    def as_environ(self) -> dict[str, str]:
        """The ``TALLY_…`` variables that rebuild these settings in another process."""
        out = {}
        for name, var, _ in ENV_VARS:
            value = getattr(self, name)
            out[var] = ("on" if value else "off") if isinstance(value, bool) else str(value)
        return out


def _coerce(var: str, raw: str, kind: Any) -> Any:
    if kind in (bool, "bool"):
        lowered = raw.strip().lower()
        if lowered in {"1", "on", "true", "yes"}:
            return True
        if lowered in {"0", "off", "false", "no"}:
            return False
        raise ConfigError(f"{var} must be on or off, not {raw!r}")
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
    except ValueError:
        raise ConfigError(f"{var} must be a number, not {raw!r}") from None
    return raw
