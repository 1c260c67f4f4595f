"""Routes of companies, users, memberships and traits (the SDK's
``client.companies.*``): ``/companies``, ``/users``, ``/company-memberships``,
``/company-traits``, ``/user-traits``.

Every call needs a secret key (publishable keys: 403); writes also need a
key that is not read-only (403). Upserts follow identify (WIRE-NOTES §2).
Requests are read in ``entity_requests``; responses are shaped in
``entity_shapes``. A request body may be at most as large as one event's
body (``max_event_body_bytes``, 32 KiB): an entity is no bigger through
the admin API than through an identify event.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tally.api import entity_requests as requests
from tally.api import entity_shapes as shapes
from tally.api.common.bodies import check_json, read_body
from tally.api.common.envelope import ok
from tally.api.common.params import query_str
from tally.api.state import AppState
from tally.errors import Invalid, NotFound
from tally.model import ApiKey

B = TypeVar("B")


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.tally
    return state


async def _admin(request: Request, *, write: bool) -> ApiKey:
    return await _state(request).auth.admin(
        request, area="companies, users and memberships", write=write
    )


async def _body(request: Request, shape: type[B]) -> B:
    data = await read_body(request, _state(request).settings.max_event_body_bytes)
    check_json(data, "the request body")
    try:
        return msgspec.json.decode(data, type=shape)
    except msgspec.ValidationError as err:
        raise Invalid(f"the request body is not valid: {err}") from None
    except msgspec.DecodeError as err:
        raise Invalid(f"the request body is not valid JSON: {err}") from None


def _not_found(kind: str, entity_id: str) -> NotFound:
    return NotFound(f"{kind} {entity_id[:64]!r} was not found in this environment")


def _no_match(kind: str, keys: requests.KeyMap) -> NotFound:
    return NotFound(f"no {kind} has the keys {keys} in this environment")


# -- companies -------------------------------------------------------------------
async def upsert_company(request: Request) -> Response:
    key = await _admin(request, write=True)
    change = requests.upsert_change(await _body(request, requests.UpsertBody), "company")
    company = await _state(request).storage.upsert_company(key.environment_id, change)
    return ok(shapes.company_detail(company))


async def list_companies(request: Request) -> Response:
    key = await _admin(request, write=False)
    params: dict[str, Any] = {}
    where = requests.company_filter(request, params)
    companies = await _state(request).storage.list_companies(key.environment_id, where)
    return ok([shapes.company_detail(c) for c in companies], params)


async def count_companies(request: Request) -> Response:
    key = await _admin(request, write=False)
    params: dict[str, Any] = {}
    where = requests.company_filter(request, params)
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
    keys = requests.query_keys(request)
    company = await _state(request).storage.lookup_company(key.environment_id, keys)
    if company is None:
        raise _no_match("company", keys)
    return ok(shapes.company_detail(company), {"keys": keys})


async def delete_company(request: Request) -> Response:
    key = await _admin(request, write=True)
    company_id = request.path_params["company_id"]
    params: dict[str, Any] = {}
    for name in ("cancel_subscription", "prorate"):
        flag = requests.query_bool(request, name)
        if flag is not None:
            params[name] = flag
    company = await _state(request).storage.delete_company(key.environment_id, company_id)
    if company is None:
        raise _not_found("company", company_id)
    return ok(shapes.DeleteResponse(deleted=True), params)


async def delete_company_by_keys(request: Request) -> Response:
    key = await _admin(request, write=True)
    keys = requests.key_map((await _body(request, requests.KeysBody)).keys)
    company = await _state(request).storage.delete_company_by_keys(key.environment_id, keys)
    if company is None:
        raise _no_match("company", keys)
    return ok(shapes.company_head(company))


async def upsert_company_trait(request: Request) -> Response:
    key = await _admin(request, write=True)
    change = requests.trait_change(await _body(request, requests.TraitBody))
    company = await _state(request).storage.upsert_company_trait(key.environment_id, change)
    return ok(shapes.company_detail(company))


# -- users ------------------------------------------------------------------------
async def upsert_user(request: Request) -> Response:
    key = await _admin(request, write=True)
    change = requests.upsert_change(await _body(request, requests.UpsertBody), "user")
    user = await _state(request).storage.upsert_user(key.environment_id, change)
    return ok(shapes.user_detail(user))


async def list_users(request: Request) -> Response:
    key = await _admin(request, write=False)
    params: dict[str, Any] = {}
    where = requests.user_filter(request, params)
    users = await _state(request).storage.list_users(key.environment_id, where)
    return ok([shapes.user_detail(u) for u in users], params)


async def count_users(request: Request) -> Response:
    key = await _admin(request, write=False)
    params: dict[str, Any] = {}
    where = requests.user_filter(request, params)
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
    keys = requests.query_keys(request)
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
    keys = requests.key_map((await _body(request, requests.KeysBody)).keys)
    user = await _state(request).storage.delete_user_by_keys(key.environment_id, keys)
    if user is None:
        raise _no_match("user", keys)
    return ok(shapes.user_head(user))


async def upsert_user_trait(request: Request) -> Response:
    key = await _admin(request, write=True)
    change = requests.trait_change(await _body(request, requests.TraitBody))
    user = await _state(request).storage.upsert_user_trait(key.environment_id, change)
    return ok(shapes.user_detail(user))


# -- memberships ------------------------------------------------------------------
async def list_memberships(request: Request) -> Response:
    key = await _admin(request, write=False)
    params: dict[str, Any] = {}
    company_id = query_str(request, "company_id", requests.MAX_TEXT)
    user_id = query_str(request, "user_id", requests.MAX_TEXT)
    if company_id is not None:
        params["company_id"] = company_id
    if user_id is not None:
        params["user_id"] = user_id
    limit, offset = requests.page(request, params)
    found = await _state(request).storage.list_memberships(
        key.environment_id, company_id, user_id, limit, offset
    )
    return ok([shapes.membership(m) for m in found], params)


async def get_or_create_membership(request: Request) -> Response:
    key = await _admin(request, write=True)
    body = await _body(request, requests.MembershipBody)
    if not body.company_id or not body.user_id:
        raise Invalid("company_id and user_id are both required")
    membership = await _state(request).storage.get_or_create_membership(
        key.environment_id,
        requests.text(body.company_id, "company_id"),
        requests.text(body.user_id, "user_id"),
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
