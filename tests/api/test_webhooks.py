"""Webhook endpoints and their delivery log over HTTP, parsed with the
official SDK's models (``schematic.webhooks.types``): CRUD, validation, keys,
the test delivery (to a real local receiver, verified with the SDK's own
``schematic.webhook_utils``) and ``/webhook-events``."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from schematic.core.pydantic_utilities import parse_obj_as
from schematic.types import WebhookResponseData
from schematic.webhook_utils import verify_signature
from schematic.webhooks import types as sdk

from tests.api.conftest import Api
from tests.api.helpers import TIMESTAMP_Z, assert_error, assert_ok
from tests.support.receiver import Receiver

LIMITS = ["entitlement.limit.warning", "entitlement.limit.reached"]


def create(api: Api, key: str | None = "", **fields: Any) -> Any:
    body = {"name": "Limits", "url": "https://hooks.example.com/tally", "request_types": LIMITS}
    body.update(fields)
    return api.post("/webhooks", body, key=key)


def put(api: Api, webhook_id: str, body: dict[str, Any], key: str | None = "") -> Any:
    use = api.secret if key == "" else key
    return api.client.put(f"/webhooks/{webhook_id}", json=body, headers=api.headers(use))


def delete(api: Api, path: str, key: str | None = "") -> Any:
    use = api.secret if key == "" else key
    return api.client.delete(path, headers=api.headers(use))


def test_create_answers_the_sdk_shape_with_the_secret(api: Api) -> None:
    response = create(
        api,
        entitlement_trigger_configs=[{"feature_id": "feat_1"}],
        credit_trigger_configs=None,
    )
    data = assert_ok(response, 201, {})
    parsed = parse_obj_as(sdk.CreateWebhookResponse, response.json())
    hook = parsed.data
    assert hook.id.startswith("wh_") and hook.secret.startswith("whsec_")
    assert hook.status == "active" and list(hook.request_types) == LIMITS
    assert [c.feature_id for c in hook.entitlement_trigger_configs or []] == ["feat_1"]
    assert TIMESTAMP_Z.match(data["created_at"]) and data["credit_trigger_configs"] == []
    second = assert_ok(create(api), 201)
    assert second["secret"] != data["secret"]


def test_list_get_count_update_delete(api: Api) -> None:
    first = assert_ok(create(api, name="Alpha"), 201)
    api.clock.advance(timedelta(seconds=1))
    second = assert_ok(create(api, name="Beta", url="https://beta.example.com/x"), 201)

    listed = api.get("/webhooks", params={"q": "beta", "limit": 10})
    assert_ok(listed, 200, {"q": "beta", "limit": 10, "offset": 0})
    assert [h.id for h in parse_obj_as(sdk.ListWebhooksResponse, listed.json()).data] == [
        second["id"]
    ]
    everything = parse_obj_as(sdk.ListWebhooksResponse, api.get("/webhooks").json()).data
    assert [h.id for h in everything] == [second["id"], first["id"]]
    count = parse_obj_as(sdk.CountWebhooksResponse, api.get("/webhooks/count").json())
    assert count.data.count == 2

    got = parse_obj_as(sdk.GetWebhookResponse, api.get(f"/webhooks/{first['id']}").json())
    assert got.data.secret == first["secret"]

    response = put(api, first["id"], {"name": "Alpha 2", "status": "inactive"})
    updated = parse_obj_as(sdk.UpdateWebhookResponse, response.json()).data
    assert (updated.name, updated.status, updated.url) == ("Alpha 2", "inactive", first["url"])
    assert response.json()["data"]["status_reason"] == "switched off through the API"
    response = put(api, first["id"], {"status": "active", "request_types": ["user.created"]})
    assert assert_ok(response)["request_types"] == ["user.created"]

    deleted = delete(api, f"/webhooks/{first['id']}")
    assert parse_obj_as(sdk.DeleteWebhookResponse, deleted.json()).data.deleted is True
    assert_error(api.get(f"/webhooks/{first['id']}"), 404, contains="was not found")
    assert_error(delete(api, f"/webhooks/{first['id']}"), 404)
    assert_error(put(api, first["id"], {"name": "x"}), 404)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": None}, "name is required"),
        ({"url": None}, "url is required"),
        ({"request_types": None}, "request_types is required"),
        ({"request_types": []}, "at least one request type"),
        ({"request_types": ["entitlement.limit.nope"]}, "unknown request type"),
        ({"url": "not a url"}, "http:// or https://"),
        ({"url": "ftp://example.com/x"}, "http:// or https://"),
        ({"status": "paused"}, "active or inactive"),
        ({"request_types": "entitlement.limit.reached"}, "request_types"),
        ({"entitlement_trigger_configs": [{}]}, "feature_id"),
    ],
)
def test_bad_requests_are_400(api: Api, fields: dict[str, Any], message: str) -> None:
    assert_error(create(api, **fields), 400, contains=message)


def test_update_checks_values_too(api: Api) -> None:
    hook = assert_ok(create(api), 201)
    assert_error(put(api, hook["id"], {"url": "gopher://x"}), 400, contains="http")
    assert_error(put(api, hook["id"], {"request_types": []}), 400, contains="at least one")


def test_keys_and_environments(api: Api) -> None:
    assert_error(create(api, key=api.publishable), 403, contains="publishable")
    assert_error(api.get("/webhooks", key=api.publishable), 403)
    assert_error(create(api, key=api.read_only), 403, contains="read-only")
    hook = assert_ok(create(api), 201)
    assert assert_ok(api.get("/webhooks", key=api.read_only))[0]["id"] == hook["id"]
    assert_error(put(api, hook["id"], {"name": "x"}, key=api.read_only), 403)
    assert_error(delete(api, f"/webhooks/{hook['id']}", key=api.read_only), 403)
    assert_error(api.get(f"/webhooks/{hook['id']}", key=api.other_env), 404)
    assert assert_ok(api.get("/webhooks", key=api.other_env)) == []
    assert_error(create(api, key=None), 401)


def test_read_only_keys_see_no_signing_secret(api: Api, receiver: Receiver) -> None:
    """With the secret a reader could forge deliveries: read-only keys get
    ``secret: ""`` (the SDK's model requires the field), everywhere it shows."""
    hook = assert_ok(create(api, url=receiver.url), 201)
    assert_ok(api.post(f"/webhooks/{hook['id']}/test", {"request_type": "test.send"}))
    (event,) = assert_ok(api.get("/webhook-events"))
    answers = {
        "list": (sdk.ListWebhooksResponse, "/webhooks"),
        "get": (sdk.GetWebhookResponse, f"/webhooks/{hook['id']}"),
        "log": (sdk.ListWebhookEventsResponse, "/webhook-events"),
        "event": (sdk.GetWebhookEventResponse, f"/webhook-events/{event['id']}"),
    }
    for key, expected in ((api.read_only, ""), (api.secret, hook["secret"])):
        for model, path in answers.values():
            response = api.get(path, key=key)
            assert response.status_code == 200, response.text
            assert ("whsec_" in response.text) is bool(expected), path
            data = parse_obj_as(model, response.json()).data
            for item in data if isinstance(data, list) else [data]:
                shown = item if isinstance(item, WebhookResponseData) else item.webhook
                assert shown is not None and shown.secret == expected, path


def test_a_test_delivery_is_signed_sent_and_logged(api: Api, receiver: Receiver) -> None:
    hook = assert_ok(create(api, url=receiver.url), 201)
    response = api.post(f"/webhooks/{hook['id']}/test", {"request_type": "test.send"})
    result = parse_obj_as(sdk.SendTestWebhookActionResponse, response.json()).data
    assert (result.success, result.response_code, result.failure_reason) == (True, 200, None)

    (got,) = receiver.received()
    verify_signature(
        got.body,
        got.header("X-Schematic-Webhook-Signature"),
        got.header("X-Schematic-Webhook-Timestamp"),
        hook["secret"],
    )
    assert got.header("X-Schematic-Webhook-Signature-Version") == "v1"
    envelope = got.json()
    assert envelope["action"] == "test.send" and envelope["object_type"] == "test"
    assert envelope["environment_id"] == api.environment_id
    assert envelope["body"]["webhook_id"] == hook["id"]

    listed = api.get("/webhook-events", params={"webhook_id": hook["id"]})
    (event,) = parse_obj_as(sdk.ListWebhookEventsResponse, listed.json()).data
    assert event.id == envelope["id"] and event.status == "success"
    assert (event.attempt_count, event.response_code, event.request_type) == (1, 200, "test.send")
    assert event.payload is not None and json.loads(event.payload) == envelope
    assert event.webhook is not None and event.webhook.id == hook["id"]
    detail = api.get(f"/webhook-events/{event.id}")
    parsed = parse_obj_as(sdk.GetWebhookEventResponse, detail.json()).data
    assert parsed.id == event.id
    (attempt,) = detail.json()["data"]["attempts"]
    assert (attempt["number"], attempt["outcome"], attempt["response_code"]) == (1, "success", 200)


def test_a_failing_test_delivery_says_why(api: Api, receiver: Receiver) -> None:
    receiver.status = 500
    hook = assert_ok(create(api, url=receiver.url), 201)
    data = assert_ok(
        api.post(f"/webhooks/{hook['id']}/test", {"request_type": "entitlement.limit.reached"})
    )
    assert data["success"] is False and data["response_code"] == 500
    assert "500" in data["failure_reason"]
    receiver.stop()
    data = assert_ok(api.post(f"/webhooks/{hook['id']}/test", {"request_type": "test.send"}))
    assert data["success"] is False and data["response_code"] == 0 and data["failure_reason"]
    events = assert_ok(api.get("/webhook-events"))
    assert [e["status"] for e in events] == ["failure", "failure"]
    count = parse_obj_as(sdk.CountWebhookEventsResponse, api.get("/webhook-events/count").json())
    assert count.data.count == 2


def test_test_delivery_errors(api: Api) -> None:
    hook = assert_ok(create(api), 201)
    assert_error(api.post(f"/webhooks/{hook['id']}/test", {}), 400, contains="request_type")
    assert_error(
        api.post(f"/webhooks/{hook['id']}/test", {"request_type": "nope"}), 400, contains="unknown"
    )
    assert_error(api.post("/webhooks/wh_none/test", {"request_type": "test.send"}), 404)
    assert_error(
        api.post(f"/webhooks/{hook['id']}/test", {"request_type": "test.send"}, key=api.read_only),
        403,
    )


def test_the_delivery_log_params_and_missing_events(api: Api) -> None:
    response = api.get(
        "/webhook-events", params={"q": "limit", "webhook_id": "wh_x", "ids": ["a", "b"]}
    )
    assert_ok(
        response,
        200,
        {"q": "limit", "webhook_id": "wh_x", "ids": ["a", "b"], "limit": 100, "offset": 0},
    )
    assert_error(api.get("/webhook-events/whev_none"), 404, contains="was not found")
    assert_error(api.get("/webhook-events", params={"limit": 251}), 400)
    assert_error(api.get("/webhook-events", key=api.publishable), 403)
