"""The official Python SDK's ``client.companies.*`` (schematichq 1.4.6)
against a real tally server: upserts, reads, lookups by keys, memberships,
trait upserts and deletes, each parsed by the SDK's own models; then
buffered ``identify()``/``track()`` processed by the server's worker and
seen through ``lookup_company`` (merged keys and traits, usage metrics).

Each client gets an ``httpx.Client`` that the fixture closes (see
tests/e2e/conftest.py for why).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from schematic import (
    BadRequestError,
    CompanyDetailResponseData,
    EventBodyIdentifyCompany,
    ForbiddenError,
    NotFoundError,
    Schematic,
    UserDetailResponseData,
)

from tests.e2e.conftest import ClientFactory
from tests.support.server import Server

pytestmark = pytest.mark.slow


def keys_of(entity: CompanyDetailResponseData | UserDetailResponseData) -> dict[str, str]:
    return {k.key: k.value for k in entity.keys}


def assert_recent(at: datetime | None) -> None:
    assert at is not None and at.utcoffset() == timedelta(0), at
    assert abs(datetime.now(UTC) - at) < timedelta(minutes=5), at


def wait_until_processed(client: Schematic, expected: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        events = client.events.list_events(limit=250).data
        pending = [e.id for e in events if e.status == "pending"]
        if len(events) >= expected and not pending:
            return
        assert time.monotonic() < deadline, f"{len(events)} events, pending: {pending}"
        time.sleep(0.1)


def test_companies_users_memberships_and_traits(
    sdk: Schematic, make_client: ClientFactory, server: Server
) -> None:
    companies = sdk.companies

    # -- companies ---------------------------------------------------------------
    acme = companies.upsert_company(
        keys={"id": "acme"}, name="Acme Inc", traits={"city": "Atlanta"}
    ).data
    assert isinstance(acme, CompanyDetailResponseData)
    assert acme.id.startswith("comp_") and acme.name == "Acme Inc"
    assert keys_of(acme) == {"id": "acme"} and acme.traits == {"city": "Atlanta"}
    assert acme.user_count == 0 and acme.metrics == [] and acme.plans == []
    assert_recent(acme.created_at)
    assert acme.keys[0].entity_type == "company" and acme.keys[0].entity_id == acme.id

    merged = companies.upsert_company(
        keys={"id": "acme", "crm": "c-9"},
        traits={"seats": 10},
        last_seen_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    ).data
    assert merged.id == acme.id and merged.name == "Acme Inc"
    assert keys_of(merged) == {"id": "acme", "crm": "c-9"}
    assert merged.traits == {"city": "Atlanta", "seats": 10}
    assert merged.last_seen_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    globex = companies.upsert_company(keys={"id": "globex"}).data
    assert globex.name == "globex"  # no name: the first key's value

    assert companies.get_company(acme.id).data.traits == {"city": "Atlanta", "seats": 10}
    listed = companies.list_companies()
    assert [c.id for c in listed.data] == [globex.id, acme.id]  # newest first
    assert listed.params.limit == 100
    assert [c.id for c in companies.list_companies(q="acme").data] == [acme.id]
    assert [c.id for c in companies.list_companies(ids=[globex.id]).data] == [globex.id]
    assert companies.count_companies().data.count == 2
    looked = companies.lookup_company(keys={"crm": "c-9"})
    assert looked.data.id == acme.id and looked.params.keys == {"crm": "c-9"}

    with pytest.raises(NotFoundError) as missing:
        companies.lookup_company(keys={"id": "nobody"})
    assert "nobody" in missing.value.body.error
    with pytest.raises(NotFoundError):
        companies.get_company("comp_unknown")
    with pytest.raises(BadRequestError) as ambiguous:
        companies.upsert_company(keys={"id": "acme", "crm": "x", "slug": "s"}, id=globex.id)
    assert acme.id in ambiguous.value.body.error
    with pytest.raises(ForbiddenError):
        make_client(server.publishable_key).companies.list_companies()
    with pytest.raises(ForbiddenError):
        make_client(server.read_only_key).companies.upsert_company(keys={"id": "x"})

    # -- users and memberships ------------------------------------------------------
    wile = companies.upsert_user(
        keys={"email": "wile@acme.io"},
        name="Wile E.",
        traits={"role": "admin"},
        company={"id": "acme"},
    ).data
    assert isinstance(wile, UserDetailResponseData)
    assert wile.id.startswith("user_") and wile.name == "Wile E."
    assert [m.company_id for m in wile.company_memberships] == [acme.id]
    assert wile.company_memberships[0].company is not None
    assert wile.company_memberships[0].company.name == "Acme Inc"
    assert companies.get_user(wile.id).data.traits == {"role": "admin"}
    assert [u.id for u in companies.list_users(company_id=acme.id).data] == [wile.id]
    assert companies.lookup_user(keys={"email": "wile@acme.io"}).data.id == wile.id

    membership = companies.get_or_create_company_membership(
        company_id=globex.id, user_id=wile.id
    ).data
    again = companies.get_or_create_company_membership(company_id=globex.id, user_id=wile.id).data
    assert again.id == membership.id and membership.company_id == globex.id
    found = companies.list_company_memberships(user_id=wile.id).data
    assert {m.company_id for m in found} == {acme.id, globex.id}
    assert companies.get_company(globex.id).data.user_count == 1
    assert companies.delete_company_membership(membership.id).data.deleted is True
    assert [m.company_id for m in companies.get_user(wile.id).data.company_memberships] == [acme.id]

    # -- trait upserts ------------------------------------------------------------------
    assert companies.upsert_company_trait(
        keys={"id": "acme"}, trait="seats", incr=5
    ).data.traits == {
        "city": "Atlanta",
        "seats": 15,
    }
    assert companies.upsert_company_trait(
        keys={"id": "acme"}, trait="tier", set_="gold"
    ).data.traits == {
        "city": "Atlanta",
        "seats": 15,
        "tier": "gold",
    }
    logins = companies.upsert_user_trait(keys={"email": "wile@acme.io"}, trait="logins", incr=1)
    assert logins.data.traits == {"role": "admin", "logins": 1}
    with pytest.raises(BadRequestError):
        companies.upsert_company_trait(keys={"id": "acme"}, trait="tier", incr=1)

    # -- deletes ----------------------------------------------------------------------------
    temp = companies.upsert_user(keys={"id": "temp"}).data
    assert companies.delete_user_by_keys(keys={"id": "temp"}).data.id == temp.id
    with pytest.raises(NotFoundError):
        companies.get_user(temp.id)
    assert companies.delete_company(globex.id).data.deleted is True
    with pytest.raises(NotFoundError):
        companies.delete_company(globex.id)
    gone = companies.upsert_company(keys={"id": "gone"}).data
    assert companies.delete_company_by_keys(keys={"id": "gone"}).data.id == gone.id
    assert [c.id for c in companies.list_companies().data] == [acme.id]

    # -- identify and track through the buffer, processed by the server's worker ------------------
    sdk.identify(
        {"email": "wile@acme.io", "user_id": "u-1"},
        company=EventBodyIdentifyCompany(
            keys={"id": "acme", "stripe": "cus_1"}, traits={"region": "us"}
        ),
        traits={"plan_seen": True},
    )
    sdk.identify({"email": "road@acme.io"}, company=EventBodyIdentifyCompany(keys={"crm": "c-9"}))
    sdk.track("api-call", company={"stripe": "cus_1"}, user={"user_id": "u-1"}, quantity=5)
    sdk.track("api-call", company={"id": "acme"}, quantity=7)
    sdk.track("export", company={"crm": "c-9"})
    sdk.shutdown()  # flushes the buffer
    wait_until_processed(sdk, expected=5)
    events = sdk.events.list_events(limit=250).data
    assert {e.status for e in events} == {"processed"}, [(e.type, e.error_message) for e in events]
    assert {e.company_id for e in events} == {acme.id}

    company = companies.lookup_company(keys={"stripe": "cus_1"}).data
    assert company.id == acme.id
    assert keys_of(company) == {"id": "acme", "crm": "c-9", "stripe": "cus_1"}
    assert company.traits == {"city": "Atlanta", "seats": 15, "tier": "gold", "region": "us"}
    assert company.user_count == 2
    assert_recent(company.last_seen_at)
    metrics = {(m.event_subtype, m.period, m.month_reset): m.value for m in company.metrics}
    for period in ("all_time", "current_day", "current_week", "current_month"):
        assert metrics[("api-call", period, "first_of_month")] == 12, period
        assert metrics[("export", period, "first_of_month")] == 1, period
    assert metrics[("api-call", "current_month", "billing_cycle")] == 12
    for metric in company.metrics:
        assert metric.company_id == acme.id and metric.environment_id == company.environment_id
    user = companies.lookup_user(keys={"user_id": "u-1"}).data
    assert user.id == wile.id
    assert keys_of(user) == {"email": "wile@acme.io", "user_id": "u-1"}
    assert user.traits == {"role": "admin", "logins": 1, "plan_seen": True}
