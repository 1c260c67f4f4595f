"""OpenAPI paths of the admin routes: companies, users, memberships,
traits, features, company overrides, usage, webhooks and their delivery log."""

from __future__ import annotations

from typing import Any

from tally.api.openapi_parts import (
    BOOLEAN,
    PAGE,
    READ,
    READ_ONE,
    STRING,
    STRINGS,
    WRITE,
    envelope,
    list_of,
    map_param,
    op,
    path_param,
    query,
    ref,
)


def crud(
    name: str,
    plural: str,
    body: str,
    detail: str,
    list_params: list[dict[str, Any]],
    title: str,
) -> dict[str, dict[str, Any]]:
    """``/things`` (create, list) and ``/things/{thing_id}`` (get, update, delete)."""
    one = f"{name}_id"
    return {
        f"/{plural}": {
            "post": op(
                f"create{title}",
                (201, envelope(ref(detail)), "created"),
                WRITE,
                body=(ref(body), name),
            ),
            "get": op(
                f"list{title}s",
                (200, envelope(list_of(detail)), "newest first"),
                READ,
                params=list_params,
            ),
        },
        f"/{plural}/{{{one}}}": {
            "get": op(
                f"get{title}",
                (200, envelope(ref(detail)), "found"),
                READ_ONE,
                params=[path_param(one)],
            ),
            "put": op(
                f"update{title}",
                (200, envelope(ref(detail)), "updated"),
                WRITE,
                params=[path_param(one)],
                body=(ref(body), name),
            ),
            "delete": op(
                f"delete{title}",
                (200, envelope(ref("DeleteResponse")), "deleted"),
                READ_ONE,
                params=[path_param(one)],
            ),
        },
    }


def entities(kind: str, plural: str, list_params: list[dict[str, Any]]) -> dict[str, Any]:
    """``/companies`` or ``/users``: upsert, list, count, lookup, get,
    delete, delete by keys, and the trait upsert."""
    title, titles = kind.title(), plural.title()
    detail = ref(f"{title}DetailResponseData")
    one = f"{kind}_id"
    delete_params = [path_param(one)]
    if kind == "company":
        delete_params += [query("cancel_subscription", BOOLEAN), query("prorate", BOOLEAN)]
    return {
        f"/{plural}": {
            "post": op(
                f"upsert{title}",
                (200, envelope(detail), "the upserted record"),
                WRITE,
                body=(ref("UpsertBody"), "found by any key (or id), keys added, traits merged"),
            ),
            "get": op(
                f"list{titles}",
                (200, envelope({"type": "array", "items": detail}), "newest first"),
                READ,
                params=list_params,
            ),
        },
        f"/{plural}/count": {
            "get": op(
                f"count{titles}",
                (200, envelope(ref("CountResponse")), "how many match"),
                READ,
                params=list_params,
            )
        },
        f"/{plural}/lookup": {
            "get": op(
                f"lookup{title}",
                (200, envelope(detail), "the record the keys point at"),
                READ_ONE,
                params=[map_param("keys", required=True)],
            )
        },
        f"/{plural}/delete": {
            "post": op(
                f"delete{title}ByKeys",
                (200, envelope(ref(f"{title}ResponseData")), "deleted"),
                WRITE,
                body=(ref("KeysBody"), "the keys of the record to delete"),
            )
        },
        f"/{plural}/{{{one}}}": {
            "get": op(
                f"get{title}",
                (200, envelope(detail), "found"),
                READ_ONE,
                params=[path_param(one)],
            ),
            "delete": op(
                f"delete{title}",
                (200, envelope(ref("DeleteResponse")), "deleted"),
                READ_ONE,
                params=delete_params,
            ),
        },
        f"/{kind}-traits": {
            "post": op(
                f"upsert{title}Trait",
                (200, envelope(detail), "the record with its new trait"),
                WRITE,
                body=(ref("TraitBody"), "set one trait, or add an integer to a numeric one"),
            )
        },
    }


COMPANY_FILTERS = [
    *(
        query(n, STRINGS)
        for n in (
            "ids",
            "credit_type_ids",
            "plan_ids",
            "plan_version_ids",
            "subscription_statuses",
            "subscription_types",
        )
    ),
    *(
        query(n, STRING)
        for n in (
            "q",
            "plan_id",
            "plan_version_id",
            "with_entitlement_for",
            "without_feature_override_for",
        )
    ),
    *(
        query(n, BOOLEAN)
        for n in (
            "has_scheduled_downgrade",
            "monetized_subscriptions",
            "plan_version_unpublished",
            "with_subscription",
            "without_plan",
            "without_subscription",
        )
    ),
    query("sort_order_column", {"enum": ["created_at", "updated_at", "last_seen_at", "name"]}),
    query("sort_order_direction", {"enum": ["asc", "desc"]}),
    *PAGE,
]
USER_FILTERS = [
    query("ids", STRINGS),
    *(query(n, STRING) for n in ("company_id", "q", "plan_id")),
    *PAGE,
]


def catalog_paths() -> dict[str, Any]:
    features = crud(
        "feature",
        "features",
        "FeatureBody",
        "FeatureDetailResponseData",
        title="Feature",
        list_params=[
            query("ids", STRINGS),
            query(
                "feature_type", {"type": "array", "items": {"enum": ["boolean", "event", "trait"]}}
            ),
            query("q", STRING),
            query("boolean_require_event", BOOLEAN),
            query("without_company_override_for", STRING),
            *PAGE,
        ],
    )
    overrides = crud(
        "override",
        "company-overrides",
        "CompanyOverrideBody",
        "CompanyOverrideResponseData",
        title="CompanyOverride",
        list_params=[
            *(query(n, STRING) for n in ("company_id", "feature_id", "q")),
            *(query(n, STRINGS) for n in ("company_ids", "feature_ids", "ids")),
            *PAGE,
        ],
    )
    usage = list_of("FeatureUsageResponseData")
    return {
        **features,
        **overrides,
        "/feature-usage": {
            "get": op(
                "listFeatureUsage",
                (200, envelope(usage), "the company's usage of each feature"),
                READ_ONE,
                params=[
                    query("company_id", STRING),
                    map_param("company_keys"),
                    query("feature_ids", STRINGS),
                    query("q", STRING),
                    *PAGE,
                ],
            )
        },
        "/usage-by-company": {
            "get": op(
                "getFeatureUsageByCompany",
                (200, envelope(ref("FeatureUsageDetailResponseData")), "every feature"),
                READ_ONE,
                params=[map_param("keys", required=True)],
            )
        },
    }


def webhook_paths() -> dict[str, Any]:
    page = [query("q", STRING), *PAGE]
    event_filters = [query("ids", STRINGS), query("webhook_id", STRING), *page]
    count = envelope(ref("CountResponse"))
    return {
        **crud(
            "webhook",
            "webhooks",
            "WebhookBody",
            "WebhookResponseData",
            title="Webhook",
            list_params=page,
        ),
        "/webhooks/count": {
            "get": op("countWebhooks", (200, count, "how many"), READ, params=page)
        },
        "/webhooks/{webhook_id}/test": {
            "post": op(
                "testWebhook",
                (200, envelope(ref("TestWebhookResponseData")), "how the delivery went"),
                WRITE,
                params=[path_param("webhook_id")],
                body=(ref("TestWebhookBody"), "the request type to send"),
            )
        },
        "/webhook-events": {
            "get": op(
                "listWebhookEvents",
                (200, envelope(list_of("WebhookEventDetailResponseData")), "newest first"),
                READ,
                params=event_filters,
            )
        },
        "/webhook-events/count": {
            "get": op("countWebhookEvents", (200, count, "how many"), READ, params=event_filters)
        },
        "/webhook-events/{webhook_event_id}": {
            "get": op(
                "getWebhookEvent",
                (200, envelope(ref("WebhookEventDetailResponseData")), "with its attempts"),
                READ_ONE,
                params=[path_param("webhook_event_id")],
            )
        },
    }


def membership_paths() -> dict[str, Any]:
    membership = ref("CompanyMembershipDetailResponseData")
    return {
        "/company-memberships": {
            "post": op(
                "getOrCreateCompanyMembership",
                (200, envelope(membership), "the membership"),
                WRITE,
                body=(ref("MembershipBody"), "company_id and user_id"),
            ),
            "get": op(
                "listCompanyMemberships",
                (200, envelope({"type": "array", "items": membership}), "memberships"),
                READ,
                params=[query("company_id", STRING), query("user_id", STRING), *PAGE],
            ),
        },
        "/company-memberships/{membership_id}": {
            "delete": op(
                "deleteCompanyMembership",
                (200, envelope(ref("DeleteResponse")), "deleted"),
                READ_ONE,
                params=[path_param("membership_id")],
            )
        },
    }
