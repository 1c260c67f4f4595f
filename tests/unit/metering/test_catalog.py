"""The pure rules of features and allocations (``tally.metering.catalog``):
what a create or update request leaves stored, the refusals in one sentence
each, and an allocation's usage status."""

from __future__ import annotations

import pytest

from tally.errors import Invalid
from tally.metering.catalog import (
    MAX_NAME,
    MAX_NOTE,
    MAX_NUMERIC,
    AllocationChanges,
    AllocationValues,
    FeatureChanges,
    FeatureValues,
    UsageStatus,
    check_note,
    resolve_allocation,
    resolve_feature,
    usage_status,
)

API_CALLS = FeatureValues("API calls", "", "event", "api-call")


def refusal(call: object, *args: object) -> str:
    with pytest.raises(Invalid) as err:
        call(*args)  # type: ignore[operator]
    return str(err.value)


# -- features -------------------------------------------------------------------------
def test_a_new_feature_gets_its_defaults() -> None:
    made = resolve_feature(None, FeatureChanges(name="Seats", feature_type="boolean"))
    assert made == FeatureValues("Seats", "", "boolean", None)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (FeatureChanges(feature_type="event"), "name is required"),
        (FeatureChanges(name="x"), "feature_type is required (boolean, event or trait)"),
        (FeatureChanges(name=" ", feature_type="trait"), "name must not be empty"),
        (
            FeatureChanges(name="x" * (MAX_NAME + 1), feature_type="trait"),
            f"name must be at most {MAX_NAME} characters, not {MAX_NAME + 1}",
        ),
        (
            FeatureChanges(name="x", feature_type="credit"),
            "feature_type must be boolean, event or trait, not 'credit'",
        ),
        (FeatureChanges(name="x", feature_type="event"), "event_subtype is required"),
        (FeatureChanges(name="x", feature_type="event", event_subtype="  "), "event_subtype"),
    ],
)
def test_a_feature_create_is_refused_in_one_sentence(changes: FeatureChanges, message: str) -> None:
    assert refusal(resolve_feature, None, changes).startswith(message)


def test_an_update_changes_only_what_it_sends() -> None:
    renamed = resolve_feature(API_CALLS, FeatureChanges(name="Calls", description="per call"))
    assert renamed == FeatureValues("Calls", "per call", "event", "api-call")
    # a blank subtype clears it, which an event feature cannot do without
    assert "event_subtype is required" in refusal(
        resolve_feature, API_CALLS, FeatureChanges(event_subtype="")
    )
    boolean = resolve_feature(API_CALLS, FeatureChanges(feature_type="boolean", event_subtype=""))
    assert boolean == FeatureValues("API calls", "", "boolean", None)


# -- allocations ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (AllocationChanges("credit"), "value_type must be numeric, unlimited or boolean"),
        (AllocationChanges("numeric", 5, metric_period="hourly"), "metric_period must be"),
        (
            AllocationChanges("numeric", 5, month_reset="yearly"),
            "metric_period_month_reset must be first_of_month or billing_cycle",
        ),
        (AllocationChanges("numeric", -1), f"value_numeric must be between 0 and {MAX_NUMERIC}"),
        (AllocationChanges("numeric", MAX_NUMERIC + 1), "value_numeric must be between"),
        (AllocationChanges("numeric"), "value_numeric is required when value_type is numeric"),
        (AllocationChanges("boolean"), "value_bool is required when value_type is boolean"),
    ],
)
def test_an_allocation_is_refused_in_one_sentence(changes: AllocationChanges, message: str) -> None:
    assert refusal(resolve_allocation, "event", None, changes).startswith(message)


def test_a_metered_allocation_has_a_period_and_a_month_reset_by_default() -> None:
    numeric = resolve_allocation("event", None, AllocationChanges("numeric", 10))
    assert numeric == AllocationValues("numeric", 10, None, "all_time", None)
    monthly = resolve_allocation(
        "event", None, AllocationChanges("unlimited", metric_period="current_month")
    )
    assert monthly == AllocationValues("unlimited", None, None, "current_month", "first_of_month")


def test_an_allocation_that_meters_nothing_has_no_period() -> None:
    sent = AllocationChanges("numeric", 3, metric_period="current_day")
    assert resolve_allocation("trait", None, sent).metric_period is None
    on = resolve_allocation("event", None, AllocationChanges("boolean", value_bool=True))
    assert on == AllocationValues("boolean", None, True, None, None)


def test_an_update_keeps_the_stored_value_and_period_unless_sent() -> None:
    stored = AllocationValues("numeric", 10, None, "current_month", "billing_cycle")
    assert resolve_allocation("event", stored, AllocationChanges("numeric")) == stored
    raised = resolve_allocation("event", stored, AllocationChanges("numeric", 20))
    assert raised == AllocationValues("numeric", 20, None, "current_month", "billing_cycle")
    daily = resolve_allocation(
        "event", stored, AllocationChanges("numeric", metric_period="current_day")
    )
    assert daily == AllocationValues("numeric", 10, None, "current_day", None)
    # switching type drops the other type's value
    unlimited = resolve_allocation("event", stored, AllocationChanges("unlimited"))
    assert unlimited.value_numeric is None and unlimited.metric_period == "current_month"


def test_a_blank_note_is_none_and_a_long_one_refused() -> None:
    assert check_note(None) is None and check_note("  ") is None
    assert check_note("raised for Q3") == "raised for Q3"
    assert refusal(check_note, "x" * (MAX_NOTE + 1)).startswith("note must be at most")


# -- usage status -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("allocation", "usage", "status"),
    [
        (None, 5, UsageStatus(False, None, False, False, None, None)),
        (AllocationValues("unlimited"), 10**9, UsageStatus(True, None, True, True, None, None)),
        (
            AllocationValues("boolean", value_bool=False),
            None,
            UsageStatus(False, None, False, True, None, None),
        ),
        (
            AllocationValues("boolean", value_bool=True),
            None,
            UsageStatus(True, None, False, True, None, None),
        ),
        (AllocationValues("numeric", 10), None, UsageStatus(True, 10, False, True, 0.0, 0)),
        (AllocationValues("numeric", 10), 9, UsageStatus(True, 10, False, True, 90.0, 0)),
        (AllocationValues("numeric", 10), 10, UsageStatus(False, 10, False, True, 100.0, 0)),
        (AllocationValues("numeric", 10), 13, UsageStatus(False, 10, False, True, 130.0, 3)),
        (AllocationValues("numeric", 10), -4, UsageStatus(True, 10, False, True, -40.0, 0)),
        (AllocationValues("numeric", 0), 0, UsageStatus(False, 0, False, True, None, 0)),
    ],
)
def test_usage_status(
    allocation: AllocationValues | None, usage: int | None, status: UsageStatus
) -> None:
    assert usage_status(allocation, usage) == status
