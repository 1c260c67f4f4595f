"""The ingestion rules of SPEC §3 as pure functions of their inputs and ``now``."""

from __future__ import annotations

from datetime import datetime, timedelta

from tally.errors import Invalid

MAX_FUTURE = timedelta(minutes=5)
MAX_PAST_TRUSTED = timedelta(days=34)
MAX_PAST_BACKFILL = timedelta(days=365)
IDEMPOTENCY_WINDOW = timedelta(hours=24)
IDEMPOTENCY_WINDOW_US = int(IDEMPOTENCY_WINDOW.total_seconds()) * 1_000_000
MAX_IDEMPOTENCY_KEY_LENGTH = 255
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

MSG_NEEDS_SECRET = "trusted_client_clock and backfill require a secret API key"
MSG_NEEDS_SENT_AT = "sent_at is required when trusted_client_clock or backfill is true"
MSG_FUTURE = "sent_at cannot be more than 5 minutes in the future"
MSG_PAST_TRUSTED = (
    "sent_at cannot be more than 34 days in the past for trusted_client_clock; "
    "for older events use backfill (analytics-only, no billing side effects)"
)
MSG_PAST_BACKFILL = "sent_at cannot be more than 365 days in the past"


def effective_time(
    received_at: datetime,
    sent_at: datetime | None,
    *,
    trusted_client_clock: bool,
    backfill: bool,
    secret_key: bool,
) -> datetime:
    """The event's ``captured_at``: receipt time, or ``sent_at`` when the client
    may set the clock. Raises ``Invalid`` with the exact SPEC message otherwise."""
    if not (trusted_client_clock or backfill):
        return received_at
    if not secret_key:
        raise Invalid(MSG_NEEDS_SECRET)
    if sent_at is None:
        raise Invalid(MSG_NEEDS_SENT_AT)
    if sent_at - received_at > MAX_FUTURE:
        raise Invalid(MSG_FUTURE)
    age = received_at - sent_at
    if backfill:
        if age > MAX_PAST_BACKFILL:
            raise Invalid(MSG_PAST_BACKFILL)
    elif age > MAX_PAST_TRUSTED:
        raise Invalid(MSG_PAST_TRUSTED)
    return sent_at


def check_quantity(quantity: int | None, *, secret_key: bool) -> int:
    """A track quantity: default 1, a non-zero 64-bit integer; negative values
    (usage corrections) only with a secret key."""
    if quantity is None:
        return 1
    if quantity == 0:
        raise Invalid("quantity must be a non-zero integer")
    if not INT64_MIN <= quantity <= INT64_MAX:
        raise Invalid("quantity must fit in a signed 64-bit integer")
    if quantity < 0 and not secret_key:
        raise Invalid("negative quantities (usage corrections) require a secret API key")
    return quantity


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if key == "":
        raise Invalid("idempotency_key must not be empty")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise Invalid(
            f"idempotency_key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters, "
            f"not {len(key)}"
        )
    return key


def is_duplicate(first_received_us: int, now_us: int) -> bool:
    """Whether an event with a key first seen at ``first_received_us`` is a
    duplicate at ``now_us``: the key holds for 24 hours, then it is free again."""
    return now_us - first_received_us < IDEMPOTENCY_WINDOW_US
