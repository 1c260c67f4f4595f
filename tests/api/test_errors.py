"""Every refusal is ``{"error": "<sentence>"}`` alone, with a status the SDK
does not retry (never 408, 409, 429 or 5xx for a final outcome)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.helpers import assert_error, assert_ok, track

POSTS = ["/events", "/event-batch", "/batch"]
RETRIED = {408, 409, 429}
MAX_REQUEST = 4 * 1024 * 1024


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize(
    "raw",
    [b"{", b"{]", b"nul", b'{"events": [}', b"\x00\x01", b"{'single': 'quotes'}"],
    ids=["open", "mismatched", "partial-literal", "broken-array", "binary", "single-quotes"],
)
def test_malformed_json_400_on_every_post(api: Api, path: str, raw: bytes) -> None:
    message = assert_error(api.post(path, content=raw, key=api.secret), 400)
    assert "JSON" in message
    assert api.list_events() == []


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("raw", [b"[]", b"1", b'"x"', b"null", b"false"])
def test_json_not_an_object_400_on_every_post(api: Api, path: str, raw: bytes) -> None:
    message = assert_error(api.post(path, content=raw, key=api.secret), 400)
    assert "object" in message
    assert api.list_events() == []


@pytest.mark.parametrize("path", POSTS)
def test_empty_body_400_on_every_post(api: Api, path: str) -> None:
    assert_error(
        api.post(path, content=b"", key=api.secret),
        400,
        "request body is empty; send a JSON object",
    )
    assert_error(
        api.client.post(path, headers=api.headers(api.secret)),
        400,
        "request body is empty; send a JSON object",
    )


@pytest.mark.parametrize("path", POSTS)
def test_request_over_4_mib_413_on_every_post(api: Api, path: str) -> None:
    raw = b'{"events":[],"pad":"' + b"x" * MAX_REQUEST + b'"}'
    assert_error(api.post(path, content=raw, key=api.secret), 413, contains="4 MiB")
    assert api.list_events() == []


@pytest.mark.parametrize("path", POSTS)
def test_request_of_exactly_4_mib_is_read(api: Api, path: str) -> None:
    """The limit is "more than 4 MiB": a 4 MiB request is read and judged on
    its content (here: valid JSON, nothing in it)."""
    head = b'{"events":[],"event_type":"track","body":{"event":"a"},"pad":"'
    raw = head + b"x" * (MAX_REQUEST - len(head) - 2) + b'"}'
    assert len(raw) == MAX_REQUEST
    response = api.post(path, content=raw, key=api.secret)
    assert response.status_code in {200, 201}, response.text


def test_auth_is_checked_before_the_body(api: Api) -> None:
    """An unauthenticated request is 401 even when its body is bad or huge."""
    assert_error(api.post("/events", content=b"{bad", key=None), 401)
    assert_error(api.post("/events", content=b"x" * (MAX_REQUEST + 1), key=None), 401)
    assert_error(api.post("/events", content=b"{bad", key=api.read_only), 403)


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/events", {"limit": "x"}),
        ("/events", {"limit": "1.5"}),
        ("/events", {"limit": "999"}),
        ("/events", {"offset": "-3"}),
        ("/events", {"event_types": "nope"}),
        ("/events", {"company_id": "c" * 300}),
        ("/event-types", {"limit": "-1"}),
        ("/event-types", {"offset": "abc"}),
        ("/event-types", {"q": "q" * 600}),
    ],
)
def test_bad_query_400(api: Api, path: str, query: dict[str, str]) -> None:
    assert_error(api.get(path, params=query), 400)


def test_too_many_repeated_values_400(api: Api) -> None:
    many = [("event_types", "track")] * 101
    assert_error(api.get("/events", params=many), 400, contains="100")
    many = [("event_subtypes", f"s{i}") for i in range(101)]
    assert_error(api.get("/event-types", params=many), 400, contains="100")


def test_empty_query_values_are_absent(api: Api) -> None:
    assert_ok(api.create("track", track()), 201)
    response = api.client.get(
        "/events?company_id=&limit=&offset=&event_types=", headers=api.headers(api.secret)
    )
    data = assert_ok(response, 200, params={"limit": 100, "offset": 0})
    assert len(data) == 1


BAD_REQUESTS: list[tuple[str, str, Any]] = [
    (
        "POST",
        "/events",
        {
            "event_type": "track",
            "body": {"event": "a"},
            "sent_at": "x",
            "trusted_client_clock": True,
        },
    ),
    ("POST", "/events", {"event_type": "track", "body": {"event": "a", "quantity": 2**64}}),
    ("POST", "/events", {"event_type": "track", "body": {"event": "a"}, "idempotency_key": ""}),
    ("POST", "/events", {"event_type": "identify", "body": {"keys": {"id": None}}}),
    (
        "POST",
        "/events",
        {
            "event_type": "track",
            "body": {"event": "a"},
            "sent_at": "9999-12-31T23:59:59Z",
            "backfill": True,
        },
    ),
    (
        "POST",
        "/events",
        {
            "event_type": "track",
            "body": {"event": "a"},
            "sent_at": "0001-01-01T00:00:00Z",
            "backfill": True,
        },
    ),
    ("POST", "/event-batch", {"events": [None] * 1001}),
    ("POST", "/batch", {"events": [None] * 101}),
    ("GET", "/events/" + "e" * 5000, None),
    ("GET", "/events?limit=99999999999999999999999", None),
    ("GET", "/events?offset=99999999999999999999999", None),
    ("GET", "/events/%00", None),
]


@pytest.mark.parametrize(("method", "path", "payload"), BAD_REQUESTS)
def test_odd_requests_get_a_final_status_and_the_envelope(
    api: Api, method: str, path: str, payload: Any
) -> None:
    headers = api.headers(api.secret)
    if method == "POST":
        response = api.client.post(path, headers=headers, json=payload)
    else:
        response = api.client.get(path, headers=headers)
    assert response.status_code not in RETRIED, response.text
    assert response.status_code < 500, response.text
    payload_out = response.json()
    if payload_out == {"error": "batch too large", "max_size": 100}:
        assert response.status_code == 400
    elif response.status_code >= 400:
        assert_error(response, response.status_code)
    else:
        assert set(payload_out) == {"data", "params"}
