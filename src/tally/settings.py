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
from urllib.parse import urlsplit

from tally.effects.schedule import RetrySchedule
from tally.effects.triggers import DEFAULT_WARNING_PERCENT, EffectRules
from tally.errors import ConfigError
from tally.retention.policy import (
    DEFAULT_DELIVERY_LOG_DAYS,
    DEFAULT_LIMIT_TRIGGER_DAYS,
    MIN_LIMIT_TRIGGER_DAYS,
    RetentionPolicy,
)

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
LOG_FORMATS = ("text", "json")
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
    (
        "storage_process",
        "TALLY_STORAGE_PROCESS",
        "run the writer, worker and delivery loop in a process beside the HTTP one (on/off)",
    ),
    ("storage_socket", "TALLY_STORAGE_SOCKET", "set by tally serve: its storage process's socket"),
    ("log_level", "TALLY_LOG_LEVEL", "log level of the server (info, warning, …)"),
    ("log_format", "TALLY_LOG_FORMAT", "log lines as readable text or one JSON object each"),
    (
        "metrics_token",
        "TALLY_METRICS_TOKEN",
        "bearer token that lets a client off loopback read /metrics (unset: loopback only)",
    ),
    ("metrics_dir", "TALLY_METRICS_DIR", "set by tally serve: where its processes share metrics"),
    (
        "lag_warning_seconds",
        "TALLY_LAG_WARNING_SECONDS",
        "tally serve warns when the oldest pending event is older than this (0: never)",
    ),
    ("http_workers", "TALLY_HTTP_WORKERS", "HTTP server processes of tally serve"),
    ("worker", "TALLY_WORKER", "run the processing worker inside tally serve (on/off)"),
    (
        "process_as_stored",
        "TALLY_PROCESS_AS_STORED",
        "with the worker on, SQLite processes events in the commit that stores them (on/off)",
    ),
    (
        "worker_batch_size",
        "TALLY_WORKER_BATCH_SIZE",
        "most events the worker processes in one transaction",
    ),
    (
        "worker_linger_ms",
        "TALLY_WORKER_LINGER_MS",
        "after a batch that was not full, the worker waits this long for the next to gather",
    ),
    ("deliver", "TALLY_DELIVER", "run the delivery loop (webhooks, billing) inside tally serve"),
    (
        "limit_warning_percent",
        "TALLY_LIMIT_WARNING_PERCENT",
        "share of an allocation at which entitlement.limit.warning fires",
    ),
    (
        "billing_sink_url",
        "TALLY_BILLING_SINK_URL",
        "where billing meter records are POSTed (unset: they wait in the outbox)",
    ),
    (
        "delivery_timeout_seconds",
        "TALLY_DELIVERY_TIMEOUT_SECONDS",
        "how long one delivery attempt may take",
    ),
    (
        "delivery_max_attempts",
        "TALLY_DELIVERY_MAX_ATTEMPTS",
        "attempts per delivery (the first and the retries)",
    ),
    (
        "delivery_retry_base_seconds",
        "TALLY_DELIVERY_RETRY_BASE_SECONDS",
        "delay before the first retry; each next one is 3 times longer",
    ),
    (
        "delivery_retry_max_seconds",
        "TALLY_DELIVERY_RETRY_MAX_SECONDS",
        "longest delay between two attempts",
    ),
    (
        "delivery_concurrency",
        "TALLY_DELIVERY_CONCURRENCY",
        "most deliveries one delivery loop has in flight",
    ),
    (
        "delivery_nice",
        "TALLY_DELIVERY_NICE",
        "how much tally deliver lowers its CPU priority (0 keeps it)",
    ),
    (
        "webhook_allow_private",
        "TALLY_WEBHOOK_ALLOW_PRIVATE",
        "allow webhook URLs on loopback, private and other non-global addresses (true/false)",
    ),
    (
        "http_header_timeout_seconds",
        "TALLY_HTTP_HEADER_TIMEOUT_SECONDS",
        "a connection that has not sent a complete request head within this time is closed",
    ),
    (
        "http_max_connections",
        "TALLY_HTTP_MAX_CONNECTIONS",
        "most open connections one HTTP process keeps; one over it is closed at once",
    ),
    ("console", "TALLY_CONSOLE", "serve the web console at / (on/off)"),
    (
        "delivery_log_retention_days",
        "TALLY_DELIVERY_LOG_RETENTION_DAYS",
        "days a finished delivery (webhook or billing) and its attempts are kept",
    ),
    (
        "limit_trigger_retention_days",
        "TALLY_LIMIT_TRIGGER_RETENTION_DAYS",
        "days after its period ended that a fired limit is remembered (35 or more)",
    ),
    (
        "event_retention_days",
        "TALLY_EVENT_RETENTION_DAYS",
        "days raw events are kept after they were stored (0: forever); counters stay",
    ),
    (
        "prune",
        "TALLY_PRUNE",
        "prune what the retention settings let go, beside the worker and delivery loop (on/off)",
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
    storage_process: bool = True
    storage_socket: str = ""
    log_level: str = "warning"
    log_format: str = "text"
    metrics_token: str = ""
    metrics_dir: str = ""
    lag_warning_seconds: float = 60.0
    http_workers: int = 1
    worker: bool = True
    process_as_stored: bool = True
    worker_batch_size: int = 10000
    worker_linger_ms: float = 250.0
    deliver: bool = True
    limit_warning_percent: float = DEFAULT_WARNING_PERCENT
    billing_sink_url: str = ""
    delivery_timeout_seconds: float = 10.0
    delivery_max_attempts: int = 8
    delivery_retry_base_seconds: float = 30.0
    delivery_retry_max_seconds: float = 6 * 3600.0
    delivery_concurrency: int = 64
    delivery_nice: int = 10
    webhook_allow_private: bool = False
    http_header_timeout_seconds: float = 10.0
    http_max_connections: int = 2048
    console: bool = True
    delivery_log_retention_days: int = DEFAULT_DELIVERY_LOG_DAYS
    limit_trigger_retention_days: int = DEFAULT_LIMIT_TRIGGER_DAYS
    event_retention_days: int = 0
    prune: bool = True
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
        if self.log_format.lower() not in LOG_FORMATS:
            raise ConfigError(f"TALLY_LOG_FORMAT must be text or json, not {self.log_format!r}")
        if self.http_workers < 1:
            raise ConfigError("TALLY_HTTP_WORKERS must be at least 1")
        if self.worker_batch_size < 1:
            raise ConfigError("TALLY_WORKER_BATCH_SIZE must be at least 1")
        if not math.isfinite(self.worker_linger_ms) or not 0 <= self.worker_linger_ms <= 10_000:
            raise ConfigError(
                "TALLY_WORKER_LINGER_MS must be a number of milliseconds from 0 to 10000"
            )
        if self.commit_max_events < 1:
            raise ConfigError("TALLY_COMMIT_MAX_EVENTS must be at least 1")
        timeout = self.http_header_timeout_seconds
        if not math.isfinite(timeout) or timeout <= 0:
            raise ConfigError(
                f"TALLY_HTTP_HEADER_TIMEOUT_SECONDS must be a positive number of seconds, not {timeout}"
            )
        if self.http_max_connections < 1:
            raise ConfigError("TALLY_HTTP_MAX_CONNECTIONS must be at least 1")
        lag = self.lag_warning_seconds
        if not math.isfinite(lag) or lag < 0:
            raise ConfigError(
                f"TALLY_LAG_WARNING_SECONDS must be a number of seconds, 0 (never) or more, not {lag}"
            )
        self._validate_effects()
        self._validate_retention()

    def _validate_retention(self) -> None:
        if self.delivery_log_retention_days < 1:
            raise ConfigError("TALLY_DELIVERY_LOG_RETENTION_DAYS must be at least 1")
        if self.limit_trigger_retention_days < MIN_LIMIT_TRIGGER_DAYS:
            raise ConfigError(
                f"TALLY_LIMIT_TRIGGER_RETENTION_DAYS must be at least {MIN_LIMIT_TRIGGER_DAYS}: "
                "an event with a trusted client clock may arrive 34 days late and must not "
                "fire a limit twice"
            )
        if self.event_retention_days < 0:
            raise ConfigError("TALLY_EVENT_RETENTION_DAYS must be 0 (keep forever) or more")

    def _validate_effects(self) -> None:
        pct = self.limit_warning_percent
        if not math.isfinite(pct) or not 0 < pct < 100:
            raise ConfigError(
                f"TALLY_LIMIT_WARNING_PERCENT must be more than 0 and less than 100, not {pct}"
            )
        if self.billing_sink_url:
            parts = urlsplit(self.billing_sink_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    "TALLY_BILLING_SINK_URL must be an http:// or https:// URL, "
                    f"not {self.billing_sink_url!r}"
                )
        for var, value in (
            ("TALLY_DELIVERY_TIMEOUT_SECONDS", self.delivery_timeout_seconds),
            ("TALLY_DELIVERY_RETRY_BASE_SECONDS", self.delivery_retry_base_seconds),
            ("TALLY_DELIVERY_RETRY_MAX_SECONDS", self.delivery_retry_max_seconds),
        ):
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{var} must be a positive number of seconds, not {value}")
        if self.delivery_retry_max_seconds < self.delivery_retry_base_seconds:
            raise ConfigError(
                "TALLY_DELIVERY_RETRY_MAX_SECONDS must not be less than "
                "TALLY_DELIVERY_RETRY_BASE_SECONDS"
            )
        if self.delivery_max_attempts < 1:
            raise ConfigError("TALLY_DELIVERY_MAX_ATTEMPTS must be at least 1")
        if self.delivery_concurrency < 1:
            raise ConfigError("TALLY_DELIVERY_CONCURRENCY must be at least 1")
        if not 0 <= self.delivery_nice <= 19:
            raise ConfigError("TALLY_DELIVERY_NICE must be between 0 and 19")

    @property
    def effect_rules(self) -> EffectRules:
        """What processing records for side effects."""
        return EffectRules(self.limit_warning_percent)

    @property
    def retention(self) -> RetentionPolicy:
        """What the pruning loop lets go (``tally.retention.policy``)."""
        return RetentionPolicy(
            delivery_log_days=self.delivery_log_retention_days,
            limit_trigger_days=self.limit_trigger_retention_days,
            event_days=self.event_retention_days,
        )

    @property
    def retry_schedule(self) -> RetrySchedule:
        return RetrySchedule(
            max_attempts=self.delivery_max_attempts,
            base_seconds=self.delivery_retry_base_seconds,
            cap_seconds=self.delivery_retry_max_seconds,
        )

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
