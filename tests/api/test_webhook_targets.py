"""Webhook URLs that lead to private networks (SSRF) are refused at
registration and not sent to, unless TALLY_WEBHOOK_ALLOW_PRIVATE; receivers'
answers are not readable through the API. Names resolve through a table
(tests send nothing anywhere but 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tally.clock import FrozenClock
from tally.effects.endpoints import WebhookChanges
from tally.effects.targets import SETTING, TableResolver
from tests.api.conftest import Api, open_api
from tests.api.helpers import assert_error, assert_ok
from tests.support.receiver import Receiver

NAMES = TableResolver(
    {
        "hooks.example.com": ["93.184.216.34"],
        "internal.example.com": ["10.20.30.40"],
        "rebound.example.com": ["127.0.0.1"],
    }
)
PRIVATE_URLS = [
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "http://LOCALHOST./hook",
    "http://127.1/hook",
    "http://2130706433/hook",
    "http://0x7f.1/hook",
    "http://0177.0.0.1/hook",
    "http://0.0.0.0:9000/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.7/hook",
    "http://172.16.5.4/hook",
    "http://192.168.1.1/hook",
    "http://[fd00::1]/hook",
    "http://[fe80::1]/hook",
    "http://224.0.0.1/hook",
    "http://[ff02::1]/hook",
    "https://internal.example.com/hook",
    "http://user:pw@127.0.0.1/hook",
]


@pytest.fixture
def guarded(tmp_path: Path, clock: FrozenClock) -> Iterator[Api]:
    """The app with the default: private targets refused."""
    with open_api(tmp_path, clock, webhook_allow_private=False, resolver=NAMES) as running:
        yield running


def create(api: Api, url: str) -> Any:
    body = {"name": "hook", "url": url, "request_types": ["test.send"]}
    return api.post("/webhooks", body)


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_registering_a_private_target_is_refused_naming_the_setting(guarded: Api, url: str) -> None:
    message = assert_error(create(guarded, url), 400)
    assert SETTING in message
    assert assert_ok(guarded.get("/webhooks")) == []


@pytest.mark.parametrize("url", PRIVATE_URLS[:3] + PRIVATE_URLS[-3:])
def test_changing_a_url_to_a_private_target_is_refused(guarded: Api, url: str) -> None:
    hook = assert_ok(create(guarded, "https://hooks.example.com/tally"), 201)
    response = guarded.client.put(
        f"/webhooks/{hook['id']}", json={"url": url}, headers=guarded.headers(guarded.secret)
    )
    assert SETTING in assert_error(response, 400)
    assert assert_ok(guarded.get(f"/webhooks/{hook['id']}"))["url"] == hook["url"]


def test_a_public_target_and_an_unresolvable_name(guarded: Api) -> None:
    assert_ok(create(guarded, "https://hooks.example.com/tally"), 201)
    assert_error(create(guarded, "https://nowhere.example.com/x"), 400, contains="does not resolve")


def test_the_setting_allows_private_targets(api: Api) -> None:
    for url in PRIVATE_URLS:
        assert_ok(create(api, url), 201)


def test_a_stored_private_target_is_not_sent_to(guarded: Api) -> None:
    """An endpoint stored before the rule (or whose name now resolves to a
    private address) gets no request; the test delivery says why."""
    with Receiver() as receiver:
        for url in (receiver.url, f"http://rebound.example.com:{receiver.port}/hook"):
            hook = guarded.run(
                guarded.storage.create_webhook,
                guarded.environment_id,
                WebhookChanges(name="old", url=url, request_types=("test.send",)),
            )
            data = assert_ok(
                guarded.post(f"/webhooks/{hook.id}/test", {"request_type": "test.send"})
            )
            assert (data["success"], data["response_code"]) == (False, 0)
            assert "loopback" in data["failure_reason"] and SETTING in data["failure_reason"]
        assert receiver.received() == []


def test_the_receivers_answer_is_not_readable_through_the_api(api: Api) -> None:
    """Only the status and its standard phrase reach the test answer and the
    delivery log, never the receiver's body."""
    with Receiver() as receiver:
        receiver.status = 500  # the receiver's body is "ok"
        hook = assert_ok(create(api, receiver.url), 201)
        data = assert_ok(api.post(f"/webhooks/{hook['id']}/test", {"request_type": "test.send"}))
    expected = "the receiver answered 500 Internal Server Error"
    assert data["failure_reason"] == expected
    (event,) = assert_ok(api.get("/webhook-events"))
    detail = assert_ok(api.get(f"/webhook-events/{event['id']}"))
    assert detail["last_error"] == expected
    assert [a["error"] for a in detail["attempts"]] == [expected]
