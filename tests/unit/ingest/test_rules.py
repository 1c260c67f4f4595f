"""The pure ingestion rules of SPEC §3, at their edges, with explicit ``now`` values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tally.errors import Invalid
from tally.ingest import rules
from tests.support.clock import NOW

US = timedelta(microseconds=1)
HOUR_US = 3_600 * 1_000_000
MINUTE_US = 60 * 1_000_000

# The messages of SPEC §3.2, word for word (deliberately not the module's constants).
SPEC_NEEDS_SECRET = "trusted_client_clock and backfill require a secret API key"
SPEC_NEEDS_SENT_AT = "sent_at is required when trusted_client_clock or backfill is true"
SPEC_FUTURE = "sent_at cannot be more than 5 minutes in the future"
SPEC_PAST_TRUSTED = (
    "sent_at cannot be more than 34 days in the past for trusted_client_clock; "
    "for older events use backfill (analytics-only, no billing side effects)"
)
SPEC_PAST_BACKFILL = "sent_at cannot be more than 365 days in the past"


def effective(
    sent_at: datetime | None,
    *,
    trusted: bool = False,
    backfill: bool = False,
    secret: bool = True,
    received_at: datetime = NOW,
) -> datetime:
    return rules.effective_time(
        received_at,
        sent_at,
        trusted_client_clock=trusted,
        backfill=backfill,
        secret_key=secret,
    )


def refusal(**kwargs: object) -> str:
    with pytest.raises(Invalid) as info:
        effective(**kwargs)  # type: ignore[arg-type]
    return info.value.message


# -- effective time -----------------------------------------------------------


def test_normal_event_is_captured_at_receipt_time() -> None:
    sent = NOW - timedelta(hours=3)
    assert effective(sent) == NOW


def test_normal_event_ignores_sent_at_even_when_far_off() -> None:
    assert effective(NOW - timedelta(days=900)) == NOW
    assert effective(NOW + timedelta(days=900)) == NOW
    assert effective(None) == NOW


def test_normal_event_from_a_publishable_key_needs_no_clock_checks() -> None:
    assert effective(NOW + timedelta(days=2), secret=False) == NOW


def test_trusted_client_clock_uses_sent_at() -> None:
    sent = NOW - timedelta(days=3, minutes=7)
    assert effective(sent, trusted=True) == sent


def test_backfill_uses_sent_at() -> None:
    sent = NOW - timedelta(days=200)
    assert effective(sent, backfill=True) == sent


def test_both_flags_use_sent_at_with_the_backfill_limit() -> None:
    sent = NOW - timedelta(days=100)
    assert effective(sent, trusted=True, backfill=True) == sent


def test_backfill_implies_trusted_client_clock() -> None:
    """backfill alone (trusted_client_clock false) still takes the client's clock,
    and still needs a secret key and a sent_at like trusted_client_clock does."""
    sent = NOW - timedelta(minutes=30)
    assert effective(sent, trusted=False, backfill=True) == sent
    assert refusal(sent_at=sent, trusted=False, backfill=True, secret=False) == SPEC_NEEDS_SECRET
    assert refusal(sent_at=None, trusted=False, backfill=True) == SPEC_NEEDS_SENT_AT


def test_sent_at_equal_to_receipt_time_is_accepted() -> None:
    assert effective(NOW, trusted=True) == NOW


# -- the five messages, word for word -------------------------------------------


@pytest.mark.parametrize(("trusted", "backfill"), [(True, False), (False, True), (True, True)])
def test_publishable_key_with_a_clock_flag_is_refused(trusted: bool, backfill: bool) -> None:
    message = refusal(
        sent_at=NOW - timedelta(minutes=1), trusted=trusted, backfill=backfill, secret=False
    )
    assert message == SPEC_NEEDS_SECRET


def test_publishable_key_without_sent_at_gets_the_secret_message_first() -> None:
    assert refusal(sent_at=None, trusted=True, secret=False) == SPEC_NEEDS_SECRET


@pytest.mark.parametrize(("trusted", "backfill"), [(True, False), (False, True), (True, True)])
def test_clock_flag_without_sent_at_is_refused(trusted: bool, backfill: bool) -> None:
    assert refusal(sent_at=None, trusted=trusted, backfill=backfill) == SPEC_NEEDS_SENT_AT


def test_future_message() -> None:
    assert refusal(sent_at=NOW + timedelta(hours=1), trusted=True) == SPEC_FUTURE
    assert refusal(sent_at=NOW + timedelta(hours=1), backfill=True) == SPEC_FUTURE


def test_past_trusted_message() -> None:
    assert refusal(sent_at=NOW - timedelta(days=40), trusted=True) == SPEC_PAST_TRUSTED


def test_past_backfill_message() -> None:
    assert refusal(sent_at=NOW - timedelta(days=400), backfill=True) == SPEC_PAST_BACKFILL


def test_invalid_is_raised_with_the_message_as_its_text() -> None:
    with pytest.raises(Invalid, match=r"^sent_at cannot be more than 5 minutes in the future$"):
        effective(NOW + timedelta(minutes=6), trusted=True)


# -- the edges of the clock windows --------------------------------------------


@pytest.mark.parametrize(("trusted", "backfill"), [(True, False), (False, True)])
def test_exactly_five_minutes_in_the_future_is_accepted(trusted: bool, backfill: bool) -> None:
    sent = NOW + timedelta(minutes=5)
    assert effective(sent, trusted=trusted, backfill=backfill) == sent


@pytest.mark.parametrize(("trusted", "backfill"), [(True, False), (False, True)])
def test_five_minutes_and_one_microsecond_in_the_future_is_refused(
    trusted: bool, backfill: bool
) -> None:
    sent = NOW + timedelta(minutes=5) + US
    assert refusal(sent_at=sent, trusted=trusted, backfill=backfill) == SPEC_FUTURE


def test_exactly_34_days_in_the_past_is_accepted_for_trusted_client_clock() -> None:
    sent = NOW - timedelta(days=34)
    assert effective(sent, trusted=True) == sent


def test_34_days_and_one_microsecond_in_the_past_is_refused_for_trusted_client_clock() -> None:
    sent = NOW - timedelta(days=34) - US
    assert refusal(sent_at=sent, trusted=True) == SPEC_PAST_TRUSTED


def test_34_days_and_one_microsecond_is_fine_for_backfill() -> None:
    sent = NOW - timedelta(days=34) - US
    assert effective(sent, backfill=True) == sent
    assert effective(sent, trusted=True, backfill=True) == sent


def test_exactly_365_days_in_the_past_is_accepted_for_backfill() -> None:
    sent = NOW - timedelta(days=365)
    assert effective(sent, backfill=True) == sent


def test_365_days_and_one_microsecond_in_the_past_is_refused_for_backfill() -> None:
    sent = NOW - timedelta(days=365) - US
    assert refusal(sent_at=sent, backfill=True) == SPEC_PAST_BACKFILL
    assert refusal(sent_at=sent, trusted=True, backfill=True) == SPEC_PAST_BACKFILL


def test_windows_are_measured_from_the_receipt_time_passed_in() -> None:
    received = datetime(2025, 1, 1, tzinfo=UTC)
    sent = received - timedelta(days=34)
    assert effective(sent, trusted=True, received_at=received) == sent
    # The same sent_at one microsecond later is out of the window.
    assert refusal(sent_at=sent, trusted=True, received_at=received + US) == SPEC_PAST_TRUSTED


def test_offsets_are_compared_as_instants() -> None:
    plus_two = timezone(timedelta(hours=2))
    sent = (NOW + timedelta(minutes=5)).astimezone(plus_two)  # same instant, other offset
    assert effective(sent, trusted=True) == NOW + timedelta(minutes=5)
    assert refusal(sent_at=sent + US, trusted=True) == SPEC_FUTURE


# -- quantity --------------------------------------------------------------------


def test_missing_quantity_defaults_to_one() -> None:
    assert rules.check_quantity(None, secret_key=False) == 1
    assert rules.check_quantity(None, secret_key=True) == 1


def test_zero_quantity_is_refused() -> None:
    with pytest.raises(Invalid, match="non-zero"):
        rules.check_quantity(0, secret_key=True)


def test_positive_quantity_is_kept_for_any_key() -> None:
    assert rules.check_quantity(7, secret_key=False) == 7
    assert rules.check_quantity(7, secret_key=True) == 7


def test_negative_quantity_needs_a_secret_key() -> None:
    with pytest.raises(Invalid, match="secret API key"):
        rules.check_quantity(-1, secret_key=False)
    assert rules.check_quantity(-1, secret_key=True) == -1


def test_int64_bounds_are_accepted() -> None:
    assert rules.check_quantity(2**63 - 1, secret_key=False) == 2**63 - 1
    assert rules.check_quantity(-(2**63), secret_key=True) == -(2**63)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30, -(10**30)])
def test_quantities_outside_int64_are_refused(value: int) -> None:
    with pytest.raises(Invalid, match="64-bit"):
        rules.check_quantity(value, secret_key=True)


# -- idempotency key ---------------------------------------------------------------


def test_absent_idempotency_key_is_none() -> None:
    assert rules.check_idempotency_key(None) is None


def test_idempotency_key_of_255_characters_is_accepted() -> None:
    key = "k" * 255
    assert rules.check_idempotency_key(key) == key


def test_idempotency_key_counts_characters_not_bytes() -> None:
    key = "é" * 255  # 510 bytes in UTF-8, 255 characters
    assert rules.check_idempotency_key(key) == key


def test_idempotency_key_of_256_characters_is_refused() -> None:
    with pytest.raises(Invalid) as info:
        rules.check_idempotency_key("k" * 256)
    assert "255" in info.value.message
    assert "256" in info.value.message


def test_empty_idempotency_key_is_refused() -> None:
    with pytest.raises(Invalid, match="empty"):
        rules.check_idempotency_key("")


def test_short_idempotency_key_is_kept_as_is() -> None:
    assert rules.check_idempotency_key("a") == "a"
    assert rules.check_idempotency_key(" padded ") == " padded "


# -- is_duplicate --------------------------------------------------------------------

FIRST_US = 1_770_000_000_000_000


def test_same_instant_is_a_duplicate() -> None:
    assert rules.is_duplicate(FIRST_US, FIRST_US) is True


def test_23h59m_later_is_a_duplicate() -> None:
    assert rules.is_duplicate(FIRST_US, FIRST_US + 23 * HOUR_US + 59 * MINUTE_US) is True


def test_one_microsecond_before_24h_is_a_duplicate() -> None:
    assert rules.is_duplicate(FIRST_US, FIRST_US + 24 * HOUR_US - 1) is True


def test_exactly_24h_later_the_key_is_free() -> None:
    assert rules.is_duplicate(FIRST_US, FIRST_US + 24 * HOUR_US) is False


def test_24h01m_later_the_key_is_free() -> None:
    assert rules.is_duplicate(FIRST_US, FIRST_US + 24 * HOUR_US + MINUTE_US) is False


def test_window_constant_is_24_hours_in_microseconds() -> None:
    assert rules.IDEMPOTENCY_WINDOW_US == 86_400_000_000
