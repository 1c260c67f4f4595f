"""Response shapes of the Schematic companies/users API, as msgspec structs.

Field names and the required/optional split follow ``schematichq==1.4.6``
(``CompanyDetailResponseData``, ``UserDetailResponseData`` and what they
hold). Required fields are always present — an empty list where tally has
nothing of the kind (plans, subscriptions, rules…); optional fields left
``None`` are omitted.

tally keeps no key or trait *definitions* as separate objects, so their ids
are derived: stable hashes of what they name.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

import msgspec

from tally.api.common.shapes import opt_time
from tally.clock import format_micros
from tally.jsontext import read_object
from tally.metering import periods
from tally.storage.base_entities import (
    Company,
    CompanyHead,
    EntityKey,
    Membership,
    UsageCounter,
    User,
)

# counter kind → (metric period, month reset)
METRIC_PERIODS = {
    periods.ALL_TIME: ("all_time", "first_of_month"),
    periods.DAY: ("current_day", "first_of_month"),
    periods.WEEK: ("current_week", "first_of_month"),
    periods.MONTH: ("current_month", "first_of_month"),
    periods.BILLING: ("current_month", "billing_cycle"),
}


class _Shape(msgspec.Struct, kw_only=True, omit_defaults=True):
    pass


class EntityKeyDefinitionResponseData(_Shape):
    created_at: str
    entity_type: str
    id: str
    key: str
    updated_at: str


class EntityKeyDetailResponseData(_Shape):
    created_at: str
    definition_id: str
    entity_id: str
    entity_type: str
    environment_id: str
    id: str
    key: str
    updated_at: str
    value: str
    definition: EntityKeyDefinitionResponseData | None = None


class EntityTraitDefinitionResponseData(_Shape):
    created_at: str
    display_name: str
    entity_type: str
    hierarchy: list[str]
    id: str
    trait_type: str
    updated_at: str


class EntityTraitDetailResponseData(_Shape):
    created_at: str
    definition_id: str
    environment_id: str
    id: str
    updated_at: str
    value: str
    definition: EntityTraitDefinitionResponseData | None = None


class CompanyEventPeriodMetricsResponseData(_Shape):
    account_id: str
    captured_at_max: str
    captured_at_min: str
    company_id: str
    created_at: str
    environment_id: str
    event_subtype: str
    month_reset: str
    period: str
    value: int
    valid_until: str | None = None


class CompanyResponseData(_Shape):
    created_at: str
    environment_id: str
    id: str
    name: str
    updated_at: str
    last_seen_at: str | None = None
    logo_url: str | None = None


class CompanyMembershipDetailResponseData(_Shape):
    company_id: str
    created_at: str
    id: str
    updated_at: str
    user_id: str
    company: CompanyResponseData | None = None


class CompanyDetailResponseData(_Shape):
    add_ons: list[Any]
    billing_subscriptions: list[Any]
    created_at: str
    custom_plan_billings: list[Any]
    entitlements: list[Any]
    entity_traits: list[EntityTraitDetailResponseData]
    environment_id: str
    id: str
    keys: list[EntityKeyDetailResponseData]
    metrics: list[CompanyEventPeriodMetricsResponseData]
    name: str
    payment_methods: list[Any]
    plans: list[Any]
    rules: list[Any]
    updated_at: str
    user_count: int
    last_seen_at: str | None = None
    traits: dict[str, Any] | None = None


class UserResponseData(_Shape):
    created_at: str
    environment_id: str
    id: str
    name: str
    updated_at: str
    last_seen_at: str | None = None


class UserDetailResponseData(_Shape):
    company_memberships: list[CompanyMembershipDetailResponseData]
    created_at: str
    entity_traits: list[EntityTraitDetailResponseData]
    environment_id: str
    id: str
    keys: list[EntityKeyDetailResponseData]
    name: str
    updated_at: str
    last_seen_at: str | None = None
    traits: dict[str, Any] | None = None


def derived_id(prefix: str, *parts: str) -> str:
    """A stable id for an object tally does not store on its own."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()
    return f"{prefix}_{digest[:26]}"


def entity_keys(
    kind: str, environment_id: str, entity_id: str, keys: tuple[EntityKey, ...]
) -> list[EntityKeyDetailResponseData]:
    out = []
    for k in keys:
        at = format_micros(k.created_at)
        definition_id = derived_id("ekde", environment_id, kind, k.key)
        out.append(
            EntityKeyDetailResponseData(
                created_at=at,
                definition_id=definition_id,
                entity_id=entity_id,
                entity_type=kind,
                environment_id=environment_id,
                id=derived_id("ekey", entity_id, k.key),
                key=k.key,
                updated_at=at,
                value=k.value,
                definition=EntityKeyDefinitionResponseData(
                    created_at=at, entity_type=kind, id=definition_id, key=k.key, updated_at=at
                ),
            )
        )
    return out


def _trait_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def entity_traits(
    kind: str, environment_id: str, entity_id: str, traits: dict[str, Any], updated_at: int
) -> list[EntityTraitDetailResponseData]:
    """One trait detail per top-level trait; the value as text (JSON text for
    anything but a string)."""
    at = format_micros(updated_at)
    out = []
    for name, value in traits.items():
        definition_id = derived_id("etde", environment_id, kind, name)
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        out.append(
            EntityTraitDetailResponseData(
                created_at=at,
                definition_id=definition_id,
                environment_id=environment_id,
                id=derived_id("etrt", entity_id, name),
                updated_at=at,
                value=text,
                definition=EntityTraitDefinitionResponseData(
                    created_at=at,
                    display_name=name,
                    entity_type=kind,
                    hierarchy=[name],
                    id=definition_id,
                    trait_type=_trait_type(value),
                    updated_at=at,
                ),
            )
        )
    return out


# The times of metrics repeat across a page of companies (the same period
# bounds for all): formatted once each (``format_micros`` caches only the
# last second it formatted).
_metric_time = functools.lru_cache(maxsize=4096)(format_micros)


def _metric(
    company: Company, counter: UsageCounter, period: str, month_reset: str
) -> CompanyEventPeriodMetricsResponseData:
    """tally keeps no per-counter event times, so ``captured_at_min``/``_max``
    are the period's bounds (all time: the epoch, and the company's last
    activity) and ``created_at`` is when the period began for this company."""
    end = None if counter.period_end is None else _metric_time(counter.period_end)
    latest = company.last_seen_at if company.last_seen_at is not None else company.updated_at
    return CompanyEventPeriodMetricsResponseData(
        account_id=company.environment_id,
        captured_at_max=end if end is not None else _metric_time(latest),
        captured_at_min=_metric_time(counter.period_start),
        company_id=company.id,
        created_at=_metric_time(max(counter.period_start, company.created_at)),
        environment_id=company.environment_id,
        event_subtype=counter.subtype,
        month_reset=month_reset,
        period=period,
        value=counter.quantity,
        valid_until=end,
    )


def company_metrics(company: Company) -> list[CompanyEventPeriodMetricsResponseData]:
    """The company's usage in the current periods. Without a billing anchor
    the billing cycle is the calendar month, so the month's counter also
    answers for ``current_month``/``billing_cycle``."""
    out = []
    for counter in company.counters:
        period, month_reset = METRIC_PERIODS[counter.kind]
        out.append(_metric(company, counter, period, month_reset))
        if counter.kind == periods.MONTH and company.billing_anchor is None:
            out.append(_metric(company, counter, "current_month", "billing_cycle"))
    return out


def company_detail(company: Company) -> CompanyDetailResponseData:
    traits = read_object(company.traits)
    return CompanyDetailResponseData(
        add_ons=[],
        billing_subscriptions=[],
        created_at=format_micros(company.created_at),
        custom_plan_billings=[],
        entitlements=[],
        entity_traits=entity_traits(
            "company", company.environment_id, company.id, traits, company.updated_at
        ),
        environment_id=company.environment_id,
        id=company.id,
        keys=entity_keys("company", company.environment_id, company.id, company.keys),
        metrics=company_metrics(company),
        name=company.display_name,
        payment_methods=[],
        plans=[],
        rules=[],
        updated_at=format_micros(company.updated_at),
        user_count=company.user_count,
        last_seen_at=opt_time(company.last_seen_at),
        traits=traits,
    )


def company_head(company: Company | CompanyHead) -> CompanyResponseData:
    name = company.display_name if isinstance(company, Company) else company.name
    return CompanyResponseData(
        created_at=format_micros(company.created_at),
        environment_id=company.environment_id,
        id=company.id,
        name=name,
        updated_at=format_micros(company.updated_at),
        last_seen_at=opt_time(company.last_seen_at),
    )


def membership(m: Membership) -> CompanyMembershipDetailResponseData:
    at = format_micros(m.created_at)
    return CompanyMembershipDetailResponseData(
        company_id=m.company_id,
        created_at=at,
        id=m.id,
        updated_at=at,
        user_id=m.user_id,
        company=company_head(m.company) if m.company is not None else None,
    )


def user_detail(user: User) -> UserDetailResponseData:
    traits = read_object(user.traits)
    return UserDetailResponseData(
        company_memberships=[membership(m) for m in user.memberships],
        created_at=format_micros(user.created_at),
        entity_traits=entity_traits("user", user.environment_id, user.id, traits, user.updated_at),
        environment_id=user.environment_id,
        id=user.id,
        keys=entity_keys("user", user.environment_id, user.id, user.keys),
        name=user.display_name,
        updated_at=format_micros(user.updated_at),
        last_seen_at=opt_time(user.last_seen_at),
        traits=traits,
    )


def user_head(user: User) -> UserResponseData:
    return UserResponseData(
        created_at=format_micros(user.created_at),
        environment_id=user.environment_id,
        id=user.id,
        name=user.display_name,
        updated_at=format_micros(user.updated_at),
        last_seen_at=opt_time(user.last_seen_at),
    )
