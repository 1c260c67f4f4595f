"""Plain records passed between the layers. No behaviour, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

EVENT_TYPES: tuple[str, ...] = ("flag_check", "identify", "inference", "track")
EnvironmentKind = Literal["development", "staging", "production"]
KeyKind = Literal["secret", "publishable"]


@dataclass(frozen=True, slots=True)
class Environment:
    id: str
    name: str
    kind: str
    created_at: int  # µs since epoch, UTC


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    environment_id: str
    kind: str  # "secret" | "publishable"
    read_only: bool
    prefix: str  # the first characters of the key, for display
    created_at: int
    revoked_at: int | None = None
    environment_name: str = ""

    @property
    def is_secret(self) -> bool:
        return self.kind == "secret"

    @property
    def can_write(self) -> bool:
        return not self.read_only

    @property
    def can_read_events(self) -> bool:
        return self.kind == "secret"


# The status of a ``NewEvent`` on its way to storage. Stored events are
# ``pending``, ``processed`` or ``failed``; the two others never are:
PENDING = "pending"
FAILED = "failed"  # stored as failed, its key looked up by nobody
# a rule refused the event, but it carries a valid type and idempotency key:
# a retry is a duplicate before anything else (see README, "Retries"), so
# storage answers it as the duplicate of the event holding its key, if one
# does; otherwise a REFUSED event (REST) is not stored and its request is
# refused with nothing of it stored, and a FAILING one (``/batch``) is stored
# as ``failed``, holding no key
REFUSED = "refused"
FAILING = "failing"
KEY_CHECKED = frozenset((PENDING, REFUSED, FAILING))  # statuses whose key is looked up


def stored_status(status: str) -> str:
    """The status an event of ``status`` is stored with."""
    return FAILED if status == FAILING else status


class NewEvent(msgspec.Struct, array_like=True):
    """An event ruled on and ready to store (status: see ``PENDING`` above).
    A msgspec struct: it is made once per event on the hot path, and it
    travels to the SQLite storage process as a msgpack array."""

    environment_id: str
    type: str
    status: str
    body: str  # JSON object text, as received ("{}" when refused for size)
    quantity: int
    captured_at: int
    received_at: int
    subtype: str | None = None
    idempotency_key: str | None = None
    sent_at: int | None = None
    trusted_client_clock: bool = False
    backfill: bool = False
    error_message: str | None = None
    api_key_id: str | None = None
    remote_ip: str | None = None
    user_agent: str | None = None
    company_id: str | None = None
    user_id: str | None = None
    flag_id: str | None = None


class IngestResult(msgspec.Struct, frozen=True, array_like=True):
    event_id: str
    captured_at: int
    duplicate: bool

    @property
    def stored(self) -> bool:
        """False for the events of a request that a REFUSED event refused."""
        return bool(self.event_id)


NOT_STORED = IngestResult("", 0, False)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: str
    environment_id: str
    type: str
    status: str
    body: str
    quantity: int
    captured_at: int
    loaded_at: int
    updated_at: int
    subtype: str | None
    idempotency_key: str | None
    sent_at: int | None
    trusted_client_clock: bool
    backfill: bool
    error_message: str | None
    enriched_at: int | None
    company_id: str | None
    user_id: str | None
    flag_id: str | None
    feature_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PendingBacklog:
    """The events waiting to be processed: how many (at least that many when
    ``capped``: the count stopped at a cap), and when the oldest was stored
    (µs since epoch; None when none is pending)."""

    count: int
    oldest_loaded_at: int | None
    capped: bool = False

    def age_seconds(self, now_us: int) -> float:
        """Seconds since the oldest pending event was stored (0 when none is)."""
        if self.oldest_loaded_at is None:
            return 0.0
        return max(0.0, (now_us - self.oldest_loaded_at) / 1_000_000)


@dataclass(frozen=True, slots=True)
class EventFilter:
    company_id: str | None = None
    user_id: str | None = None
    flag_id: str | None = None
    event_subtype: str | None = None
    event_types: tuple[str, ...] = ()
    idempotency_key: str | None = None
    status: str | None = None  # pending | processed | failed
    # ids sort by receipt time (``tally.ids``): a time range is an id range
    id_min: str | None = None  # id >= id_min
    id_max: str | None = None  # id < id_max
    newer_than: str | None = None  # id > newer_than (the console's live list)
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class EventSummary:
    event_subtype: str
    event_count: int
    company_count: int
    user_count: int
    last_seen_at: int | None
