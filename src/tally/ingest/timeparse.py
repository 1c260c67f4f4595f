"""ISO-8601 timestamps as clients send them: ``Z``, an offset, or naive (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

from tally.errors import Invalid


def parse_timestamp(text: str, field: str = "sent_at") -> datetime:
    """Parse an ISO-8601 timestamp; a naive value is taken as UTC.

    Accepts the extended and basic forms Python understands (``2026-01-01T12:00:00Z``,
    ``…+02:00``, ``…123456``, ``20260101T120000Z``), a space instead of ``T``,
    and lower-case ``z``/``t``.
    """
    value = text.strip()
    if not value:
        raise Invalid(f"{field} must be an ISO-8601 timestamp, not an empty string")
    if len(value) > 10 and value[10] in "t ":
        value = value[:10] + "T" + value[11:]
    if value.endswith("z"):
        value = value[:-1] + "Z"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{field} is not an ISO-8601 timestamp: {text[:64]!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise Invalid(f"{field} is out of range: {text[:64]!r}") from None
