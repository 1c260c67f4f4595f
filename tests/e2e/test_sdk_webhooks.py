"""Webhooks and billing meter records end to end: the official Python SDK
(schematichq 1.4.6) against a real ``tally serve`` whose worker and delivery
loop run inside it, with real local receivers.

The SDK makes the feature, the override and the webhook endpoint, sends a
test delivery and usage; the receiver gets ``entitlement.limit.warning`` and
``entitlement.limit.reached`` once each, every one verified with the SDK's
``schematic.webhook_utils``; the delivery log, read through
``client.webhooks``, says they succeeded; the billing sink gets one meter
record per event.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from schematic import EventBodyTrack, NotFoundError, Schematic, SchematicConfig
from schematic.webhook_utils import verify_webhook_signature

from tests.support.receiver import Receiver
from tests.support.server import Server, running_server

pytestmark = pytest.mark.slow


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    with Receiver() as hooks, Receiver() as sink:
        yield hooks, sink


@pytest.fixture(params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path: Path, receivers: tuple[Receiver, Receiver]
) -> Iterator[Server]:
    """The real server on each backend, delivering to the receivers with a
    compressed retry schedule."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    env = {
        "TALLY_BILLING_SINK_URL": receivers[1].url,
        "TALLY_DELIVERY_RETRY_BASE_SECONDS": "0.05",
        "TALLY_DELIVERY_RETRY_MAX_SECONDS": "0.2",
        "TALLY_DELIVERY_TIMEOUT_SECONDS": "5",
    }
    with running_server(tmp_path, env, database_url=url) as srv:
        yield srv


def wait(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_limit_webhooks_and_meter_records_through_the_sdk(
    server: Server, receivers: tuple[Receiver, Receiver]
) -> None:
    hooks, sink = receivers
    hooks.fail_first = 1  # every delivery is retried once
    http = httpx.Client(timeout=10.0)
    client = Schematic(
        server.secret_key,
        SchematicConfig(
            base_url=server.base_url,
            event_capture_url=server.base_url,
            httpx_client=http,
            timeout=10.0,
        ),
    )
    try:
        feature = client.features.create_feature(
            name="API calls", description="", feature_type="event", event_subtype="api-call"
        ).data
        company = client.companies.upsert_company(
            keys={"id": "acme", "stripe_customer_id": "cus_sdk"}, name="Acme"
        ).data
        client.entitlements.create_company_override(
            company_id=company.id,
            feature_id=feature.id,
            value_type="numeric",
            value_numeric=5,
            metric_period="current_month",
        )
        hook = client.webhooks.create_webhook(
            name="limits",
            url=hooks.url,
            request_types=["entitlement.limit.warning", "entitlement.limit.reached"],
            entitlement_trigger_configs=[{"feature_id": feature.id}],
        ).data
        assert hook.secret and hook.status == "active"
        assert client.webhooks.get_webhook(hook.id).data.url == hooks.url
        assert [h.id for h in client.webhooks.list_webhooks().data] == [hook.id]
        assert client.webhooks.count_webhooks().data.count == 1

        hooks.fail_first = 0
        test = client.webhooks.send_test_webhook_action(hook.id, request_type="test.send").data
        assert test.success and test.response_code == 200
        hooks.fail_first = 1

        for _ in range(8):
            client.events.create_event(
                event_type="track",
                body=EventBodyTrack(event="api-call", company={"id": "acme"}, quantity=1),
            )
        wait(lambda: len(hooks.succeeded()) >= 3 and len(sink.succeeded()) >= 8)
        time.sleep(0.5)  # nothing more arrives
        delivered = hooks.succeeded()
        assert sorted(r.json()["action"] for r in delivered) == [
            "entitlement.limit.reached",
            "entitlement.limit.warning",
            "test.send",
        ]
        for r in hooks.received():
            verify_webhook_signature(SimpleNamespace(headers=r.headers), hook.secret, body=r.body)
        reached = next(r.json() for r in delivered if r.json()["action"].endswith("reached"))
        assert reached["company_id"] == company.id and reached["feature_id"] == feature.id
        assert reached["body"]["usage"] == 5 and reached["body"]["allocation"] == 5

        log = client.webhooks.list_webhook_events(webhook_id=hook.id).data
        assert sorted((e.request_type, e.status, e.attempt_count) for e in log) == [
            ("entitlement.limit.reached", "success", 2),
            ("entitlement.limit.warning", "success", 2),
            ("test.send", "success", 1),
        ]
        assert client.webhooks.count_webhook_events(webhook_id=hook.id).data.count == 3
        detail = client.webhooks.get_webhook_event(log[0].id).data
        assert detail.payload is not None and detail.webhook_id == hook.id

        # a read-only key reads it all, the SDK parses it, and no secret shows
        reader = Schematic(
            server.read_only_key,
            SchematicConfig(base_url=server.base_url, httpx_client=http, timeout=10.0),
        )
        try:
            seen = [
                reader.webhooks.get_webhook(hook.id).data,
                *reader.webhooks.list_webhooks().data,
                *(e.webhook for e in reader.webhooks.list_webhook_events().data),
                reader.webhooks.get_webhook_event(log[0].id).data.webhook,
            ]
        finally:
            reader.shutdown()
        assert len(seen) == 6 and all(w is not None and w.id == hook.id for w in seen)
        assert {w.secret for w in seen if w is not None} == {""}

        records = sink.succeeded()
        assert len(records) == 8 and len({r.json()["identifier"] for r in records}) == 8
        assert {r.json()["payload"]["stripe_customer_id"] for r in records} == {"cus_sdk"}
        assert {r.json()["event_name"] for r in records} == {"api-call"}

        client.webhooks.update_webhook(hook.id, status="inactive")
        assert client.webhooks.get_webhook(hook.id).data.status == "inactive"
        assert client.webhooks.delete_webhook(hook.id).data.deleted
        with pytest.raises(NotFoundError):
            client.webhooks.get_webhook(hook.id)
    finally:
        client.shutdown()
        http.close()
