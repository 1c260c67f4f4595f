"""Log lines: readable text (the default) or one JSON object per line
(``TALLY_LOG_FORMAT=json``), from every process of a tally with its role.

Each line carries the time (UTC), the level, the process role (http,
storage, worker, deliver), the logger and the message; a line written while
a request is handled carries its request id; an access line (``tally.access``,
at info) adds the method, route template, status, duration, environment id
and the ids of the events the request stored.

Nothing tally logs holds an API key, a secret or an event body: the access
line names a route template, never a body or a header, and as a last guard
every line is scrubbed of anything shaped like a tally key, a webhook
secret, a bearer token or a password in a URL (``redact``).
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

ROLES = ("http", "storage", "worker", "deliver", "cli")
TRACE = 5  # uvicorn's level below debug
LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}
# what an access line adds, in this order
REQUEST_FIELDS = (
    "method",
    "route",
    "status",
    "duration_ms",
    "environment_id",
    "event_ids",
    "duplicates",
)

_SECRETS = re.compile(
    r"\b(sch_(?:dev|stag|prod)_|api_|whsec_)[A-Za-z0-9]{8,}"  # API keys, webhook secrets
    r"|(?i:\b(bearer)\s+)[^\s\"',;]+"  # Authorization: Bearer …
    r"|(://)[^/@\s\"']+@"  # user:password@ in a URL
)


def _scrub(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1) + "[redacted]"
    if match.group(2):
        return match.group(2) + " [redacted]"
    return "://[redacted]@"


def redact(text: str) -> str:
    """``text`` without anything shaped like a key, a secret or a token."""
    return _SECRETS.sub(_scrub, text)


class RequestInfo:
    """What the request being handled has told the logs so far."""

    __slots__ = ("environment_id", "request_id", "stored")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.environment_id: str | None = None
        self.stored: Any = None  # the IngestResults of the events it stored


current_request: ContextVar[RequestInfo | None] = ContextVar("tally_request", default=None)


class Formatter(logging.Formatter):
    """Text or JSON lines for the process ``role``."""

    def __init__(self, kind: str = "text", role: str = "http") -> None:
        super().__init__()
        self.kind = kind
        self.role = role

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        when = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, Any] = {
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "role": self.role,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is None:
            info = current_request.get()
            request_id = info.request_id if info is not None else None
        if request_id is not None:
            out["request_id"] = request_id
        for name in REQUEST_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return out

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        if self.kind == "json":
            return redact(json.dumps(fields, ensure_ascii=False, default=str))
        head = (
            f"{fields.pop('time')} {fields.pop('level').upper():<8} {fields.pop('role'):<7} "
            f"{fields.pop('logger')}: {fields.pop('message')}"
        )
        exception = fields.pop("exception", None)
        rest = " ".join(
            f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in fields.items()
        )
        line = f"{head} {rest}" if rest else head
        if exception:
            line += "\n" + exception
        return redact(line)


def log_config(level: str, kind: str, role: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary: every logger (uvicorn's
    too) writes through one handler on standard error, at ``level``."""
    number = LEVELS[level.lower()]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "tally": {"()": "tally.observe.logs.Formatter", "kind": kind.lower(), "role": role}
        },
        "handlers": {
            "tally": {
                "class": "logging.StreamHandler",
                "formatter": "tally",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["tally"], "level": number},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True, "level": number},
            "uvicorn.error": {"handlers": [], "propagate": True, "level": number},
            # tally writes its own access lines (tally.access)
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }


def configure(level: str, kind: str, role: str) -> None:
    """Set this process's logging up (the HTTP processes get the same
    through uvicorn's ``log_config``)."""
    logging.addLevelName(TRACE, "TRACE")
    logging.config.dictConfig(log_config(level, kind, role))
