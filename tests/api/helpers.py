"""Assertions on tally's envelopes and sample bodies of every event type."""

from __future__ import annotations

import copy
import re
from typing import Any

IDENTIFY_BODY: dict[str, Any] = {
    "keys": {"id": "u1", "email": "u@example.com"},
    "name": "Wile E.",
    "traits": {"login_count": 24},
    "company": {"keys": {"id": "acme"}, "name": "Acme Inc", "traits": {"city": "Atlanta"}},
}
TRACK_BODY: dict[str, Any] = {
    "event": "api-call",
    "company": {"id": "acme"},
    "user": {"id": "u1"},
    "traits": {"x": 1},
    "quantity": 3,
}
FLAG_CHECK_BODY: dict[str, Any] = {
    "flag_key": "my-flag",
    "reason": "matched rule",
    "value": True,
    "company_id": "comp_1",
    "user_id": "user_1",
    "flag_id": "flag_1",
    "rule_id": "rule_1",
    "req_company": {"id": "acme"},
    "req_user": None,
}
INFERENCE_BODY: dict[str, Any] = {
    "company": {"id": "acme"},
    "input_tokens": 100,
    "output_tokens": 20,
    "provider": "openai",
    "response_model": "gpt-4o",
}
BODIES: dict[str, dict[str, Any]] = {
    "identify": IDENTIFY_BODY,
    "track": TRACK_BODY,
    "flag_check": FLAG_CHECK_BODY,
    "inference": INFERENCE_BODY,
}
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "identify": ("keys",),
    "track": ("event",),
    "flag_check": ("flag_key", "reason", "value"),
    "inference": ("company", "input_tokens", "output_tokens", "provider", "response_model"),
}

EVENT_ID = re.compile(r"^evt_[0-9a-f]{32}$")
TIMESTAMP_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def body(event_type: str, **changes: Any) -> dict[str, Any]:
    """A fresh copy of the sample body of ``event_type`` with ``changes``."""
    out = copy.deepcopy(BODIES[event_type])
    out.update(changes)
    return out


def track(event: str = "api-call", **changes: Any) -> dict[str, Any]:
    return body("track", event=event, **changes)


def assert_error(
    response: Any, status: int, message: str | None = None, *, contains: str = ""
) -> str:
    """The response is ``status`` with exactly ``{"error": "<sentence>"}``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    payload = response.json()
    assert isinstance(payload, dict), payload
    assert list(payload) == ["error"], payload
    error = payload["error"]
    assert isinstance(error, str), payload
    assert error.strip(), payload
    assert "\n" not in error, payload
    if message is not None:
        assert error == message, payload
    if contains:
        assert contains in error, payload
    return error


def assert_ok(response: Any, status: int = 200, params: dict[str, Any] | None = None) -> Any:
    """The response is ``status`` with exactly ``{"data": …, "params": …}``;
    returns ``data``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    payload = response.json()
    assert isinstance(payload, dict), payload
    assert set(payload) == {"data", "params"}, payload
    assert isinstance(payload["params"], dict), payload
    if params is not None:
        assert payload["params"] == params, payload
    return payload["data"]


def assert_raw_event(data: Any, captured_at: str | None = None) -> str:
    """A ``RawEventResponseData``; returns its ``event_id``."""
    assert isinstance(data, dict), data
    for field in ("captured_at", "remote_ip", "user_agent"):
        assert isinstance(data.get(field), str), (field, data)
    assert TIMESTAMP_Z.match(data["captured_at"]), data
    if captured_at is not None:
        assert data["captured_at"] == captured_at, data
    event_id = data.get("event_id")
    assert isinstance(event_id, str) and EVENT_ID.match(event_id), data
    return event_id
