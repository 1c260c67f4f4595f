"""Routes of features, company overrides (allocations) and feature usage.

These are admin calls: a publishable key may not make them, and a read-only
secret key may only read.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tally.api.catalog import requests, shapes
from tally.api.catalog.openapi import FEATURE, OVERRIDE, USAGE
from tally.api.common.admin import admin
from tally.api.common.bodies import read_json
from tally.api.common.envelope import ok
from tally.api.common.errors import not_found
from tally.api.common.routing import ApiRoute
from tally.api.common.shapes import DELETED
from tally.clock import to_micros
from tally.errors import Invalid
from tally.metering.catalog import UsageFilter

AREA = "features, company overrides and usage"


# -- features -------------------------------------------------------------------
async def create_feature(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    body = await read_json(request, requests.FEATURE_BODY, "feature")
    feature = await state.storage.create_feature(key.environment_id, requests.feature_changes(body))
    return ok(shapes.feature_detail(feature), status=201)


async def list_features(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    params: dict[str, Any] = {}
    where = requests.feature_filter(request, params)
    features = await state.storage.list_features(key.environment_id, where)
    return ok([shapes.feature_detail(f) for f in features], params)


async def get_feature(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    feature_id = request.path_params["feature_id"]
    feature = await state.storage.get_feature(key.environment_id, feature_id)
    if feature is None:
        raise not_found("feature", feature_id)
    return ok(shapes.feature_detail(feature))


async def update_feature(request: Request) -> Response:
    """A new ``event_subtype`` attributes events processed from now on; events
    already processed keep their ``feature_ids``."""
    state, key = await admin(request, AREA, write=True)
    feature_id = request.path_params["feature_id"]
    body = await read_json(request, requests.FEATURE_BODY, "feature")
    feature = await state.storage.update_feature(
        key.environment_id, feature_id, requests.feature_changes(body)
    )
    if feature is None:
        raise not_found("feature", feature_id)
    return ok(shapes.feature_detail(feature))


async def delete_feature(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    feature_id = request.path_params["feature_id"]
    if not await state.storage.delete_feature(key.environment_id, feature_id):
        raise not_found("feature", feature_id)
    return ok(DELETED)


# -- company overrides ----------------------------------------------------------
async def create_company_override(request: Request) -> Response:
    """One override per (company, feature): creating a second one for the
    same pair updates the first (answered with 200 instead of 201)."""
    state, key = await admin(request, AREA, write=True)
    body = await read_json(request, requests.OVERRIDE_BODY, "company override")
    if not body.company_id:
        raise Invalid("company_id is required")
    if not body.feature_id:
        raise Invalid("feature_id is required")
    changes = requests.override_changes(body)
    allocation, created = await state.storage.upsert_allocation(
        key.environment_id, body.company_id, body.feature_id, changes, body.note, key.id
    )
    return ok(shapes.company_override(allocation), status=201 if created else 200)


async def list_company_overrides(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    params: dict[str, Any] = {}
    where = requests.override_filter(request, params)
    rows = await state.storage.list_allocations(key.environment_id, where)
    return ok([shapes.company_override(a) for a in rows], params)


async def get_company_override(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    override_id = request.path_params["override_id"]
    allocation = await state.storage.get_allocation(key.environment_id, override_id)
    if allocation is None:
        raise not_found("company override", override_id)
    return ok(shapes.company_override(allocation))


async def update_company_override(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    override_id = request.path_params["override_id"]
    body = await read_json(request, requests.OVERRIDE_BODY, "company override")
    allocation = await state.storage.update_allocation(
        key.environment_id, override_id, requests.override_changes(body), body.note, key.id
    )
    if allocation is None:
        raise not_found("company override", override_id)
    return ok(shapes.company_override(allocation))


async def delete_company_override(request: Request) -> Response:
    state, key = await admin(request, AREA, write=True)
    override_id = request.path_params["override_id"]
    if not await state.storage.delete_allocation(key.environment_id, override_id):
        raise not_found("company override", override_id)
    return ok(DELETED)


# -- usage ----------------------------------------------------------------------
async def list_feature_usage(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    params: dict[str, Any] = {}
    company_id, company_keys, where = requests.usage_filter(request, params)
    target = await state.storage.find_company_id(key.environment_id, company_id, company_keys)
    now_us = to_micros(state.clock.now())
    rows = await state.storage.feature_usage(key.environment_id, target, where, now_us)
    return ok([shapes.feature_usage(r) for r in rows], params)


async def usage_by_company(request: Request) -> Response:
    state, key = await admin(request, AREA, write=False)
    keys = requests.company_keys(request)
    target = await state.storage.find_company_id(key.environment_id, None, keys)
    now_us = to_micros(state.clock.now())
    rows = await state.storage.feature_usage(
        key.environment_id, target, UsageFilter(limit=None), now_us
    )
    data = shapes.FeatureUsageDetailResponseData(features=[shapes.feature_usage(r) for r in rows])
    return ok(data, {"keys": keys})


routes = [
    ApiRoute("POST", "/features", create_feature, FEATURE["create"]),
    ApiRoute("GET", "/features", list_features, FEATURE["list"]),
    ApiRoute("GET", "/features/{feature_id}", get_feature, FEATURE["get"]),
    ApiRoute("PUT", "/features/{feature_id}", update_feature, FEATURE["update"]),
    ApiRoute("DELETE", "/features/{feature_id}", delete_feature, FEATURE["delete"]),
    ApiRoute("POST", "/company-overrides", create_company_override, OVERRIDE["create"]),
    ApiRoute("GET", "/company-overrides", list_company_overrides, OVERRIDE["list"]),
    ApiRoute("GET", "/company-overrides/{override_id}", get_company_override, OVERRIDE["get"]),
    ApiRoute(
        "PUT", "/company-overrides/{override_id}", update_company_override, OVERRIDE["update"]
    ),
    ApiRoute(
        "DELETE", "/company-overrides/{override_id}", delete_company_override, OVERRIDE["delete"]
    ),
    ApiRoute("GET", "/feature-usage", list_feature_usage, USAGE["list"]),
    ApiRoute("GET", "/usage-by-company", usage_by_company, USAGE["by_company"]),
]
