"""Poison payloads: JSON nested past the 32-level limit is refused before it
is parsed or stored, on every route that takes JSON; malformed query maps
and URLs are 400s, never 500s."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.helpers import assert_error, assert_ok

NESTED = "more than 32 levels deep"


def nest(levels: int, leaf: Any = 1) -> Any:
    """A value of ``levels`` nested arrays (as parsed JSON)."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def deep_text(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


def identify(levels: int) -> bytes:
    """An identify body that nests ``levels`` levels in all (the body is the
    first, its traits the second)."""
    return b'{"keys":{"id":"u1"},"traits":{"deep":' + deep_text(levels - 2).encode() + b"}}"


# -- events -----------------------------------------------------------------------
@pytest.mark.parametrize("levels", [33, 900])
def test_a_deep_body_is_refused_on_rest_and_nothing_is_stored(api: Api, levels: int) -> None:
    one = b'{"event_type":"identify","body":' + identify(levels) + b"}"
    assert_error(api.post("/events", content=one), 400, contains=NESTED)
    batch = b'{"events":[' + one + b"]}"
    assert_error(api.post("/event-batch", content=batch), 400, contains=NESTED)
    assert api.list_events() == []


def test_a_body_of_32_levels_is_accepted(api: Api) -> None:
    one = b'{"event_type":"identify","body":' + identify(32) + b"}"
    assert_ok(api.post("/events", content=one), 201)


@pytest.mark.parametrize("levels", [33, 900])
def test_a_deep_event_on_batch_fails_alone(api: Api, levels: int) -> None:
    """Today one deep event failed the whole /batch request: now it is stored
    failed, without its body, and its neighbours are kept."""
    data = (
        b'{"events":[{"type":"track","body":{"event":"first"}},'
        b'{"type":"identify","body":' + identify(levels) + b"},"
        b'{"type":"track","body":{"event":"last"}}]}'
    )
    results = assert_ok(api.post("/batch", content=data, key=api.publishable))["events"]
    assert [r["status"] for r in results] == ["pending", "failed", "pending"]
    assert NESTED in results[1]["error_message"]
    stored = {e["id"]: e for e in api.list_events()}
    assert stored[results[1]["event_id"]]["body"] == {}
    assert stored[results[0]["event_id"]]["body"] == {"event": "first"}


# -- admin bodies -----------------------------------------------------------------
ADMIN_BODIES = {
    "/companies": lambda value: {"keys": {"id": "acme"}, "traits": {"deep": value}},
    "/users": lambda value: {"keys": {"id": "wile"}, "traits": {"deep": value}},
    "/company-traits": lambda value: {"keys": {"id": "acme"}, "trait": "deep", "set": value},
    "/user-traits": lambda value: {"keys": {"id": "wile"}, "trait": "deep", "set": value},
}


@pytest.mark.parametrize("path", list(ADMIN_BODIES))
@pytest.mark.parametrize("levels", [33, 900])
def test_a_deep_admin_upsert_is_refused(api: Api, path: str, levels: int) -> None:
    # the request body and its traits are two levels; the body of a trait change, one
    body = ADMIN_BODIES[path](nest(levels - (1 if "traits" in path else 2)))
    assert_error(api.post(path, body), 400, contains=NESTED)
    assert assert_ok(api.get("/companies")) == []
    assert assert_ok(api.get("/users")) == []


@pytest.mark.parametrize("path", list(ADMIN_BODIES))
def test_an_admin_upsert_of_32_levels_is_stored_and_reads_back(api: Api, path: str) -> None:
    value = nest(30)
    entity = assert_ok(api.post(path, ADMIN_BODIES[path](value)))
    assert entity["traits"] == {"deep": value}
    listing = "/users" if "user" in path else "/companies"
    (listed,) = assert_ok(api.get(listing))
    assert listed["traits"] == {"deep": value}


@pytest.mark.parametrize(
    "path", ["/features", "/company-overrides", "/webhooks", "/company-memberships"]
)
def test_every_other_json_body_is_bounded_too(api: Api, path: str) -> None:
    body = json.dumps({"name": nest(40)}).encode()
    assert_error(api.post(path, content=body), 400, contains=NESTED)


# -- query maps and URLs ------------------------------------------------------------
MAP_ROUTES = [
    ("/companies/lookup", "keys"),
    ("/users/lookup", "keys"),
    ("/usage-by-company", "keys"),
    ("/feature-usage", "company_keys"),
]


@pytest.mark.parametrize(("path", "name"), MAP_ROUTES)
@pytest.mark.parametrize(
    "value",
    [deep_text(5_000), deep_text(3), '{"id": {"a": 1}}', '{"id": ["x"]}', "[1]", '{"id"', "1e999"],
    ids=["deep", "shallow-array", "object-value", "array-value", "array", "malformed", "number"],
)
def test_a_bad_json_map_parameter_is_400(api: Api, path: str, name: str, value: str) -> None:
    assert_error(api.get(path, params={name: value}), 400, contains=name)


@pytest.mark.parametrize(("path", "name"), MAP_ROUTES)
def test_a_json_map_parameter_still_works(api: Api, path: str, name: str) -> None:
    assert_ok(api.post("/companies", {"keys": {"id": "acme"}}))
    response = api.get(path, params={name: '{"id": "acme"}'})
    assert response.status_code in (200, 404), response.text  # no user acme: 404
    if path == "/users/lookup":
        assert_error(response, 404)
    else:
        assert_ok(response)


@pytest.mark.parametrize("url", ["http://[::1", "http://[::1]:99999/x", "http://host:port/"])
def test_an_invalid_webhook_url_is_400(api: Api, url: str) -> None:
    body = {"name": "x", "url": url, "request_types": ["entitlement.limit.reached"]}
    assert_error(api.post("/webhooks", body), 400, contains="url")


def test_an_error_that_quotes_client_text_stays_on_one_line(api: Api) -> None:
    """Found by the fuzz: a key value with a newline was quoted as is."""
    message = assert_error(api.get("/usage-by-company", params={"keys[id]": "a\nb"}), 404)
    assert "id=a\\nb" in message  # the newline, escaped
