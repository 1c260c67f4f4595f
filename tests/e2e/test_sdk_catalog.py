"""Features, company overrides and usage through the official Python SDK
(schematichq 1.4.6) against a real tally server.

Features and overrides are made with ``client.features`` and
``client.entitlements``; usage arrives both through the SDK's buffered
``track()`` (``POST /batch``) and through ``events.create_event``; the worker
inside ``tally serve`` processes it, and ``list_feature_usage`` /
``get_feature_usage_by_company`` report it. Every response is parsed by the
SDK's own models.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from schematic import (
    BadRequestError,
    EventBodyIdentify,
    EventBodyIdentifyCompany,
    EventBodyTrack,
    EventDetailResponseData,
    FeatureUsageResponseData,
    ForbiddenError,
    NotFoundError,
    Schematic,
)

from tests.e2e.conftest import ClientFactory
from tests.support.server import Server

pytestmark = pytest.mark.slow


def wait_until_processed(client: Schematic, timeout: float = 20.0) -> list[EventDetailResponseData]:
    """Every event of the environment, once the worker has left none pending."""
    deadline = time.monotonic() + timeout
    while True:
        events = client.events.list_events(limit=250).data
        pending = [e.id for e in events if e.status == "pending"]
        if not pending:
            return events
        assert time.monotonic() < deadline, f"events still pending after {timeout}s: {pending}"
        time.sleep(0.05)


def month_end(now: datetime) -> datetime:
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def test_features_overrides_and_usage_through_the_sdk(
    server: Server, make_client: ClientFactory
) -> None:
    admin = make_client(server.secret_key)

    # features
    calls = admin.features.create_feature(
        name="API calls",
        description="Calls to the public API",
        feature_type="event",
        event_subtype="api-call",
    ).data
    assert calls.id.startswith("feat_")
    assert calls.event_subtype == "api-call" and calls.feature_type == "event"
    assert calls.flags == [] and calls.plans == []
    exports = admin.features.create_feature(
        name="Exports", description="", feature_type="event", event_subtype="export"
    ).data
    sso = admin.features.create_feature(name="SSO", description="", feature_type="boolean").data
    with pytest.raises(BadRequestError) as missing_subtype:
        admin.features.create_feature(name="Broken", description="", feature_type="event")
    assert "event_subtype" in missing_subtype.value.body.error
    assert admin.features.get_feature(calls.id).data.name == "API calls"
    listed = admin.features.list_features(feature_type="event")
    assert [f.name for f in listed.data] == ["API calls", "Exports"]
    assert listed.params.feature_type == ["event"]
    renamed = admin.features.update_feature(exports.id, name="Data exports").data
    assert renamed.name == "Data exports" and renamed.event_subtype == "export"
    with pytest.raises(NotFoundError):
        admin.features.get_feature("feat_missing")
    publishable = make_client(server.publishable_key)
    with pytest.raises(ForbiddenError):
        publishable.features.list_features()

    # a company, made the way an application makes one
    admin.events.create_event(
        event_type="identify",
        body=EventBodyIdentify(
            keys={"email": "wile@acme.test"},
            name="Wile E.",
            company=EventBodyIdentifyCompany(keys={"id": "acme"}, name="Acme Inc"),
        ),
    )
    (identify,) = wait_until_processed(admin)
    company_id = identify.company_id
    assert company_id is not None and company_id.startswith("comp_")

    # overrides
    monthly = admin.entitlements.create_company_override(
        company_id=company_id,
        feature_id=calls.id,
        value_type="numeric",
        value_numeric=10,
        metric_period="current_month",
        metric_period_month_reset="first_of_month",
        note="launch allowance",
    ).data
    assert monthly.value_numeric == 10 and monthly.metric_period == "current_month"
    assert [n.note for n in monthly.notes] == ["launch allowance"]
    flag = admin.entitlements.create_company_override(
        company_id=company_id, feature_id=sso.id, value_type="boolean", value_bool=True
    ).data
    again = admin.entitlements.create_company_override(
        company_id=company_id,
        feature_id=calls.id,
        value_type="numeric",
        value_numeric=20,
        metric_period="current_month",
    ).data
    assert again.id == monthly.id and again.value_numeric == 20  # one per (company, feature)
    overrides = admin.entitlements.list_company_overrides(company_id=company_id).data
    assert sorted(o.id for o in overrides) == sorted([monthly.id, flag.id])
    assert admin.entitlements.get_company_override(monthly.id).data.value_numeric == 20
    with pytest.raises(NotFoundError):
        admin.entitlements.create_company_override(
            company_id="comp_missing", feature_id=calls.id, value_type="unlimited"
        )

    # usage: buffered track() (POST /batch) and events.create_event (POST /events)
    tracker = make_client(server.secret_key)
    for quantity in (5, 4):
        tracker.track(
            "api-call", company={"id": "acme"}, user={"email": "wile@acme.test"}, quantity=quantity
        )
    tracker.track("api-call", company={"id": "acme"})  # quantity defaults to 1
    tracker.track("export", company={"id": "acme"}, quantity=2)
    tracker.shutdown()  # flushes the buffer
    rest = admin.events.create_event(
        event_type="track",
        body=EventBodyTrack(event="api-call", company={"id": "acme"}, quantity=3),
    ).data
    assert rest.event_id is not None
    events = wait_until_processed(admin)
    tracks = [e for e in events if e.type == "track"]
    assert len(tracks) == 5
    assert all(e.status == "processed" for e in events)

    rows = {
        r.feature.name: r for r in admin.entitlements.list_feature_usage(company_id=company_id).data
    }
    assert sorted(rows) == ["API calls", "Data exports", "SSO"]
    used = rows["API calls"]
    assert isinstance(used, FeatureUsageResponseData)
    assert used.usage == 13  # 5 + 4 + 1 + 3
    assert used.allocation == 20
    assert used.access is True
    assert used.allocation_type == "numeric"
    assert used.entitlement_type == "company_override"
    assert used.entitlement_id == monthly.id
    assert used.period == "current_month" and used.month_reset == "first_of_month"
    assert used.metric_reset_at == month_end(datetime.now(UTC))
    assert used.percent_used == pytest.approx(65.0)
    assert rows["SSO"].access is True and rows["SSO"].allocation_type == "boolean"
    no_allocation = rows["Data exports"]
    assert no_allocation.access is False and no_allocation.usage == 2

    # the allocation is lowered below the usage: no more access
    admin.entitlements.update_company_override(monthly.id, value_type="numeric", value_numeric=13)
    by_keys = admin.entitlements.list_feature_usage(
        company_keys={"id": "acme"}, feature_ids=[calls.id]
    )
    (row,) = by_keys.data
    assert (row.usage, row.allocation, row.access) == (13, 13, False)
    assert by_keys.params.company_keys == {"id": "acme"}
    detail = admin.entitlements.get_feature_usage_by_company(keys={"id": "acme"}).data
    assert {r.feature.name: r.usage for r in detail.features} == {
        "API calls": 13,
        "Data exports": 2,
        "SSO": None,
    }

    # events carry their feature, company and user
    sent = admin.events.get_event(rest.event_id).data
    assert sent.status == "processed"
    assert sent.feature_ids == [calls.id]
    assert [(f.id, f.name) for f in sent.features] == [(calls.id, "API calls")]
    assert sent.company_id == company_id
    assert sent.company is not None and sent.company.name == "Acme Inc"
    assert sent.enriched_at is not None
    assert abs(sent.enriched_at - datetime.now(UTC)) < timedelta(minutes=1)
    buffered = [e for e in tracks if e.quantity == 5]
    assert len(buffered) == 1
    detail_5 = admin.events.get_event(buffered[0].id).data
    assert detail_5.user is not None and detail_5.user.name == "Wile E."
    assert detail_5.company_id == company_id and detail_5.feature_ids == [calls.id]
    export_event = next(e for e in tracks if e.subtype == "export")
    assert [f.name for f in export_event.features] == ["Data exports"]

    # deleting an override and a feature
    assert admin.entitlements.delete_company_override(flag.id).data.deleted is True
    with pytest.raises(NotFoundError):
        admin.entitlements.get_company_override(flag.id)
    assert admin.features.delete_feature(sso.id).data.deleted is True
    names = [
        r.feature.name for r in admin.entitlements.list_feature_usage(company_id=company_id).data
    ]
    assert names == ["API calls", "Data exports"]
