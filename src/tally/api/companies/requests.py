"""Reading the requests of the companies/users API: bodies (msgspec structs;
explicit null equals absent), map query parameters and list filters, turned
into the storage layer's records. Every refusal is ``Invalid`` with one
sentence."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request

from tally.api.common.paging import page
from tally.api.common.params import echo, query_bool, query_list, query_map, query_str
from tally.clock import to_micros
from tally.errors import Invalid
from tally.ingest.timeparse import parse_timestamp
from tally.storage.base_entities import EntityFilter, EntityUpsert, TraitChange

MAX_KEYS = 50
MAX_TEXT = 255
MAX_IDS = 1000
SORT_COLUMNS = ("created_at", "updated_at", "last_seen_at", "name")
KeyMap = dict[str, str]
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class UpsertBody(msgspec.Struct):
    """``UpsertCompanyRequestBody`` / ``UpsertUserRequestBody`` (null = absent)."""

    keys: KeyMap | None = None
    id: str | None = None
    name: str | None = None
    traits: dict[str, Any] | None = None
    last_seen_at: str | None = None
    update_only: bool | None = None
    prevent_key_remap: bool | None = None
    remove_keys: list[str] | None = None
    # users only
    company: KeyMap | None = None
    companies: list[KeyMap] | None = None
    company_id: str | None = None
    company_ids: list[str] | None = None


class KeysBody(msgspec.Struct):
    keys: KeyMap | None = None


class MembershipBody(msgspec.Struct):
    company_id: str | None = None
    user_id: str | None = None


class TraitBody(msgspec.Struct):
    keys: KeyMap | None = None
    trait: str | None = None
    set_: Any = msgspec.field(default=None, name="set")
    incr: Int64 | None = None
    update_only: bool | None = None


UPSERT_BODY = msgspec.json.Decoder(UpsertBody)
KEYS_BODY = msgspec.json.Decoder(KeysBody)
MEMBERSHIP_BODY = msgspec.json.Decoder(MembershipBody)
TRAIT_BODY = msgspec.json.Decoder(TraitBody)


def text(value: str, field: str) -> str:
    if not value or len(value) > MAX_TEXT:
        raise Invalid(f"{field} must be 1 to {MAX_TEXT} characters, not {len(value)}")
    return value


def key_map(keys: KeyMap | None, field: str = "keys", *, required: bool = True) -> KeyMap:
    if not keys:
        if required:
            raise Invalid(f'{field} must hold at least one key, for example {{"id": "acme"}}')
        return {}
    if len(keys) > MAX_KEYS:
        raise Invalid(f"{field} holds {len(keys)} keys; at most {MAX_KEYS} are allowed")
    for name, value in keys.items():
        text(name, f"a key name in {field}")
        text(value, f"the value of {field}[{name[:64]}]")
    return keys


def query_keys(request: Request, name: str = "keys") -> KeyMap:
    """A map query parameter, as ``keys[id]=acme`` or as JSON text
    ``keys={"id":"acme"}``."""
    return key_map(query_map(request, name), name)


def upsert_change(body: UpsertBody, kind: str) -> EntityUpsert:
    keys = key_map(body.keys, required=body.id is None)
    if body.name is not None and len(body.name) > 1024:
        raise Invalid("name must be at most 1024 characters")
    last_seen = None
    if body.last_seen_at is not None:
        last_seen = to_micros(parse_timestamp(body.last_seen_at, "last_seen_at"))
    companies: list[KeyMap] = []
    exact = False
    if kind == "user":
        if body.companies is not None:
            exact = True
            companies.extend(key_map(c, "companies[]") for c in body.companies)
        if body.company:
            companies.append(key_map(body.company, "company"))
        for company_id in ([body.company_id] if body.company_id else []) + (body.company_ids or []):
            companies.append({"id": text(company_id, "company_id")})
    return EntityUpsert(
        keys=keys,
        id=body.id or None,
        name=body.name,
        traits=body.traits,
        last_seen_at=last_seen,
        update_only=bool(body.update_only),
        prevent_key_remap=bool(body.prevent_key_remap),
        remove_keys=tuple(body.remove_keys or ()),
        companies=tuple(companies),
        exact_companies=exact,
    )


def trait_change(body: TraitBody) -> TraitChange:
    keys = key_map(body.keys)
    if body.trait is None:
        raise Invalid("trait is required: the name of the trait to set or increment")
    trait = text(body.trait, "trait")
    if body.set_ is not None and body.incr is not None:
        raise Invalid("send either set or incr, not both")
    if body.set_ is None and body.incr is None:
        raise Invalid("send set (the new value) or incr (an integer to add)")
    return TraitChange(
        keys=keys, trait=trait, set=body.set_, incr=body.incr, update_only=bool(body.update_only)
    )


def sort_order(request: Request, params: dict[str, Any]) -> tuple[str, bool]:
    column = query_str(request, "sort_order_column", 64) or "created_at"
    if column not in SORT_COLUMNS:
        raise Invalid(
            "sort_order_column must be created_at, updated_at, last_seen_at or name, "
            f"not {column!r}"
        )
    direction = query_str(request, "sort_order_direction", 8) or "desc"
    if direction not in ("asc", "desc"):
        raise Invalid(f"sort_order_direction must be asc or desc, not {direction!r}")
    if "sort_order_column" in request.query_params:
        params["sort_order_column"] = column
    if "sort_order_direction" in request.query_params:
        params["sort_order_direction"] = direction
    return column, direction == "desc"


# Filters on plans, subscriptions and credits: tally has none of them, so a
# company passes only when the filter asks for their absence.
PLAN_LISTS = (
    "credit_type_ids",
    "plan_ids",
    "plan_version_ids",
    "subscription_statuses",
    "subscription_types",
)
PLAN_TEXTS = ("plan_id", "plan_version_id")
PLAN_WANTS = (
    "has_scheduled_downgrade",
    "monetized_subscriptions",
    "plan_version_unpublished",
    "with_subscription",
)
PLAN_WANTS_NOT = ("without_plan", "without_subscription")


def company_filter(request: Request, params: dict[str, Any]) -> EntityFilter:
    match_none = False
    for name in PLAN_LISTS:
        match_none = bool(echo(params, name, query_list(request, name))) or match_none
    for name in PLAN_TEXTS:
        match_none = (
            echo(params, name, query_str(request, name, MAX_TEXT)) is not None or match_none
        )
    for name in PLAN_WANTS:
        flag = echo(params, name, query_bool(request, name))
        match_none = match_none or bool(flag)
    for name in PLAN_WANTS_NOT:
        flag = echo(params, name, query_bool(request, name))
        match_none = match_none or flag is False
    ids = echo(params, "ids", query_list(request, "ids", MAX_IDS))
    q = echo(params, "q", query_str(request, "q", 512))
    with_feature = echo(
        params, "with_entitlement_for", query_str(request, "with_entitlement_for", MAX_TEXT)
    )
    without_feature = echo(
        params,
        "without_feature_override_for",
        query_str(request, "without_feature_override_for", MAX_TEXT),
    )
    sort, descending = sort_order(request, params)
    limit, offset = page(request, params)
    return EntityFilter(
        ids=tuple(ids),
        q=q,
        with_feature=with_feature,
        without_feature=without_feature,
        match_none=match_none,
        sort=sort,
        descending=descending,
        limit=limit,
        offset=offset,
    )


def user_filter(request: Request, params: dict[str, Any]) -> EntityFilter:
    company_id = echo(params, "company_id", query_str(request, "company_id", MAX_TEXT))
    ids = echo(params, "ids", query_list(request, "ids", MAX_IDS))
    q = echo(params, "q", query_str(request, "q", 512))
    plan_id = echo(params, "plan_id", query_str(request, "plan_id", MAX_TEXT))
    limit, offset = page(request, params)
    return EntityFilter(
        ids=tuple(ids),
        q=q,
        company_id=company_id,
        match_none=plan_id is not None,
        limit=limit,
        offset=offset,
    )


def membership_filter(request: Request, params: dict[str, Any]) -> tuple[str | None, str | None]:
    """``GET /company-memberships``' company and user."""
    company_id = echo(params, "company_id", query_str(request, "company_id", MAX_TEXT))
    user_id = echo(params, "user_id", query_str(request, "user_id", MAX_TEXT))
    return company_id, user_id
