"""OpenAPI operations of companies, users, their traits and memberships,
named by the route table in ``routes``."""

from __future__ import annotations

from typing import Any

from tally.api.common.openapi import (
    BOOLEAN,
    KEYS,
    PAGE,
    READ,
    READ_ONE,
    STRING,
    STRINGS,
    TEXT,
    WRITE,
    Ops,
    Rules,
    envelope,
    map_param,
    op,
    path_param,
    query,
    ref,
)
from tally.api.companies import requests, shapes

SCHEMAS: tuple[Any, ...] = (
    requests.UpsertBody,
    requests.KeysBody,
    requests.MembershipBody,
    requests.TraitBody,
    shapes.CompanyDetailResponseData,
    shapes.CompanyResponseData,
    shapes.UserDetailResponseData,
    shapes.UserResponseData,
    shapes.CompanyMembershipDetailResponseData,
)
RULES: Rules = {
    "UpsertBody": (
        ["keys"],
        {
            "keys": KEYS,
            "name": {"anyOf": [{"type": "string", "maxLength": 1024}, {"type": "null"}]},
        },
    ),
    "KeysBody": (["keys"], {"keys": KEYS}),
    "MembershipBody": (["company_id", "user_id"], {"company_id": TEXT, "user_id": TEXT}),
    "TraitBody": (["keys", "trait"], {"keys": KEYS, "trait": TEXT}),
}


def entities(kind: str, plural: str, list_params: list[dict[str, Any]]) -> Ops:
    """``/companies`` or ``/users``: upsert, list, count, lookup, get,
    delete, delete by keys, and the trait upsert."""
    title, titles = kind.title(), plural.title()
    detail = ref(f"{title}DetailResponseData")
    one = [path_param(f"{kind}_id")]
    delete_params = list(one)
    if kind == "company":
        delete_params += [query("cancel_subscription", BOOLEAN), query("prorate", BOOLEAN)]
    return {
        "upsert": op(
            f"upsert{title}",
            (200, envelope(detail), "the upserted record"),
            WRITE,
            body=(ref("UpsertBody"), "found by any key (or id), keys added, traits merged"),
        ),
        "list": op(
            f"list{titles}",
            (200, envelope({"type": "array", "items": detail}), "newest first"),
            READ,
            params=list_params,
        ),
        "count": op(
            f"count{titles}",
            (200, envelope(ref("CountResponse")), "how many match"),
            READ,
            params=list_params,
        ),
        "lookup": op(
            f"lookup{title}",
            (200, envelope(detail), "the record the keys point at"),
            READ_ONE,
            params=[map_param("keys", required=True)],
        ),
        "delete_by_keys": op(
            f"delete{title}ByKeys",
            (200, envelope(ref(f"{title}ResponseData")), "deleted"),
            WRITE,
            body=(ref("KeysBody"), "the keys of the record to delete"),
        ),
        "get": op(f"get{title}", (200, envelope(detail), "found"), READ_ONE, params=one),
        "delete": op(
            f"delete{title}",
            (200, envelope(ref("DeleteResponse")), "deleted"),
            READ_ONE,
            params=delete_params,
        ),
        "trait": op(
            f"upsert{title}Trait",
            (200, envelope(detail), "the record with its new trait"),
            WRITE,
            body=(ref("TraitBody"), "set one trait, or add an integer to a numeric one"),
        ),
    }


COMPANY_FILTERS = [
    *(query(n, STRINGS) for n in ("ids", *requests.PLAN_LISTS)),
    *(
        query(n, STRING)
        for n in ("q", *requests.PLAN_TEXTS, "with_entitlement_for", "without_feature_override_for")
    ),
    *(query(n, BOOLEAN) for n in (*requests.PLAN_WANTS, *requests.PLAN_WANTS_NOT)),
    query("sort_order_column", {"enum": list(requests.SORT_COLUMNS)}),
    query("sort_order_direction", {"enum": ["asc", "desc"]}),
    *PAGE,
]
USER_FILTERS = [
    query("ids", STRINGS),
    *(query(n, STRING) for n in ("company_id", "q", "plan_id")),
    *PAGE,
]
COMPANY = entities("company", "companies", COMPANY_FILTERS)
USER = entities("user", "users", USER_FILTERS)

_MEMBERSHIP = ref("CompanyMembershipDetailResponseData")
MEMBERSHIP: Ops = {
    "create": op(
        "getOrCreateCompanyMembership",
        (200, envelope(_MEMBERSHIP), "the membership"),
        WRITE,
        body=(ref("MembershipBody"), "company_id and user_id"),
    ),
    "list": op(
        "listCompanyMemberships",
        (200, envelope({"type": "array", "items": _MEMBERSHIP}), "memberships"),
        READ,
        params=[query("company_id", STRING), query("user_id", STRING), *PAGE],
    ),
    "delete": op(
        "deleteCompanyMembership",
        (200, envelope(ref("DeleteResponse")), "deleted"),
        READ_ONE,
        params=[path_param("membership_id")],
    ),
}
