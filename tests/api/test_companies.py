"""Companies, users, memberships and traits through the app in-process:
/companies, /users, /company-memberships, /company-traits, /user-traits.

Every success body is also parsed by the SDK's own response model
(schematichq 1.4.6), so a missing required field fails here first.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from schematic.companies.types import (
    CountCompaniesResponse,
    DeleteCompanyByKeysResponse,
    DeleteCompanyResponse,
    DeleteUserByKeysResponse,
    GetCompanyResponse,
    GetOrCreateCompanyMembershipResponse,
    GetUserResponse,
    ListCompaniesResponse,
    ListCompanyMembershipsResponse,
    ListUsersResponse,
    LookupCompanyResponse,
    LookupUserResponse,
    UpsertCompanyResponse,
    UpsertCompanyTraitResponse,
    UpsertUserResponse,
    UpsertUserTraitResponse,
)
from schematic.core.pydantic_utilities import parse_obj_as

from tally.cli import main as cli_main
from tally.clock import format_time
from tally.metering.periods import billing_start
from tests.api.conftest import NOW, NOW_TEXT, Api
from tests.api.helpers import TIMESTAMP_Z, assert_error, assert_ok

COMPANY_REQUIRED = {
    "add_ons",
    "billing_subscriptions",
    "created_at",
    "custom_plan_billings",
    "entitlements",
    "entity_traits",
    "environment_id",
    "id",
    "keys",
    "metrics",
    "name",
    "payment_methods",
    "plans",
    "rules",
    "updated_at",
    "user_count",
}
USER_REQUIRED = {
    "company_memberships",
    "created_at",
    "entity_traits",
    "environment_id",
    "id",
    "keys",
    "name",
    "updated_at",
}
KEY_REQUIRED = {
    "created_at",
    "definition_id",
    "entity_id",
    "entity_type",
    "environment_id",
    "id",
    "key",
    "updated_at",
    "value",
}
METRIC_REQUIRED = {
    "account_id",
    "captured_at_max",
    "captured_at_min",
    "company_id",
    "created_at",
    "environment_id",
    "event_subtype",
    "month_reset",
    "period",
    "value",
}


# -- helpers -------------------------------------------------------------------
def sdk_parse(model: Any, response: Any, status: int = 200) -> Any:
    """The body parsed by the SDK's model, after checking the envelope."""
    assert_ok(response, status)
    return parse_obj_as(model, response.json())


def upsert_company(api: Api, key: str | None = "", **body: Any) -> dict[str, Any]:
    response = api.post("/companies", body, key=key)
    sdk_parse(UpsertCompanyResponse, response)
    data: dict[str, Any] = response.json()["data"]
    assert_company_shape(data)
    return data


def upsert_user(api: Api, **body: Any) -> dict[str, Any]:
    response = api.post("/users", body)
    sdk_parse(UpsertUserResponse, response)
    data: dict[str, Any] = response.json()["data"]
    assert_user_shape(data)
    return data


def delete(api: Api, path: str, *, key: str | None = "") -> Any:
    use = api.secret if key == "" else key
    return api.client.delete(path, headers=api.headers(use))


def assert_company_shape(data: dict[str, Any]) -> None:
    assert set(data) >= COMPANY_REQUIRED, COMPANY_REQUIRED - set(data)
    assert data["id"].startswith("comp_")
    assert isinstance(data["traits"], dict)
    for field in ("created_at", "updated_at", "last_seen_at"):
        if field in data:
            assert TIMESTAMP_Z.match(data[field]), (field, data[field])
    for key in data["keys"]:
        assert set(key) >= KEY_REQUIRED, KEY_REQUIRED - set(key)
        assert key["entity_id"] == data["id"] and key["entity_type"] == "company"
    for metric in data["metrics"]:
        assert set(metric) >= METRIC_REQUIRED, METRIC_REQUIRED - set(metric)
        assert metric["company_id"] == data["id"]


def assert_user_shape(data: dict[str, Any]) -> None:
    assert set(data) >= USER_REQUIRED, USER_REQUIRED - set(data)
    assert data["id"].startswith("user_")
    for key in data["keys"]:
        assert set(key) >= KEY_REQUIRED
        assert key["entity_id"] == data["id"] and key["entity_type"] == "user"
    for m in data["company_memberships"]:
        assert m["user_id"] == data["id"] and m["id"].startswith("cmem_")


def keys_of(data: dict[str, Any]) -> dict[str, str]:
    return {k["key"]: k["value"] for k in data["keys"]}


def metrics_of(data: dict[str, Any]) -> dict[tuple[str, str, str], int]:
    return {
        (m["event_subtype"], m["period"], m["month_reset"]): m["value"] for m in data["metrics"]
    }


def send(api: Api, event_type: str, body: dict[str, Any], **fields: Any) -> str:
    data = assert_ok(api.create(event_type, body, **fields), 201)
    event_id: str = data["event_id"]
    return event_id


def track(
    api: Api, company: str, quantity: int, at: datetime | None = None, event: str = "api-call"
) -> str:
    body = {"event": event, "company": {"id": company}, "quantity": quantity}
    if at is None:
        return send(api, "track", body)
    return send(api, "track", body, trusted_client_clock=True, sent_at=format_time(at))


# -- companies: upsert -------------------------------------------------------------
def test_upsert_creates_a_company_with_every_required_field(api: Api) -> None:
    data = upsert_company(
        api, keys={"id": "acme"}, name="Acme Inc", traits={"city": "Atlanta", "seats": 3}
    )
    assert data["name"] == "Acme Inc"
    assert keys_of(data) == {"id": "acme"}
    assert data["traits"] == {"city": "Atlanta", "seats": 3}
    assert data["environment_id"] == api.environment_id
    assert data["created_at"] == data["updated_at"] == NOW_TEXT
    assert data["user_count"] == 0 and data["metrics"] == []
    for empty in (
        "add_ons",
        "billing_subscriptions",
        "custom_plan_billings",
        "entitlements",
        "payment_methods",
        "plans",
        "rules",
    ):
        assert data[empty] == [], empty
    traits = {t["definition"]["display_name"]: t for t in data["entity_traits"]}
    assert (
        traits["city"]["value"] == "Atlanta"
        and traits["city"]["definition"]["trait_type"] == "string"
    )
    assert (
        traits["seats"]["value"] == "3" and traits["seats"]["definition"]["trait_type"] == "number"
    )
    assert "last_seen_at" not in data
    assert api.post("/companies", {"keys": {"id": "acme"}}).json()["params"] == {}


def test_upsert_finds_by_any_key_adds_keys_and_merges_traits(api: Api) -> None:
    first = upsert_company(api, keys={"id": "acme"}, name="Acme", traits={"a": 1, "b": {"x": 1}})
    api.clock.advance(timedelta(seconds=5))
    second = upsert_company(
        api, keys={"id": "acme", "stripe": "cus_1"}, traits={"b": {"y": 2}, "c": True}
    )
    assert second["id"] == first["id"]
    assert keys_of(second) == {"id": "acme", "stripe": "cus_1"}
    assert second["name"] == "Acme"  # kept: no name sent
    assert second["traits"] == {"a": 1, "b": {"y": 2}, "c": True}  # top-level replace
    assert second["created_at"] == NOW_TEXT and second["updated_at"] != NOW_TEXT
    # found by the new key alone; the name changes when given
    third = upsert_company(api, keys={"stripe": "cus_1"}, name="Acme Corp")
    assert third["id"] == first["id"] and third["name"] == "Acme Corp"
    listed = assert_ok(api.get("/companies"))
    assert [c["id"] for c in listed] == [first["id"]]


def test_upsert_name_falls_back_to_the_first_key(api: Api) -> None:
    data = upsert_company(api, keys={"slug": "globex"})
    assert data["name"] == "globex"


def test_upsert_refuses_keys_of_two_companies(api: Api) -> None:
    a = upsert_company(api, keys={"id": "a"})
    b = upsert_company(api, keys={"id": "b"})
    joined = upsert_company(api, keys={"id": "a", "slug": "x"})  # one company: slug joins a
    assert joined["id"] == a["id"]
    upsert_company(api, keys={"id": "b", "stripe": "cus_b"})
    message = assert_error(api.post("/companies", {"keys": {"id": "a", "stripe": "cus_b"}}), 400)
    assert a["id"] in message and b["id"] in message
    # nothing changed
    assert keys_of(assert_ok(api.get(f"/companies/{a['id']}"))) == {"id": "a", "slug": "x"}


def test_upsert_by_tally_id(api: Api) -> None:
    made = upsert_company(api, keys={"id": "acme"})
    data = upsert_company(api, id=made["id"], keys={"crm": "77"}, name="By id")
    assert data["id"] == made["id"] and data["name"] == "By id"
    assert keys_of(data) == {"id": "acme", "crm": "77"}
    # the key "id" can also name the tally id
    again = upsert_company(api, keys={"id": made["id"]}, traits={"t": 1})
    assert again["id"] == made["id"] and keys_of(again) == {"id": "acme", "crm": "77"}
    assert_error(
        api.post("/companies", {"id": "comp_nope", "keys": {"x": "1"}}), 404, contains="comp_nope"
    )
    other = upsert_company(api, keys={"id": "other"})
    message = assert_error(api.post("/companies", {"id": made["id"], "keys": {"id": "other"}}), 400)
    assert other["id"] in message


def test_upsert_options(api: Api) -> None:
    assert_error(
        api.post("/companies", {"keys": {"id": "new"}, "update_only": True}),
        404,
        contains="update_only",
    )
    assert assert_ok(api.get("/companies")) == []
    made = upsert_company(api, keys={"id": "acme", "slug": "acme-inc"})
    assert_error(
        api.post(
            "/companies", {"keys": {"id": "acme", "slug": "renamed"}, "prevent_key_remap": True}
        ),
        400,
        contains="prevent_key_remap",
    )
    remapped = upsert_company(api, keys={"id": "acme", "slug": "renamed"})
    assert keys_of(remapped) == {"id": "acme", "slug": "renamed"}
    removed = upsert_company(api, keys={"id": "acme"}, remove_keys=["slug"])
    assert keys_of(removed) == {"id": "acme"}
    assert_error(
        api.post("/companies", {"keys": {"id": "acme"}, "remove_keys": ["id"]}),
        400,
        contains="keep one",
    )
    seen = upsert_company(api, keys={"id": "acme"}, last_seen_at="2026-03-10T08:30:00+02:00")
    assert seen["id"] == made["id"]
    assert seen["last_seen_at"] == "2026-03-10T06:30:00.000000Z"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"keys": {}}, "keys"),
        ({"name": "no keys"}, "keys"),
        ({"keys": {"id": ""}}, "keys[id]"),
        ({"keys": {"id": 5}}, "keys"),
        ({"keys": {"id": "a"}, "traits": [1]}, "traits"),
        ({"keys": {"id": "a"}, "last_seen_at": "yesterday"}, "last_seen_at"),
        ({"keys": {"id": "a"}, "name": "n" * 2000}, "name"),
    ],
)
def test_upsert_bad_input_is_400(api: Api, payload: dict[str, Any], fragment: str) -> None:
    assert_error(api.post("/companies", payload), 400, contains=fragment)
    assert assert_ok(api.get("/companies")) == []


def test_bad_json_is_400(api: Api) -> None:
    response = api.post(
        "/companies", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 400, contains="JSON")
    assert_error(api.post("/companies", [1, 2]), 400)


# -- companies: read -----------------------------------------------------------------
def test_get_and_lookup(api: Api) -> None:
    made = upsert_company(api, keys={"id": "acme", "domain": "acme.io"}, name="Acme")
    got = sdk_parse(GetCompanyResponse, api.get(f"/companies/{made['id']}"))
    assert got.data.id == made["id"] and got.data.name == "Acme"
    assert got.data.created_at == NOW
    assert {k.key: k.value for k in got.data.keys} == {"id": "acme", "domain": "acme.io"}

    cases: list[tuple[dict[str, str], dict[str, str]]] = [
        ({"keys[domain]": "acme.io"}, {"domain": "acme.io"}),
        ({"keys": json.dumps({"domain": "acme.io"})}, {"domain": "acme.io"}),
        ({"keys[id]": "acme", "keys[domain]": "acme.io"}, {"id": "acme", "domain": "acme.io"}),
        ({"keys[nope]": "x", "keys[id]": "acme"}, {"nope": "x", "id": "acme"}),  # any key finds it
    ]
    for params, keys in cases:
        response = api.get("/companies/lookup", params=params)
        parsed = sdk_parse(LookupCompanyResponse, response)
        assert parsed.data.id == made["id"], params
        assert parsed.params.keys == keys

    assert_error(
        api.get("/companies/lookup", params={"keys[id]": "nobody"}), 404, contains="nobody"
    )
    assert_error(api.get("/companies/lookup"), 400, contains="keys")
    assert_error(api.get("/companies/lookup", params={"keys": "{oops"}), 400, contains="keys")
    assert_error(api.get("/companies/lookup", params={"keys": '{"id": 5}'}), 400, contains="keys")
    other = upsert_company(api, keys={"id": "other"})
    message = assert_error(
        api.get("/companies/lookup", params={"keys[id]": "other", "keys[domain]": "acme.io"}), 400
    )
    assert made["id"] in message and other["id"] in message

    assert_error(api.get("/companies/comp_unknown"), 404, contains="comp_unknown")
    # another environment's key sees none of it
    assert_error(api.get(f"/companies/{made['id']}", key=api.other_env), 404)
    assert_error(api.get("/companies/lookup", params={"keys[id]": "acme"}, key=api.other_env), 404)


def test_lookup_echoes_keys_in_params(api: Api) -> None:
    upsert_company(api, keys={"id": "acme"})
    response = api.get("/companies/lookup", params={"keys[id]": "acme"})
    assert assert_ok(response, params={"keys": {"id": "acme"}})["name"] == "acme"
    response = api.get("/companies/lookup", params={"keys": '{"id":"acme"}'})
    assert assert_ok(response, params={"keys": {"id": "acme"}})["name"] == "acme"


def test_list_filters_pages_and_counts(api: Api) -> None:
    made = []
    for i, name in enumerate(["Alpha", "Beta", "Gamma", "Delta"]):
        made.append(
            upsert_company(api, keys={"id": f"c{i}", "slug": name.lower() + "-co"}, name=name)
        )
        api.clock.advance(timedelta(seconds=1))
    ids = [c["id"] for c in made]

    listed = sdk_parse(ListCompaniesResponse, api.get("/companies"))
    assert [c.id for c in listed.data] == ids[::-1]  # newest first
    assert listed.params.limit == 100 and listed.params.offset == 0

    page = api.get("/companies", params={"limit": 2, "offset": 1})
    assert [c["id"] for c in assert_ok(page, params={"limit": 2, "offset": 1})] == [ids[2], ids[1]]
    assert [c["name"] for c in assert_ok(api.get("/companies", params={"q": "amm"}))] == ["Gamma"]
    assert [c["name"] for c in assert_ok(api.get("/companies", params={"q": "delta-"}))] == [
        "Delta"
    ]  # key value
    assert assert_ok(api.get("/companies", params={"q": "%"})) == []
    chosen = api.get("/companies", params=[("ids", ids[0]), ("ids", ids[3])])
    assert [
        c["id"]
        for c in assert_ok(chosen, params={"ids": [ids[0], ids[3]], "limit": 100, "offset": 0})
    ] == [ids[3], ids[0]]
    by_name = api.get(
        "/companies", params={"sort_order_column": "name", "sort_order_direction": "asc"}
    )
    assert [c["name"] for c in assert_ok(by_name)] == ["Alpha", "Beta", "Delta", "Gamma"]
    # tally has no plans or subscriptions
    assert assert_ok(api.get("/companies", params={"plan_id": "plan_1"})) == []
    assert assert_ok(api.get("/companies", params={"with_subscription": "true"})) == []
    assert len(assert_ok(api.get("/companies", params={"without_plan": "true"}))) == 4

    counted = sdk_parse(CountCompaniesResponse, api.get("/companies/count", params={"q": "a"}))
    assert counted.data.count == 4
    assert assert_ok(api.get("/companies/count", params={"q": "et"}))["count"] == 1

    assert_error(api.get("/companies", params={"limit": 251}), 400, contains="limit")
    assert_error(api.get("/companies", params={"offset": -1}), 400, contains="offset")
    assert_error(api.get("/companies", params={"sort_order_column": "traits"}), 400)
    assert_error(api.get("/companies", params={"with_subscription": "maybe"}), 400)
    assert assert_ok(api.get("/companies", key=api.other_env)) == []


# -- auth -----------------------------------------------------------------------------
def test_publishable_and_read_only_keys(api: Api) -> None:
    made = upsert_company(api, keys={"id": "acme"})
    reads = [
        "/companies",
        f"/companies/{made['id']}",
        "/companies/lookup?keys[id]=acme",
        "/users",
        "/company-memberships",
        "/companies/count",
    ]
    for path in reads:
        assert_error(api.get(path, key=api.publishable), 403, contains="publishable")
        assert_ok(api.get(path, key=api.read_only))
        assert_error(api.get(path, key=None), 401)
    writes = [
        ("/companies", {"keys": {"id": "x"}}),
        ("/users", {"keys": {"id": "x"}}),
        ("/company-traits", {"keys": {"id": "acme"}, "trait": "t", "set": "v"}),
        ("/user-traits", {"keys": {"id": "u"}, "trait": "t", "set": "v"}),
        ("/company-memberships", {"company_id": made["id"], "user_id": "user_x"}),
        ("/companies/delete", {"keys": {"id": "acme"}}),
    ]
    for path, payload in writes:
        assert_error(api.post(path, payload, key=api.publishable), 403, contains="publishable")
        assert_error(api.post(path, payload, key=api.read_only), 403, contains="read-only")
    assert_error(delete(api, f"/companies/{made['id']}", key=api.read_only), 403)
    assert_error(delete(api, f"/companies/{made['id']}", key=api.publishable), 403)
    # nothing was written
    listed = assert_ok(api.get("/companies"))
    assert [c["id"] for c in listed] == [made["id"]] and listed[0]["traits"] == {}
    assert assert_ok(api.get("/users")) == []


# -- users and memberships --------------------------------------------------------------
def test_users_and_memberships(api: Api) -> None:
    acme = upsert_company(api, keys={"id": "acme"}, name="Acme")
    globex = upsert_company(api, keys={"id": "globex"})
    user = upsert_user(
        api,
        keys={"email": "wile@acme.io"},
        name="Wile",
        traits={"role": "admin"},
        company={"id": "acme"},
    )
    assert user["name"] == "Wile" and user["traits"] == {"role": "admin"}
    assert [m["company_id"] for m in user["company_memberships"]] == [acme["id"]]
    assert user["company_memberships"][0]["company"]["name"] == "Acme"
    # additive: company_id links one more
    user = upsert_user(api, keys={"email": "wile@acme.io", "id": "u1"}, company_id=globex["id"])
    assert {m["company_id"] for m in user["company_memberships"]} == {acme["id"], globex["id"]}
    assert keys_of(user) == {"email": "wile@acme.io", "id": "u1"}
    # exact: companies replaces the list
    user = upsert_user(api, keys={"id": "u1"}, companies=[{"id": "globex"}])
    assert [m["company_id"] for m in user["company_memberships"]] == [globex["id"]]
    assert_error(
        api.post("/users", {"keys": {"id": "u1"}, "company": {"id": "nope"}}), 404, contains="nope"
    )

    other = upsert_user(api, keys={"id": "u2"}, company_ids=[acme["id"], globex["id"]])
    assert assert_ok(api.get(f"/companies/{globex['id']}"))["user_count"] == 2
    assert assert_ok(api.get(f"/companies/{acme['id']}"))["user_count"] == 1

    users = sdk_parse(ListUsersResponse, api.get("/users", params={"company_id": acme["id"]}))
    assert [u.id for u in users.data] == [other["id"]]
    assert users.params.company_id == acme["id"]
    assert [u["id"] for u in assert_ok(api.get("/users"))] == [other["id"], user["id"]]
    assert [u["id"] for u in assert_ok(api.get("/users", params={"q": "wile"}))] == [user["id"]]
    assert assert_ok(api.get("/users/count", params={"company_id": globex["id"]}))["count"] == 2
    got = sdk_parse(GetUserResponse, api.get(f"/users/{user['id']}"))
    assert got.data.name == "Wile" and got.data.traits == {"role": "admin"}
    looked = sdk_parse(
        LookupUserResponse, api.get("/users/lookup", params={"keys": '{"email":"wile@acme.io"}'})
    )
    assert looked.data.id == user["id"]
    assert_error(api.get("/users/lookup", params={"keys[email]": "nobody"}), 404)
    assert_error(api.get("/users/user_unknown"), 404, contains="user_unknown")

    # memberships
    made = sdk_parse(
        GetOrCreateCompanyMembershipResponse,
        api.post("/company-memberships", {"company_id": acme["id"], "user_id": user["id"]}),
    )
    again = assert_ok(
        api.post("/company-memberships", {"company_id": acme["id"], "user_id": user["id"]})
    )
    assert (
        again["id"] == made.data.id
        and made.data.company is not None
        and made.data.company.id == acme["id"]
    )
    listed = sdk_parse(
        ListCompanyMembershipsResponse,
        api.get("/company-memberships", params={"user_id": user["id"]}),
    )
    assert {m.company_id for m in listed.data} == {acme["id"], globex["id"]}
    assert listed.params.user_id == user["id"]
    assert len(assert_ok(api.get("/company-memberships", params={"company_id": acme["id"]}))) == 2
    assert_error(
        api.post("/company-memberships", {"company_id": "comp_x", "user_id": user["id"]}),
        404,
        contains="comp_x",
    )
    assert_error(
        api.post("/company-memberships", {"company_id": acme["id"], "user_id": "user_x"}),
        404,
        contains="user_x",
    )
    assert_error(
        api.post("/company-memberships", {"company_id": acme["id"]}), 400, contains="user_id"
    )
    assert assert_ok(delete(api, f"/company-memberships/{made.data.id}")) == {"deleted": True}
    assert_error(delete(api, f"/company-memberships/{made.data.id}"), 404)
    assert [
        m["company_id"] for m in assert_ok(api.get(f"/users/{user['id']}"))["company_memberships"]
    ] == [globex["id"]]

    # delete by keys, then by id
    gone = sdk_parse(DeleteUserByKeysResponse, api.post("/users/delete", {"keys": {"id": "u2"}}))
    assert gone.data.id == other["id"]
    assert_error(api.post("/users/delete", {"keys": {"id": "u2"}}), 404)
    assert assert_ok(delete(api, f"/users/{user['id']}")) == {"deleted": True}
    assert_error(delete(api, f"/users/{user['id']}"), 404)
    assert assert_ok(api.get("/users")) == []
    assert assert_ok(api.get("/company-memberships")) == []
    assert assert_ok(api.get(f"/companies/{globex['id']}"))["user_count"] == 0


# -- traits ------------------------------------------------------------------------------
def test_trait_set_and_incr(api: Api) -> None:
    made = sdk_parse(
        UpsertCompanyTraitResponse,
        api.post("/company-traits", {"keys": {"id": "acme"}, "trait": "plan", "set": "gold"}),
    )
    assert made.data.traits == {"plan": "gold"}  # created by the trait upsert
    data = assert_ok(
        api.post("/company-traits", {"keys": {"id": "acme"}, "trait": "seats", "incr": 3})
    )
    assert data["traits"] == {"plan": "gold", "seats": 3}
    data = assert_ok(
        api.post("/company-traits", {"keys": {"id": "acme"}, "trait": "seats", "incr": -5})
    )
    assert data["traits"]["seats"] == -2
    assert_ok(api.post("/company-traits", {"keys": {"id": "acme"}, "trait": "score", "set": "10"}))
    data = assert_ok(
        api.post("/company-traits", {"keys": {"id": "acme"}, "trait": "score", "incr": 5})
    )
    assert data["traits"]["score"] == 15 and data["id"] == made.data.id
    assert_error(
        api.post("/company-traits", {"keys": {"id": "acme"}, "trait": "plan", "incr": 1}),
        400,
        contains="not a number",
    )
    assert_error(
        api.post("/company-traits", {"keys": {"id": "acme"}, "trait": "x", "set": "a", "incr": 1}),
        400,
        contains="both",
    )
    assert_error(
        api.post("/company-traits", {"keys": {"id": "acme"}, "trait": "x"}), 400, contains="incr"
    )
    assert_error(
        api.post("/company-traits", {"keys": {"id": "acme"}, "set": "x"}), 400, contains="trait"
    )
    assert_error(
        api.post(
            "/company-traits",
            {"keys": {"id": "nobody"}, "trait": "x", "set": "y", "update_only": True},
        ),
        404,
    )
    assert len(assert_ok(api.get("/companies"))) == 1

    user = sdk_parse(
        UpsertUserTraitResponse,
        api.post("/user-traits", {"keys": {"id": "u1"}, "trait": "logins", "incr": 1}),
    )
    assert user.data.traits == {"logins": 1}
    user = sdk_parse(
        UpsertUserTraitResponse,
        api.post("/user-traits", {"keys": {"id": "u1"}, "trait": "logins", "incr": 1}),
    )
    assert user.data.traits == {"logins": 2}


# -- the pipeline and the read side agree --------------------------------------------------
def test_identify_events_show_in_lookup(api: Api) -> None:
    send(
        api,
        "identify",
        {
            "keys": {"email": "u@acme.io"},
            "name": "U",
            "traits": {"a": 1},
            "company": {"keys": {"id": "acme"}, "name": "Acme", "traits": {"x": 1}},
        },
    )
    send(
        api,
        "identify",
        {
            "keys": {"email": "u@acme.io", "id": "u1"},
            "traits": {"b": 2},
            "company": {"keys": {"id": "acme", "crm": "9"}, "traits": {"y": 2}},
        },
    )
    assert api.drain() == 2
    company = assert_ok(api.get("/companies/lookup", params={"keys[crm]": "9"}))
    assert keys_of(company) == {"id": "acme", "crm": "9"}
    assert company["traits"] == {"x": 1, "y": 2} and company["name"] == "Acme"
    assert company["user_count"] == 1 and company["last_seen_at"] == NOW_TEXT
    user = assert_ok(api.get("/users/lookup", params={"keys[id]": "u1"}))
    assert keys_of(user) == {"email": "u@acme.io", "id": "u1"} and user["traits"] == {
        "a": 1,
        "b": 2,
    }
    assert [m["company_id"] for m in user["company_memberships"]] == [company["id"]]
    # an API upsert and a later identify act on the same company
    upsert_company(api, keys={"crm": "9"}, traits={"x": 5})
    send(
        api,
        "identify",
        {"keys": {"id": "u1"}, "company": {"keys": {"id": "acme"}, "traits": {"z": 3}}},
    )
    api.drain()
    company = assert_ok(api.get(f"/companies/{company['id']}"))
    assert company["traits"] == {"x": 5, "y": 2, "z": 3}


def test_metrics_hold_the_current_periods(api: Api) -> None:
    # NOW is Sunday 2026-03-15 12:00 UTC: the week and the day start today
    upsert_company(api, keys={"id": "acme"})
    track(api, "acme", 3)
    track(api, "acme", 4, at=NOW - timedelta(days=2))  # Friday: this month, last week
    track(api, "acme", 5, at=NOW - timedelta(days=20))  # February
    track(api, "acme", 2, event="query")
    assert api.drain() == 4
    data = assert_ok(api.get("/companies/lookup", params={"keys[id]": "acme"}))
    assert metrics_of(data) == {
        ("api-call", "all_time", "first_of_month"): 12,
        ("api-call", "current_day", "first_of_month"): 3,
        ("api-call", "current_week", "first_of_month"): 3,
        ("api-call", "current_month", "first_of_month"): 7,
        ("api-call", "current_month", "billing_cycle"): 7,  # no anchor: the calendar month
        ("query", "all_time", "first_of_month"): 2,
        ("query", "current_day", "first_of_month"): 2,
        ("query", "current_week", "first_of_month"): 2,
        ("query", "current_month", "first_of_month"): 2,
        ("query", "current_month", "billing_cycle"): 2,
    }
    day = next(
        m for m in data["metrics"] if m["period"] == "current_day" and m["event_subtype"] == "query"
    )
    assert day["captured_at_min"] == "2026-03-15T00:00:00.000000Z"
    assert day["captured_at_max"] == day["valid_until"] == "2026-03-16T00:00:00.000000Z"
    assert day["environment_id"] == api.environment_id
    # tomorrow the day's counter is no longer current
    api.clock.advance(timedelta(days=1))
    data = assert_ok(api.get("/companies/lookup", params={"keys[id]": "acme"}))
    metrics = metrics_of(data)
    assert ("api-call", "current_day", "first_of_month") not in metrics
    assert metrics[("api-call", "current_week", "first_of_month")] == 3
    assert metrics[("api-call", "all_time", "first_of_month")] == 12
    parsed = sdk_parse(ListCompaniesResponse, api.get("/companies"))
    assert {m.period for m in parsed.data[0].metrics} == {
        "all_time",
        "current_week",
        "current_month",
    }


def test_delete_company_removes_keys_memberships_and_counters(api: Api) -> None:
    send(api, "identify", {"keys": {"id": "u1"}, "company": {"keys": {"id": "acme"}}})
    event_id = track(api, "acme", 3)
    api.drain()
    company = assert_ok(api.get("/companies/lookup", params={"keys[id]": "acme"}))
    assert company["metrics"] and company["user_count"] == 1
    deleted = sdk_parse(DeleteCompanyResponse, delete(api, f"/companies/{company['id']}"))
    assert deleted.data.deleted is True
    assert_error(api.get(f"/companies/{company['id']}"), 404)
    assert_error(api.get("/companies/lookup", params={"keys[id]": "acme"}), 404)
    assert_error(delete(api, f"/companies/{company['id']}"), 404)
    assert (
        assert_ok(api.get("/users/lookup", params={"keys[id]": "u1"}))["company_memberships"] == []
    )
    assert (
        assert_ok(api.get(f"/events/{event_id}"))["company_id"] == company["id"]
    )  # events keep it
    # the key is free again: the next event makes a new company with fresh counters
    track(api, "acme", 2)
    api.drain()
    fresh = assert_ok(api.get("/companies/lookup", params={"keys[id]": "acme"}))
    assert fresh["id"] != company["id"]
    assert metrics_of(fresh)[("api-call", "all_time", "first_of_month")] == 2
    gone = sdk_parse(
        DeleteCompanyByKeysResponse, api.post("/companies/delete", {"keys": {"id": "acme"}})
    )
    assert gone.data.id == fresh["id"]
    assert_error(api.post("/companies/delete", {"keys": {"id": "acme"}}), 404)
    assert_error(api.post("/companies/delete", {"keys": {}}), 400)


# -- billing anchor ------------------------------------------------------------------------
def _billing_counters(tmp_path: Path, company_id: str) -> dict[tuple[str, int], int]:
    conn = sqlite3.connect(tmp_path / "t.db")
    try:
        rows = conn.execute(
            "SELECT subtype, period_start, quantity FROM usage_counters "
            "WHERE company_id = ? AND period = 'billing'",
            (company_id,),
        ).fetchall()
    finally:
        conn.close()
    return {(s, p): q for s, p, q in rows}


def _micros(at: datetime) -> int:
    return int((at - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000


def test_billing_anchor_recounts_billing_counters(api: Api, tmp_path: Path) -> None:
    company = upsert_company(api, keys={"id": "acme"})
    track(api, "acme", 3)  # 2026-03-15 12:00
    track(api, "acme", 5, at=datetime(2026, 3, 9, 23, 0, tzinfo=UTC))
    track(api, "acme", 7, at=datetime(2026, 2, 20, tzinfo=UTC))
    api.drain()
    assert _billing_counters(tmp_path, company["id"]) == {}

    anchor = datetime(2026, 1, 10, tzinfo=UTC)
    updated = api.run(api.storage.set_billing_anchor, None, {"id": "acme"}, _micros(anchor))
    assert updated.billing_anchor == _micros(anchor)
    march, february = (
        _micros(datetime(2026, 3, 10, tzinfo=UTC)),
        _micros(datetime(2026, 2, 10, tzinfo=UTC)),
    )
    assert _billing_counters(tmp_path, company["id"]) == {
        ("api-call", march): 3,
        ("api-call", february): 12,
    }
    metrics = metrics_of(assert_ok(api.get(f"/companies/{company['id']}")))
    assert metrics[("api-call", "current_month", "billing_cycle")] == 3
    assert metrics[("api-call", "current_month", "first_of_month")] == 8

    # the worker counts new events into the anchored cycle; a recount agrees with it
    track(api, "acme", 2)
    api.drain()
    counted = _billing_counters(tmp_path, company["id"])
    assert counted == {("api-call", march): 5, ("api-call", february): 12}
    api.run(
        api.storage.set_billing_anchor, api.environment_id, {"id": company["id"]}, _micros(anchor)
    )
    assert _billing_counters(tmp_path, company["id"]) == counted

    # cleared: no billing counters, the cycle is the calendar month again
    api.run(api.storage.set_billing_anchor, None, {"id": "acme"}, None)
    assert _billing_counters(tmp_path, company["id"]) == {}
    metrics = metrics_of(assert_ok(api.get(f"/companies/{company['id']}")))
    assert metrics[("api-call", "current_month", "billing_cycle")] == 10


def test_cli_set_billing_anchor(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    company = upsert_company(api, keys={"id": "acme"})
    other = upsert_company(api, keys={"id": "acme"}, key=api.other_env)  # same key, staging
    track(api, "acme", 4)
    api.drain()
    url = f"sqlite:///{tmp_path}/t.db"
    anchor = "2026-02-20T06:00:00"

    def set_anchor(*args: str) -> int:
        return cli_main(["companies", "set-billing-anchor", *args, "--database-url", url])

    # the key exists in two environments: the command asks which
    assert set_anchor("--company", "id=acme", "--anchor", anchor) == 2
    assert "2 environments" in capsys.readouterr().err
    assert (
        set_anchor("--company", "id=acme", "--anchor", anchor, "--environment", "development") == 0
    )
    out = capsys.readouterr().out
    assert company["id"] in out and "2026-02-20T06:00:00" in out
    start = _micros(billing_start(NOW, datetime(2026, 2, 20, 6, tzinfo=UTC)))
    assert start == _micros(datetime(2026, 2, 20, 6, tzinfo=UTC))
    assert _billing_counters(tmp_path, company["id"]) == {("api-call", start): 4}
    assert _billing_counters(tmp_path, other["id"]) == {}
    detail = assert_ok(api.get(f"/companies/{company['id']}"))
    assert metrics_of(detail)[("api-call", "current_month", "billing_cycle")] == 4

    assert set_anchor("--company", company["id"], "--anchor", "none") == 0
    assert "cleared" in capsys.readouterr().out
    assert _billing_counters(tmp_path, company["id"]) == {}
    assert set_anchor("--company", "id=nobody", "--anchor", anchor) == 2
    assert "nobody" in capsys.readouterr().err
    assert (
        set_anchor("--company", "id=acme", "--anchor", "soon", "--environment", "development") == 2
    )
    assert "--anchor" in capsys.readouterr().err


ADMIN_BODIES = {
    "/companies": lambda value: {"keys": {"id": "acme"}, "traits": {"blob": value}},
    "/users": lambda value: {"keys": {"id": "u1"}, "traits": {"blob": value}},
    "/company-traits": lambda value: {"keys": {"id": "acme"}, "trait": "blob", "set": value},
    "/user-traits": lambda value: {"keys": {"id": "u1"}, "trait": "blob", "set": value},
}


@pytest.mark.parametrize("path", list(ADMIN_BODIES))
def test_admin_bodies_are_bounded_like_event_bodies(api: Api, path: str) -> None:
    """Entity upserts and traits take at most 32 KiB, as an event body: a
    3 MB trait is 413 with the envelope (declared or streamed without a
    length) and nothing is written; 30 KB fits."""
    assert_ok(api.post("/companies", {"keys": {"id": "acme"}}))
    assert_ok(api.post("/users", {"keys": {"id": "u1"}, "company": {"id": "acme"}}))
    huge = json.dumps(ADMIN_BODIES[path]("x" * 3_000_000)).encode()
    assert_error(api.post(path, content=huge), 413, contains="32 KiB")

    def chunks() -> Any:
        for start in range(0, len(huge), 65536):
            yield huge[start : start + 65536]

    assert_error(api.post(path, content=chunks()), 413, contains="32 KiB")
    kind = "users" if path.startswith("/user") else "companies"
    (entity,) = assert_ok(api.get(f"/{kind}"))
    assert "blob" not in entity["traits"]
    assert_ok(api.post(path, ADMIN_BODIES[path]("y" * 30_000)))
    (entity,) = assert_ok(api.get(f"/{kind}"))
    assert entity["traits"]["blob"] == "y" * 30_000
