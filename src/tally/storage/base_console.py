"""Storage interface of the web console (``tally.console``): its sign-in
sessions, and the reads behind its pages that the API has no call for.

Every read takes the environment of the signed-in key and never returns
another environment's rows. Times are µs since the epoch, UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tally.model import ApiKey, EventFilter


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in console session and the (unrevoked) key it was opened with."""

    key: ApiKey
    csrf_token: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class FailedGroup:
    """Failed events sharing one error message."""

    error_message: str
    count: int
    first_id: str  # the oldest and newest event of the group
    last_id: str


@dataclass(frozen=True, slots=True)
class EventTypeStats:
    subtype: str
    count: int
    first_seen_at: int  # when the first and last were received
    last_seen_at: int


@dataclass(frozen=True, slots=True)
class DailyCount:
    name: str  # a subtype
    day_start: int
    count: int


@dataclass(frozen=True, slots=True)
class LimitFiring:
    """One ``limit_triggers`` row: a limit webhook fired for a company."""

    feature_id: str
    period: str
    period_start: int
    action: str
    event_id: str
    usage: int
    created_at: int


@dataclass(frozen=True, slots=True)
class MeterRecord:
    """A billing meter record's delivery."""

    id: str
    event_id: str | None
    payload: str | None
    status: str
    attempt_count: int
    response_code: int | None
    last_error: str | None
    next_attempt_at: int | None
    created_at: int


@dataclass(frozen=True, slots=True)
class UserDay:
    """A user's track events of one subtype on one UTC day (failed ones aside)."""

    subtype: str
    day_start: int
    events: int
    quantity: int


@dataclass(frozen=True, slots=True)
class CompanyFiring:
    """A limit webhook fired for one of a user's companies, and whether the
    event that fired it was the user's."""

    company_id: str
    firing: LimitFiring
    by_user: bool


@dataclass(frozen=True, slots=True)
class DuplicatesDropped:
    """Retries dropped as duplicates of a stored event (by its idempotency key)."""

    count: int
    last_at: int  # the last one's receipt


@dataclass(frozen=True, slots=True)
class PipelineHealth:
    pending: int
    oldest_pending_at: int | None  # loaded_at of the oldest pending event
    received: int  # events received in the window
    processed: int  # of them, processed
    failed: int  # of them, failed
    deliveries_pending: int
    deliveries_failed: int  # in the window
    deliveries_succeeded: int  # in the window


class ConsoleStore(Protocol):
    # sessions
    async def create_console_session(
        self, token_hash: str, key_id: str, csrf_token: str, expires_at: int
    ) -> None:
        """Store a session (and forget the expired ones)."""
        ...

    async def find_console_session(self, token_hash: str, now: int) -> ConsoleSession | None:
        """The unexpired session of this token hash, if its key is not revoked."""
        ...

    async def delete_console_session(self, token_hash: str) -> None: ...

    # reads
    async def count_events_by_status(
        self, environment_id: str, where: EventFilter
    ) -> dict[str, int]:
        """status → events matching ``where`` (its limit and offset aside)."""
        ...

    async def failed_event_groups(
        self, environment_id: str, id_min: str | None, limit: int
    ) -> list[FailedGroup]:
        """Failed events (made from ``id_min`` on) grouped by error message,
        the largest group first."""
        ...

    async def event_type_stats(self, environment_id: str, limit: int) -> list[EventTypeStats]:
        """Every subtype with its count (failed events too) and when its first
        and last event was received, by name."""
        ...

    async def daily_event_counts(self, environment_id: str, since: int) -> list[DailyCount]:
        """Events per subtype per UTC day of ``captured_at``: whole days, from
        the day that holds ``since`` on (read from the event summaries)."""
        ...

    async def company_daily_usage(
        self, environment_id: str, company_id: str, since: int
    ) -> list[DailyCount]:
        """The company's daily usage counters (quantity) per subtype from ``since`` on."""
        ...

    async def company_limit_firings(
        self, environment_id: str, company_id: str, limit: int
    ) -> list[LimitFiring]:
        """Limit webhooks fired for the company, newest first."""
        ...

    async def list_meter_records(self, environment_id: str, limit: int) -> list[MeterRecord]:
        """Billing meter record deliveries, newest first."""
        ...

    async def pipeline_health(self, environment_id: str, since: int) -> PipelineHealth:
        """The backlog now, and what happened to events and deliveries made
        from ``since`` on."""
        ...

    async def duplicates_dropped(
        self, environment_id: str, event_id: str
    ) -> DuplicatesDropped | None:
        """The duplicates dropped against the event (None: not one)."""
        ...

    async def user_daily_activity(
        self, environment_id: str, user_id: str, since: int, most: int
    ) -> list[UserDay]:
        """The user's track events per subtype and UTC day of ``captured_at``,
        among its newest ``most`` events received from ``since`` on."""
        ...

    async def firings_of_companies(
        self, environment_id: str, company_ids: list[str], user_id: str, limit: int
    ) -> list[CompanyFiring]:
        """Limit webhooks fired for these companies, newest first, each
        marked when the event that fired it was ``user_id``'s."""
        ...
