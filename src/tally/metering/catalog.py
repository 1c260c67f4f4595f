"""Features and allocations (company overrides): their records and the pure
rules that turn a request's changes into stored values, plus the usage status
of one allocation (access, percent used, …). No I/O: storage calls these
inside its write transaction, with the current record passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from tally.errors import Invalid

FEATURE_TYPES = ("boolean", "event", "trait")
VALUE_TYPES = ("numeric", "unlimited", "boolean")
METRIC_PERIODS = ("all_time", "current_day", "current_week", "current_month")
MONTH_RESETS = ("first_of_month", "billing_cycle")
DEFAULT_METRIC_PERIOD = "all_time"
DEFAULT_MONTH_RESET = "first_of_month"
MAX_NAME = 255
MAX_DESCRIPTION = 4096
MAX_NOTE = 4096
MAX_NUMERIC = 2**63 - 1


# -- features -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FeatureValues:
    name: str
    description: str
    feature_type: str
    event_subtype: str | None


@dataclass(frozen=True, slots=True)
class FeatureChanges:
    """What a create or update request sets; ``None`` leaves a field as it is
    (on create: its default)."""

    name: str | None = None
    description: str | None = None
    feature_type: str | None = None
    event_subtype: str | None = None


@dataclass(frozen=True, slots=True)
class Feature:
    id: str
    environment_id: str
    name: str
    description: str
    feature_type: str
    event_subtype: str | None
    created_at: int  # µs since epoch, UTC
    updated_at: int


@dataclass(frozen=True, slots=True)
class FeatureFilter:
    q: str | None = None
    ids: tuple[str, ...] = ()
    feature_types: tuple[str, ...] = ()
    boolean_require_event: bool = False
    without_override_for: str | None = None  # a company id: leave out features it has one for
    limit: int = 100
    offset: int = 0


def _text(name: str, value: str, limit: int, *, blank_ok: bool = False) -> str:
    if not blank_ok and not value.strip():
        raise Invalid(f"{name} must not be empty")
    if len(value) > limit:
        raise Invalid(f"{name} must be at most {limit} characters, not {len(value)}")
    return value


def check_feature_type(value: str) -> str:
    if value not in FEATURE_TYPES:
        raise Invalid(f"feature_type must be boolean, event or trait, not {value[:32]!r}")
    return value


def resolve_feature(current: FeatureValues | None, changes: FeatureChanges) -> FeatureValues:
    """The feature after ``changes`` (``current`` is ``None`` on create).

    An event feature needs an ``event_subtype``: track events with that
    subtype are its usage. Other feature types may carry one (it is kept and
    shown) but only event features are attributed events."""
    if current is None:
        if changes.name is None:
            raise Invalid("name is required")
        if changes.feature_type is None:
            raise Invalid("feature_type is required (boolean, event or trait)")
        current = FeatureValues("", "", changes.feature_type, None)
    name = _text("name", changes.name, MAX_NAME) if changes.name is not None else current.name
    description = (
        _text("description", changes.description, MAX_DESCRIPTION, blank_ok=True)
        if changes.description is not None
        else current.description
    )
    feature_type = (
        check_feature_type(changes.feature_type)
        if changes.feature_type is not None
        else current.feature_type
    )
    subtype = current.event_subtype
    if changes.event_subtype is not None:
        text = _text("event_subtype", changes.event_subtype, MAX_NAME, blank_ok=True)
        subtype = text if text.strip() else None
    if feature_type == "event" and subtype is None:
        raise Invalid(
            "event_subtype is required for an event feature: it names the track events "
            "(their event field) that count as its usage"
        )
    return FeatureValues(name, description, feature_type, subtype)


# -- allocations (company overrides) -------------------------------------------
@dataclass(frozen=True, slots=True)
class AllocationValues:
    value_type: str
    value_numeric: int | None = None
    value_bool: bool | None = None
    metric_period: str | None = None
    month_reset: str | None = None


@dataclass(frozen=True, slots=True)
class AllocationChanges:
    """A create or update request: ``value_type`` is always sent (the SDK
    requires it); other ``None`` fields keep their current values."""

    value_type: str
    value_numeric: int | None = None
    value_bool: bool | None = None
    metric_period: str | None = None
    month_reset: str | None = None


@dataclass(frozen=True, slots=True)
class AllocationNote:
    id: str
    note: str
    author_id: str  # the API key that wrote it
    created_at: int


@dataclass(frozen=True, slots=True)
class Allocation:
    id: str
    environment_id: str
    company_id: str
    feature: Feature
    value_type: str
    value_numeric: int | None
    value_bool: bool | None
    metric_period: str | None
    month_reset: str | None
    notes: tuple[AllocationNote, ...]
    created_at: int
    updated_at: int

    @property
    def feature_id(self) -> str:
        return self.feature.id

    @property
    def values(self) -> AllocationValues:
        return AllocationValues(
            self.value_type,
            self.value_numeric,
            self.value_bool,
            self.metric_period,
            self.month_reset,
        )


@dataclass(frozen=True, slots=True)
class AllocationFilter:
    company_ids: tuple[str, ...] = ()
    feature_ids: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    q: str | None = None
    limit: int = 100
    offset: int = 0


def check_allocation_changes(changes: AllocationChanges) -> None:
    """Enum and range checks that need no stored state."""
    if changes.value_type not in VALUE_TYPES:
        raise Invalid(
            f"value_type must be numeric, unlimited or boolean, not {changes.value_type[:32]!r} "
            "(tally has no credit or trait allocations)"
        )
    if changes.metric_period is not None and changes.metric_period not in METRIC_PERIODS:
        raise Invalid(
            "metric_period must be all_time, current_day, current_week or current_month, "
            f"not {changes.metric_period[:32]!r}"
        )
    if changes.month_reset is not None and changes.month_reset not in MONTH_RESETS:
        raise Invalid(
            "metric_period_month_reset must be first_of_month or billing_cycle, "
            f"not {changes.month_reset[:32]!r}"
        )
    if changes.value_numeric is not None and not 0 <= changes.value_numeric <= MAX_NUMERIC:
        raise Invalid(
            f"value_numeric must be between 0 and {MAX_NUMERIC}, not {changes.value_numeric}"
        )


def resolve_allocation(
    feature_type: str, current: AllocationValues | None, changes: AllocationChanges
) -> AllocationValues:
    """The allocation after ``changes`` (``current`` is ``None`` on create).

    - ``numeric`` needs ``value_numeric`` (sent now or stored before);
      ``boolean`` needs ``value_bool``; ``unlimited`` needs neither.
    - A metered allocation (numeric or unlimited on an event feature) has a
      ``metric_period`` (default ``all_time``); ``current_month`` has a
      ``month_reset`` (default ``first_of_month``). Other allocations have no
      period: a period sent for them is ignored.
    """
    check_allocation_changes(changes)
    before = current or AllocationValues(changes.value_type)
    value_type = changes.value_type
    numeric = bool_value = None
    if value_type == "numeric":
        numeric = changes.value_numeric
        if numeric is None:
            numeric = before.value_numeric
        if numeric is None:
            raise Invalid("value_numeric is required when value_type is numeric")
    elif value_type == "boolean":
        bool_value = changes.value_bool
        if bool_value is None:
            bool_value = before.value_bool
        if bool_value is None:
            raise Invalid("value_bool is required when value_type is boolean")
    period = reset = None
    if feature_type == "event" and value_type in ("numeric", "unlimited"):
        period = changes.metric_period or before.metric_period or DEFAULT_METRIC_PERIOD
        if period == "current_month":
            reset = changes.month_reset or before.month_reset or DEFAULT_MONTH_RESET
    return AllocationValues(value_type, numeric, bool_value, period, reset)


def check_note(note: str | None) -> str | None:
    if note is None or not note.strip():
        return None
    return _text("note", note, MAX_NOTE)


# -- usage --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FeatureUsage:
    """One feature of one company: its allocation (if any) and the usage in
    the allocation's current period (``period_start``/``period_end`` in µs;
    ``period_end`` is ``None`` for all time)."""

    company_id: str
    feature: Feature
    allocation: Allocation | None
    period: str | None
    usage: int | None
    period_start: int | None = None
    period_end: int | None = None


@dataclass(frozen=True, slots=True)
class UsageFilter:
    feature_ids: tuple[str, ...] = ()
    q: str | None = None
    limit: int | None = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class UsageStatus:
    access: bool
    allocation: int | None
    is_unlimited: bool
    has_valid_allocation: bool
    percent_used: float | None
    overuse: int | None


def usage_status(allocation: AllocationValues | None, usage: int | None) -> UsageStatus:
    """Whether the company may use the feature now, and how much of its
    allocation it has used.

    numeric: access while usage < allocation; unlimited: always; boolean: the
    allocation's value. Without an allocation there is no access."""
    if allocation is None:
        return UsageStatus(False, None, False, False, None, None)
    if allocation.value_type == "unlimited":
        return UsageStatus(True, None, True, True, None, None)
    if allocation.value_type == "boolean":
        return UsageStatus(bool(allocation.value_bool), None, False, True, None, None)
    limit = allocation.value_numeric or 0
    used = usage or 0
    percent = used * 100.0 / limit if limit > 0 else None
    return UsageStatus(used < limit, limit, False, True, percent, max(0, used - limit))
