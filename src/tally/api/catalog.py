"""Routes of features, company overrides (allocations) and feature usage.

These are admin calls: a publishable key may not make them, and a read-only
secret key may only read.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tally.api import catalog_shapes as shapes
from tally.api.common.bodies import read_json
from tally.api.common.envelope import ok
from tally.api.common.params import json_query_map, query_int, query_list, query_str
from tally.api.state import AppState
from tally.clock import to_micros
from tally.errors import Invalid, NotFound
from tally.metering.catalog import (
    FEATURE_TYPES,
    AllocationChanges,
    AllocationFilter,
    FeatureChanges,
    FeatureFilter,
    UsageFilter,
)
from tally.model import ApiKey

MAX_LIMIT = 250
MAX_IDS = 100
_FEATURE_BODY = msgspec.json.Decoder(shapes.FeatureBody)
_OVERRIDE_BODY = msgspec.json.Decoder(shapes.CompanyOverrideBody)


# -- request helpers ------------------------------------------------------------
async def _admin(request: Request, *, write: bool) -> tuple[AppState, ApiKey]:
    state: AppState = request.app.state.tally
    key = await state.auth.admin(request, area="features, company overrides and usage", write=write)
    return state, key


def _page(request: Request) -> tuple[int, int]:
    return (
        query_int(request, "limit", 100, 0, MAX_LIMIT),
        query_int(request, "offset", 0, 0, 2**31),
    )


def _ids(request: Request, name: str) -> list[str]:
    values = query_list(request, name)
    if len(values) > MAX_IDS:
        raise Invalid(f"{name} takes at most {MAX_IDS} values")
    return values


def _bool(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise Invalid(f"{name} must be true or false, not {raw[:32]!r}")


_MAP_ITEM = re.compile(r"^(?P<name>[A-Za-z_]+)\[(?P<key>[^\[\]]+)\]$")


def query_map(request: Request, name: str) -> dict[str, str]:
    """A string→string map parameter, sent either as ``name[key]=value``
    (the Python SDK) or as URL-encoded JSON text ``name={"key":"value"}``."""
    out: dict[str, str] = {}
    for param, value in request.query_params.multi_items():
        if param == name:
            out.update(json_query_map(name, value))
            continue
        match = _MAP_ITEM.match(param)
        if match and match["name"] == name:
            out[match["key"]] = value
    for key, value in out.items():
        if len(key) > 255 or len(value) > 255:
            raise Invalid(f"{name} keys and values must be at most 255 characters")
    return out


# -- features -------------------------------------------------------------------
def _feature_changes(body: shapes.FeatureBody) -> FeatureChanges:
    if body.event_source is not None and body.event_source != shapes.EVENT_SOURCE:
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


async def create_feature(request: Request) -> Response:
    state, key = await _admin(request, write=True)
    body = await read_json(request, _FEATURE_BODY, "feature")
    feature = await state.storage.create_feature(key.environment_id, _feature_changes(body))
    return ok(shapes.feature_detail(feature), status=201)


async def list_features(request: Request) -> Response:
    state, key = await _admin(request, write=False)
    types = _ids(request, "feature_type")
    for kind in types:
        if kind not in FEATURE_TYPES:
            raise Invalid(f"feature_type must be among boolean, event, trait, not {kind[:32]!r}")
    limit, offset = _page(request)
    where = FeatureFilter(
        q=query_str(request, "q", 512),
        ids=tuple(_ids(request, "ids")),
        feature_types=tuple(types),
        boolean_require_event=bool(_bool(request, "boolean_require_event")),
        without_override_for=query_str(request, "without_company_override_for", 255),
        limit=limit,
        offset=offset,
    )
    features = await state.storage.list_features(key.environment_id, where)
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if where.q is not None:
        params["q"] = where.q
    if where.ids:
        params["ids"] = list(where.ids)
    if types:
        params["feature_type"] = types
    if where.boolean_require_event:
        params["boolean_require_event"] = True
    if where.without_override_for is not None:
        params["without_company_override_for"] = where.without_override_for
    return ok([shapes.feature_detail(f) for f in features], params)


async def get_feature(request: Request) -> Response:
    state, key = await _admin(request, write=False)
    feature_id = request.path_params["feature_id"]
    feature = await state.storage.get_feature(key.environment_id, feature_id)
    if feature is None:
        raise NotFound(f"feature {feature_id[:64]!r} was not found in this environment")
    return ok(shapes.feature_detail(feature))


async def update_feature(request: Request) -> Response:
    """A new ``event_subtype`` attributes events processed from now on; events
    already processed keep their ``feature_ids``."""
    state, key = await _admin(request, write=True)
    feature_id = request.path_params["feature_id"]
    body = await read_json(request, _FEATURE_BODY, "feature")
    feature = await state.storage.update_feature(
        key.environment_id, feature_id, _feature_changes(body)
    )
    if feature is None:
        raise NotFound(f"feature {feature_id[:64]!r} was not found in this environment")
    return ok(shapes.feature_detail(feature))


async def delete_feature(request: Request) -> Response:
    state, key = await _admin(request, write=True)
    feature_id = request.path_params["feature_id"]
    if not await state.storage.delete_feature(key.environment_id, feature_id):
        raise NotFound(f"feature {feature_id[:64]!r} was not found in this environment")
    return ok(shapes.DeleteResponse(deleted=True))


# -- company overrides ----------------------------------------------------------
def _override_changes(body: shapes.CompanyOverrideBody) -> AllocationChanges:
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


async def create_company_override(request: Request) -> Response:
    """One override per (company, feature): creating a second one for the
    same pair updates the first (answered with 200 instead of 201)."""
    state, key = await _admin(request, write=True)
    body = await read_json(request, _OVERRIDE_BODY, "company override")
    if not body.company_id:
        raise Invalid("company_id is required")
    if not body.feature_id:
        raise Invalid("feature_id is required")
    changes = _override_changes(body)
    allocation, created = await state.storage.upsert_allocation(
        key.environment_id, body.company_id, body.feature_id, changes, body.note, key.id
    )
    return ok(shapes.company_override(allocation), status=201 if created else 200)


async def list_company_overrides(request: Request) -> Response:
    state, key = await _admin(request, write=False)
    company_id = query_str(request, "company_id", 255)
    feature_id = query_str(request, "feature_id", 255)
    company_ids = _ids(request, "company_ids")
    feature_ids = _ids(request, "feature_ids")
    ids = _ids(request, "ids")
    limit, offset = _page(request)
    # company_id and company_ids (feature_id, feature_ids) are two forms of one
    # filter: an override matches when its company is any of the ids given
    where = AllocationFilter(
        company_ids=tuple(company_ids + ([company_id] if company_id else [])),
        feature_ids=tuple(feature_ids + ([feature_id] if feature_id else [])),
        ids=tuple(ids),
        q=query_str(request, "q", 512),
        limit=limit,
        offset=offset,
    )
    rows = await state.storage.list_allocations(key.environment_id, where)
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    for name, value in (
        ("company_id", company_id),
        ("feature_id", feature_id),
        ("q", where.q),
    ):
        if value is not None:
            params[name] = value
    for name, values in (("company_ids", company_ids), ("feature_ids", feature_ids), ("ids", ids)):
        if values:
            params[name] = values
    return ok([shapes.company_override(a) for a in rows], params)


async def get_company_override(request: Request) -> Response:
    state, key = await _admin(request, write=False)
    override_id = request.path_params["override_id"]
    allocation = await state.storage.get_allocation(key.environment_id, override_id)
    if allocation is None:
        raise NotFound(f"company override {override_id[:64]!r} was not found in this environment")
    return ok(shapes.company_override(allocation))


async def update_company_override(request: Request) -> Response:
    state, key = await _admin(request, write=True)
    override_id = request.path_params["override_id"]
    body = await read_json(request, _OVERRIDE_BODY, "company override")
    allocation = await state.storage.update_allocation(
        key.environment_id, override_id, _override_changes(body), body.note, key.id
    )
    if allocation is None:
        raise NotFound(f"company override {override_id[:64]!r} was not found in this environment")
    return ok(shapes.company_override(allocation))


async def delete_company_override(request: Request) -> Response:
    state, key = await _admin(request, write=True)
    override_id = request.path_params["override_id"]
    if not await state.storage.delete_allocation(key.environment_id, override_id):
        raise NotFound(f"company override {override_id[:64]!r} was not found in this environment")
    return ok(shapes.DeleteResponse(deleted=True))


# -- usage ----------------------------------------------------------------------
async def list_feature_usage(request: Request) -> Response:
    state, key = await _admin(request, write=False)
    company_id = query_str(request, "company_id", 255)
    company_keys = query_map(request, "company_keys")
    if company_id is None and not company_keys:
        raise Invalid("send company_id or company_keys to say whose usage to list")
    feature_ids = _ids(request, "feature_ids")
    q = query_str(request, "q", 512)
    limit, offset = _page(request)
    target = await state.storage.find_company_id(key.environment_id, company_id, company_keys)
    where = UsageFilter(feature_ids=tuple(feature_ids), q=q, limit=limit, offset=offset)
    now_us = to_micros(state.clock.now())
    rows = await state.storage.feature_usage(key.environment_id, target, where, now_us)
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if company_id is not None:
        params["company_id"] = company_id
    if company_keys:
        params["company_keys"] = company_keys
    if feature_ids:
        params["feature_ids"] = feature_ids
    if q is not None:
        params["q"] = q
    return ok([shapes.feature_usage(r) for r in rows], params)


async def usage_by_company(request: Request) -> Response:
    state, key = await _admin(request, write=False)
    keys = query_map(request, "keys")
    if not keys:
        raise Invalid(
            'keys is required: send the company\'s keys as keys[id]=acme or keys={"id":"acme"}'
        )
    target = await state.storage.find_company_id(key.environment_id, None, keys)
    now_us = to_micros(state.clock.now())
    rows = await state.storage.feature_usage(
        key.environment_id, target, UsageFilter(limit=None), now_us
    )
    data = shapes.FeatureUsageDetailResponseData(features=[shapes.feature_usage(r) for r in rows])
    return ok(data, {"keys": keys})


routes = [
    Route("/features", create_feature, methods=["POST"]),
    Route("/features", list_features, methods=["GET"]),
    Route("/features/{feature_id}", get_feature, methods=["GET"]),
    Route("/features/{feature_id}", update_feature, methods=["PUT"]),
    Route("/features/{feature_id}", delete_feature, methods=["DELETE"]),
    Route("/company-overrides", create_company_override, methods=["POST"]),
    Route("/company-overrides", list_company_overrides, methods=["GET"]),
    Route("/company-overrides/{override_id}", get_company_override, methods=["GET"]),
    Route("/company-overrides/{override_id}", update_company_override, methods=["PUT"]),
    Route("/company-overrides/{override_id}", delete_company_override, methods=["DELETE"]),
    Route("/feature-usage", list_feature_usage, methods=["GET"]),
    Route("/usage-by-company", usage_by_company, methods=["GET"]),
]
