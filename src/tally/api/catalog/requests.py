"""Reading the requests of features, company overrides and feature usage:
bodies (msgspec structs; unknown fields are accepted and not stored) turned
into ``tally.metering.catalog``'s records, and the filters of the lists.
Every refusal is ``Invalid`` with one sentence."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request

from tally.api.common.paging import page
from tally.api.common.params import echo, query_bool, query_list, query_map, query_str
from tally.errors import Invalid
from tally.metering.catalog import (
    FEATURE_TYPES,
    AllocationChanges,
    AllocationFilter,
    FeatureChanges,
    FeatureFilter,
    UsageFilter,
)

EVENT_SOURCE = "track"  # tally meters features by track events only
MAX_IDS = 100
MAX_TEXT = 255


class FeatureBody(msgspec.Struct, forbid_unknown_fields=False):
    """``CreateFeatureRequestBody`` / ``UpdateFeatureRequestBody``; other
    fields (flag, icon, lifecycle_phase, …) are accepted and not stored."""

    name: str | None = None
    description: str | None = None
    feature_type: str | None = None
    event_subtype: str | None = None
    event_source: str | None = None


class CompanyOverrideBody(msgspec.Struct, forbid_unknown_fields=False):
    """``CreateCompanyOverrideRequestBody`` / ``UpdateCompanyOverrideRequestBody``."""

    value_type: str | None = None
    company_id: str | None = None
    feature_id: str | None = None
    value_numeric: int | None = None
    value_bool: bool | None = None
    metric_period: str | None = None
    metric_period_month_reset: str | None = None
    note: str | None = None
    expiration_date: str | None = None  # refused: tally's overrides do not expire


FEATURE_BODY = msgspec.json.Decoder(FeatureBody)
OVERRIDE_BODY = msgspec.json.Decoder(CompanyOverrideBody)


def string_map(request: Request, name: str) -> dict[str, str]:
    """A map parameter (``common.params.query_map``) of short strings."""
    out = query_map(request, name)
    for key, value in out.items():
        if len(key) > MAX_TEXT or len(value) > MAX_TEXT:
            raise Invalid(f"{name} keys and values must be at most {MAX_TEXT} characters")
    return out


# -- features -------------------------------------------------------------------
def feature_changes(body: FeatureBody) -> FeatureChanges:
    if body.event_source is not None and body.event_source != EVENT_SOURCE:
        raise Invalid(
            f"event_source must be track, not {body.event_source[:32]!r}: "
            "tally meters features by track events only"
        )
    return FeatureChanges(
        name=body.name,
        description=body.description,
        feature_type=body.feature_type,
        event_subtype=body.event_subtype,
    )


def feature_filter(request: Request, params: dict[str, Any]) -> FeatureFilter:
    types = query_list(request, "feature_type", MAX_IDS)
    for kind in types:
        if kind not in FEATURE_TYPES:
            raise Invalid(f"feature_type must be among boolean, event, trait, not {kind[:32]!r}")
    limit, offset = page(request, params)
    q = echo(params, "q", query_str(request, "q", 512))
    ids = echo(params, "ids", query_list(request, "ids", MAX_IDS))
    echo(params, "feature_type", types)
    boolean_require_event = bool(query_bool(request, "boolean_require_event"))
    if boolean_require_event:
        params["boolean_require_event"] = True
    without = "without_company_override_for"
    return FeatureFilter(
        q=q,
        ids=tuple(ids),
        feature_types=tuple(types),
        boolean_require_event=boolean_require_event,
        without_override_for=echo(params, without, query_str(request, without, MAX_TEXT)),
        limit=limit,
        offset=offset,
    )


# -- company overrides ----------------------------------------------------------
def override_changes(body: CompanyOverrideBody) -> AllocationChanges:
    if body.value_type is None:
        raise Invalid("value_type is required (numeric, unlimited or boolean)")
    if body.expiration_date is not None:
        raise Invalid("expiration_date is not supported: tally's company overrides do not expire")
    return AllocationChanges(
        value_type=body.value_type,
        value_numeric=body.value_numeric,
        value_bool=body.value_bool,
        metric_period=body.metric_period,
        month_reset=body.metric_period_month_reset,
    )


def override_filter(request: Request, params: dict[str, Any]) -> AllocationFilter:
    """company_id and company_ids (feature_id, feature_ids) are two forms of
    one filter: an override matches when its company is any of the ids given."""
    company_id = query_str(request, "company_id", MAX_TEXT)
    feature_id = query_str(request, "feature_id", MAX_TEXT)
    company_ids = query_list(request, "company_ids", MAX_IDS)
    feature_ids = query_list(request, "feature_ids", MAX_IDS)
    ids = query_list(request, "ids", MAX_IDS)
    limit, offset = page(request, params)
    q = query_str(request, "q", 512)
    for name, value in (
        ("company_id", company_id),
        ("feature_id", feature_id),
        ("q", q),
        ("company_ids", company_ids),
        ("feature_ids", feature_ids),
        ("ids", ids),
    ):
        echo(params, name, value)
    return AllocationFilter(
        company_ids=tuple(company_ids + ([company_id] if company_id else [])),
        feature_ids=tuple(feature_ids + ([feature_id] if feature_id else [])),
        ids=tuple(ids),
        q=q,
        limit=limit,
        offset=offset,
    )


# -- usage ----------------------------------------------------------------------
def usage_filter(
    request: Request, params: dict[str, Any]
) -> tuple[str | None, dict[str, str], UsageFilter]:
    """Whose usage (a company id, or its keys) and of which features."""
    company_id = query_str(request, "company_id", MAX_TEXT)
    company_keys = string_map(request, "company_keys")
    if company_id is None and not company_keys:
        raise Invalid("send company_id or company_keys to say whose usage to list")
    feature_ids = query_list(request, "feature_ids", MAX_IDS)
    q = query_str(request, "q", 512)
    limit, offset = page(request, params)
    echo(params, "company_id", company_id)
    if company_keys:
        params["company_keys"] = company_keys
    echo(params, "feature_ids", feature_ids)
    echo(params, "q", q)
    where = UsageFilter(feature_ids=tuple(feature_ids), q=q, limit=limit, offset=offset)
    return company_id, company_keys, where


def company_keys(request: Request) -> dict[str, str]:
    """``/usage-by-company``'s required ``keys``."""
    keys = string_map(request, "keys")
    if not keys:
        raise Invalid(
            'keys is required: send the company\'s keys as keys[id]=acme or keys={"id":"acme"}'
        )
    return keys
