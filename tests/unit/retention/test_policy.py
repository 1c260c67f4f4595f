"""``tally.retention.policy``: the cutoffs, and the retention settings."""

from __future__ import annotations

import pytest

from tally.errors import ConfigError
from tally.retention.policy import (
    DAY_US,
    DELIVERIES,
    EVENTS,
    LIMIT_TRIGGERS,
    MIN_LIMIT_TRIGGER_DAYS,
    RetentionPolicy,
)
from tally.settings import Settings

NOW = 1_900_000_000 * 1_000_000


def test_the_defaults_keep_events_forever_and_the_delivery_log_30_days() -> None:
    policy = Settings().retention
    assert policy == RetentionPolicy(delivery_log_days=30, limit_trigger_days=90, event_days=0)
    cut = policy.cutoffs(NOW)
    assert cut.events_loaded_before is None
    assert cut.deliveries_finished_before == NOW - 30 * DAY_US
    assert policy.kinds() == (DELIVERIES, LIMIT_TRIGGERS)
    assert Settings().prune is True


def test_a_trigger_goes_once_the_longest_period_of_its_kind_ended_long_enough_ago() -> None:
    cut = RetentionPolicy(limit_trigger_days=40).cutoffs(NOW)
    assert dict(cut.triggers_started_before) == {
        "day": NOW - 41 * DAY_US,
        "week": NOW - 47 * DAY_US,
        "month": NOW - 71 * DAY_US,
        "billing": NOW - 71 * DAY_US,
    }  # all_time never ends: never named


def test_events_go_by_the_day_once_a_retention_is_set() -> None:
    policy = RetentionPolicy(event_days=7)
    assert policy.cutoffs(NOW).events_loaded_before == NOW - 7 * DAY_US
    assert policy.kinds()[-1] == EVENTS


def test_the_retention_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            "TALLY_DELIVERY_LOG_RETENTION_DAYS": "7",
            "TALLY_LIMIT_TRIGGER_RETENTION_DAYS": "35",
            "TALLY_EVENT_RETENTION_DAYS": "400",
            "TALLY_PRUNE": "off",
        }
    )
    assert settings.retention == RetentionPolicy(7, 35, 400)
    assert settings.prune is False
    assert Settings.from_env(settings.as_environ()) == settings


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("TALLY_DELIVERY_LOG_RETENTION_DAYS", "0", "at least 1"),
        ("TALLY_LIMIT_TRIGGER_RETENTION_DAYS", "34", "34 days late"),
        ("TALLY_EVENT_RETENTION_DAYS", "-1", r"0 \(keep forever\) or more"),
        ("TALLY_EVENT_RETENTION_DAYS", "1.5", "must be a number"),
    ],
)
def test_a_retention_that_would_lose_what_must_stay_is_refused(
    var: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({var: value})
    assert MIN_LIMIT_TRIGGER_DAYS == 35
