"""Features, company overrides (allocations) and feature usage over HTTP:
CRUD, validation, auth, usage in each metric period as the clock crosses day,
week, month and billing-cycle boundaries, and event previews."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from schematic.core.pydantic_utilities import parse_obj_as
from schematic.entitlements.types import (
    CreateCompanyOverrideResponse,
    GetFeatureUsageByCompanyResponse,
    ListCompanyOverridesResponse,
    ListFeatureUsageResponse,
)
from schematic.events.types import GetEventResponse, ListEventsResponse
from schematic.features.types import (
    CreateFeatureResponse,
    DeleteFeatureResponse,
    ListFeaturesResponse,
)

from tally.clock import to_micros
from tally.storage.sql.usage import COUNTER_LOOKUP
from tests.api.conftest import Api
from tests.api.helpers import TIMESTAMP_Z, assert_error, assert_ok, assert_raw_event, track

FEATURE_REQUIRED = {
    "created_at",
    "description",
    "event_source",
    "feature_type",
    "flags",
    "icon",
    "id",
    "name",
    "plans",
    "updated_at",
}
OVERRIDE_REQUIRED = {
    "company_id",
    "created_at",
    "environment_id",
    "feature_id",
    "id",
    "notes",
    "updated_at",
    "value_type",
}
USAGE_REQUIRED = {"access", "allocation_type", "entitlement_id", "entitlement_type"}


# -- helpers --------------------------------------------------------------------
def feature(
    api: Api, name: str, subtype: str | None = None, kind: str = "event", **extra: Any
) -> dict[str, Any]:
    payload = {"name": name, "description": f"{name} feature", "feature_type": kind, **extra}
    if subtype is not None:
        payload["event_subtype"] = subtype
    response = api.post("/features", payload)
    data = assert_ok(response, 201, params={})
    parse_obj_as(CreateFeatureResponse, response.json())
    assert set(data) >= FEATURE_REQUIRED, data
    return data  # type: ignore[no-any-return]


def override(
    api: Api, company_id: str, feature_id: str, status: int = 201, **values: Any
) -> dict[str, Any]:
    response = api.post(
        "/company-overrides", {"company_id": company_id, "feature_id": feature_id, **values}
    )
    data = assert_ok(response, status, params={})
    parse_obj_as(CreateCompanyOverrideResponse, response.json())
    assert set(data) >= OVERRIDE_REQUIRED, data
    return data  # type: ignore[no-any-return]


def send(api: Api, event_type: str, body: dict[str, Any]) -> str:
    return assert_raw_event(assert_ok(api.create(event_type, body), 201))


def company(api: Api, key: str = "acme", name: str | None = "Acme Inc") -> str:
    """A company made the way an application makes one: an identify event."""
    company_body: dict[str, Any] = {"keys": {"id": key}}
    if name is not None:
        company_body["name"] = name
    send(
        api,
        "identify",
        {"keys": {"email": f"owner@{key}.test"}, "name": "Owner", "company": company_body},
    )
    api.drain()
    events = api.list_events(event_types="identify")
    company_id = events[0]["company_id"]
    assert isinstance(company_id, str) and company_id.startswith("comp_"), events[0]
    return company_id


def usage(api: Api, **params: Any) -> dict[str, dict[str, Any]]:
    """``/feature-usage`` rows by feature name."""
    response = api.get("/feature-usage", params=params)
    rows = assert_ok(response)
    parse_obj_as(ListFeatureUsageResponse, response.json())
    for row in rows:
        assert set(row) >= USAGE_REQUIRED, row
    return {row["feature"]["name"]: row for row in rows}


def set_billing_anchor(api: Api, key: str, anchor: datetime) -> None:
    api.run(api.storage.set_billing_anchor, api.environment_id, {"id": key}, to_micros(anchor))


# -- features -------------------------------------------------------------------
def test_feature_crud(api: Api) -> None:
    made = feature(api, "API calls", "api-call")
    assert made["id"].startswith("feat_")
    assert made["feature_type"] == "event"
    assert made["event_subtype"] == "api-call"
    assert made["event_source"] == "track"
    assert made["description"] == "API calls feature"
    assert made["flags"] == [] and made["plans"] == []
    assert made["created_at"] == made["updated_at"] == "2026-03-15T12:00:00.000000Z"

    got = assert_ok(api.get(f"/features/{made['id']}"), params={})
    assert got == made

    api.clock.advance(timedelta(seconds=30))
    response = api.client.put(
        f"/features/{made['id']}",
        headers=api.headers(api.secret),
        json={"name": "Requests", "event_subtype": "request", "description": None},
    )
    updated = assert_ok(response, params={})
    assert updated["name"] == "Requests"
    assert updated["event_subtype"] == "request"
    assert updated["description"] == "API calls feature"  # null leaves it as it was
    assert updated["created_at"] == made["created_at"]
    assert updated["updated_at"] == "2026-03-15T12:00:30.000000Z"
    assert assert_ok(api.get(f"/features/{made['id']}")) == updated

    response = api.client.delete(f"/features/{made['id']}", headers=api.headers(api.secret))
    assert assert_ok(response, params={}) == {"deleted": True}
    parse_obj_as(DeleteFeatureResponse, response.json())
    assert_error(api.get(f"/features/{made['id']}"), 404, contains=made["id"])
    response = api.client.delete(f"/features/{made['id']}", headers=api.headers(api.secret))
    assert_error(response, 404)


def test_feature_validation(api: Api) -> None:
    error = assert_error(
        api.post("/features", {"name": "Calls", "description": "", "feature_type": "event"}), 400
    )
    assert "event_subtype" in error
    assert_error(
        api.post(
            "/features",
            {"name": "Calls", "description": "", "feature_type": "event", "event_subtype": "  "},
        ),
        400,
        contains="event_subtype",
    )
    assert_error(
        api.post("/features", {"name": "X", "description": "", "feature_type": "gadget"}),
        400,
        contains="feature_type",
    )
    assert_error(
        api.post("/features", {"description": "", "feature_type": "boolean"}), 400, contains="name"
    )
    assert_error(
        api.post("/features", {"name": "", "description": "", "feature_type": "boolean"}),
        400,
        contains="name",
    )
    assert_error(
        api.post("/features", {"name": 5, "description": "", "feature_type": "boolean"}),
        400,
        contains="name",
    )
    assert_error(
        api.post(
            "/features",
            {
                "name": "X",
                "description": "",
                "feature_type": "event",
                "event_subtype": "x",
                "event_source": "inference",
            },
        ),
        400,
        contains="event_source",
    )
    # a boolean feature becomes an event feature only with a subtype
    flag = feature(api, "SSO", kind="boolean")
    assert "event_subtype" not in flag
    response = api.client.put(
        f"/features/{flag['id']}", headers=api.headers(api.secret), json={"feature_type": "event"}
    )
    assert_error(response, 400, contains="event_subtype")
    response = api.client.put(
        f"/features/{flag['id']}",
        headers=api.headers(api.secret),
        json={"feature_type": "event", "event_subtype": "login"},
    )
    assert assert_ok(response)["feature_type"] == "event"
    response = api.client.put(
        "/features/feat_missing", headers=api.headers(api.secret), json={"name": "x"}
    )
    assert_error(response, 404, contains="feat_missing")
    assert_error(api.get("/features/feat_missing"), 404)


def test_list_features_filters_and_pages(api: Api) -> None:
    calls = feature(api, "API calls", "api-call")
    seats = feature(api, "Seats", kind="trait")
    sso = feature(api, "SSO", kind="boolean")
    exports = feature(api, "Exports", "export")
    other = api.post(
        "/features",
        {"name": "Elsewhere", "description": "", "feature_type": "boolean"},
        key=api.other_env,
    )
    assert_ok(other, 201)

    def names(**params: Any) -> list[str]:
        response = api.get("/features", params=params)
        parse_obj_as(ListFeaturesResponse, response.json())
        return [f["name"] for f in assert_ok(response)]

    assert names() == ["API calls", "Exports", "SSO", "Seats"]  # by name; other env unseen
    assert names(feature_type="event") == ["API calls", "Exports"]
    assert names(feature_type=["boolean", "trait"]) == ["SSO", "Seats"]
    assert names(q="call") == ["API calls"]
    assert names(q=seats["id"]) == ["Seats"]
    assert names(ids=[sso["id"], exports["id"]]) == ["Exports", "SSO"]
    assert names(limit=2, offset=1) == ["Exports", "SSO"]
    assert names(boolean_require_event="true") == ["API calls", "Exports", "Seats"]
    response = api.get("/features", params={"q": "a", "feature_type": "event", "limit": 5})
    assert assert_ok(
        response, params={"q": "a", "feature_type": ["event"], "limit": 5, "offset": 0}
    )
    assert_error(api.get("/features", params={"feature_type": "gadget"}), 400)
    assert_error(api.get("/features", params={"limit": 251}), 400, contains="limit")
    assert calls["id"] not in [f["id"] for f in assert_ok(api.get("/features", key=api.other_env))]
    assert_error(api.get(f"/features/{calls['id']}", key=api.other_env), 404)


def test_admin_calls_need_a_secret_key(api: Api) -> None:
    made = feature(api, "API calls", "api-call")
    payload = {"name": "X", "description": "", "feature_type": "boolean"}
    for path in ("/features", f"/features/{made['id']}", "/company-overrides"):
        assert_error(api.get(path, key=api.publishable), 403, contains="secret key")
        assert_error(api.get(path, key=None), 401)
        assert_error(api.get(path, key="sch_dev_unknown"), 401)
    assert_error(
        api.get("/feature-usage", params={"company_id": "comp_x"}, key=api.publishable), 403
    )
    assert_error(api.get("/usage-by-company", params={"keys[id]": "x"}, key=api.publishable), 403)
    # read-only keys read, but do not write
    assert assert_ok(api.get(f"/features/{made['id']}", key=api.read_only))["id"] == made["id"]
    assert_error(api.post("/features", payload, key=api.read_only), 403, contains="read-only")
    assert_error(api.post("/features", payload, key=api.publishable), 403)
    headers = api.headers(api.read_only)
    assert_error(api.client.put(f"/features/{made['id']}", headers=headers, json=payload), 403)
    assert_error(api.client.delete(f"/features/{made['id']}", headers=headers), 403)
    assert_error(
        api.post(
            "/company-overrides",
            {"company_id": "comp_x", "feature_id": made["id"], "value_type": "unlimited"},
            key=api.read_only,
        ),
        403,
    )
    assert assert_ok(api.get(f"/features/{made['id']}"))["name"] == "API calls"


# -- company overrides ----------------------------------------------------------
def test_company_override_crud_and_upsert(api: Api) -> None:
    acme = company(api)
    calls = feature(api, "API calls", "api-call")
    created = override(
        api,
        acme,
        calls["id"],
        value_type="numeric",
        value_numeric=100,
        metric_period="current_month",
        metric_period_month_reset=None,
        note="trial bump",
    )
    assert created["id"].startswith("cmov_")
    assert created["company_id"] == acme
    assert created["feature_id"] == calls["id"]
    assert created["environment_id"] == api.environment_id
    assert created["value_type"] == "numeric"
    assert created["value_numeric"] == 100
    assert created["metric_period"] == "current_month"
    assert created["metric_period_month_reset"] == "first_of_month"
    assert created["feature"]["name"] == "API calls"
    (note,) = created["notes"]
    assert note["note"] == "trial bump"
    assert note["external_user_id"] == api.secret_id
    assert TIMESTAMP_Z.match(note["created_at"])

    # a second create for the same (company, feature) updates the first
    api.clock.advance(timedelta(minutes=1))
    again = override(
        api,
        acme,
        calls["id"],
        status=200,
        value_type="numeric",
        value_numeric=250,
        metric_period="current_week",
        note="upgrade",
    )
    assert again["id"] == created["id"]
    assert again["created_at"] == created["created_at"]
    assert again["updated_at"] == "2026-03-15T12:01:00.000000Z"
    assert again["value_numeric"] == 250
    assert again["metric_period"] == "current_week"
    assert "metric_period_month_reset" not in again  # only months reset
    assert [n["note"] for n in again["notes"]] == ["trial bump", "upgrade"]
    listed = api.get("/company-overrides", params={"company_id": acme})
    assert [o["id"] for o in assert_ok(listed)] == [created["id"]]

    # PUT: value_type is always sent; fields left out keep their values
    response = api.client.put(
        f"/company-overrides/{created['id']}",
        headers=api.headers(api.secret),
        json={"value_type": "unlimited", "value_numeric": None},
    )
    unlimited = assert_ok(response, params={})
    assert unlimited["value_type"] == "unlimited"
    assert "value_numeric" not in unlimited
    assert unlimited["metric_period"] == "current_week"
    response = api.client.put(
        f"/company-overrides/{created['id']}",
        headers=api.headers(api.secret),
        json={"value_type": "numeric"},
    )
    assert_error(response, 400, contains="value_numeric")
    assert assert_ok(api.get(f"/company-overrides/{created['id']}")) == unlimited

    response = api.client.delete(
        f"/company-overrides/{created['id']}", headers=api.headers(api.secret)
    )
    assert assert_ok(response) == {"deleted": True}
    assert_error(api.get(f"/company-overrides/{created['id']}"), 404, contains=created["id"])
    response = api.client.delete(
        f"/company-overrides/{created['id']}", headers=api.headers(api.secret)
    )
    assert_error(response, 404)


def test_company_override_validation(api: Api) -> None:
    acme = company(api)
    calls = feature(api, "API calls", "api-call")
    sso = feature(api, "SSO", kind="boolean")

    def post(**values: Any) -> Any:
        return api.post("/company-overrides", values)

    base = {"company_id": acme, "feature_id": calls["id"]}
    assert_error(
        post(**base, value_type="unlimited", expiration_date="2026-04-01T00:00:00Z"),
        400,
        contains="expiration_date",
    )
    assert_error(post(**base), 400, contains="value_type")
    assert_error(post(**base, value_type="credit"), 400, contains="value_type")
    assert_error(post(**base, value_type="numeric"), 400, contains="value_numeric")
    assert_error(
        post(**base, value_type="numeric", value_numeric=-1), 400, contains="value_numeric"
    )
    assert_error(
        post(**base, value_type="numeric", value_numeric="ten"), 400, contains="value_numeric"
    )
    assert_error(post(**base, value_type="boolean"), 400, contains="value_bool")
    assert_error(
        post(**base, value_type="numeric", value_numeric=5, metric_period="current_year"),
        400,
        contains="metric_period",
    )
    assert_error(
        post(
            **base,
            value_type="numeric",
            value_numeric=5,
            metric_period="current_month",
            metric_period_month_reset="quarterly",
        ),
        400,
        contains="metric_period_month_reset",
    )
    assert_error(
        post(company_id="comp_nope", feature_id=calls["id"], value_type="unlimited"),
        404,
        contains="comp_nope",
    )
    assert_error(
        post(company_id=acme, feature_id="feat_nope", value_type="unlimited"),
        404,
        contains="feat_nope",
    )
    assert_error(post(feature_id=calls["id"], value_type="unlimited"), 400, contains="company_id")
    response = api.client.post(
        "/company-overrides", headers=api.headers(api.secret), content=b"{not json"
    )
    assert_error(response, 400, contains="JSON")
    # a company of another environment is unknown here
    assert_error(
        api.post(
            "/company-overrides",
            {"company_id": acme, "feature_id": calls["id"], "value_type": "unlimited"},
            key=api.other_env,
        ),
        404,
    )
    # nothing above was stored
    assert assert_ok(api.get("/company-overrides")) == []

    # an allocation of a boolean feature has no period: one sent is ignored
    flag = override(
        api, acme, sso["id"], value_type="boolean", value_bool=True, metric_period="current_day"
    )
    assert flag["value_bool"] is True
    assert "metric_period" not in flag
    # an unlimited or numeric event allocation defaults to all time
    calls_override = override(api, acme, calls["id"], value_type="numeric", value_numeric=0)
    assert calls_override["metric_period"] == "all_time"


def test_list_company_overrides_filters(api: Api) -> None:
    acme = company(api, "acme", "Acme Inc")
    globex = company(api, "globex", "Globex")
    calls = feature(api, "API calls", "api-call")
    sso = feature(api, "SSO", kind="boolean")
    a1 = override(api, acme, calls["id"], value_type="numeric", value_numeric=10)
    api.clock.advance(timedelta(seconds=1))
    a2 = override(api, acme, sso["id"], value_type="boolean", value_bool=False)
    api.clock.advance(timedelta(seconds=1))
    g1 = override(api, globex, calls["id"], value_type="unlimited")

    def ids(**params: Any) -> list[str]:
        response = api.get("/company-overrides", params=params)
        parse_obj_as(ListCompanyOverridesResponse, response.json())
        return [o["id"] for o in assert_ok(response)]

    assert ids() == [g1["id"], a2["id"], a1["id"]]  # newest first
    assert ids(company_id=acme) == [a2["id"], a1["id"]]
    assert ids(company_ids=[globex]) == [g1["id"]]
    assert ids(feature_id=calls["id"]) == [g1["id"], a1["id"]]
    assert ids(feature_ids=[sso["id"]]) == [a2["id"]]
    assert ids(ids=[a1["id"], g1["id"]]) == [g1["id"], a1["id"]]
    assert ids(q="glob") == [g1["id"]]
    assert ids(q="SSO") == [a2["id"]]
    assert ids(limit=1, offset=1) == [a2["id"]]
    response = api.get("/company-overrides", params={"company_id": acme, "limit": 5})
    assert_ok(response, params={"company_id": acme, "limit": 5, "offset": 0})
    response = api.get("/features", params={"without_company_override_for": globex})
    assert [f["name"] for f in assert_ok(response)] == ["SSO"]
    response = api.get("/features", params={"without_company_override_for": acme})
    assert assert_ok(response) == []
    # deleting a feature deletes its overrides
    response = api.client.delete(f"/features/{calls['id']}", headers=api.headers(api.secret))
    assert_ok(response)
    assert ids() == [a2["id"]]


# -- usage ----------------------------------------------------------------------
SAT_LATE = datetime(2026, 3, 14, 23, 0, tzinfo=UTC)  # Saturday
SUN_NOON = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)  # Sunday: a new week
MAR_LAST = datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)  # Tuesday
APR_FIRST = datetime(2026, 4, 1, 0, 0, tzinfo=UTC)  # Wednesday: a new month and day
ANCHOR = datetime(2026, 1, 20, 0, 0, tzinfo=UTC)  # billing cycle starts on the 20th


@pytest.fixture
def metered(api: Api) -> dict[str, Any]:
    """One company with five features on the same subtype, one per metric
    period, and track events at four times around day, week, month and
    billing-cycle boundaries (quantities 2, 3, 5, 7)."""
    api.clock.set(SAT_LATE - timedelta(hours=1))
    acme = company(api)
    set_billing_anchor(api, "acme", ANCHOR)
    made = {
        period: feature(api, f"calls {period}", "api-call")
        for period in ("all_time", "day", "week", "month", "billing")
    }
    override(
        api,
        acme,
        made["all_time"]["id"],
        value_type="numeric",
        value_numeric=20,
        metric_period="all_time",
    )
    override(
        api,
        acme,
        made["day"]["id"],
        value_type="numeric",
        value_numeric=5,
        metric_period="current_day",
    )
    override(
        api,
        acme,
        made["week"]["id"],
        value_type="numeric",
        value_numeric=10,
        metric_period="current_week",
    )
    override(
        api,
        acme,
        made["month"]["id"],
        value_type="numeric",
        value_numeric=10,
        metric_period="current_month",
        metric_period_month_reset="first_of_month",
    )
    override(
        api,
        acme,
        made["billing"]["id"],
        value_type="unlimited",
        metric_period="current_month",
        metric_period_month_reset="billing_cycle",
    )
    for at, quantity in ((SAT_LATE, 2), (SUN_NOON, 3), (MAR_LAST, 5), (APR_FIRST, 7)):
        api.clock.set(at)
        send(api, "track", track("api-call", company={"id": "acme"}, user=None, quantity=quantity))
        api.drain()
    return {"company_id": acme, "features": made}


def test_usage_in_each_period(api: Api, metered: dict[str, Any]) -> None:
    acme = metered["company_id"]
    rows = usage(api, company_id=acme)
    assert sorted(rows) == [
        "calls all_time",
        "calls billing",
        "calls day",
        "calls month",
        "calls week",
    ]

    all_time = rows["calls all_time"]
    assert all_time["usage"] == 17 and all_time["allocation"] == 20
    assert all_time["access"] is True
    assert all_time["period"] == "all_time"
    assert "metric_reset_at" not in all_time
    assert all_time["percent_used"] == pytest.approx(85.0)
    assert all_time["entitlement_type"] == "company_override"
    assert all_time["allocation_type"] == "numeric"
    assert all_time["entitlement_id"] == all_time["company_override"]["id"]
    assert all_time["has_valid_allocation"] is True
    assert all_time["is_unlimited"] is False

    day = rows["calls day"]
    assert (day["usage"], day["allocation"], day["access"]) == (7, 5, False)  # only April 1st
    assert day["metric_reset_at"] == "2026-04-02T00:00:00.000000Z"
    assert day["overuse"] == 2

    week = rows["calls week"]  # the week of Sunday March 29th: Mar 31 + Apr 1
    assert (week["usage"], week["allocation"], week["access"]) == (12, 10, False)
    assert week["metric_reset_at"] == "2026-04-05T00:00:00.000000Z"
    assert week["percent_used"] == pytest.approx(120.0)

    month = rows["calls month"]  # April so far
    assert (month["usage"], month["allocation"], month["access"]) == (7, 10, True)
    assert month["month_reset"] == "first_of_month"
    assert month["metric_reset_at"] == "2026-05-01T00:00:00.000000Z"

    billing = rows["calls billing"]  # cycle from March 20th: Mar 31 + Apr 1
    assert billing["usage"] == 12
    assert billing["access"] is True and billing["is_unlimited"] is True
    assert "allocation" not in billing
    assert billing["allocation_type"] == "unlimited"
    assert billing["month_reset"] == "billing_cycle"
    assert billing["metric_reset_at"] == "2026-04-20T00:00:00.000000Z"

    # a week later, with no new events: day and week are fresh, the rest stay
    api.clock.set(datetime(2026, 4, 5, 0, 0, tzinfo=UTC))
    rows = usage(api, company_id=acme)
    assert {name: row["usage"] for name, row in rows.items()} == {
        "calls all_time": 17,
        "calls day": 0,
        "calls week": 0,
        "calls month": 7,
        "calls billing": 12,
    }
    assert rows["calls day"]["access"] is True
    assert rows["calls week"]["metric_reset_at"] == "2026-04-12T00:00:00.000000Z"

    # back on Sunday March 15th: the Saturday event is last week's and yesterday's
    api.clock.set(SUN_NOON)
    rows = usage(api, company_id=acme)
    assert rows["calls day"]["usage"] == 3
    assert rows["calls week"]["usage"] == 3
    assert rows["calls month"]["usage"] == 10  # March: 2 + 3 + 5
    assert rows["calls billing"]["usage"] == 5  # Feb 20th to Mar 20th: 2 + 3
    assert rows["calls billing"]["metric_reset_at"] == "2026-03-20T00:00:00.000000Z"


def test_a_negative_correction_lowers_current_usage(api: Api, metered: dict[str, Any]) -> None:
    """A negative correction lowers the current period's usage."""
    api.clock.set(APR_FIRST + timedelta(hours=1))
    send(api, "track", track("api-call", company={"id": "acme"}, user=None, quantity=-4))
    api.drain()
    rows = usage(api, company_id=metered["company_id"])
    assert rows["calls day"]["usage"] == 3
    assert rows["calls day"]["access"] is True
    assert rows["calls all_time"]["usage"] == 13


def test_usage_lists_event_features_without_an_allocation(api: Api) -> None:
    acme = company(api)
    exports = feature(api, "Exports", "export")
    sso = feature(api, "SSO", kind="boolean")
    feature(api, "Seats", kind="trait")  # no allocation, not an event feature: not listed
    beta = feature(api, "Beta", kind="boolean")  # no allocation: not listed
    override(api, acme, sso["id"], value_type="boolean", value_bool=True)
    send(api, "track", track("export", company={"id": "acme"}, user=None, quantity=4))
    api.drain()

    rows = usage(api, company_id=acme)
    assert sorted(rows) == ["Exports", "SSO"]
    assert beta["name"] not in rows
    row = rows["Exports"]
    assert row["access"] is False
    assert row["has_valid_allocation"] is False
    assert row["entitlement_type"] == "unknown"
    assert row["usage"] == 4 and row["period"] == "all_time"
    assert "allocation" not in row and "company_override" not in row
    assert row["feature"]["id"] == exports["id"]
    flag = rows["SSO"]
    assert flag["access"] is True and flag["allocation_type"] == "boolean"
    assert "usage" not in flag
    override(api, acme, sso["id"], status=200, value_type="boolean", value_bool=False)
    assert usage(api, company_id=acme)["SSO"]["access"] is False


def test_usage_by_company_keys(api: Api) -> None:
    acme = company(api)
    calls = feature(api, "API calls", "api-call")
    feature(api, "Exports", "export")
    override(api, acme, calls["id"], value_type="numeric", value_numeric=3)
    send(api, "track", track("api-call", company={"id": "acme"}, user=None, quantity=3))
    api.drain()

    by_id = usage(api, company_id=acme)
    assert by_id["API calls"]["usage"] == 3 and by_id["API calls"]["access"] is False
    by_bracket = usage(api, **{"company_keys[id]": "acme"})
    by_json = usage(api, company_keys=json.dumps({"id": "acme"}))
    assert by_bracket == by_id == by_json
    response = api.get(
        "/feature-usage", params={"company_keys[id]": "acme", "feature_ids": calls["id"]}
    )
    data = assert_ok(
        response,
        params={
            "company_keys": {"id": "acme"},
            "feature_ids": [calls["id"]],
            "limit": 100,
            "offset": 0,
        },
    )
    assert [r["feature"]["name"] for r in data] == ["API calls"]
    assert [
        r["feature"]["name"]
        for r in assert_ok(api.get("/feature-usage", params={"company_id": acme, "q": "exp"}))
    ] == ["Exports"]
    assert [
        r["feature"]["name"]
        for r in assert_ok(
            api.get("/feature-usage", params={"company_id": acme, "limit": 1, "offset": 1})
        )
    ] == ["Exports"]

    response = api.get("/usage-by-company", params={"keys[id]": "acme"})
    detail = assert_ok(response, params={"keys": {"id": "acme"}})
    parse_obj_as(GetFeatureUsageByCompanyResponse, response.json())
    assert {r["feature"]["name"]: r["usage"] for r in detail["features"]} == {
        "API calls": 3,
        "Exports": 0,
    }
    response = api.get("/usage-by-company", params={"keys": '{"id": "acme"}'})
    assert assert_ok(response)["features"] == detail["features"]

    assert_error(api.get("/feature-usage"), 400, contains="company_id")
    assert_error(
        api.get("/feature-usage", params={"company_id": "comp_nope"}), 404, contains="comp_nope"
    )
    assert_error(
        api.get("/feature-usage", params={"company_keys[id]": "nope"}), 404, contains="id=nope"
    )
    assert_error(
        api.get("/feature-usage", params={"company_keys": "[1]"}), 400, contains="company_keys"
    )
    assert_error(
        api.get("/feature-usage", params={"company_keys": "{bad"}), 400, contains="company_keys"
    )
    assert_error(api.get("/usage-by-company"), 400, contains="keys")
    assert_error(api.get("/usage-by-company", params={"keys[id]": "nope"}), 404)
    assert_error(api.get("/feature-usage", params={"company_id": acme}, key=api.other_env), 404)


def test_company_keys_match_by_any_key_but_one_company(api: Api) -> None:
    company(api, "acme", "Acme Inc")
    company(api, "globex", "Globex")
    # a company is found by any of its keys; keys it does not have are ignored
    response = api.get("/usage-by-company", params={"keys[id]": "acme", "keys[plan]": "gold"})
    assert assert_ok(response)["features"] == []
    send(
        api,
        "identify",
        {"keys": {"id": "u9"}, "company": {"keys": {"domain": "globex.test", "id": "globex"}}},
    )
    api.drain()
    response = api.get(
        "/usage-by-company", params={"keys[id]": "acme", "keys[domain]": "globex.test"}
    )
    assert_error(response, 400, contains="2 different companies")


def test_a_usage_read_is_one_primary_key_lookup(api: Api, metered: dict[str, Any]) -> None:
    """Reading usage never scans events or counters: the counter read is a
    primary-key search, whatever the number of stored events."""

    def plan(conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {COUNTER_LOOKUP}", ("c", "s", "day", 0)).fetchall()
        return [r[-1] for r in rows]

    details = api.run(api.storage._read, plan)
    assert len(details) == 1, details
    assert "USING PRIMARY KEY" in details[0], details
    assert "usage_counters" in details[0], details


# -- features over events ---------------------------------------------------------
def test_events_carry_feature_company_and_user_previews(api: Api) -> None:
    calls = feature(api, "API calls", "api-call")
    calls_too = feature(api, "All calls", "api-call")
    send(
        api,
        "identify",
        {
            "keys": {"email": "wile@acme.test"},
            "name": "Wile E.",
            "company": {"keys": {"id": "acme"}, "name": "Acme Inc"},
        },
    )
    tracked = send(
        api, "track", track("api-call", company={"id": "acme"}, user={"email": "wile@acme.test"})
    )
    unnamed = send(api, "track", track("api-call", company={"slug": "globex"}, user={"id": "u-77"}))
    api.drain()

    response = api.get(f"/events/{tracked}")
    detail = assert_ok(response, params={})
    parse_obj_as(GetEventResponse, response.json())
    assert detail["status"] == "processed"
    assert sorted(detail["feature_ids"]) == sorted([calls["id"], calls_too["id"]])
    assert sorted((f["id"], f["name"]) for f in detail["features"]) == sorted(
        [(calls["id"], "API calls"), (calls_too["id"], "All calls")]
    )
    assert detail["company"] == {"id": detail["company_id"], "name": "Acme Inc"}
    assert detail["user"] == {"id": detail["user_id"], "name": "Wile E."}
    # no stored name: the first key's value names it
    other = assert_ok(api.get(f"/events/{unnamed}"))
    assert other["company"] == {"id": other["company_id"], "name": "globex"}
    assert other["user"] == {"id": other["user_id"], "name": "u-77"}

    response = api.get("/events", params={"event_types": "track"})
    parse_obj_as(ListEventsResponse, response.json())
    listed = {e["id"]: e for e in assert_ok(response)}
    assert listed[tracked]["company"]["name"] == "Acme Inc"
    assert listed[unnamed]["user"]["name"] == "u-77"
    assert len(listed[tracked]["features"]) == 2

    # names are read when the event is shown; a deleted feature is named by its id
    response = api.client.put(
        f"/features/{calls['id']}", headers=api.headers(api.secret), json={"name": "Requests"}
    )
    assert_ok(response)
    response = api.client.delete(f"/features/{calls_too['id']}", headers=api.headers(api.secret))
    assert_ok(response)
    names = {f["id"]: f["name"] for f in assert_ok(api.get(f"/events/{tracked}"))["features"]}
    assert names == {calls["id"]: "Requests", calls_too["id"]: calls_too["id"]}


def test_changing_a_subtype_affects_later_events_only(api: Api) -> None:
    calls = feature(api, "API calls", "api-call")
    before = send(api, "track", track("api-call", company={"id": "acme"}, user=None))
    api.drain()
    response = api.client.put(
        f"/features/{calls['id']}",
        headers=api.headers(api.secret),
        json={"event_subtype": "request"},
    )
    assert assert_ok(response)["event_subtype"] == "request"
    old_subtype = send(api, "track", track("api-call", company={"id": "acme"}, user=None))
    new_subtype = send(
        api, "track", track("request", company={"id": "acme"}, user=None, quantity=6)
    )
    api.drain()
    assert assert_ok(api.get(f"/events/{before}"))["feature_ids"] == [calls["id"]]
    assert assert_ok(api.get(f"/events/{old_subtype}"))["feature_ids"] == []
    assert assert_ok(api.get(f"/events/{new_subtype}"))["feature_ids"] == [calls["id"]]
    acme = assert_ok(api.get(f"/events/{new_subtype}"))["company_id"]
    assert usage(api, company_id=acme)["API calls"]["usage"] == 6
