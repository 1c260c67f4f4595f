"""The log lines of a real ``tally serve`` at debug level, as JSON: one object
per line with the process role and request fields, the request id kept and
echoed, and never a key, a secret or an event body."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.receiver import Receiver
from tests.support.server import Server, running_server

pytestmark = pytest.mark.slow

BODY_SECRET = "body-secret-9f3b2c"
KEY_SECRET = "company-key-secret-71ad"
TRAIT_SECRET = "trait-secret-c0ffee"
IDEM_SECRET = "idem-secret-5a5a5a"
NAME_SECRET = "name-secret-b1b1b1"
WRONG_KEY = "sch_dev_WrongKeyNotKnown0123456789"


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def call(server: Server, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
    headers = {"X-Schematic-Api-Key": key, **kwargs.pop("headers", {})}
    return httpx.request(method, f"{server.base_url}{path}", headers=headers, timeout=30, **kwargs)


def secret_events() -> list[dict[str, Any]]:
    company = {"keys": {"id": KEY_SECRET}, "name": NAME_SECRET, "traits": {"t": TRAIT_SECRET}}
    return [
        {"event_type": "identify", "body": {"company": company, "keys": {"email": BODY_SECRET}}},
        {
            "event_type": "track",
            "body": {
                "event": "api-call",
                "company": {"id": KEY_SECRET},
                "traits": {"x": BODY_SECRET},
            },
            "idempotency_key": IDEM_SECRET,
        },
    ]


def test_json_logs_carry_request_fields_and_no_secret(tmp_path: Path, hooks: Receiver) -> None:
    env = {
        "TALLY_LOG_LEVEL": "debug",
        "TALLY_LOG_FORMAT": "json",
        "TALLY_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
    }
    with running_server(tmp_path, env) as server:
        hook = call(
            server,
            "POST",
            "/webhooks",
            server.secret_key,
            json={"name": "h", "url": hooks.url, "request_types": ["company.created"]},
        )
        assert hook.status_code in (200, 201), hook.text
        webhook_secret = hook.json()["data"]["secret"]

        first, second = secret_events()
        kept = call(
            server,
            "POST",
            "/events",
            server.secret_key,
            json=first,
            headers={"X-Request-Id": "e2e-logs-1"},
        )
        assert kept.status_code == 201, kept.text
        assert kept.headers["x-request-id"] == "e2e-logs-1"
        event_id = kept.json()["data"]["event_id"]
        batch = call(server, "POST", "/event-batch", server.secret_key, json={"events": [second]})
        assert batch.status_code == 201
        capture = {
            "events": [{"type": e["event_type"], "body": e["body"]} for e in secret_events()]
        }
        assert (
            call(server, "POST", "/batch", server.publishable_key, json=capture).status_code == 200
        )
        # refused requests with secrets inside: bad JSON, a bad event, an unknown key
        bad_json = f'{{"event_type": "track", "body": {{"x": "{BODY_SECRET}"'
        refused = call(server, "POST", "/events", server.secret_key, content=bad_json)
        assert refused.status_code == 400
        bad_event = {"event_type": "track", "body": {"company": {"id": BODY_SECRET}}}
        assert call(server, "POST", "/events", server.secret_key, json=bad_event).status_code == 400
        assert call(server, "POST", "/events", WRONG_KEY, json=first).status_code == 401
        listed = call(server, "GET", f"/events?company_id={KEY_SECRET}", server.secret_key)
        assert listed.status_code == 200
        deadline = time.monotonic() + 60
        while not hooks.requests:  # processed, and a webhook delivered
            assert time.monotonic() < deadline, "no webhook was delivered in 60 s"
            time.sleep(0.1)
        server.stop()
        text = server.log()

    secrets = [
        server.secret_key,
        server.publishable_key,
        server.read_only_key,
        WRONG_KEY,
        webhook_secret,
        BODY_SECRET,
        KEY_SECRET,
        TRAIT_SECRET,
        IDEM_SECRET,
        NAME_SECRET,
    ]
    assert [s for s in secrets if s in text] == []

    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(lines) > 10
    for line in lines:
        assert {"time", "level", "role", "logger", "message"} <= line.keys()
    assert {"http", "storage"} <= {line["role"] for line in lines}
    assert "debug" in {line["level"] for line in lines}
    access = [line for line in lines if line["logger"] == "tally.access"]
    (mine,) = [line for line in access if line.get("request_id") == "e2e-logs-1"]
    assert mine["route"] == "/events"
    assert mine["method"] == "POST"
    assert mine["status"] == 201
    assert mine["duration_ms"] > 0
    assert mine["environment_id"].startswith("env_")
    assert mine["event_ids"] == [event_id]
    statuses = sorted(line["status"] for line in access if line["route"] == "/events")
    assert statuses == [200, 201, 400, 400, 401]
    assert len({line["request_id"] for line in access}) == len(access)  # one id each
