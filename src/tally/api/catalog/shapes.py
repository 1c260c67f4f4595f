"""Response shapes of features, company overrides and feature
usage, as msgspec structs.

Field names and the required/optional split follow ``schematichq==1.4.6``
(``FeatureDetailResponseData``, ``CompanyOverrideResponseData``,
``FeatureUsageResponseData``, …). Required fields have no default, so they
are always sent; optional fields left ``None`` are omitted.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tally.api.catalog.requests import EVENT_SOURCE
from tally.api.common.shapes import opt_time
from tally.clock import format_micros
from tally.metering.catalog import (
    Allocation,
    AllocationNote,
    Feature,
    FeatureUsage,
    usage_status,
)

DEFAULT_ICON = ""  # tally does not store icons


# -- responses ------------------------------------------------------------------
class FeatureDetailResponseData(msgspec.Struct, omit_defaults=True):
    """Also serves as ``FeatureResponseData`` and ``FeatureInPlanResponseData``
    (same required fields, or fewer)."""

    id: str
    name: str
    description: str
    feature_type: str
    event_source: str
    icon: str
    flags: list[Any]
    plans: list[Any]
    created_at: str
    updated_at: str
    event_subtype: str | None = None


class CompanyOverrideNoteResponseData(msgspec.Struct):
    id: str
    note: str
    external_user_id: str
    external_user_name: str
    created_at: str
    updated_at: str


class CompanyOverrideResponseData(msgspec.Struct, omit_defaults=True):
    id: str
    company_id: str
    feature_id: str
    environment_id: str
    value_type: str
    notes: list[CompanyOverrideNoteResponseData]
    created_at: str
    updated_at: str
    value_numeric: int | None = None
    value_bool: bool | None = None
    metric_period: str | None = None
    metric_period_month_reset: str | None = None
    feature: FeatureDetailResponseData | None = None


class FeatureUsageResponseData(msgspec.Struct, omit_defaults=True):
    access: bool
    allocation_type: str
    entitlement_id: str
    entitlement_type: str
    feature: FeatureDetailResponseData
    has_valid_allocation: bool
    is_unlimited: bool
    usage: int | None = None
    allocation: int | None = None
    percent_used: float | None = None
    overuse: int | None = None
    period: str | None = None
    month_reset: str | None = None
    metric_reset_at: str | None = None
    entitlement_source: str | None = None
    company_override: CompanyOverrideResponseData | None = None


class FeatureUsageDetailResponseData(msgspec.Struct):
    features: list[FeatureUsageResponseData]


# -- builders -------------------------------------------------------------------
def feature_detail(feature: Feature) -> FeatureDetailResponseData:
    return FeatureDetailResponseData(
        id=feature.id,
        name=feature.name,
        description=feature.description,
        feature_type=feature.feature_type,
        event_source=EVENT_SOURCE,
        icon=DEFAULT_ICON,
        flags=[],
        plans=[],
        created_at=format_micros(feature.created_at),
        updated_at=format_micros(feature.updated_at),
        event_subtype=feature.event_subtype,
    )


def _note(note: AllocationNote) -> CompanyOverrideNoteResponseData:
    at = format_micros(note.created_at)
    return CompanyOverrideNoteResponseData(
        id=note.id,
        note=note.note,
        external_user_id=note.author_id,
        external_user_name=f"API key {note.author_id}",
        created_at=at,
        updated_at=at,
    )


def company_override(allocation: Allocation) -> CompanyOverrideResponseData:
    return CompanyOverrideResponseData(
        id=allocation.id,
        company_id=allocation.company_id,
        feature_id=allocation.feature_id,
        environment_id=allocation.environment_id,
        value_type=allocation.value_type,
        notes=[_note(n) for n in allocation.notes],
        created_at=format_micros(allocation.created_at),
        updated_at=format_micros(allocation.updated_at),
        value_numeric=allocation.value_numeric,
        value_bool=allocation.value_bool,
        metric_period=allocation.metric_period,
        metric_period_month_reset=allocation.month_reset,
        feature=feature_detail(allocation.feature),
    )


def feature_usage(row: FeatureUsage) -> FeatureUsageResponseData:
    """One row of ``/feature-usage``. A feature without an allocation (an
    event feature the company has no override for) has no access, an
    ``unknown`` entitlement with an empty id, and its all-time usage."""
    allocation = row.allocation
    status = usage_status(allocation.values if allocation else None, row.usage)
    return FeatureUsageResponseData(
        access=status.access,
        allocation_type=allocation.value_type if allocation else "unknown",
        entitlement_id=allocation.id if allocation else "",
        entitlement_type="company_override" if allocation else "unknown",
        feature=feature_detail(row.feature),
        has_valid_allocation=status.has_valid_allocation,
        is_unlimited=status.is_unlimited,
        usage=row.usage,
        allocation=status.allocation,
        percent_used=status.percent_used,
        overuse=status.overuse,
        period=row.period,
        month_reset=allocation.month_reset if allocation else None,
        metric_reset_at=opt_time(row.period_end),
        entitlement_source="company_override" if allocation else None,
        company_override=company_override(allocation) if allocation else None,
    )
