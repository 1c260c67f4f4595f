"""Webhooks in the console: endpoints and their status, the delivery log,
"send test" to a real local receiver (read-write keys only), a delivery's
attempts, and no signing secret anywhere."""

from __future__ import annotations

import re
from pathlib import Path

from tally.clock import FrozenClock
from tally.effects.signing import signature
from tests.api.conftest import NOW, Api, open_api
from tests.console.conftest import csrf_of, make_hook, sign_in
from tests.support.receiver import Receiver


def test_send_test_reaches_the_receiver(console: Api, receiver: Receiver) -> None:
    hook = make_hook(console, receiver.url)
    page = console.client.get("/console/webhooks").text
    assert ">limits</a>" in page and receiver.url in page and "Send test" in page
    assert hook.secret not in page  # type: ignore[attr-defined]
    answer = console.client.post(
        f"/console/webhooks/{hook.id}/test",  # type: ignore[attr-defined]
        data={"csrf_token": csrf_of(console.client)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert len(receiver.requests) == 1
    got = receiver.requests[0]
    assert got.json()["action"] == "test.send"
    stamp = got.header("X-Schematic-Webhook-Timestamp")
    assert got.header("X-Schematic-Webhook-Signature") == signature(
        got.body,
        stamp,
        hook.secret,  # type: ignore[attr-defined]
    )
    result = console.client.get(answer.headers["location"]).text
    assert re.search(r'id="test-result">.*delivered, HTTP 200', result, re.S)
    delivery = re.search(r'href="/console/webhooks/deliveries/(whev_[0-9a-f]+)"', result)
    assert delivery
    attempts = console.client.get(f"/console/webhooks/deliveries/{delivery.group(1)}").text
    assert '<table id="attempts">' in attempts and "HTTP 200" in attempts
    assert hook.secret not in attempts  # type: ignore[attr-defined]


def test_a_failing_receiver_shows_why(console: Api, receiver: Receiver) -> None:
    receiver.status = 503
    hook = make_hook(console, receiver.url)
    answer = console.client.post(
        f"/console/webhooks/{hook.id}/test",  # type: ignore[attr-defined]
        data={"csrf_token": csrf_of(console.client)},
    )
    assert re.search(r'id="test-result">.*failed with HTTP 503', answer.text, re.S)


def test_send_test_keeps_to_allowed_targets(tmp_path: Path, receiver: Receiver) -> None:
    """A private endpoint stored before the rule (or whose name now resolves to
    a private address) gets no request from the console's button either."""
    with open_api(tmp_path, FrozenClock(NOW), webhook_allow_private=False) as api:
        assert sign_in(api.client, api.secret).status_code == 303
        hook = make_hook(api, receiver.url)
        answer = api.client.post(
            f"/console/webhooks/{hook.id}/test",  # type: ignore[attr-defined]
            data={"csrf_token": csrf_of(api.client)},
        )
        assert re.search(r'id="test-result">.*failed', answer.text, re.S), answer.text
        assert "TALLY_WEBHOOK_ALLOW_PRIVATE" in answer.text
    assert receiver.requests == []


def test_read_only_key_cannot_send(api: Api, receiver: Receiver) -> None:
    hook = make_hook(api, receiver.url)
    assert sign_in(api.client, api.read_only).status_code == 303
    page = api.client.get("/console/webhooks").text
    assert "Send test" not in page and ">limits</a>" in page
    answer = api.client.post(
        f"/console/webhooks/{hook.id}/test",  # type: ignore[attr-defined]
        data={"csrf_token": csrf_of(api.client)},
    )
    assert answer.status_code == 403 and "read-write key" in answer.text
    assert receiver.requests == []


def test_another_environment_sees_no_endpoint(console: Api, receiver: Receiver) -> None:
    hook = make_hook(console, receiver.url)
    other = console.client.__class__(console.app)
    assert sign_in(other, console.other_env).status_code == 303
    assert "limits" not in other.get("/console/webhooks").text
    answer = other.post(
        f"/console/webhooks/{hook.id}/test",  # type: ignore[attr-defined]
        data={"csrf_token": csrf_of(other)},
    )
    assert answer.status_code == 404 and receiver.requests == []
