"""Console tests in-process: the app of tests/api (a fresh SQLite file, a
frozen clock, one key of each kind) and a signed-in browser-like client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tally.clock import FrozenClock
from tally.effects.endpoints import WebhookChanges
from tally.metering.catalog import AllocationChanges, FeatureChanges
from tally.storage.base_entities import EntityUpsert
from tests.api.conftest import NOW, Api, TestClient, open_api  # noqa: F401

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SIGN_IN_TOKEN = re.compile(r'name="sign_in_token" value="([^"]+)"')


def sign_in(client: Any, key: str) -> Any:
    """Load the sign-in form, post ``key`` with its token; returns the answer."""
    page = client.get("/console/sign-in")
    token = SIGN_IN_TOKEN.search(page.text)
    assert token, page.text
    return client.post(
        "/console/sign-in",
        data={"key": key, "sign_in_token": token.group(1)},
        follow_redirects=False,
    )


def csrf_of(client: Any) -> str:
    page = client.get("/console/events")
    match = CSRF.search(page.text)
    assert match, page.text
    return match.group(1)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with open_api(tmp_path, FrozenClock(NOW), worker=False) as running:
        yield running


@pytest.fixture
def console(api: Api) -> Api:
    """``api`` with its client signed in with the read-write secret key."""
    answer = sign_in(api.client, api.secret)
    assert answer.status_code == 303, answer.text
    return api


def metered_company(api: Api) -> str:
    """Acme with an allocation of 5 API calls a month, 3 calls of 2 made and processed."""
    env = api.environment_id
    feature = api.run(
        api.storage.create_feature,
        env,
        FeatureChanges(name="API calls", feature_type="event", event_subtype="api-call"),
    )
    company = api.run(
        api.storage.upsert_company, env, EntityUpsert(keys={"id": "acme"}, name="Acme Corp")
    )
    api.run(
        api.storage.upsert_allocation,
        env,
        company.id,
        feature.id,
        AllocationChanges(value_type="numeric", value_numeric=5, metric_period="current_month"),
        None,
        "key_test",
    )
    for _ in range(3):
        body = {"event": "api-call", "company": {"id": "acme"}, "user": {"id": "u1"}, "quantity": 2}
        answer = api.post("/events", {"event_type": "track", "body": body})
        assert answer.status_code == 201
    api.drain()
    return str(company.id)


def make_hook(api: Api, url: str) -> object:
    return api.run(
        api.storage.create_webhook,
        api.environment_id,
        WebhookChanges(name="limits", url=url, request_types=("entitlement.limit.reached",)),
    )
