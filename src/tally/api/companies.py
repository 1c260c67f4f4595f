"""Routes of companies, users, memberships and traits (the SDK's
``client.companies.*``): ``/companies``, ``/users``, ``/company-memberships``,
``/company-traits``, ``/user-traits``.

Every call needs a secret key (publishable keys: 403); writes also need a
key that is not read-only (403). Upserts follow identify (WIRE-NOTES §2).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tally.api import entity_shapes as shapes
from tally.api.http import ok, query_int, query_list, query_str, read_body
from tally.api.state import AppState
from tally.clock import to_micros
from tally.errors import Forbidden, Invalid, NotFound
from tally.ingest.timeparse import parse_timestamp
from tally.model import ApiKey
from tally.storage.base_entities import EntityFilter, EntityUpsert, TraitChange

MAX_LIMIT = 250
MAX_KEYS = 50
MAX_TEXT = 255
MAX_IDS = 1000
B = TypeVar("B")
KeyMap = dict[str, str]
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


# -- request bodies ------------------------------------------------------------
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


# -- helpers ------------------------------------------------------------------
def _state(request: Request) -> AppState:
    state: AppState = request.app.state.tally
    return state


async def _admin(request: Request, *, write: bool) -> ApiKey:
    key = await _state(request).auth.key_for(request)
    if not key.is_secret:
        raise Forbidden(
            "publishable API keys cannot use the companies and users API; use a secret key"
        )
    if write and not key.can_write:
        raise Forbidden("read-only API keys cannot change companies, users or memberships")
    return key


async def _body(request: Request, shape: type[B]) -> B:
    data = await read_body(request, _state(request).settings.max_request_bytes)
    try:
        return msgspec.json.decode(data, type=shape)
    except msgspec.ValidationError as err:
        raise Invalid(f"the request body is not valid: {err}") from None
    except msgspec.DecodeError as err:
        raise Invalid(f"the request body is not valid JSON: {err}") from None


def _text(value: str, field: str) -> str:
    if not value or len(value) > MAX_TEXT:
        raise Invalid(f"{field} must be 1 to {MAX_TEXT} characters, not {len(value)}")
    return value


def _keys(keys: KeyMap | None, field: str = "keys", *, required: bool = True) -> KeyMap:
    if not keys:
        if required:
            raise Invalid(f'{field} must hold at least one key, for example {{"id": "acme"}}')
        return {}
    if len(keys) > MAX_KEYS:
        raise Invalid(f"{field} holds {len(keys)} keys; at most {MAX_KEYS} are allowed")
    for name, value in keys.items():
        _text(name, f"a key name in {field}")
        _text(value, f"the value of {field}[{name[:64]}]")
    return keys


def query_keys(request: Request, name: str = "keys") -> KeyMap:
    """A map query parameter, as ``keys[id]=acme`` or as JSON text
    ``keys={"id":"acme"}``."""
    out: KeyMap = {}
    prefix = name + "["
    for param, value in request.query_params.multi_items():
        if param.startswith(prefix) and param.endswith("]"):
            out[param[len(prefix) : -1]] = value
        elif param == name and value:
            try:
                parsed = json.loads(value)
            except ValueError:
                raise Invalid(
                    f'{name} must be given as {name}[id]=acme or as JSON text {name}={{"id":"acme"}}'
                ) from None
            if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
                raise Invalid(f'{name} must be a JSON object of strings, such as {{"id":"acme"}}')
            out.update(parsed)
    return _keys(out, name)


def _query_bool(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise Invalid(f"{name} must be true or false, not {raw[:32]!r}")


def _ids(request: Request, name: str) -> list[str]:
    values = query_list(request, name)
    if len(values) > MAX_IDS:
        raise Invalid(f"{name} takes at most {MAX_IDS} values")
    return values


def _page(request: Request, params: dict[str, Any]) -> tuple[int, int]:
    limit = query_int(request, "limit", 100, 0, MAX_LIMIT)
    offset = query_int(request, "offset", 0, 0, 2**31)
    params["limit"] = limit
    params["offset"] = offset
    return limit, offset


def _upsert(body: UpsertBody, kind: str) -> EntityUpsert:
    keys = _keys(body.keys, required=body.id is None)
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
            companies.extend(_keys(c, "companies[]") for c in body.companies)
        if body.company:
            companies.append(_keys(body.company, "company"))
        for company_id in ([body.company_id] if body.company_id else []) + (body.company_ids or []):
            companies.append({"id": _text(company_id, "company_id")})
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


def _trait(body: TraitBody) -> TraitChange:
    keys = _keys(body.keys)
    if body.trait is None:
        raise Invalid("trait is required: the name of the trait to set or increment")
    trait = _text(body.trait, "trait")
    if body.set_ is not None and body.incr is not None:
        raise Invalid("send either set or incr, not both")
    if body.set_ is None and body.incr is None:
        raise Invalid("send set (the new value) or incr (an integer to add)")
    return TraitChange(
        keys=keys, trait=trait, set=body.set_, incr=body.incr, update_only=bool(body.update_only)
    )


def _sort(request: Request, params: dict[str, Any]) -> tuple[str, bool]:
    column = query_str(request, "sort_order_column", 64) or "created_at"
    if column not in ("created_at", "updated_at", "last_seen_at", "name"):
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
_PLAN_LISTS = (
    "credit_type_ids",
    "plan_ids",
    "plan_version_ids",
    "subscription_statuses",
    "subscription_types",
)
_PLAN_TEXTS = ("plan_id", "plan_version_id")
_PLAN_WANTS = (
    "has_scheduled_downgrade",
    "monetized_subscriptions",
    "plan_version_unpublished",
    "with_subscription",
)
_PLAN_WANTS_NOT = ("without_plan", "without_subscription")


def _company_filter(request: Request, params: dict[str, Any]) -> EntityFilter:
    match_none = False
    for name in _PLAN_LISTS:
        values = query_list(request, name)
        if values:
            params[name] = values
            match_none = True
    for name in _PLAN_TEXTS:
        value = query_str(request, name, MAX_TEXT)
        if value is not None:
            params[name] = value
            match_none = True
    for name in _PLAN_WANTS:
        flag = _query_bool(request, name)
        if flag is not None:
            params[name] = flag
            match_none = match_none or flag
    for name in _PLAN_WANTS_NOT:
        flag = _query_bool(request, name)
        if flag is not None:
            params[name] = flag
            match_none = match_none or not flag
    ids = _ids(request, "ids")
    if ids:
        params["ids"] = ids
    q = query_str(request, "q", 512)
    if q is not None:
        params["q"] = q
    with_feature = query_str(request, "with_entitlement_for", MAX_TEXT)
    if with_feature is not None:
        params["with_entitlement_for"] = with_feature
    without_feature = query_str(request, "without_feature_override_for", MAX_TEXT)
    if without_feature is not None:
        params["without_feature_override_for"] = without_feature
    sort, descending = _sort(request, params)
    limit, offset = _page(request, params)
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


def _user_filter(request: Request, params: dict[str, Any]) -> EntityFilter:
    company_id = query_str(request, "company_id", MAX_TEXT)
    if company_id is not None:
        params["company_id"] = company_id
    ids = _ids(request, "ids")
    if ids:
        params["ids"] = ids
    q = query_str(request, "q", 512)
    if q is not None:
        params["q"] = q
    plan_id = query_str(request, "plan_id", MAX_TEXT)
    if plan_id is not None:
        params["plan_id"] = plan_id
    limit, offset = _page(request, params)
    return EntityFilter(
        ids=tuple(ids),
        q=q,
        company_id=company_id,
        match_none=plan_id is not None,
        limit=limit,
        offset=offset,
    )


def _not_found(kind: str, entity_id: str) -> NotFound:
    return NotFound(f"{kind} {entity_id[:64]!r} was not found in this environment")


def _no_match(kind: str, keys: KeyMap) -> NotFound:
    return NotFound(f"no {kind} has the keys {keys} in this environment")


# -- companies -------------------------------------------------------------------
async def upsert_company(request: Request) -> Response:
    key = await _admin(request, write=True)
    change = _upsert(await _body(request, UpsertBody), "company")
    company = await _state(request).storage.upsert_company(key.environment_id, change)
    return ok(shapes.company_detail(company))


async def list_companies(request: Request) -> Response:
    key = await _admin(request, write=False)
    params: dict[str, Any] = {}
    where = _company_filter(request, params)
    companies = await _state(request).storage.list_companies(key.environment_id, where)
    return ok([shapes.company_detail(c) for c in companies], params)


async def count_companies(request: Request) -> Response:
    key = await _admin(request, write=False)
    params: dict[str, Any] = {}
    where = _company_filter(request, params)
    count = await _state(request).storage.count_companies(key.environment_id, where)
    return ok(shapes.CountResponse(count=count), params)


async def get_company(request: Request) -> Response:
    key = await _admin(request, write=False)
    company_id = request.path_params["company_id"]
    company = await _state(request).storage.get_company(key.environment_id, company_id)
    if company is None:
        raise _not_found("company", company_id)
    return ok(shapes.company_detail(company))


async def lookup_company(request: Request) -> Response:
    key = await _admin(request, write=False)
    keys = query_keys(request)
    company = await _state(request).storage.lookup_company(key.environment_id, keys)
    if company is None:
        raise _no_match("company", keys)
    return ok(shapes.company_detail(company), {"keys": keys})


async def delete_company(request: Request) -> Response:
    key = await _admin(request, write=True)
    company_id = request.path_params["company_id"]
    params: dict[str, Any] = {}
    for name in ("cancel_subscription", "prorate"):
        flag = _query_bool(request, name)
        if flag is not None:
            params[name] = flag
    company = await _state(request).storage.delete_company(key.environment_id, company_id)
    if company is None:
        raise _not_found("company", company_id)
    return ok(shapes.DeleteResponse(deleted=True), params)


async def delete_company_by_keys(request: Request) -> Response:
    key = await _admin(request, write=True)
    keys = _keys((await _body(request, KeysBody)).keys)
    company = await _state(request).storage.delete_company_by_keys(key.environment_id, keys)
    if company is None:
        raise _no_match("company", keys)
    return ok(shapes.company_head(company))


async def upsert_company_trait(request: Request) -> Response:
    key = await _admin(request, write=True)
    change = _trait(await _body(request, TraitBody))
    company = await _state(request).storage.upsert_company_trait(key.environment_id, change)
    return ok(shapes.company_detail(company))


# -- users ------------------------------------------------------------------------
async def upsert_user(request: Request) -> Response:
    key = await _admin(request, write=True)
    change = _upsert(await _body(request, UpsertBody), "user")
    user = await _state(request).storage.upsert_user(key.environment_id, change)
    return ok(shapes.user_detail(user))


async def list_users(request: Request) -> Response:
    key = await _admin(request, write=False)
    params: dict[str, Any] = {}
    where = _user_filter(request, params)
    users = await _state(request).storage.list_users(key.environment_id, where)
    return ok([shapes.user_detail(u) for u in users], params)


async def count_users(request: Request) -> Response:
    key = await _admin(request, write=False)
    params: dict[str, Any] = {}
    where = _user_filter(request, params)
    count = await _state(request).storage.count_users(key.environment_id, where)
    return ok(shapes.CountResponse(count=count), params)


async def get_user(request: Request) -> Response:
    key = await _admin(request, write=False)
    user_id = request.path_params["user_id"]
    user = await _state(request).storage.get_user(key.environment_id, user_id)
    if user is None:
        raise _not_found("user", user_id)
    return ok(shapes.user_detail(user))


async def lookup_user(request: Request) -> Response:
    key = await _admin(request, write=False)
    keys = query_keys(request)
    user = await _state(request).storage.lookup_user(key.environment_id, keys)
    if user is None:
        raise _no_match("user", keys)
    return ok(shapes.user_detail(user), {"keys": keys})


async def delete_user(request: Request) -> Response:
    key = await _admin(request, write=True)
    user_id = request.path_params["user_id"]
    user = await _state(request).storage.delete_user(key.environment_id, user_id)
    if user is None:
        raise _not_found("user", user_id)
    return ok(shapes.DeleteResponse(deleted=True))


async def delete_user_by_keys(request: Request) -> Response:
    key = await _admin(request, write=True)
    keys = _keys((await _body(request, KeysBody)).keys)
    user = await _state(request).storage.delete_user_by_keys(key.environment_id, keys)
    if user is None:
        raise _no_match("user", keys)
    return ok(shapes.user_head(user))


async def upsert_user_trait(request: Request) -> Response:
    key = await _admin(request, write=True)
    change = _trait(await _body(request, TraitBody))
    user = await _state(request).storage.upsert_user_trait(key.environment_id, change)
    return ok(shapes.user_detail(user))


# -- memberships ------------------------------------------------------------------
async def list_memberships(request: Request) -> Response:
    key = await _admin(request, write=False)
    params: dict[str, Any] = {}
    company_id = query_str(request, "company_id", MAX_TEXT)
    user_id = query_str(request, "user_id", MAX_TEXT)
    if company_id is not None:
        params["company_id"] = company_id
    if user_id is not None:
        params["user_id"] = user_id
    limit, offset = _page(request, params)
    found = await _state(request).storage.list_memberships(
        key.environment_id, company_id, user_id, limit, offset
    )
    return ok([shapes.membership(m) for m in found], params)


async def get_or_create_membership(request: Request) -> Response:
    key = await _admin(request, write=True)
    body = await _body(request, MembershipBody)
    if not body.company_id or not body.user_id:
        raise Invalid("company_id and user_id are both required")
    membership = await _state(request).storage.get_or_create_membership(
        key.environment_id, _text(body.company_id, "company_id"), _text(body.user_id, "user_id")
    )
    return ok(shapes.membership(membership))


async def delete_membership(request: Request) -> Response:
    key = await _admin(request, write=True)
    membership_id = request.path_params["membership_id"]
    if not await _state(request).storage.delete_membership(key.environment_id, membership_id):
        raise _not_found("company membership", membership_id)
    return ok(shapes.DeleteResponse(deleted=True))


routes = [
    Route("/companies", upsert_company, methods=["POST"]),
    Route("/companies", list_companies, methods=["GET"]),
    Route("/companies/count", count_companies, methods=["GET"]),
    Route("/companies/lookup", lookup_company, methods=["GET"]),
    Route("/companies/delete", delete_company_by_keys, methods=["POST"]),
    Route("/companies/{company_id}", get_company, methods=["GET"]),
    Route("/companies/{company_id}", delete_company, methods=["DELETE"]),
    Route("/company-traits", upsert_company_trait, methods=["POST"]),
    Route("/users", upsert_user, methods=["POST"]),
    Route("/users", list_users, methods=["GET"]),
    Route("/users/count", count_users, methods=["GET"]),
    Route("/users/lookup", lookup_user, methods=["GET"]),
    Route("/users/delete", delete_user_by_keys, methods=["POST"]),
    Route("/users/{user_id}", get_user, methods=["GET"]),
    Route("/users/{user_id}", delete_user, methods=["DELETE"]),
    Route("/user-traits", upsert_user_trait, methods=["POST"]),
    Route("/company-memberships", get_or_create_membership, methods=["POST"]),
    Route("/company-memberships", list_memberships, methods=["GET"]),
    Route("/company-memberships/{membership_id}", delete_membership, methods=["DELETE"]),
]
