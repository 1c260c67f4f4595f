"""The pure delivery rules: the retry schedule's shape (the real defaults),
signatures that the official SDK's ``schematic.webhook_utils`` verifies,
webhook endpoint validation, who wants which notice, auto-disable, and the
envelope and fan-out of notices."""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import msgspec
import pytest
from schematic.webhook_utils import (
    WebhookSignatureError,
    verify_signature,
    verify_webhook_signature,
)

from tally.effects.delivery import DeliveryConfig
from tally.effects.endpoints import (
    Webhook,
    WebhookChanges,
    WebhookValues,
    resolve_webhook,
    should_disable,
    wants,
)
from tally.effects.payloads import plan_deliveries
from tally.effects.schedule import SECOND_US, RetrySchedule
from tally.effects.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    VERSION_HEADER,
    signed_headers,
)
from tally.effects.triggers import Notice
from tally.errors import Invalid
from tally.settings import Settings


# -- the retry schedule ----------------------------------------------------------------
def test_the_default_schedule_retries_at_least_five_times_with_growing_delays() -> None:
    schedule = Settings().retry_schedule
    assert schedule == RetrySchedule()
    assert schedule.max_attempts - 1 >= 5
    delays = [schedule.base_delay(n) for n in range(1, schedule.max_attempts)]
    assert delays == [30, 90, 270, 810, 2430, 7290, 21600]  # seconds; the last one capped
    assert all(b >= a for a, b in itertools.pairwise(delays))
    hours = sum(delays) / 3600
    assert 9 < hours < 10  # a receiver may be gone for hours and still get everything


def test_jitter_spreads_each_delay_within_a_fifth() -> None:
    schedule = RetrySchedule()
    rng = random.Random(7)
    for attempt in range(1, 8):
        seen = [schedule.delay(attempt, rng) for _ in range(200)]
        base = schedule.base_delay(attempt)
        assert all(0.8 * base <= d <= 1.2 * base for d in seen)
        assert max(seen) - min(seen) > 0.2 * base  # really spread, not constant


def test_the_last_attempt_has_no_next_one() -> None:
    schedule = RetrySchedule(max_attempts=3, base_seconds=1, cap_seconds=10)
    rng = random.Random(1)
    first = schedule.next_attempt_at(0, 1, rng)
    second = schedule.next_attempt_at(0, 2, rng)
    assert first is not None and 0.8 * SECOND_US <= first <= 1.2 * SECOND_US
    assert second is not None and 2.4 * SECOND_US <= second <= 3.6 * SECOND_US
    assert schedule.next_attempt_at(0, 3, rng) is None


def test_settings_compress_the_schedule() -> None:
    settings = Settings.from_env(
        {
            "TALLY_DELIVERY_MAX_ATTEMPTS": "6",
            "TALLY_DELIVERY_RETRY_BASE_SECONDS": "0.05",
            "TALLY_DELIVERY_RETRY_MAX_SECONDS": "0.5",
        }
    )
    schedule = settings.retry_schedule
    assert schedule.max_attempts == 6
    assert [schedule.base_delay(n) for n in range(1, 6)] == pytest.approx(
        [0.05, 0.15, 0.45, 0.5, 0.5]
    )


@pytest.mark.parametrize(
    "env",
    [
        {"TALLY_DELIVERY_MAX_ATTEMPTS": "0"},
        {"TALLY_DELIVERY_RETRY_BASE_SECONDS": "-1"},
        {"TALLY_DELIVERY_RETRY_BASE_SECONDS": "60", "TALLY_DELIVERY_RETRY_MAX_SECONDS": "30"},
        {"TALLY_DELIVERY_TIMEOUT_SECONDS": "0"},
        {"TALLY_LIMIT_WARNING_PERCENT": "100"},
        {"TALLY_BILLING_SINK_URL": "ftp://example.com/x"},
        {"TALLY_DELIVERY_CONCURRENCY": "0"},
    ],
)
def test_bad_delivery_settings_are_refused(env: dict[str, str]) -> None:
    from tally.errors import ConfigError

    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_the_sink_is_a_delivery_setting_not_a_processing_rule() -> None:
    """Processing makes meter records whether or not a sink is set (issue 9
    item 6): the sink changes where the delivery loop sends them, nothing else."""
    on = Settings.from_env({"TALLY_BILLING_SINK_URL": "http://127.0.0.1:9/meter"})
    assert on.effect_rules == Settings().effect_rules
    assert on.as_environ()["TALLY_BILLING_SINK_URL"] == "http://127.0.0.1:9/meter"
    assert DeliveryConfig.from_settings(on).billing_url == "http://127.0.0.1:9/meter"
    assert DeliveryConfig.from_settings(Settings()).billing_url is None


# -- signatures ------------------------------------------------------------------------
def test_signatures_verify_with_the_official_sdk() -> None:
    body = b'{"action":"entitlement.limit.reached","body":{}}'
    headers = signed_headers(body, "whsec_abc", 1_800_000_000)
    assert headers[VERSION_HEADER] == "v1"
    assert headers[TIMESTAMP_HEADER] == "1800000000"
    verify_signature(body, headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER], "whsec_abc")
    request = SimpleNamespace(headers=headers)  # as a web framework's request
    verify_webhook_signature(request, "whsec_abc", body=body)


@pytest.mark.parametrize(
    ("body", "secret", "timestamp"),
    [
        (b'{"action":"x","body":{"a":2}}', "whsec_abc", "1800000000"),
        (b'{"action":"x","body":{"a":1}}', "whsec_other", "1800000000"),
        (b'{"action":"x","body":{"a":1}}', "whsec_abc", "1800000001"),
    ],
)
def test_a_changed_body_secret_or_timestamp_does_not_verify(
    body: bytes, secret: str, timestamp: str
) -> None:
    signed = signed_headers(b'{"action":"x","body":{"a":1}}', "whsec_abc", 1_800_000_000)
    with pytest.raises(WebhookSignatureError):
        verify_signature(body, signed[SIGNATURE_HEADER], timestamp, secret)


# -- endpoints ---------------------------------------------------------------------------
def hook(**changes: object) -> Webhook:
    values: dict[str, object] = {
        "id": "wh_1",
        "environment_id": "env_1",
        "name": "n",
        "url": "http://127.0.0.1:1/x",
        "secret": "whsec_x",
        "request_types": ("entitlement.limit.reached", "company.created"),
        "status": "active",
        "status_reason": None,
        "feature_ids": (),
        "credit_ids": (),
        "enabled_at": 0,
        "created_at": 0,
        "updated_at": 0,
    }
    values.update(changes)
    return Webhook(**values)  # type: ignore[arg-type]


def test_create_needs_a_name_a_url_and_request_types() -> None:
    for missing in ("name", "url", "request_types"):
        fields: dict[str, object] = {
            "name": "n",
            "url": "https://example.com/hook",
            "request_types": ("entitlement.limit.reached",),
        }
        del fields[missing]
        with pytest.raises(Invalid, match=missing):
            resolve_webhook(None, WebhookChanges(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (WebhookChanges(url="ftp://example.com"), "http"),
        (WebhookChanges(url="http://"), "http"),
        (WebhookChanges(url="https://exa mple.com/x"), "spaces"),
        (WebhookChanges(request_types=()), "at least one"),
        (WebhookChanges(request_types=("entitlement.limit.nope",)), "unknown request type"),
        (WebhookChanges(status="paused"), "active or inactive"),
        (WebhookChanges(name="  "), "empty"),
        (WebhookChanges(feature_ids=("",)), "non-empty"),
    ],
)
def test_bad_values_are_refused(changes: WebhookChanges, message: str) -> None:
    current = WebhookValues("n", "https://example.com/hook", ("entitlement.limit.reached",))
    with pytest.raises(Invalid, match=message):
        resolve_webhook(current, changes)


def test_an_update_keeps_what_it_does_not_send() -> None:
    current = WebhookValues("n", "https://example.com/a", ("company.created",), "active", ("f1",))
    after = resolve_webhook(current, WebhookChanges(url="https://example.com/b"))
    assert after == WebhookValues(
        "n", "https://example.com/b", ("company.created",), "active", ("f1",)
    )


def test_who_wants_a_notice() -> None:
    assert wants(hook(), "entitlement.limit.reached", "feat_1")
    assert not wants(hook(), "entitlement.limit.warning", "feat_1")
    assert not wants(hook(status="inactive"), "company.created", None)
    scoped = hook(feature_ids=("feat_2",))
    assert not wants(scoped, "entitlement.limit.reached", "feat_1")
    assert wants(scoped, "entitlement.limit.reached", "feat_2")
    assert wants(scoped, "company.created", None)  # feature scopes limit notices only


def test_auto_disable_needs_25_deliveries_and_90_percent_failures() -> None:
    assert not should_disable(24, 24)
    assert should_disable(25, 23)  # 92%
    assert not should_disable(25, 22)  # 88%
    assert should_disable(100, 90)
    assert not should_disable(100, 89)


# -- envelopes and fan-out ---------------------------------------------------------------
def test_fan_out_makes_one_signed_envelope_per_endpoint_that_wants_it() -> None:
    rows = [
        (
            "whob_1",
            Notice(
                "env_1",
                "entitlement.limit.reached",
                "entitlement",
                "cmov_1",
                company_id="comp_1",
                feature_id="feat_1",
                details={"usage": 10, "allocation": 10},
            ),
        ),
        ("whob_2", Notice("env_1", "user.updated", "user", "user_1")),
        ("whob_3", Notice("env_2", "company.created", "company", "comp_9", company_id="comp_9")),
    ]
    endpoints = [hook(id="wh_1"), hook(id="wh_2"), hook(id="wh_3", request_types=("user.updated",))]
    objects = {("company", "comp_1"): {"id": "comp_1", "name": "Acme"}}
    counter = iter(range(100))
    planned = plan_deliveries(rows, endpoints, objects, lambda p: f"{p}_{next(counter)}")
    assert [(p.webhook_id, p.request_type, p.notice_id) for p in planned.deliveries] == [
        ("wh_1", "entitlement.limit.reached", "whob_1"),
        ("wh_2", "entitlement.limit.reached", "whob_1"),
        ("wh_3", "user.updated", "whob_2"),
    ]
    assert sorted(planned.payloads) == ["whob_1", "whob_2"]  # one payload per notice
    first = msgspec.json.decode(planned.payloads["whob_1"])
    assert first == {
        "id": "whob_1",
        "action": "entitlement.limit.reached",
        "environment_id": "env_1",
        "object_type": "entitlement",
        "company_id": "comp_1",
        "feature_id": "feat_1",
        "body": {
            "usage": 10,
            "allocation": 10,
            "company": {"id": "comp_1", "name": "Acme"},
            "feature": {"id": "feat_1"},  # deleted meanwhile: just its id
        },
    }
    user = msgspec.json.decode(planned.payloads["whob_2"])
    assert user["body"] == {"id": "user_1"} and "company_id" not in user
