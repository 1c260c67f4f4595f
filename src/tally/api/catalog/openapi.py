"""OpenAPI operations of features, company overrides and feature usage,
named by the route table in ``routes``."""

from __future__ import annotations

from typing import Any

from tally.api.catalog import requests, shapes
from tally.api.common.openapi import (
    BOOLEAN,
    PAGE,
    READ_ONE,
    STRING,
    STRINGS,
    TEXT,
    Ops,
    Rules,
    crud,
    enum,
    envelope,
    list_of,
    map_param,
    op,
    optional,
    query,
    ref,
)
from tally.metering.catalog import FEATURE_TYPES, METRIC_PERIODS, MONTH_RESETS, VALUE_TYPES

SCHEMAS: tuple[Any, ...] = (
    requests.FeatureBody,
    requests.CompanyOverrideBody,
    shapes.FeatureDetailResponseData,
    shapes.CompanyOverrideResponseData,
    shapes.FeatureUsageResponseData,
    shapes.FeatureUsageDetailResponseData,
)
RULES: Rules = {
    "FeatureBody": (
        ["name", "feature_type"],
        {
            "name": TEXT,
            "feature_type": enum(FEATURE_TYPES),
            "event_source": optional(enum((requests.EVENT_SOURCE,))),
        },
    ),
    "CompanyOverrideBody": (
        ["company_id", "feature_id", "value_type"],
        {
            "company_id": TEXT,
            "feature_id": TEXT,
            "value_type": enum(VALUE_TYPES),
            "metric_period": optional(enum(METRIC_PERIODS)),
            "metric_period_month_reset": optional(enum(MONTH_RESETS)),
            "expiration_date": {"type": "null"},  # tally's overrides do not expire
        },
    ),
}

FEATURE = crud(
    "feature",
    "FeatureBody",
    "FeatureDetailResponseData",
    title="Feature",
    list_params=[
        query("ids", STRINGS),
        query("feature_type", {"type": "array", "items": {"enum": ["boolean", "event", "trait"]}}),
        query("q", STRING),
        query("boolean_require_event", BOOLEAN),
        query("without_company_override_for", STRING),
        *PAGE,
    ],
)
OVERRIDE = crud(
    "override",
    "CompanyOverrideBody",
    "CompanyOverrideResponseData",
    title="CompanyOverride",
    list_params=[
        *(query(n, STRING) for n in ("company_id", "feature_id", "q")),
        *(query(n, STRINGS) for n in ("company_ids", "feature_ids", "ids")),
        *PAGE,
    ],
)
USAGE: Ops = {
    "list": op(
        "listFeatureUsage",
        (200, envelope(list_of("FeatureUsageResponseData")), "the company's usage of each feature"),
        READ_ONE,
        params=[
            query("company_id", STRING),
            map_param("company_keys"),
            query("feature_ids", STRINGS),
            query("q", STRING),
            *PAGE,
        ],
    ),
    "by_company": op(
        "getFeatureUsageByCompany",
        (200, envelope(ref("FeatureUsageDetailResponseData")), "every feature"),
        READ_ONE,
        params=[map_param("keys", required=True)],
    ),
}
