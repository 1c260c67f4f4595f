"""Routes of companies, users, memberships and traits (the SDK's
``client.companies.*``): ``/companies``, ``/users``, ``/company-memberships``,
``/company-traits``, ``/user-traits``.

Every call needs a secret key (publishable keys: 403); writes also need a
key that is not read-only (403). Upserts follow identify (WIRE-NOTES §2).
Requests are read in ``requests``; responses are shaped in ``shapes``. A request body may be at most as large as one event's
body (``max_event_body_bytes``, 32 KiB): an entity is no bigger through
the admin API than through an identify event.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tally.api.common.admin import admin
from tally.api.common.bodies import read_json
from tally.api.common.envelope import ok
from tally.api.common.errors import not_found
from tally.api.common.paging import page
from tally.api.common.params import echo, query_bool
from tally.api.common.routing import ApiRoute
from tally.api.common.shapes import DELETED, CountResponse
from tally.api.companies import requests, shapes
from tally.api.companies.openapi import COMPANY, MEMBERSHIP, USER
from tally.api.state import AppState
from tally.errors import Invalid, NotFound

AREA = "companies, users and memberships"
BODY = "the request body"


async def _body(request: Request, state: AppState, decoder: Any) -> Any:
    """A body at most as large as one event's (``max_event_body_bytes``)."""
    return await read_json(request, decoder, BODY, limit=state.settings.max_event_body_bytes)


def _no_match(kind: str, keys: requests.KeyMap) -> NotFound:
    return NotFound(f"no {kind} has the keys {keys} in this environment")


# -- companies -------------------------------------------------------------------
async def upsert_company(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    change = requests.upsert_change(await _body(request, state, requests.UPSERT_BODY), "company")
    company = await state.storage.upsert_company(key.environment_id, change)
    return ok(shapes.company_detail(company))


async def list_companies(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    params: dict[str, Any] = {}
    where = requests.company_filter(request, params)
    companies = await state.storage.list_companies(key.environment_id, where)
    return ok([shapes.company_detail(c) for c in companies], params)


async def count_companies(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    params: dict[str, Any] = {}
    where = requests.company_filter(request, params)
    count = await state.storage.count_companies(key.environment_id, where)
    return ok(CountResponse(count=count), params)


async def get_company(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    company_id = request.path_params["company_id"]
    company = await state.storage.get_company(key.environment_id, company_id)
    if company is None:
        raise not_found("company", company_id)
    return ok(shapes.company_detail(company))


async def lookup_company(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    keys = requests.query_keys(request)
    company = await state.storage.lookup_company(key.environment_id, keys)
    if company is None:
        raise _no_match("company", keys)
    return ok(shapes.company_detail(company), {"keys": keys})


async def delete_company(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    company_id = request.path_params["company_id"]
    params: dict[str, Any] = {}
    for name in ("cancel_subscription", "prorate"):
        echo(params, name, query_bool(request, name))
    company = await state.storage.delete_company(key.environment_id, company_id)
    if company is None:
        raise not_found("company", company_id)
    return ok(DELETED, params)


async def delete_company_by_keys(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    keys = requests.key_map((await _body(request, state, requests.KEYS_BODY)).keys)
    company = await state.storage.delete_company_by_keys(key.environment_id, keys)
    if company is None:
        raise _no_match("company", keys)
    return ok(shapes.company_head(company))


async def upsert_company_trait(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    change = requests.trait_change(await _body(request, state, requests.TRAIT_BODY))
    company = await state.storage.upsert_company_trait(key.environment_id, change)
    return ok(shapes.company_detail(company))


# -- users ------------------------------------------------------------------------
async def upsert_user(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    change = requests.upsert_change(await _body(request, state, requests.UPSERT_BODY), "user")
    user = await state.storage.upsert_user(key.environment_id, change)
    return ok(shapes.user_detail(user))


async def list_users(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    params: dict[str, Any] = {}
    where = requests.user_filter(request, params)
    users = await state.storage.list_users(key.environment_id, where)
    return ok([shapes.user_detail(u) for u in users], params)


async def count_users(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    params: dict[str, Any] = {}
    where = requests.user_filter(request, params)
    count = await state.storage.count_users(key.environment_id, where)
    return ok(CountResponse(count=count), params)


async def get_user(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    user_id = request.path_params["user_id"]
    user = await state.storage.get_user(key.environment_id, user_id)
    if user is None:
        raise not_found("user", user_id)
    return ok(shapes.user_detail(user))


async def lookup_user(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    keys = requests.query_keys(request)
    user = await state.storage.lookup_user(key.environment_id, keys)
    if user is None:
        raise _no_match("user", keys)
    return ok(shapes.user_detail(user), {"keys": keys})


async def delete_user(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    user_id = request.path_params["user_id"]
    user = await state.storage.delete_user(key.environment_id, user_id)
    if user is None:
        raise not_found("user", user_id)
    return ok(DELETED)


async def delete_user_by_keys(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    keys = requests.key_map((await _body(request, state, requests.KEYS_BODY)).keys)
    user = await state.storage.delete_user_by_keys(key.environment_id, keys)
    if user is None:
        raise _no_match("user", keys)
    return ok(shapes.user_head(user))


async def upsert_user_trait(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    change = requests.trait_change(await _body(request, state, requests.TRAIT_BODY))
    user = await state.storage.upsert_user_trait(key.environment_id, change)
    return ok(shapes.user_detail(user))


# -- memberships ------------------------------------------------------------------
async def list_memberships(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    params: dict[str, Any] = {}
    company_id, user_id = requests.membership_filter(request, params)
    limit, offset = page(request, params)
    found = await state.storage.list_memberships(
        key.environment_id, company_id, user_id, limit, offset
    )
    return ok([shapes.membership(m) for m in found], params)


async def get_or_create_membership(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    body = await _body(request, state, requests.MEMBERSHIP_BODY)
    if not body.company_id or not body.user_id:
        raise Invalid("company_id and user_id are both required")
    membership = await state.storage.get_or_create_membership(
        key.environment_id,
        requests.text(body.company_id, "company_id"),
        requests.text(body.user_id, "user_id"),
    )
    return ok(shapes.membership(membership))


async def delete_membership(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    membership_id = request.path_params["membership_id"]
    if not await state.storage.delete_membership(key.environment_id, membership_id):
        raise not_found("company membership", membership_id)
    return ok(DELETED)


routes = [
    ApiRoute("POST", "/companies", upsert_company, COMPANY["upsert"]),
    ApiRoute("GET", "/companies", list_companies, COMPANY["list"]),
    ApiRoute("GET", "/companies/count", count_companies, COMPANY["count"]),
    ApiRoute("GET", "/companies/lookup", lookup_company, COMPANY["lookup"]),
    ApiRoute("POST", "/companies/delete", delete_company_by_keys, COMPANY["delete_by_keys"]),
    ApiRoute("GET", "/companies/{company_id}", get_company, COMPANY["get"]),
    ApiRoute("DELETE", "/companies/{company_id}", delete_company, COMPANY["delete"]),
    ApiRoute("POST", "/company-traits", upsert_company_trait, COMPANY["trait"]),
    ApiRoute("POST", "/users", upsert_user, USER["upsert"]),
    ApiRoute("GET", "/users", list_users, USER["list"]),
    ApiRoute("GET", "/users/count", count_users, USER["count"]),
    ApiRoute("GET", "/users/lookup", lookup_user, USER["lookup"]),
    ApiRoute("POST", "/users/delete", delete_user_by_keys, USER["delete_by_keys"]),
    ApiRoute("GET", "/users/{user_id}", get_user, USER["get"]),
    ApiRoute("DELETE", "/users/{user_id}", delete_user, USER["delete"]),
    ApiRoute("POST", "/user-traits", upsert_user_trait, USER["trait"]),
    ApiRoute("POST", "/company-memberships", get_or_create_membership, MEMBERSHIP["create"]),
    ApiRoute("GET", "/company-memberships", list_memberships, MEMBERSHIP["list"]),
    ApiRoute(
        "DELETE", "/company-memberships/{membership_id}", delete_membership, MEMBERSHIP["delete"]
    ),
]
